// What `dproxy status` reports, gathered without any terminal concerns: the
// CLI prints it as text, as JSON or through an ink view.
//
// - The daemon: found through the cache dir's daemon.json and its status
//   endpoint (lifecycle.ts findDaemon); when it runs, its counters come along.
// - The cache: the daemon's numbers when it runs, otherwise the cache dir is
//   read directly. Traffic counters live in the daemon's memory, so they are
//   null when it does not run.
// - Rate limits: Docker Hub is asked afresh with a HEAD of
//   ratelimitpreview/test:latest, the probe Docker documents (a HEAD is not a
//   pull, so checking costs nothing), through the same upstream mapping and
//   logins the daemon uses. This works with the daemon down. When the probe
//   fails (offline), the daemon's last reading is shown instead and the
//   failure is said. Other registries show the daemon's last reading.

import type { TlsStatus } from '../daemon/tls-config.js'
import { existsSync } from 'node:fs'
import { systemClock, type Clock } from '../clock.js'
import { Layout } from '../store/layout.js'
import { Store, type CacheStats } from '../store/store.js'
import type { CredentialSource } from '../upstream/auth.js'
import type { UpstreamTimeouts } from '../upstream/client.js'
import type { UpstreamMap } from '../upstream/registries.js'
import type { EndpointStatus } from '../upstream/client.js'
import { RATE_LIMIT_PROBE, type RateLimitReading } from '../upstream/ratelimit.js'
import type { StatusReport } from '../daemon/admin.js'
import type { ImageFailures } from '../daemon/failures.js'
import { findDaemon, type RunningDaemon } from './admin-client.js'
import type { RefreshStatus } from '../daemon/refresh.js'
import { DOCKER_HUB } from '../oci/registry-host.js'

export { RATE_LIMIT_PROBE }

export interface DaemonSection {
  running: boolean
  pid: number | null
  version: string | null
  startedAt: string | null
  uptimeSeconds: number | null
  /** `host:port` per address */
  listen: string[]
  url: string | null
  logFile: string | null
}

export interface CacheSection extends CacheStats {
  /** cacheHits / (cacheHits + cacheMisses); null when unknown or nothing was asked yet. */
  hitRatio: number | null
  cacheHits: number | null
  cacheMisses: number | null
  bytesFromCache: number | null
  bytesFromUpstream: number | null
  upstreamManifestGets: number | null
  upstreamManifestHeads: number | null
  /** Tag pulls answered after a HEAD showed no change: counted GETs not made. */
  manifestGetsAvoided: number | null
  /** The running daemon cannot write to the cache: `disk full (ENOSPC)`. Absent while it can. */
  notWritable?: string
}

export interface RateLimitRow {
  registry: string
  /** Pulls per window; null when unlimited or unknown. */
  limit: number | null
  remaining: number | null
  windowSeconds: number | null
  /** Docker-RateLimit-Source: the IP address or account the limit applies to. */
  source: string | null
  /** The registry answered without RateLimit headers. */
  unlimited: boolean
  /** When the reading was taken (ISO 8601); null when there is none. */
  checkedAt: string | null
  ageSeconds: number | null
  /** Where the reading comes from: a probe just now, the daemon's last upstream answer, or nowhere. */
  from: 'probe' | 'daemon' | 'none'
  /** Why the probe gave no reading, when it was tried and failed. */
  probeError?: string
}

export interface StatusSnapshot {
  /** When this snapshot was taken (ISO 8601). */
  checkedAt: string
  cacheDir: string
  daemon: DaemonSection
  cache: CacheSection
  rateLimit: RateLimitRow[]
  /** The errors the running daemon recently sent to clients, per image (empty when it does not run). */
  recentFailures: ImageFailures[]
  /** The daemon's background refresh (serve --refresh); null when it is off or no daemon runs. */
  refresh?: RefreshStatus | null
  /** Each upstream endpoint of the running daemon's configured registries, in the order asked: health and requests. */
  endpoints?: EndpointStatus[]
  /** With client auth: each user (`dproxy`, then the tokens) and when it was last used (ISO), null when never. */
  clients?: Array<{ name: string; lastUsed: string | null }>
  /** What the running daemon's listeners speak (daemon/tls.ts); absent when no daemon runs. */
  tls?: TlsStatus
  /** --tls auto beyond loopback: the command other machines run to trust the daemon. */
  trustCommand?: string
  /** The warning --insecure-lan earned. */
  insecureLan?: string
}

export interface CollectStatusOptions {
  cacheDir: string
  /** registry host -> base URL, as the daemon is configured (resolveSettings().upstreams). */
  upstreams?: UpstreamMap
  /** The daemon's logins; the probe then reports the limit of the account the daemon pulls as. */
  credentials?: CredentialSource
  /** Ask Docker Hub afresh (default true). */
  probe?: boolean
  /** Bound on the probe and on asking the daemon. Default 5 s. */
  timeoutMs?: number
  clock?: Clock
}

const emptyStats: CacheStats = { bytes: 0, blobs: 0, manifests: 0, tags: 0, tempFiles: 0, tempBytes: 0 }

/** The cache dir's statistics read from disk; zeros when there is no cache yet (nothing is created). */
export async function diskStats(cacheDir: string): Promise<CacheStats> {
  if (!existsSync(new Layout(cacheDir).versionFile)) return { ...emptyStats }
  const store = await Store.open(cacheDir)
  return store.stats()
}

function daemonSection(running: RunningDaemon | undefined): DaemonSection {
  if (!running) {
    return { running: false, pid: null, version: null, startedAt: null, uptimeSeconds: null, listen: [], url: null, logFile: null }
  }
  const { info, status } = running
  return {
    running: true,
    pid: status.pid,
    version: status.version,
    startedAt: status.startedAt,
    uptimeSeconds: status.uptimeSeconds,
    listen: status.listen,
    url: info.url ?? null,
    logFile: info.logFile ?? null,
  }
}

function cacheSection(stats: CacheStats, report: StatusReport | undefined): CacheSection {
  const c = report?.counters
  const asked = c ? c.cacheHits + c.cacheMisses : 0
  return {
    bytes: stats.bytes,
    blobs: stats.blobs,
    manifests: stats.manifests,
    tags: stats.tags,
    tempFiles: stats.tempFiles,
    tempBytes: stats.tempBytes,
    hitRatio: c && asked > 0 ? c.cacheHits / asked : null,
    cacheHits: c?.cacheHits ?? null,
    cacheMisses: c?.cacheMisses ?? null,
    bytesFromCache: c?.bytesFromCache ?? null,
    bytesFromUpstream: c?.bytesFromUpstream ?? null,
    upstreamManifestGets: c?.upstreamManifestGets ?? null,
    upstreamManifestHeads: c?.upstreamManifestHeads ?? null,
    manifestGetsAvoided: c?.manifestGetsAvoided ?? null,
    ...(report?.cacheNotWritable ? { notWritable: report.cacheNotWritable.reason } : {}),
  }
}

/** A reading as a report row, its age counted at `now` (ms since epoch). */
export function rateLimitRow(
  reading: Pick<RateLimitReading, 'registry' | 'limit' | 'remaining' | 'windowSeconds' | 'source' | 'unlimited'> & { checkedAt: number },
  from: RateLimitRow['from'],
  now: number,
): RateLimitRow {
  return {
    registry: reading.registry,
    limit: reading.limit ?? null,
    remaining: reading.remaining ?? null,
    windowSeconds: reading.windowSeconds ?? null,
    source: reading.source ?? null,
    unlimited: reading.unlimited,
    checkedAt: new Date(reading.checkedAt).toISOString(),
    ageSeconds: Math.max(0, Math.round((now - reading.checkedAt) / 1000)),
    from,
  }
}

/**
 * HEADs Docker Hub's probe manifest and returns the rate-limit reading its
 * answer carried, or the reason there is none.
 */
export async function probeDockerHub(opts: {
  upstreams?: UpstreamMap
  credentials?: CredentialSource
  timeoutMs?: number
  clock?: Clock
}): Promise<{ reading: RateLimitReading } | { error: string }> {
  const t = opts.timeoutMs ?? 5000
  const timeouts: UpstreamTimeouts = { connectMs: t, headersMs: t, bodyMs: t }
  // Loaded here, not at the top: with a daemon running the probe is its job, and the CLI starts faster without undici.
  const { Upstreams } = await import('../upstream/client.js')
  const upstreams = new Upstreams({
    overrides: opts.upstreams ?? {},
    timeouts,
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
  })
  let error: string | undefined
  try {
    await upstreams.get(DOCKER_HUB).headManifest(RATE_LIMIT_PROBE.repository, RATE_LIMIT_PROBE.tag, { probe: true })
  } catch (err) {
    error = err instanceof Error ? err.message : String(err)
  } finally {
    await upstreams.close()
  }
  // The headers count even on an error answer (a 404 still says how many pulls are left).
  const reading = upstreams.rateLimits.get(DOCKER_HUB)
  if (reading) return { reading }
  return { error: error ?? 'the answer carried no usable rate-limit headers' }
}

/** The daemon's answer to `?probe=1`, in probeDockerHub's shape. */
function daemonProbe(status: StatusReport): { reading: RateLimitReading } | { error: string } {
  const r = status.rateLimit.find((x) => x.registry === DOCKER_HUB)
  if (status.probe?.ok && r) return { reading: { ...r, checkedAt: Date.parse(r.checkedAt) } }
  return { error: status.probe && !status.probe.ok ? status.probe.error : 'the answer carried no usable rate-limit headers' }
}

export async function collectStatus(o: CollectStatusOptions): Promise<StatusSnapshot> {
  const clock = o.clock ?? systemClock
  const timeoutMs = o.timeoutMs ?? 5000
  const wantProbe = o.probe !== false
  // A running daemon probes as it pulls (its logins, its address); otherwise the CLI probes directly.
  const running = await findDaemon(o.cacheDir, { timeoutMs, probe: wantProbe })
  const probe = !wantProbe
    ? undefined
    : running?.status.probe !== undefined
      ? daemonProbe(running.status)
      : await probeDockerHub({
          timeoutMs,
          ...(o.upstreams ? { upstreams: o.upstreams } : {}),
          ...(o.credentials ? { credentials: o.credentials } : {}),
          clock,
        })
  const stats = running ? running.status.cache : await diskStats(o.cacheDir)
  const now = clock.now()

  const fromDaemon = new Map<string, RateLimitRow>()
  for (const r of running?.status.rateLimit ?? []) {
    fromDaemon.set(r.registry, rateLimitRow({ ...r, checkedAt: Date.parse(r.checkedAt) }, 'daemon', now))
  }
  let hub: RateLimitRow
  if (probe && 'reading' in probe) hub = rateLimitRow(probe.reading, 'probe', now)
  else {
    hub = fromDaemon.get(DOCKER_HUB) ?? {
      registry: DOCKER_HUB,
      limit: null,
      remaining: null,
      windowSeconds: null,
      source: null,
      unlimited: false,
      checkedAt: null,
      ageSeconds: null,
      from: 'none',
    }
    if (probe && 'error' in probe) hub = { ...hub, probeError: probe.error }
  }
  fromDaemon.delete(DOCKER_HUB)
  const rateLimit = [hub, ...[...fromDaemon.values()].sort((a, b) => a.registry.localeCompare(b.registry))]

  return {
    checkedAt: new Date(now).toISOString(),
    cacheDir: running?.status.cacheDir ?? o.cacheDir,
    daemon: daemonSection(running),
    cache: cacheSection(stats, running?.status),
    rateLimit,
    recentFailures: running?.status.recentFailures ?? [],
    refresh: running?.status.refresh ?? null,
    ...(running?.status.endpoints ? { endpoints: running.status.endpoints } : {}),
    ...(running?.status.clients ? { clients: running.status.clients } : {}),
    ...(running?.status.tls ? { tls: running.status.tls } : {}),
    ...(running?.status.trustCommand !== undefined ? { trustCommand: running.status.trustCommand } : {}),
    ...(running?.status.insecureLan !== undefined ? { insecureLan: running.status.insecureLan } : {}),
  }
}

/**
 * The health of one endpoint in words: `up`, `up (2 failures in a row)`, or
 * `down since T, next probe at T2` (its breaker is open; the last endpoint of
 * a chain is asked anyway and not probed).
 */
export function describeHealth(e: EndpointStatus): string {
  if (e.up) return e.failuresInRow ? `up (${e.failuresInRow} failure${e.failuresInRow === 1 ? '' : 's'} in a row)` : 'up'
  const since = `down since ${e.downSince ?? '?'}`
  if (e.last) return `${since} (still asked: it is the last)`
  return e.nextProbeAt !== undefined ? `${since}, next probe at ${e.nextProbeAt}` : since
}

/** Per registry, the endpoint that answered most recently (its `endpoint` label). */
export function servedLast(endpoints: readonly EndpointStatus[]): Map<string, string> {
  const latest = new Map<string, EndpointStatus>()
  for (const e of endpoints) {
    if (e.lastServedAt === undefined) continue
    const prev = latest.get(e.registry)
    if (!prev || Date.parse(e.lastServedAt) > Date.parse(prev.lastServedAt!)) latest.set(e.registry, e)
  }
  return new Map([...latest].map(([r, e]) => [r, e.endpoint]))
}

/** The registries with a chain (more than one endpoint); only those are listed by the views. */
export function chainedEndpoints(endpoints: readonly EndpointStatus[]): EndpointStatus[] {
  const chained = new Set(endpoints.filter((e) => e.position > 0).map((e) => e.registry))
  return endpoints.filter((e) => chained.has(e.registry))
}

/**
 * One endpoint without its registry: `1. URL (mirror): HEALTH, 12 requests,
 * last answered T [served last]; last error: ...`.
 */
export function describeEndpoint(e: EndpointStatus, last: ReadonlyMap<string, string>): string {
  const answered = e.lastServedAt !== undefined ? `, last answered ${e.lastServedAt}` : ''
  const mark = last.get(e.registry) === e.endpoint ? ' [served last]' : ''
  const why = e.lastError !== undefined ? `; last error: ${e.lastError}` : ''
  return `${e.position + 1}. ${e.endpoint} (${e.kind}${e.last ? ', last' : ''}): ${describeHealth(e)}, ${e.requests} request${e.requests === 1 ? '' : 's'}${answered}${mark}${why}`
}

/** One line per endpoint of every registry with a chain, for the text output. */
export function describeEndpoints(endpoints: readonly EndpointStatus[]): string[] {
  const shown = chainedEndpoints(endpoints)
  const last = servedLast(shown)
  const width = Math.max(0, ...shown.map((e) => e.registry.length))
  return shown.map((e) => {
    const who = e.position === 0 ? e.registry.padEnd(width) : ' '.repeat(width)
    return `${who}  ${describeEndpoint(e, last)}`
  })
}

// ---- small, terminal-free descriptions shared by the text output and the ink view

/** `6h` for 21600, `1h` for 3600, `90s` for 90; '' for null. */
export function formatWindow(seconds: number | null): string {
  if (seconds === null) return ''
  const units: Array<[string, number]> = [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
  ]
  for (const [unit, scale] of units) if (seconds >= scale && seconds % scale === 0) return `${seconds / scale}${unit}`
  return `${seconds}s`
}

/** A coarse age or uptime: `42s`, `5m`, `3h12m`, `2d4h`. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m`
  const [big, bigUnit, small, smallUnit] =
    s < 86_400 ? [Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'm'] : [Math.floor(s / 86_400), 'd', Math.floor((s % 86_400) / 3600), 'h']
  return small > 0 ? `${big}${bigUnit}${small}${smallUnit}` : `${big}${bigUnit}`
}

export type HeadroomLevel = 'ok' | 'low' | 'critical' | 'unlimited' | 'unknown'

/** How much of the rate limit is left: the fraction (0..1) and a level (ok above 50%, low above 20%, else critical). */
export function headroom(r: Pick<RateLimitRow, 'limit' | 'remaining' | 'unlimited'>): { fraction: number | null; level: HeadroomLevel } {
  if (r.unlimited) return { fraction: null, level: 'unlimited' }
  if (r.limit === null || r.remaining === null || r.limit <= 0) return { fraction: null, level: 'unknown' }
  const fraction = Math.min(1, Math.max(0, r.remaining / r.limit))
  return { fraction, level: fraction > 0.5 ? 'ok' : fraction > 0.2 ? 'low' : 'critical' }
}

/** `76/100 left per 6h`, `unlimited`, or `unknown`. */
export function describeLimit(r: RateLimitRow): string {
  if (r.unlimited) return 'unlimited'
  if (r.limit === null || r.remaining === null) return 'unknown'
  const window = formatWindow(r.windowSeconds)
  return `${r.remaining}/${r.limit} left${window ? ` per ${window}` : ''}`
}

/** Where a reading comes from and how old it is: `checked 3s ago`, `daemon's last reading, 5m old; probe failed: ...`. */
export function describeReading(r: RateLimitRow): string {
  const parts: string[] = []
  if (r.source !== null) parts.push(`source ${r.source}`)
  if (r.ageSeconds !== null) parts.push(r.from === 'daemon' ? `daemon's last reading, ${formatAge(r.ageSeconds)} old` : `checked ${formatAge(r.ageSeconds)} ago`)
  if (r.probeError !== undefined) parts.push(`probe failed: ${r.probeError}`)
  return parts.join('; ')
}

/**
 * Recent failures as lines: the image, how often, then the latest few
 * (`  GET /v2/library/nope/manifests/1 -> 404 MANIFEST_UNKNOWN: ...`).
 */
export function describeFailures(list: ImageFailures[], perImage = 3): string[] {
  const out: string[] = []
  for (const image of list) {
    out.push(`${image.image}: ${image.count} failed request${image.count === 1 ? '' : 's'}`)
    for (const f of image.failures.slice(0, perImage)) out.push(`  ${f.at}  ${f.request} -> ${f.status} ${f.code}: ${f.message}`)
  }
  return out
}
