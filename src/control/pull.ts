// What `dproxy pull` and `dproxy prefetch` run: hand the images to the daemon
// serving the cache (POST /_dproxy/pull) and pass its NDJSON events on as they
// come. The daemon does the fetching so that single flight, verification and
// the upstream mapping are the ones client pulls get. When no daemon runs, one
// is started in this process for the duration (loopback, a free port, the
// configured settings), then stopped; the run then goes to it directly, not
// over loopback HTTP (which would load a second HTTP client, Node's fetch,
// before the first image is asked for).
//
// Platforms for prefetch: an explicit `--platform` wins over everything the
// files say (the user asked for exactly that). Without it, each image gets
// the platforms its places name (`FROM --platform=linux/arm64`, compose
// `platform:`), plus the host's when one of its places names none: that
// place runs or builds the image on this machine.

import { formatBytes } from '../config/units.js'
import { DproxyError } from '../errors.js'
import type { CredentialSource } from '../upstream/auth.js'
import type { UpstreamMap } from '../upstream/registries.js'
import { formatPlatform, parsePlatform, type Platform, type PlatformChoice } from '../oci/platform.js'
import { parseImageReference } from '../oci/reference.js'
import type { ImageEvent, RefusedEvent, Summary, WarmEvent } from '../proxy/warm.js'
import { AdminClient, findDaemon } from './admin-client.js'

export interface PullOptions {
  cacheDir: string
  /** Where a running daemon keeps its admin token (the pull endpoint changes the cache). */
  stateDir: string
  /** For a daemon started here: upstream overrides, logins, max age. */
  upstreams: UpstreamMap
  maxAgeMs: number
  credentials?: CredentialSource
  /** Canonical references (`docker.io/library/alpine:latest`). */
  images: string[]
  platforms: PlatformChoice
  /** Platforms for one image instead of `platforms` (prefetch without --platform). */
  imagePlatforms?: Map<string, Platform[]>
  jobs: number
  maxPulls?: number
  onEvent: (e: WarmEvent) => void
}

/** What prefetch fetches of an image its files name (see the top of this file). */
export function prefetchChoice(image: { sources: Array<{ platform?: string }> }, given: PlatformChoice | undefined, host: Platform): PlatformChoice {
  if (given) return given
  const named = new Map<string, Platform>()
  for (const s of image.sources) {
    const p = s.platform === undefined ? host : parsePlatform(s.platform)
    named.set(formatPlatform(p), p)
  }
  if (named.size === 0) named.set(formatPlatform(host), host)
  return { kind: 'list', platforms: [...named.keys()].sort().map((k) => named.get(k)!) }
}

/** `linux/amd64, linux/arm64`, or `all`, as listings show a choice. */
export function formatChoice(choice: PlatformChoice): string {
  return choice.kind === 'list' ? choice.platforms.map(formatPlatform).join(', ') : choice.kind
}

/** Runs the pull through the daemon serving `cacheDir` (started here when none runs). */
export async function pullImages(o: PullOptions): Promise<Summary | RefusedEvent> {
  const running = await findDaemon(o.cacheDir, { stateDir: o.stateDir })
  if (running) return postPull(running.client, o)
  // Read while the daemon starts and pings the registries: every registry a
  // run names asks for a token, and the keychain's first answer takes a while.
  if (o.credentials) for (const registry of registriesOf(o.images)) void o.credentials(registry).catch(() => {})
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
    const { parsePullRequest, pullTargets, runPull } = await import('../daemon/pull-endpoint.js')
    const request = parsePullRequest(pullBody(o))
    let end: Summary | RefusedEvent | undefined
    await runPull(daemon, request, pullTargets(request), (e) => {
      o.onEvent(e)
      if (e.type === 'summary' || e.type === 'refused') end = e
    })
    if (!end) throw new DproxyError('INTERNAL', 'the run ended without a summary')
    return end
  } finally {
    await daemon.stop()
  }
}

function registriesOf(images: string[]): Set<string> {
  const out = new Set<string>()
  for (const ref of images) {
    try {
      out.add(parseImageReference(ref).registry)
    } catch {
      // The run reports it.
    }
  }
  return out
}

/** The body of POST /_dproxy/pull (daemon/pull-endpoint.ts) for `o`. */
function pullBody(o: PullOptions) {
  return {
    images: o.images.map((image) => {
      const own = o.imagePlatforms?.get(image)
      return own ? { image, platforms: own.map(formatPlatform) } : image
    }),
    platforms: o.platforms.kind === 'all' ? 'all' : o.platforms.kind === 'list' ? o.platforms.platforms.map(formatPlatform) : undefined,
    jobs: o.jobs,
    ...(o.maxPulls !== undefined ? { maxPulls: o.maxPulls } : {}),
  }
}

async function postPull(admin: AdminClient, o: PullOptions): Promise<Summary | RefusedEvent> {
  const body = pullBody(o)
  let end: Summary | RefusedEvent | undefined
  for await (const e of admin.pull<WarmEvent>(body)) {
    o.onEvent(e)
    if (e.type === 'summary' || e.type === 'refused') end = e
  }
  if (!end) throw new DproxyError('INTERNAL', `the daemon at ${admin.base} stopped answering before the run ended`)
  return end
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
