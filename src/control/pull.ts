// What `dproxy pull` and `dproxy prefetch` run: hand the images to the daemon
// serving the cache (POST /_dproxy/pull) and pass its NDJSON events on as they
// come. The daemon does the fetching so that single flight, verification and
// the upstream mapping are the ones client pulls get. When no daemon runs, one
// is started in this process for the duration (loopback, a free port, the
// configured settings), then stopped.

import { formatBytes } from '../config/units.js'
import { DproxyError } from '../errors.js'
import type { CredentialSource } from '../upstream/auth.js'
import type { ImageEvent, PlatformChoice, RefusedEvent, Summary, WarmEvent } from '../proxy/warm.js'
import { formatPlatform } from '../proxy/warm.js'
import { findDaemon } from '../daemon/lifecycle.js'
import { ADMIN_TOKEN_FILE, ADMIN_TOKEN_HEADER, readAdminToken } from '../daemon/guard.js'
import { join } from 'node:path'

export interface PullOptions {
  cacheDir: string
  /** Where a running daemon keeps its admin token (the pull endpoint changes the cache). */
  stateDir: string
  /** For a daemon started here: upstream overrides, logins, max age. */
  upstreams: Record<string, string>
  maxAgeMs: number
  credentials?: CredentialSource
  /** Canonical references (`docker.io/library/alpine:latest`). */
  images: string[]
  platforms: PlatformChoice
  jobs: number
  maxPulls?: number
  onEvent: (e: WarmEvent) => void
}

/** Longest NDJSON line accepted from the daemon. */
const MAX_LINE = 1024 * 1024

/** Headers of the pull request: it changes the cache, so it carries the daemon's admin token. */
function adminRequestHeaders(token: string | undefined): Record<string, string> {
  return { 'content-type': 'application/json', accept: 'application/x-ndjson', ...(token !== undefined ? { [ADMIN_TOKEN_HEADER]: token } : {}) }
}

/** Runs the pull through the daemon serving `cacheDir` (started here when none runs). */
export async function pullImages(o: PullOptions): Promise<Summary | RefusedEvent> {
  const running = await findDaemon(o.cacheDir)
  if (running?.info.url) return postPull(running.info.url, await readAdminToken(join(o.stateDir, ADMIN_TOKEN_FILE)), o)
  const { Daemon } = await import('../daemon/daemon.js')
  const daemon = await Daemon.start({
    hosts: ['127.0.0.1'],
    port: 0,
    cacheDir: o.cacheDir,
    upstreams: o.upstreams,
    maxAgeMs: o.maxAgeMs,
    ...(o.credentials ? { credentials: o.credentials } : {}),
  })
  try {
    return await postPull(daemon.url, daemon.adminToken, o)
  } finally {
    await daemon.stop()
  }
}

async function postPull(base: string, token: string | undefined, o: PullOptions): Promise<Summary | RefusedEvent> {
  const body = {
    images: o.images,
    platforms: o.platforms.kind === 'all' ? 'all' : o.platforms.kind === 'list' ? o.platforms.platforms.map(formatPlatform) : undefined,
    jobs: o.jobs,
    ...(o.maxPulls !== undefined ? { maxPulls: o.maxPulls } : {}),
  }
  let res: Response
  try {
    res = await fetch(`${base}/_dproxy/pull`, { method: 'POST', headers: adminRequestHeaders(token), body: JSON.stringify(body) })
  } catch (err) {
    throw new DproxyError('INTERNAL', `the daemon at ${base} did not answer: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  if (res.status !== 200 || !res.body) {
    const text = (await res.text()).slice(0, 2000)
    let message = text
    try {
      message = (JSON.parse(text) as { errors?: Array<{ message?: string }> }).errors?.[0]?.message ?? text
    } catch {
      // not the error envelope: show the start of the body
    }
    throw new DproxyError(res.status === 400 ? 'USAGE' : 'INTERNAL', `the daemon refused: ${message}`)
  }
  let end: Summary | RefusedEvent | undefined
  for await (const line of lines(res.body)) {
    const e = JSON.parse(line) as WarmEvent
    o.onEvent(e)
    if (e.type === 'summary' || e.type === 'refused') end = e
  }
  if (!end) throw new DproxyError('INTERNAL', `the daemon at ${base} stopped answering before the run ended`)
  return end
}

async function* lines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder()
  let buffered = ''
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true })
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      if (line.trim() !== '') yield line
    }
    if (buffered.length > MAX_LINE) throw new DproxyError('INTERNAL', 'the daemon sent a line longer than 1 MiB')
  }
  if (buffered.trim() !== '') yield buffered
}

// ---- text, for the plain output and the terminal view

export const stateWords: Record<ImageEvent['state'], string> = {
  queued: 'queued',
  checking: 'checking',
  fetching: 'fetching',
  fetched: 'fetched',
  refreshed: 'refreshed',
  'up-to-date': 'up to date',
  failed: 'failed',
}

/** One line for an image's state, as the plain output and the view's log show it. */
export function describeImage(e: ImageEvent): string {
  const layers = `${e.layersTotal} blob${e.layersTotal === 1 ? '' : 's'}`
  switch (e.state) {
    case 'fetching':
      return `${e.layersDone}/${layers}, ${formatBytes(e.bytes)} of ${formatBytes(e.bytesTotal)}`
    case 'fetched':
    case 'refreshed':
      return `${layers}, ${formatBytes(e.bytesFetched)} from upstream`
    case 'up-to-date':
      return `${layers}, ${formatBytes(e.bytesTotal)}`
    case 'failed':
      return e.reason ?? ''
    default:
      return ''
  }
}

export function formatPulls(p: { pulls: number; hubPulls: number; atLeast?: boolean }): string {
  const n = `${p.atLeast ? 'at least ' : ''}${p.pulls}`
  return `${n} counted manifest GET${p.pulls === 1 ? '' : 's'} (${p.hubPulls} from Docker Hub)`
}

export function formatSummary(s: Summary): string {
  const lines = [
    `${s.upToDate} up to date, ${s.refreshed} refreshed, ${s.fetched} fetched, ${s.failed.length} failed; ` +
      `${formatBytes(s.bytesFromUpstream)} from upstream; ${s.hubPulls} Docker Hub pull${s.hubPulls === 1 ? '' : 's'} spent`,
    ...s.failed.map((f) => `  failed: ${f.image}: ${f.reason}`),
  ]
  return lines.join('\n') + '\n'
}
