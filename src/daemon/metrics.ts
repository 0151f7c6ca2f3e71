// `/metrics` in the Prometheus text format. prom-client adds about 14 MB to
// the daemon's RSS once loaded, so it is imported on the first scrape only: a
// daemon nobody scrapes never pays for it. Until then (and after) the facts
// are kept here in plain maps, fed by the event seam (events.ts): requests by
// route, method and status with their latency, cache results, upstream
// requests by registry, kind and status with their latency. What the daemon
// counts elsewhere already (proxy counters, upstream GETs, the rate-limit
// book, the store's size and health, downloads in flight) is read at scrape
// time through `MetricsSources`, never counted twice. prom-client's Registry
// formats it all; its metrics' collect() copies the numbers in.
//
// Requests that authenticated are also counted per user (the built-in
// `dproxy` or a token's name): tokens are created by the admin, so that label
// is as bounded as the admin makes it (and MAX_SERIES caps it anyway).
//
// Labels whose values a client or upstream chooses are bounded: a registry
// label takes the first MAX_REGISTRIES names, later ones are `other`, and a
// family keeps at most MAX_SERIES label sets.

import type { IncomingMessage, ServerResponse } from 'node:http'
import { DproxyError } from '../errors.js'
import { diskSpace } from '../fs.js'
import type { Logger } from '../log.js'
import { isLoopbackHost } from '../net.js'
import { sendError } from '../registry/errors.js'
import type { Counters } from '../proxy/counters.js'
import type { DownloadProgress } from '../proxy/blobs.js'
import type { CacheStats } from '../store/store.js'
import type { EndpointStatus, UpstreamCall, UpstreamCounters } from '../upstream/client.js'
import type { RateLimitReading } from '../upstream/ratelimit.js'
import type { DaemonEvents, RequestRecord } from './events.js'
import { checkHost, checkOrigin } from './guard.js'

const MAX_SERIES = 2000
const MAX_REGISTRIES = 32
/** Walking the cache for its size costs a directory scan: a scrape every second reuses the last one this long. */
const STATS_TTL_MS = 10_000
const REQUEST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
const UPSTREAM_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

export interface MetricsSources {
  counters: Readonly<Counters>
  upstreamCounters: Readonly<UpstreamCounters>
  rateLimits(): RateLimitReading[]
  /** The endpoints of the configured registries (a bounded set: the user wrote them), with health and requests. */
  endpoints?(): EndpointStatus[]
  downloads(): DownloadProgress[]
  stats(): Promise<CacheStats>
  /** Whether the cache takes writes now (store/health.ts). */
  writable(): boolean
  /** Images and bytes evicted since the start (maintenance.ts). */
  evicted(): { images: number; bytes: number }
  cacheDir: string
  now(): number
}

type Labels = Record<string, string>

/** A counter family: label set -> value. */
class Series {
  readonly values = new Map<string, { labels: Labels; value: number }>()

  add(labels: Labels, by = 1): void {
    let key = JSON.stringify(labels)
    if (!this.values.has(key) && this.values.size >= MAX_SERIES) {
      labels = Object.fromEntries(Object.keys(labels).map((k) => [k, 'other']))
      key = JSON.stringify(labels)
    }
    const entry = this.values.get(key)
    if (entry) entry.value += by
    else this.values.set(key, { labels, value: by })
  }
}

/** A histogram family: label set -> bucket counts (not cumulative), sum, count. */
class Buckets {
  readonly values = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>()

  constructor(readonly bounds: number[]) {}

  observe(labels: Labels, value: number): void {
    const key = JSON.stringify(labels)
    let entry = this.values.get(key)
    if (!entry) {
      if (this.values.size >= MAX_SERIES) return
      entry = { labels, counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0, count: 0 }
      this.values.set(key, entry)
    }
    const i = this.bounds.findIndex((b) => value <= b)
    entry.counts[i < 0 ? this.bounds.length : i]!++
    entry.sum += value
    entry.count++
  }
}

export class Metrics {
  private readonly requests = new Series()
  private readonly userRequests = new Series()
  private readonly requestSeconds = new Buckets(REQUEST_BUCKETS)
  private readonly cacheResults = new Series()
  private readonly upstream = new Series()
  private readonly upstreamSeconds = new Buckets(UPSTREAM_BUCKETS)
  private readonly registries = new Set<string>()
  private registry: Promise<{ metrics(): Promise<string>; contentType: string }> | undefined
  private stats: { at: number; value: Promise<CacheStats> } | undefined

  constructor(
    events: DaemonEvents,
    private readonly sources: MetricsSources,
  ) {
    events.on('request', (r) => this.request(r))
    events.on('upstream', (c) => this.upstreamCall(c))
  }

  private request(r: RequestRecord): void {
    const method = r.method === 'GET' || r.method === 'HEAD' ? r.method : 'other'
    this.requests.add({ route: r.route, method, status: statusLabel(r.status) })
    this.requestSeconds.observe({ route: r.route }, r.durationMs / 1000)
    if (r.user !== undefined) this.userRequests.add({ user: r.user, route: r.route, status: statusLabel(r.status) })
    if (r.cache !== undefined && (r.route === 'manifest' || r.route === 'blob')) {
      this.cacheResults.add({ kind: r.route, result: r.cache })
    }
  }

  private upstreamCall(c: UpstreamCall): void {
    const registry = this.registryLabel(c.registry)
    this.upstream.add({ registry, kind: c.kind, status: c.status === undefined ? 'error' : statusLabel(c.status) })
    this.upstreamSeconds.observe({ registry, kind: c.kind }, c.durationMs / 1000)
  }

  private registryLabel(name: string): string {
    if (this.registries.has(name)) return name
    if (this.registries.size >= MAX_REGISTRIES) return 'other'
    this.registries.add(name)
    return name
  }

  /** The exposition: loads prom-client on the first call. */
  async render(): Promise<{ contentType: string; body: string }> {
    this.registry ??= this.build()
    const registry = await this.registry
    return { contentType: registry.contentType, body: await registry.metrics() }
  }

  private cacheStats(): Promise<CacheStats> {
    const now = this.sources.now()
    if (!this.stats || now - this.stats.at > STATS_TTL_MS) {
      const value = this.sources.stats()
      // A failed walk is not kept: the next scrape tries again.
      value.catch(() => (this.stats = undefined))
      this.stats = { at: now, value }
    }
    return this.stats.value
  }

  private async build(): Promise<{ metrics(): Promise<string>; contentType: string }> {
    const prom = await import('prom-client')
    const registers = [new prom.Registry()]
    const src = this.sources
    const counterFrom = (name: string, help: string, labelNames: string[], series: () => Iterable<{ labels: Labels; value: number }>) =>
      new prom.Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset()
          for (const { labels, value } of series()) this.inc(labels, value)
        },
      })
    const gaugeFrom = (name: string, help: string, labelNames: string[], series: () => Promise<Iterable<{ labels: Labels; value: number }>>) =>
      new prom.Gauge({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          this.reset()
          for (const { labels, value } of await series()) this.set(labels, value)
        },
      })
    // prom-client histograms only take single observations, and these are kept as bucket counts
    // above: this one reports the tally. The Registry formats what getForPromString returns (and
    // get(), for JSON, calls it too).
    class TallyHistogram extends prom.Histogram {
      constructor(
        private readonly metricName: string,
        private readonly helpText: string,
        labelNames: string[],
        private readonly tally: Buckets,
      ) {
        super({ name: metricName, help: helpText, labelNames, buckets: tally.bounds, registers })
      }

      async getForPromString() {
        const name = this.metricName
        const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = []
        for (const { labels, counts, sum, count } of this.tally.values.values()) {
          let cumulative = 0
          this.tally.bounds.forEach((le, i) => {
            cumulative += counts[i]!
            values.push({ labels: { ...labels, le }, value: cumulative, metricName: `${name}_bucket` })
          })
          values.push({ labels: { ...labels, le: '+Inf' }, value: count, metricName: `${name}_bucket` })
          values.push({ labels, value: sum, metricName: `${name}_sum` })
          values.push({ labels, value: count, metricName: `${name}_count` })
        }
        return { name, help: this.helpText, type: 'histogram' as const, aggregator: 'sum' as const, values }
      }
    }
    const one = (value: number) => [{ labels: {}, value }]

    counterFrom('dproxy_http_requests_total', 'Requests answered, by route, method and status.', ['route', 'method', 'status'], () =>
      this.requests.values.values(),
    )
    counterFrom('dproxy_client_requests_total', 'Authenticated requests by user (a token name), route and status.', ['user', 'route', 'status'], () =>
      this.userRequests.values.values(),
    )
    new TallyHistogram('dproxy_http_request_duration_seconds', 'Time from request to the end of the response, by route.', ['route'], this.requestSeconds)
    counterFrom('dproxy_cache_requests_total', 'Manifest and blob GETs by cache result (hit, miss, stale, joined).', ['kind', 'result'], () =>
      this.cacheResults.values.values(),
    )
    counterFrom('dproxy_cache_sent_bytes_total', 'Blob bytes sent to clients from the cache.', [], () => one(src.counters.bytesFromCache))
    counterFrom('dproxy_upstream_received_bytes_total', 'Blob bytes downloaded from upstream registries.', [], () =>
      one(src.counters.bytesFromUpstream),
    )
    counterFrom('dproxy_upstream_requests_total', 'Requests sent upstream, by registry, kind and status (error: no answer).', ['registry', 'kind', 'status'], () =>
      this.upstream.values.values(),
    )
    new TallyHistogram('dproxy_upstream_request_duration_seconds', 'Time until upstream response headers, by registry and kind.', ['registry', 'kind'], this.upstreamSeconds)
    counterFrom('dproxy_manifest_gets_spent_total', 'Manifest GETs sent upstream (counted against rate limits).', [], () =>
      one(src.upstreamCounters.manifestGets),
    )
    counterFrom('dproxy_manifest_gets_avoided_total', 'Tag pulls answered from cache after a HEAD showed no change.', [], () =>
      one(src.counters.manifestGetsAvoided),
    )
    const endpoints = () => src.endpoints?.() ?? []
    gaugeFrom('dproxy_upstream_up', '1 while an upstream endpoint is asked, 0 while its breaker is open and it is skipped.', ['registry', 'endpoint'], async () =>
      endpoints().map((e) => ({ labels: { registry: e.registry, endpoint: e.endpoint }, value: e.up ? 1 : 0 })),
    )
    counterFrom('dproxy_upstream_endpoint_requests_total', 'Requests sent to each configured upstream endpoint.', ['registry', 'endpoint'], () =>
      endpoints().map((e) => ({ labels: { registry: e.registry, endpoint: e.endpoint }, value: e.requests })),
    )
    const limits = async () => src.rateLimits().filter((r) => !r.unlimited)
    gaugeFrom('dproxy_rate_limit_limit', 'Pulls allowed per window, as the registry last said.', ['registry'], async () =>
      (await limits()).map((r) => ({ labels: { registry: this.registryLabel(r.registry) }, value: r.limit ?? 0 })),
    )
    gaugeFrom('dproxy_rate_limit_remaining', 'Pulls left in the window, as the registry last said.', ['registry'], async () =>
      (await limits()).map((r) => ({ labels: { registry: this.registryLabel(r.registry) }, value: r.remaining ?? 0 })),
    )
    gaugeFrom('dproxy_rate_limit_reading_age_seconds', 'Age of the last rate-limit reading.', ['registry'], async () =>
      (await limits()).map((r) => ({ labels: { registry: this.registryLabel(r.registry) }, value: (src.now() - r.checkedAt) / 1000 })),
    )
    gaugeFrom('dproxy_downloads_in_flight', 'Blob downloads from upstream in progress.', [], async () => one(src.downloads().length))
    gaugeFrom('dproxy_downloading_bytes', 'Bytes received so far by the downloads in progress.', [], async () =>
      one(src.downloads().reduce((n, d) => n + d.written, 0)),
    )
    gaugeFrom('dproxy_cache_size_bytes', 'Bytes of blobs and manifests in the cache.', [], async () => one((await this.cacheStats()).bytes))
    gaugeFrom('dproxy_cache_blobs', 'Blobs in the cache.', [], async () => one((await this.cacheStats()).blobs))
    gaugeFrom('dproxy_cache_manifests', 'Manifests in the cache.', [], async () => one((await this.cacheStats()).manifests))
    gaugeFrom('dproxy_cache_tags', 'Tags in the cache.', [], async () => one((await this.cacheStats()).tags))
    counterFrom('dproxy_cache_evictions_total', 'Images evicted by the size and age limits.', [], () => one(src.evicted().images))
    counterFrom('dproxy_cache_evicted_bytes_total', 'Bytes freed by evictions.', [], () => one(src.evicted().bytes))
    gaugeFrom('dproxy_disk_free_bytes', 'Bytes available to dproxy on the cache file system.', [], async () => {
      const space = await diskSpace(src.cacheDir)
      return space ? one(space.free) : []
    })
    gaugeFrom('dproxy_cache_writable', '1 while the cache takes writes, 0 while the disk refuses them.', [], async () => one(src.writable() ? 1 : 0))
    return registers[0]!
  }
}

export interface MetricsAccess {
  /**
   * On the daemon's own listeners: loopback clients only, under this
   * machine's names, like the admin endpoints. On the --metrics-address
   * listener the user chose who may reach it: false.
   */
  loopbackOnly: boolean
  listenHosts: readonly string[]
}

/** Answers GET /metrics. */
export async function serveMetrics(metrics: Metrics, req: IncomingMessage, res: ServerResponse, access: MetricsAccess, log: Logger): Promise<void> {
  const method = req.method ?? 'GET'
  try {
    if (access.loopbackOnly) {
      if (!isLoopbackHost(req.socket.remoteAddress ?? '')) {
        throw new DproxyError('DENIED', '/metrics answers loopback clients only (see --metrics-address)')
      }
      checkHost(req, { listenHosts: access.listenHosts })
    }
    // No web page reads the metrics, whichever listener it is.
    checkOrigin(req)
    if (method !== 'GET' && method !== 'HEAD') throw new DproxyError('UNSUPPORTED', `${method} /metrics`, { status: 405 })
    const { contentType, body } = await metrics.render()
    res.statusCode = 200
    res.setHeader('content-type', contentType)
    res.setHeader('content-length', Buffer.byteLength(body))
    res.end(method === 'HEAD' ? undefined : body)
  } catch (err) {
    sendError(res, err, log, method)
  }
}

/** Whether a request target is /metrics (any query is ignored). */
export function isMetricsPath(url: string): boolean {
  return url === '/metrics' || url.startsWith('/metrics?')
}

function statusLabel(status: number): string {
  return Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : 'other'
}
