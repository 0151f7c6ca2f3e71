// The daemon's own endpoints under /_dproxy/, for the CLI (`dproxy status`,
// `dproxy cache`: cache-endpoints.ts) and for humans with curl. They reveal paths and
// traffic numbers, so only loopback clients may use them, whatever address
// the daemon listens on; and since a web page in the user's browser is a
// loopback client too, guard.ts refuses foreign Host and Origin headers, and
// what changes state needs the admin token.

import type { IncomingMessage, ServerResponse } from 'node:http'
import { DproxyError, truncate } from '../errors.js'
import { sendError } from '../registry/errors.js'
import type { CacheStats } from '../store/store.js'
import { RATE_LIMIT_PROBE, type RateLimitReading } from '../upstream/ratelimit.js'
import type { UpstreamMap } from '../upstream/registries.js'
import { VERSION } from '../version.js'
import { cacheEndpoint, type CacheEndpointDeps } from './cache-endpoints.js'
import { importEndpoint, IMPORT_PATH, type ImportEndpointDeps } from './import-endpoint.js'
import { pullEndpoint } from './pull-endpoint.js'
import type { Refresher, RefreshStatus } from './refresh.js'
import type { FailureBook, ImageFailures } from './failures.js'
import { formatListen } from './lifecycle.js'
import type { TlsCertificates } from './tls.js'
import { trustCommand, type TlsStatus } from './tls-config.js'
import { isLoopbackHost } from '../net.js'
import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import type { Counters } from '../proxy/counters.js'
import type { ProbeRepository } from '../proxy/probe.js'
import type { WarmerDeps } from '../proxy/warm.js'
import type { Store } from '../store/store.js'
import type { EndpointStatus, Upstreams } from '../upstream/client.js'
import { checkAdminToken, checkHost, checkOrigin } from './guard.js'
import { DOCKER_HUB } from '../oci/registry-host.js'
import { serveEvents, snapshotCounters } from './event-stream.js'
import type { DaemonEvents } from './events.js'

export interface StatusReport {
  version: string
  pid: number
  startedAt: string
  uptimeSeconds: number
  listen: string[]
  cacheDir: string
  cache: CacheStats
  /** Why the cache takes no writes now (disk full, read-only, permissions); absent while it does. */
  cacheNotWritable?: { reason: string; since: string }
  counters: {
    requests: number
    cacheHits: number
    cacheMisses: number
    bytesFromCache: number
    bytesFromUpstream: number
    upstreamManifestGets: number
    upstreamManifestHeads: number
    upstreamBlobGets: number
    manifestGetsAvoided: number
    staleServed: number
  }
  /** Per registry: the first endpoint's URL (`url`, as before chains) and every endpoint in the order asked. */
  upstreams: Array<{ registry: string; url: string; endpoints?: string[] }>
  /** Every endpoint of the configured registries (docker.io's always): health and requests. */
  endpoints?: EndpointStatus[]
  rateLimit: Array<Omit<RateLimitReading, 'checkedAt'> & { checkedAt: string }>
  /** The background refresh (serve --refresh); null when off. */
  refresh: RefreshStatus | null
  /** With `?probe=1`: whether the fresh rate-limit probe gave a reading. */
  probe?: { ok: true } | { ok: false; error: string }
  /** The errors recently sent to clients, per image, most recent first (failures.ts). */
  recentFailures: ImageFailures[]
  /** With client auth: each user (`dproxy`, then the tokens by name) and its last use (ISO), null when never. */
  clients?: Array<{ name: string; lastUsed: string | null }>
  /** What the registry listeners speak (tls.ts): mode off, or the certificate, and the last failed reload. */
  tls?: TlsStatus
  /** --tls auto beyond loopback: the command other machines run to trust this daemon. */
  trustCommand?: string
  /** --insecure-lan let a listener beyond loopback go without TLS or client auth. */
  insecureLan?: string
}

/** What a status report is made of: the daemon's parts, as buildStatus reads them. */
export interface StatusSources {
  startedAt: number
  clock: Clock
  listening: ReadonlyArray<{ host: string; port: number }>
  store: Pick<Store, 'root' | 'stats' | 'health'>
  counters: Counters
  upstreams: Pick<Upstreams, 'counters' | 'rateLimits' | 'chain' | 'endpoints'>
  options: { upstreams?: UpstreamMap | undefined }
  failures: Pick<FailureBook, 'recent'>
  refresher: Pick<Refresher, 'status'> | undefined
  clientAuth?: { usage(): Array<{ name: string; lastUsed: string | null }> } | undefined
  tls?: Pick<TlsCertificates, 'status' | 'caFingerprint'> | undefined
  insecureLanWarning?: string | undefined
}

export async function buildStatus(daemon: StatusSources): Promise<StatusReport> {
  const c = daemon.counters
  const u = daemon.upstreams.counters
  const overrides = daemon.options.upstreams ?? {}
  return {
    version: VERSION,
    pid: process.pid,
    startedAt: new Date(daemon.startedAt).toISOString(),
    uptimeSeconds: Math.round((daemon.clock.now() - daemon.startedAt) / 1000),
    listen: formatListen(daemon.listening),
    cacheDir: daemon.store.root,
    cache: await daemon.store.stats(),
    ...notWritable(daemon.store),
    counters: {
      requests: c.requests,
      cacheHits: c.cacheHits,
      cacheMisses: c.cacheMisses,
      bytesFromCache: c.bytesFromCache,
      bytesFromUpstream: c.bytesFromUpstream,
      upstreamManifestGets: u.manifestGets,
      upstreamManifestHeads: u.manifestHeads,
      upstreamBlobGets: u.blobGets,
      manifestGetsAvoided: c.manifestGetsAvoided,
      staleServed: c.staleServed,
    },
    upstreams: Object.keys({ 'docker.io': '', ...overrides }).map((registry) => {
      const chain = daemon.upstreams.chain(registry)
      return { registry, url: chain[0]!.base.origin, endpoints: chain.map((e) => e.label) }
    }),
    endpoints: daemon.upstreams.endpoints(),
    rateLimit: daemon.upstreams.rateLimits.all().map((r) => ({ ...r, checkedAt: new Date(r.checkedAt).toISOString() })),
    recentFailures: daemon.failures.recent(),
    refresh: daemon.refresher?.status() ?? null,
    ...(daemon.clientAuth ? { clients: daemon.clientAuth.usage() } : {}),
    ...tlsStatus(daemon),
  }
}

function tlsStatus(daemon: StatusSources): Pick<StatusReport, 'tls' | 'trustCommand' | 'insecureLan'> {
  const ca = daemon.tls?.caFingerprint
  const trust = ca !== undefined ? trustCommand(daemon.listening, ca) : undefined
  return {
    tls: daemon.tls?.status() ?? { mode: 'off' },
    ...(trust !== undefined ? { trustCommand: trust } : {}),
    ...(daemon.insecureLanWarning !== undefined ? { insecureLan: daemon.insecureLanWarning } : {}),
  }
}

function notWritable(store: Pick<Store, 'health'>): Pick<StatusReport, 'cacheNotWritable'> {
  const failure = store.health.failure
  return failure ? { cacheNotWritable: { reason: failure.reason, since: new Date(failure.since).toISOString() } } : {}
}

/**
 * HEADs Docker Hub's rate-limit probe as the daemon pulls (its logins, its
 * address), so `dproxy status` shows the headroom of the pulls it makes.
 * The reading lands in the rate-limit book like any other.
 */
async function probeRateLimit(upstreams: AdminDeps['upstreams']): Promise<NonNullable<StatusReport['probe']>> {
  const before = upstreams.rateLimits.get(DOCKER_HUB)
  try {
    await upstreams.get(DOCKER_HUB).headManifest(RATE_LIMIT_PROBE.repository, RATE_LIMIT_PROBE.tag, { probe: true })
    return { ok: true }
  } catch (err) {
    // A 404 or 401 still carries the headers: a new reading says what is left.
    const after = upstreams.rateLimits.get(DOCKER_HUB)
    return after !== undefined && after !== before ? { ok: true } : { ok: false, error: (err as Error).message }
  }
}

/**
 * What the admin endpoints use of the daemon: a narrow view, so that this
 * module does not import the composition root that imports it.
 */
export interface AdminDeps extends CacheEndpointDeps, WarmerDeps {
  store: Store
  options: CacheEndpointDeps['options'] & ImportEndpointDeps['options'] & { hosts?: string[] | undefined }
  /** Read per request: the daemon replaces it once its token file is read. */
  readonly adminToken: string
  probe: Pick<ProbeRepository, 'seen'>
  log: Logger
  status(): Promise<StatusReport>
  /** For the event stream (/_dproxy/events). */
  events: DaemonEvents
  clock: Clock
  counters: Counters
  failures: Pick<FailureBook, 'recent'>
}

export function adminHandler(deps: AdminDeps) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET'
    try {
      if (!isLoopbackHost(req.socket.remoteAddress ?? '')) {
        throw new DproxyError('DENIED', 'the admin endpoints answer loopback clients only')
      }
      checkHost(req, { listenHosts: deps.options.hosts ?? [] })
      checkOrigin(req)
      if (method !== 'GET' && method !== 'HEAD') checkAdminToken(req, deps.adminToken)
      const url = new URL(req.url ?? '/', 'http://dproxy.invalid')
      const path = url.pathname
      const json = (value: unknown) => {
        const body = JSON.stringify(value, null, 2) + '\n'
        res.statusCode = 200
        res.setHeader('content-type', 'application/json; charset=utf-8')
        res.setHeader('content-length', Buffer.byteLength(body))
        res.end(method === 'HEAD' ? undefined : body)
      }
      if (path === '/_dproxy/status') {
        if (method !== 'GET' && method !== 'HEAD') throw new DproxyError('UNSUPPORTED', `${method} ${path}`, { status: 405 })
        const probe = url.searchParams.get('probe') === '1' ? await probeRateLimit(deps.upstreams) : undefined
        json({ ...(await deps.status()), ...(probe ? { probe } : {}) })
        return
      }
      // `dproxy doctor`: did the probe nonce arrive, and how (proxy/probe.ts).
      const nonce = /^\/_dproxy\/probe\/([A-Za-z0-9_][A-Za-z0-9._-]{0,127})$/.exec(path)?.[1]
      if (nonce !== undefined && (method === 'GET' || method === 'HEAD')) {
        json({ nonce, hits: deps.probe.seen(nonce) ?? [] })
        return
      }
      if (path === '/_dproxy/events' && method === 'GET') {
        serveEvents(
          {
            events: deps.events,
            snapshot: () => ({
              at: new Date(deps.clock.now()).toISOString(),
              downloads: deps.blobs.downloads(),
              counters: snapshotCounters(deps.counters, deps.upstreams.counters),
              rateLimit: deps.upstreams.rateLimits.all(),
              recentFailures: deps.failures.recent(),
              endpoints: deps.upstreams.endpoints(),
            }),
          },
          res,
        )
        return
      }
      if (path === '/_dproxy/pull') {
        await pullEndpoint(deps, req, res)
        return
      }
      if (path === IMPORT_PATH) {
        json(await importEndpoint(deps, req, res))
        return
      }
      if (path.startsWith('/_dproxy/cache')) {
        const answer = await cacheEndpoint(deps, method, req.url ?? '/')
        if (answer !== undefined) {
          json(answer)
          return
        }
      }
      throw new DproxyError('NAME_UNKNOWN', `no such admin endpoint: ${truncate(path)}`, { status: 404 })
    } catch (err) {
      sendError(res, err, deps.log, method)
    }
  }
}
