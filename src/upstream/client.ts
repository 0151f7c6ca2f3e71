// The HTTP client for upstream registries, built on undici. One UpstreamClient
// per registry host asks that registry's endpoints in order (registries.ts
// says which and how to speak to each): an EndpointClient per endpoint holds
// its own token auth and credentials; all of them share the connection pools
// and one rate-limit book, in which every endpoint has its own reading. It
// speaks only the few pull-side calls the proxy needs and turns every failure
// into a DproxyError that says whether the upstream is down (the proxy may
// serve stale content) or answered "no".
//
// Falling through a chain (README "Use your team's cache" and dproxy-serve(1)
// say the same):
// - no answer (refused, reset, DNS, TLS, connect or header timeout), a 5xx, a
//   429, an HTML page where JSON (or, from an endpoint that is not the last,
//   a blob) was expected, an unusable answer: the next endpoint;
// - 404 (MANIFEST_UNKNOWN, NAME_UNKNOWN, BLOB_UNKNOWN) from an endpoint that
//   is not the last: the next (a team cache may not carry that repository);
//   from the last it is the answer;
// - 401/403 after the endpoint's own token dance: the next, the reason kept;
// - blob bytes that fail their digest (or a body an endpoint that is not the
//   last breaks off): the endpoint is not asked for that digest again (while
//   another one is left); proxy/blobs.ts asks the next within the request of a
//   client that has had no byte yet, and cuts one that has (its retry goes on);
// - the last endpoint's error is the answer when every endpoint failed, with
//   the others' reasons in its message, so serve-stale applies only then.
// An endpoint that is not the last has a breaker (health.ts): while open it is
// skipped at no cost, and a background probe closes it. It also has shorter
// time limits (connect 2 s, first response byte 10 s, settable); the last
// endpoint keeps the usual ones.
//
// Things registries get wrong, handled here once:
// - every request carries a User-Agent (Hub's CDN front answers bare requests
//   with an HTML challenge page) and manifest requests carry all four manifest
//   media types, HEAD and GET alike, so digests compare and multi-arch indexes
//   are never down-converted to one platform;
// - blob GETs are redirected to a CDN; redirects are followed by hand without
//   the Authorization header;
// - an HTML page where JSON was expected is an outage, not content;
// - error bodies are read up to a cap, and URLs in messages lose their query
//   (signed CDN URLs carry secrets there).
//
// Every request, whether an API call, a redirect or a token realm, passes the
// address policy (policy.ts) in send() with the reach it is given: a
// configured upstream's own origin any address, what it names elsewhere the
// reach of the upstream itself (classify()), everything of a registry the
// user did not configure public addresses only. Requests of reach `public` go
// through a dispatcher whose connections only reach public addresses; every
// socket of either dispatcher is refused once connected when it reached one of
// dproxy's own listeners.

import type { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { LRUCache } from 'lru-cache'
import type { Dispatcher } from 'undici'
import { systemClock, type Clock } from '../clock.js'
import { DproxyError, isDproxyError, type ErrorCode } from '../errors.js'
import { USER_AGENT } from '../version.js'
import { anonymous, TokenAuth, type CredentialSource } from './auth.js'
import { discard, headerValue, readCapped } from './http.js'
import { AddressPolicy, type AddressPolicyOptions, type Reach } from './policy.js'
import { DEFAULT_RETRY_AFTER_MS, RateLimitBook, retryAfterMs } from './ratelimit.js'
import { Breaker, type HealthSnapshot, type Outcome } from './health.js'
import { upstreamChain, type EndpointKind, type EndpointSpec, type UpstreamMap } from './registries.js'
import { missingMessage, refusedMessage } from './refusal.js'
import { MANIFEST_SIZE_LIMIT } from '../oci/manifest.js'
import { MANIFEST_MEDIA_TYPES } from '../oci/media-types.js'

const MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(', ')
const ERROR_BODY_CAP = 16 * 1024
const MAX_REDIRECTS = 5
/**
 * A 429 on a manifest GET whose Retry-After is at most this long is waited
 * out and the GET sent once more; after a longer one the client is answered
 * at once, and no counted GET goes to that registry before the time it named.
 */
export const SHORT_RETRY_AFTER_MS = 3000
/** Per-registry clients kept (each holds its tokens); a client names registries freely. */
const MAX_CLIENTS = 256

// undici adds about 20 MB to the daemon's RSS once loaded; a daemon that only
// serves its cache, or has not pulled yet, never pays for it.
let undici: Promise<typeof import('undici')> | undefined
const loadUndici = () => (undici ??= import('undici'))

export interface ManifestInfo {
  digest: string | undefined
  mediaType: string
  size: number | undefined
  /**
   * Answered by the registry's origin, which charges pulls (false: a team
   * endpoint in front of it answered, which charges nothing).
   */
  charged?: boolean
}

export interface ManifestBody extends ManifestInfo {
  bytes: Buffer
  answer?: UpstreamAnswer
}

/** Which upstream endpoint answered a fetch, and with what status (the access log names them on a miss). */
export interface UpstreamAnswer {
  /** The configured endpoint asked (not where a redirect led). */
  endpoint: string
  status: number
  /** The registry's origin answered (it charges pulls); false for a team endpoint before it. */
  charged: boolean
}

export interface BlobBody {
  /** Content-Length, when upstream sent one. */
  size: number | undefined
  /** Consume with `for await`; failures mid-body are raw undici errors (see upstreamError). */
  body: Readable
  /** Where the bytes come from, redacted, for messages. */
  url: string
  answer?: UpstreamAnswer
  /**
   * The bytes failed their digest (or broke off, from a chained endpoint): the
   * endpoint that sent them is not asked for this blob again for a while.
   * True when another endpoint is left to ask.
   */
  rejected?: () => boolean
  /** From an endpoint with another behind it (a body it breaks off marks it bad for the digest, as wrong bytes do). */
  chained?: boolean
}

export interface TagPage {
  tags: string[]
  /** Query (`n`, `last`) of the next page, when there is one. */
  next?: URLSearchParams
}

export interface UpstreamTimeouts {
  connectMs: number
  headersMs: number
  bodyMs: number
}

/** The limits of an endpoint that has another behind it: a dead or hung team cache costs at most these. */
export interface ChainTimeouts {
  /** Default 2 s. */
  connectMs: number
  /** Until the first byte of the response (its headers); default 10 s: a cold team cache may itself be fetching. */
  firstByteMs: number
}

export const DEFAULT_CHAIN_TIMEOUTS: ChainTimeouts = { connectMs: 2000, firstByteMs: 10_000 }
/** The limit of the breaker's probe (GET /v2/); `dproxy doctor` asks an endpoint with another behind it within it too. */
export const PROBE_TIMEOUT_MS = 2000

export interface UpstreamsOptions {
  /** registry host -> one URL or the endpoint list, from --upstream / DPROXY_UPSTREAMS / config (registries.ts). */
  overrides?: UpstreamMap
  /** No origin implied after these registries' lists (true: any list); config `noOrigin`, `--no-origin`. */
  noOrigin?: boolean | readonly string[]
  /**
   * Where a registry's origin is, instead of its real API origin: tests put
   * a fixture there, so a chain ends at "Docker Hub" without leaving the machine.
   */
  origins?: Readonly<Record<string, string>>
  credentials?: CredentialSource
  clock?: Clock
  timeouts?: Partial<UpstreamTimeouts>
  /** The limits of endpoints that are not the last of their chain. */
  chainTimeouts?: Partial<ChainTimeouts>
  /** Resolver, address classifier and dproxy's own listeners, for the address policy (policy.ts). */
  policy?: AddressPolicyOptions
  /**
   * Registries the user configured: the endpoints they named are contacted
   * wherever they are, and what those name elsewhere gets their
   * classification. Default: every registry in `overrides`. Tests pass [] to
   * see a fixture treated like a registry a client named.
   */
  trusted?: readonly string[]
  /**
   * Whether what a configured upstream at `base` names (redirects, realms on
   * another origin) may reach internal addresses. Default: the policy's
   * classify(), from the addresses its host resolves to. Tests pass 'public'
   * to see a fixture on loopback judged as a registry on the internet.
   */
  classify?: (base: URL) => Reach | Promise<Reach>
  /** When set, the only registries clients may use (admit()); the daemon sets it when reachable from other machines. */
  allowRegistries?: readonly string[]
  /** Told about every request sent upstream once its answer (or failure) arrived: metrics, the live view. */
  observe?: UpstreamObserver
  /** Told when an endpoint's breaker opens or closes (the daemon logs it). */
  onHealth?: (endpoint: EndpointStatus) => void
}

/** What an upstream request was for: the API call it made, or a hop of one. */
export type UpstreamKind = 'ping' | 'token' | 'manifest_head' | 'manifest_get' | 'blob' | 'tags'

export interface UpstreamCall {
  registry: string
  /** The configured endpoint asked (its label, registries.ts). */
  endpoint: string
  kind: UpstreamKind
  method: string
  /** The answer's status; undefined when none came (refused, reset, timed out). */
  status: number | undefined
  /** Until the response headers arrived. */
  durationMs: number
}

export type UpstreamObserver = (call: UpstreamCall) => void

/**
 * Counts of what went upstream, for the status endpoint and tests. Manifest
 * GETs and HEADs count what a registry's origin charges (an endpoint in front
 * of it charges nothing); per-endpoint requests are in Upstreams.endpoints().
 */
export interface UpstreamCounters {
  manifestGets: number
  manifestHeads: number
  blobGets: number
}

/** One endpoint of one registry as the status shows it. */
export interface EndpointStatus extends HealthSnapshot {
  registry: string
  endpoint: string
  kind: EndpointKind
  /** Its position in the chain, from 0; the last one is asked whatever its health. */
  position: number
  last: boolean
  /** Requests sent to it (each hop of each call). */
  requests: number
  /** ISO time it last answered a request of the chain (probes do not count); absent until it has. */
  lastServedAt?: string
}

export class Upstreams {
  readonly rateLimits: RateLimitBook
  readonly counters: UpstreamCounters = { manifestGets: 0, manifestHeads: 0, blobGets: 0 }
  private readonly clients = new LRUCache<string, UpstreamClient>({ max: MAX_CLIENTS })
  /** Dispatchers made on first use, per reach and tier: `public` connects only to addresses the policy's lookup allows. */
  private readonly agents = new Map<string, Promise<Dispatcher>>()
  private readonly policy: AddressPolicy
  private readonly classify: (base: URL) => Reach | Promise<Reach>
  private readonly trusted: ReadonlySet<string>
  private readonly allowed: ReadonlySet<string> | undefined
  private readonly overrides: UpstreamMap
  private readonly noOrigin: boolean | readonly string[]
  private readonly origins: Readonly<Record<string, string>>
  private readonly credentials: CredentialSource
  private readonly clock: Clock
  private readonly observe: UpstreamObserver | undefined
  private readonly onHealth: ((endpoint: EndpointStatus) => void) | undefined
  private readonly timeouts: UpstreamTimeouts
  private readonly chainTimeouts: ChainTimeouts
  /** Chains of configured registries are kept for good (their health is reported); others live in `clients`. */
  private readonly configured = new Map<string, UpstreamClient>()
  private closed = false

  constructor(options: UpstreamsOptions = {}) {
    this.timeouts = { connectMs: 10_000, headersMs: 30_000, bodyMs: 60_000, ...options.timeouts }
    this.chainTimeouts = { ...DEFAULT_CHAIN_TIMEOUTS, ...options.chainTimeouts }
    const policy = (this.policy = new AddressPolicy(options.policy))
    this.classify = options.classify ?? ((base) => policy.classify(base))
    this.overrides = options.overrides ?? {}
    this.noOrigin = options.noOrigin ?? false
    this.origins = options.origins ?? {}
    this.trusted = new Set(options.trusted ?? [...Object.keys(this.overrides), ...Object.keys(this.origins)])
    this.allowed = options.allowRegistries ? new Set(options.allowRegistries) : undefined
    this.credentials = options.credentials ?? anonymous
    this.clock = options.clock ?? systemClock
    this.rateLimits = new RateLimitBook(this.clock)
    this.observe = options.observe
    this.onHealth = options.onHealth
  }

  /** The dispatcher for `reach`; `chained` ones (an endpoint with another behind it) have the chain's limits. */
  private dispatcher(reach: Reach, chained: boolean): Promise<Dispatcher> {
    const key = `${reach}:${chained ? 'chained' : 'last'}`
    let agent = this.agents.get(key)
    if (!agent) {
      const t = this.timeouts
      const connectMs = chained ? Math.min(t.connectMs, this.chainTimeouts.connectMs) : t.connectMs
      const headersMs = chained ? Math.min(t.headersMs, this.chainTimeouts.firstByteMs) : t.headersMs
      const policy = this.policy
      agent = loadUndici().then(({ Agent, buildConnector }) => {
        const base = buildConnector({ timeout: connectMs, lookup: reach === 'public' ? policy.lookup : policy.lookupAny })
        // Address and port are known together only once connected: a socket that reached dproxy itself goes no further.
        const connect: typeof base = (opts, callback) =>
          base(opts, (...args) => {
            const [err, socket] = args
            if (err !== null) return callback(err, null)
            try {
              policy.guard(socket, opts.hostname)
            } catch (refused) {
              socket.destroy()
              return callback(refused as Error, null)
            }
            callback(null, socket)
          })
        return new Agent({ connect, headersTimeout: headersMs, bodyTimeout: t.bodyMs })
      })
      this.agents.set(key, agent)
    }
    return agent
  }

  /**
   * Throws DENIED when clients may not use `registry`, cached or not: with an
   * allow-list (a daemon other machines can reach), every other registry.
   */
  admit(registry: string): void {
    if (this.allowed && !this.allowed.has(registry)) {
      throw new DproxyError('DENIED', `registry ${registry} is not in this dproxy's allowed registries (--allow-registry)`, {
        detail: { registry },
      })
    }
  }

  /** The endpoints of `registry` in the order they are asked. */
  chain(registry: string): EndpointSpec[] {
    const chain = upstreamChain(registry, this.overrides, this.noOrigin)
    const origin = this.origins[registry]
    if (origin === undefined) return chain
    // The test seam: the origin lives at the fixture (its own origin, with the registry's name and rate key).
    const at = new URL(origin)
    return chain.map((e) => (e.kind === 'origin' && e.configured === false ? { ...e, base: at, label: at.origin, configured: true } : e))
  }

  get(registry: string): UpstreamClient {
    let client = this.configured.get(registry) ?? this.clients.get(registry)
    if (!client) {
      const trusted = this.trusted.has(registry)
      const specs = this.chain(registry)
      const endpoints = specs.map(
        (spec, i) =>
          new EndpointClient(
            spec,
            i < specs.length - 1,
            (reach) => this.dispatcher(reach, i < specs.length - 1),
            { policy: this.policy, trusted: trusted && spec.configured, classify: this.classify },
            this.credentials,
            this.clock,
            this.rateLimits,
            this.counters,
            this.observe,
          ),
      )
      client = new UpstreamClient(registry, endpoints, this.clock, (e) => this.onHealth?.(e))
      if (registry in this.overrides || registry in this.origins) this.configured.set(registry, client)
      else this.clients.set(registry, client)
    }
    if (this.closed) client.stopProbes()
    return client
  }

  /**
   * For `dproxy login NAME`: proves the credentials at the endpoint whose
   * login NAME is. A configured chain's endpoint named by its host[:port]
   * (`cache.team.example`), else the origin of registry NAME.
   */
  async verifyLogin(name: string, scope?: string): Promise<{ scheme: 'bearer' | 'basic'; url: string }> {
    for (const registry of Object.keys(this.overrides)) {
      const endpoint = this.get(registry).endpointFor(name)
      if (endpoint) return { scheme: await endpoint.verifyCredentials(scope), url: endpoint.base.origin }
    }
    const client = this.get(name)
    return { scheme: await client.verifyCredentials(scope), url: client.origin.base.origin }
  }

  /** Every endpoint of the configured registries (docker.io's always), in chain order: the status and metrics. */
  endpoints(): EndpointStatus[] {
    const registries = [...new Set(['docker.io', ...Object.keys(this.overrides)])]
    return registries.flatMap((r) => this.get(r).status())
  }

  /** How many per-registry clients are kept (bounded). */
  get clientCount(): number {
    return this.clients.size
  }

  async close(): Promise<void> {
    this.closed = true
    for (const client of [...this.configured.values(), ...this.clients.values()]) client.stopProbes()
    for (const agent of this.agents.values()) await (await agent).close()
  }
}

/**
 * How an endpoint's failure counts for its health: no answer opens its
 * breaker at once, a 5xx or 429 after a few, any other answer is one.
 * Undefined when nothing was learnt (a 429 remembered, so nothing was sent;
 * an address refused before connecting).
 */
function outcomeOf(err: unknown): Outcome | undefined {
  if (!isDproxyError(err)) return 'down'
  const status = (err.detail as { upstreamStatus?: unknown } | undefined)?.upstreamStatus
  if (typeof status === 'number') return status >= 500 || status === 429 ? 'failing' : 'alive'
  if (err.code === 'UPSTREAM_UNAVAILABLE') return 'down'
  if (err.code === 'TOOMANYREQUESTS' || err.code === 'DENIED') return undefined
  return 'alive'
}

/** The wait a 429 named, from its error. */
function retryAfterOf(err: unknown): number | undefined {
  const s = isDproxyError(err) ? (err.detail as { retryAfterSeconds?: unknown } | undefined)?.retryAfterSeconds : undefined
  return typeof s === 'number' ? s * 1000 : undefined
}

const NOT_FOUND: ReadonlySet<string> = new Set(['MANIFEST_UNKNOWN', 'NAME_UNKNOWN', 'BLOB_UNKNOWN'])

/** How long bad blob bytes keep an endpoint from being asked for that digest again. */
const BAD_BLOB_MS = 3600_000

/**
 * A registry's client: its endpoints asked in order (see the rule at the top
 * of this file). With one endpoint it is that endpoint, as before chains.
 */
export class UpstreamClient {
  private readonly breakers: Breaker[]
  private readonly probing = new Set<number>()
  private readonly timers = new Set<NodeJS.Timeout>()
  /** digest -> endpoints whose bytes for it failed verification (never the last). */
  private readonly badBlobs: LRUCache<string, Set<number>>
  /** Per endpoint: when it last answered (ms since epoch), for the status's "served last". */
  private readonly servedAt: Array<number | undefined>
  private stopped = false

  constructor(
    readonly registry: string,
    private readonly endpoints: readonly EndpointClient[],
    private readonly clock: Clock,
    private readonly onHealth: (endpoint: EndpointStatus) => void,
  ) {
    this.breakers = endpoints.map(() => new Breaker(clock))
    this.servedAt = endpoints.map(() => undefined)
    this.badBlobs = new LRUCache({ max: 10_000, ttl: BAD_BLOB_MS, perf: { now: () => clock.now() }, ttlResolution: 0 })
  }

  /** The first endpoint's URL (scheme, host, port): what `dproxy login` and messages name. */
  get base(): URL {
    return this.endpoints[0]!.base
  }

  /** For `dproxy login REGISTRY`: proves the registry's origin (or its stand-in) accepts its credentials. */
  verifyCredentials(scope?: string): Promise<'bearer' | 'basic'> {
    return this.origin.verifyCredentials(scope)
  }

  /** The endpoint the registry's own login goes to: its origin, else (noOrigin) the last. */
  get origin(): EndpointClient {
    return this.endpoints.find((e) => e.spec.kind === 'origin') ?? this.endpoints[this.endpoints.length - 1]!
  }

  /** The endpoint whose login `name` is (its host[:port]), when it is not the registry's origin. */
  endpointFor(name: string): EndpointClient | undefined {
    return this.endpoints.find((e) => e.spec.kind !== 'origin' && e.spec.credentialKey === name)
  }

  /** `probe`: the rate-limit probe (`dproxy status`) goes to the origin alone: its headroom is what is shown. */
  async headManifest(repository: string, reference: string, opts: { probe?: boolean } = {}): Promise<ManifestInfo> {
    if (opts.probe === true) return this.origin.headManifest(repository, reference, opts)
    return this.fallThrough(`HEAD manifest ${repository}:${reference}`, (e) => e.headManifest(repository, reference))
  }

  getManifest(repository: string, reference: string): Promise<ManifestBody> {
    return this.fallThrough(`GET manifest ${repository}:${reference}`, (e) => e.getManifest(repository, reference))
  }

  /**
   * Starts a blob download from the first endpoint that answers and is not
   * known to have sent wrong bytes for it; `rejected` on the body marks its
   * endpoint so, and says whether another one is left to ask.
   */
  getBlob(repository: string, digest: string): Promise<BlobBody> {
    const bad = this.badBlobs.get(digest)
    return this.fallThrough(
      `GET blob ${digest}`,
      async (e, i) => {
        const body = await e.getBlob(repository, digest)
        return { ...body, chained: i < this.endpoints.length - 1, rejected: () => this.rejectBlob(digest, i) }
      },
      (i) => bad?.has(i) === true,
    )
  }

  headBlob(repository: string, digest: string): Promise<{ size: number | undefined }> {
    const bad = this.badBlobs.get(digest)
    return this.fallThrough(`HEAD blob ${digest}`, (e) => e.headBlob(repository, digest), (i) => bad?.has(i) === true)
  }

  listTags(repository: string, query: URLSearchParams): Promise<TagPage> {
    return this.fallThrough(`GET tags of ${repository}`, (e) => e.listTags(repository, query))
  }

  /** Each endpoint on its own, in chain order (`dproxy doctor` asks every one, with no fall-through). */
  members(): readonly EndpointClient[] {
    return this.endpoints
  }

  /** The endpoints as the status shows them. */
  status(): EndpointStatus[] {
    return this.endpoints.map((e, i) => this.statusOf(i))
  }

  stopProbes(): void {
    this.stopped = true
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
  }

  private statusOf(i: number): EndpointStatus {
    const e = this.endpoints[i]!
    return {
      registry: this.registry,
      endpoint: e.spec.label,
      kind: e.spec.kind,
      position: i,
      last: i === this.endpoints.length - 1,
      requests: e.requests,
      ...this.breakers[i]!.snapshot(),
      ...(this.servedAt[i] !== undefined ? { lastServedAt: new Date(this.servedAt[i]!).toISOString() } : {}),
    }
  }

  private rejectBlob(digest: string, i: number): boolean {
    if (i === this.endpoints.length - 1) return false
    const bad = this.badBlobs.get(digest) ?? new Set<number>()
    bad.add(i)
    this.badBlobs.set(digest, bad)
    return true
  }

  /**
   * Asks each endpoint in turn until one answers; `skip` passes over an
   * endpoint that is not the last. The last endpoint's error is thrown, naming
   * what the others said.
   */
  private async fallThrough<T>(what: string, ask: (e: EndpointClient, i: number) => Promise<T>, skip?: (i: number) => boolean): Promise<T> {
    const reasons: string[] = []
    const lastIndex = this.endpoints.length - 1
    for (let i = 0; i <= lastIndex; i++) {
      const e = this.endpoints[i]!
      const breaker = this.breakers[i]!
      const last = i === lastIndex
      if (!last && !breaker.up) {
        reasons.push(`${e.spec.label} skipped: down since ${breaker.snapshot().downSince} (${breaker.snapshot().lastError ?? 'no answer'})`)
        continue
      }
      if (!last && skip?.(i) === true) {
        reasons.push(`${e.spec.label} skipped: it sent wrong bytes for this`)
        continue
      }
      try {
        const answer = await ask(e, i)
        this.servedAt[i] = this.clock.now()
        this.record(i, 'alive')
        return answer
      } catch (err) {
        if (!isDproxyError(err)) throw err
        const outcome = outcomeOf(err)
        if (outcome !== undefined) this.record(i, outcome, err.message, retryAfterOf(err))
        // A refusal after the endpoint's own auth dance is an answer, not an outage: kept for status and doctor.
        if (err.code === 'UNAUTHORIZED' || err.code === 'DENIED') this.breakers[i]!.note(err.message)
        if (last) throw reasons.length === 0 ? err : withReasons(err, reasons)
        reasons.push(NOT_FOUND.has(err.code) ? `${e.spec.label}: not found (${err.message})` : err.message)
      }
    }
    throw new DproxyError('INTERNAL', `${what}: ${this.registry} has no endpoint`)
  }

  private record(i: number, outcome: Outcome, reason?: string, retryAfterMs?: number): void {
    const breaker = this.breakers[i]!
    const wasUp = breaker.up
    breaker.record(outcome, reason, retryAfterMs)
    if (wasUp !== breaker.up) this.onHealth(this.statusOf(i))
    // Only an endpoint with another behind it is skipped, so only it is probed back.
    if (!breaker.up && i < this.endpoints.length - 1) this.scheduleProbe(i)
  }

  /** Probes endpoint `i` when its breaker says so, in the background, until it is up again. */
  private scheduleProbe(i: number): void {
    if (this.stopped || this.probing.has(i)) return
    this.probing.add(i)
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      void this.probe(i)
    }, this.breakers[i]!.msToProbe())
    timer.unref()
    this.timers.add(timer)
  }

  private async probe(i: number): Promise<void> {
    const breaker = this.breakers[i]!
    try {
      // The timer is real time; whether a probe is due is the clock's (tests hold it still).
      if (this.stopped || breaker.up || !breaker.probeDue()) return
      const { outcome, reason, retryAfterMs } = await this.endpoints[i]!.ping(PROBE_TIMEOUT_MS)
      const wasUp = breaker.up
      breaker.record(outcome, reason, retryAfterMs)
      if (wasUp !== breaker.up) this.onHealth(this.statusOf(i))
    } finally {
      this.probing.delete(i)
      if (!breaker.up) this.scheduleProbe(i)
    }
  }
}

/** `err` again, its message naming what the endpoints before the last said (the reason is kept for the user). */
function withReasons(err: DproxyError, reasons: string[]): DproxyError {
  const detail = err.detail !== null && typeof err.detail === 'object' ? err.detail : {}
  return new DproxyError(err.code, `${err.message} (before it: ${reasons.join('; ')})`, {
    status: err.status,
    detail: { ...detail, endpoints: reasons },
    cause: err,
  })
}

type Kind = 'manifest' | 'blob' | 'tags'

interface Access {
  policy: AddressPolicy
  /** Configured by the user (see UpstreamsOptions.trusted). */
  trusted: boolean
  classify: (base: URL) => Reach | Promise<Reach>
}

/** One endpoint of a registry's chain: its own token auth, credentials, rate-limit reading and time limits. */
export class EndpointClient {
  private readonly auth: TokenAuth
  /** The reach of what this (configured) upstream names elsewhere, once classified. */
  private elsewhere: Promise<Reach> | undefined
  /** Requests sent to this endpoint, each hop counted. */
  requests = 0
  readonly registry: string
  readonly base: URL

  constructor(
    readonly spec: EndpointSpec,
    /** Another endpoint comes after this one (its limits are the chain's). */
    readonly chained: boolean,
    private readonly dispatcher: (reach: Reach) => Promise<Dispatcher>,
    private readonly access: Access,
    credentials: CredentialSource,
    private readonly clock: Clock,
    private readonly rateLimits: RateLimitBook,
    private readonly counters: UpstreamCounters,
    private readonly observe?: UpstreamObserver,
  ) {
    this.registry = spec.registry
    const base = (this.base = spec.base)
    // TokenAuth sends two things: the /v2/ ping and the token request at the realm.
    const authSend = (method: string, url: URL, headers: Record<string, string>, body?: string) =>
      this.send(method, url, headers, url.pathname.endsWith('/v2/') && url.origin === base.origin ? 'ping' : 'token', body)
    // Credentials are the endpoint's own: the registry's for its origin, the endpoint host's for any other.
    this.auth = new TokenAuth(spec.credentialKey, base, credentials, clock, authSend)
  }

  /** What a charged request is counted as: only the origin charges pulls. */
  private get origin(): boolean {
    return this.spec.kind === 'origin'
  }

  /**
   * The breaker's probe: GET /v2/ within `timeoutMs`. Any answer but a 5xx
   * or 429 means the endpoint is back (a 401 is its auth challenge).
   */
  async ping(timeoutMs: number): Promise<{ outcome: Outcome; reason?: string; retryAfterMs?: number }> {
    const url = new URL('/v2/', this.base)
    try {
      const reach = await this.reach(url)
      this.access.policy.check(url, this.registry, reach)
      const { request } = await loadUndici()
      this.requests++
      const res = await request(url, {
        method: 'GET',
        headers: { 'user-agent': USER_AGENT },
        dispatcher: await this.dispatcher(reach),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: AbortSignal.timeout(timeoutMs),
      })
      await res.body.dump({ limit: 64 * 1024 }).catch(() => {})
      if (res.statusCode >= 500 || res.statusCode === 429) {
        const wait = retryAfterMs((name) => headerValue(res.headers[name]), this.clock.now())
        return { outcome: 'failing', reason: `GET ${url.href}: HTTP ${res.statusCode}`, ...(wait !== undefined ? { retryAfterMs: wait } : {}) }
      }
      return { outcome: 'alive' }
    } catch (err) {
      return { outcome: 'down', reason: upstreamError(err, `GET ${url.href}`).message }
    }
  }

  /** For `dproxy login`: proves the registry accepts the credentials (TokenAuth.verify). */
  verifyCredentials(scope?: string): Promise<'bearer' | 'basic'> {
    return this.auth.verify(scope)
  }

  /** `probe`: the rate-limit probe (`dproxy status`), which is no pull and so is not counted among the HEADs. */
  async headManifest(repository: string, reference: string, opts: { probe?: boolean } = {}): Promise<ManifestInfo> {
    if (opts.probe !== true && this.origin) this.counters.manifestHeads++
    const { res, url } = await this.call('HEAD', repository, `manifests/${reference}`, { accept: MANIFEST_ACCEPT, kind: 'manifest_head' })
    this.recordRateLimit(res)
    await this.expectOk(res, 'HEAD', url, 'manifest', `${repository}${refSuffix(reference)}`)
    await res.body.dump().catch(() => {})
    return { ...manifestInfo(res, 'HEAD', url), charged: this.origin }
  }

  /**
   * The one counted call. After a 429 it is not sent before the time the
   * registry named (TOOMANYREQUESTS at once); a short wait is waited out, and
   * a 429 with a short Retry-After is retried once after it.
   */
  async getManifest(repository: string, reference: string): Promise<ManifestBody> {
    let answer: { res: Dispatcher.ResponseData; url: URL }
    for (let attempt = 1; ; attempt++) {
      await this.beforeCountedGet(`GET manifest ${repository}:${reference}`)
      if (this.origin) this.counters.manifestGets++
      answer = await this.call('GET', repository, `manifests/${reference}`, { accept: MANIFEST_ACCEPT, kind: 'manifest_get' })
      this.recordRateLimit(answer.res)
      if (answer.res.statusCode !== 429 || attempt > 1) break
      const wait = retryAfterMs((name) => headerValue(answer.res.headers[name]), this.clock.now())
      if (wait === undefined || wait > SHORT_RETRY_AFTER_MS) break
      await answer.res.body.dump().catch(() => {})
      this.rateLimits.limitUntil(this.spec.rateKey, this.clock.now() + wait)
    }
    const { res, url } = answer
    await this.expectOk(res, 'GET', url, 'manifest', `${repository}${refSuffix(reference)}`)
    const info = manifestInfo(res, 'GET', url)
    if (info.size !== undefined && info.size > MANIFEST_SIZE_LIMIT) {
      discard(res.body)
      throw new DproxyError('MANIFEST_INVALID', `GET ${redact(url)}: manifest of ${info.size} bytes is over the limit`)
    }
    const chunks: Buffer[] = []
    let total = 0
    try {
      for await (const chunk of res.body) {
        total += chunk.length
        if (total > MANIFEST_SIZE_LIMIT) {
          discard(res.body)
          throw new DproxyError('MANIFEST_INVALID', `GET ${redact(url)}: manifest is over the size limit`)
        }
        chunks.push(chunk)
      }
    } catch (err) {
      throw asUpstreamError(err, 'GET', url)
    }
    const bytes = Buffer.concat(chunks)
    if (info.size !== undefined && bytes.length !== info.size) {
      throw new DproxyError('UPSTREAM_UNAVAILABLE', `GET ${redact(url)}: got ${bytes.length} of ${info.size} bytes`)
    }
    return { ...info, size: bytes.length, bytes, answer: this.answer(res.statusCode) }
  }

  private answer(status: number): UpstreamAnswer {
    return { endpoint: this.spec.label, status, charged: this.origin }
  }

  /** Starts a blob download; the caller consumes (or destroys) `body`. */
  async getBlob(repository: string, digest: string): Promise<BlobBody> {
    this.counters.blobGets++
    const { res, url } = await this.followRedirects('GET', repository, digest)
    const length = headerValue(res.headers['content-length'])
    return { size: length === undefined ? undefined : Number(length), body: res.body, url: redact(url), answer: this.answer(res.statusCode) }
  }

  /**
   * The size of a blob without its body: the HEAD's Content-Length, or, when
   * the HEAD has none (some fronts drop it), the total in the Content-Range of
   * a one-byte ranged GET (a 200 to it: its Content-Length). Undefined when
   * upstream says neither; the caller then has the whole blob to count.
   */
  async headBlob(repository: string, digest: string): Promise<{ size: number | undefined }> {
    const head = await this.followRedirects('HEAD', repository, digest)
    await head.res.body.dump().catch(() => {})
    const size = byteCount(headerValue(head.res.headers['content-length']))
    if (size !== undefined) return { size }
    this.counters.blobGets++
    const { res } = await this.followRedirects('GET', repository, digest, { range: 'bytes=0-0' })
    const total =
      res.statusCode === 206
        ? byteCount(/^bytes\s+\d+-\d+\/(\d+)$/i.exec(headerValue(res.headers['content-range']) ?? '')?.[1])
        : byteCount(headerValue(res.headers['content-length']))
    // One byte of a 206 is read; a 200 carries the whole blob, which nobody wants here.
    if (res.statusCode === 206) await res.body.dump({ limit: 1024 }).catch(() => {})
    else discard(res.body)
    return { size: total }
  }

  /**
   * One page of the tag list. `next` holds the `n`/`last` query of the next
   * page when upstream paginates (RFC 8288 `Link: <...>; rel="next"`).
   */
  async listTags(repository: string, query: URLSearchParams): Promise<TagPage> {
    const qs = query.toString()
    const { res, url } = await this.call('GET', repository, `tags/list${qs ? `?${qs}` : ''}`, { accept: 'application/json', kind: 'tags' })
    await this.expectOk(res, 'GET', url, 'tags', `the tag list of ${repository}`)
    const next = nextPage(headerValue(res.headers.link), url)
    const text = await readCapped(res.body, MANIFEST_SIZE_LIMIT)
    let parsed: { tags?: unknown }
    try {
      parsed = JSON.parse(text) as { tags?: unknown }
    } catch {
      throw new DproxyError('UPSTREAM_UNAVAILABLE', `GET ${redact(url)}: tag list is not JSON`)
    }
    const tags = Array.isArray(parsed.tags) ? parsed.tags.filter((t): t is string => typeof t === 'string') : []
    return next ? { tags, next } : { tags }
  }

  /** `headers` (a Range) go to every hop; the registry's Authorization only to the first. */
  private async followRedirects(method: 'GET' | 'HEAD', repository: string, digest: string, headers: Record<string, string> = {}) {
    let { res, url } = await this.call(method, repository, `blobs/${digest}`, { kind: 'blob', headers })
    for (let hops = 0; isRedirect(res.statusCode); hops++) {
      const location = headerValue(res.headers.location)
      await res.body.dump().catch(() => {})
      if (!location || hops >= MAX_REDIRECTS) {
        throw new DproxyError('UPSTREAM_UNAVAILABLE', `${method} ${redact(url)}: too many or empty redirects`)
      }
      // The token is for the registry, not the CDN: follow without Authorization.
      // Where the redirect may go is send()'s address policy, as for every request.
      const from = url
      try {
        url = new URL(location, from)
      } catch {
        throw new DproxyError('UPSTREAM_INVALID', `${method} ${redact(from)}: redirect to an unparsable location`)
      }
      res = await this.send(method, url, headers, 'blob')
    }
    await this.expectOk(res, method, url, 'blob', `blob ${digest} of ${repository}`)
    return { res, url }
  }

  private async call(
    method: string,
    repository: string,
    rest: string,
    opts: { accept?: string; kind: UpstreamKind; headers?: Record<string, string> },
  ) {
    // A path-prefix registry has its path before the repository; a mirror is told which registry is meant.
    const name = `${this.spec.prefix}${repository}`
    const url = new URL(`/v2/${name}/${rest}`, this.base)
    if (this.spec.kind === 'mirror') url.searchParams.set('ns', this.registry)
    const scope = `repository:${name}:pull`
    const headers: Record<string, string> = { ...opts.headers, ...(opts.accept ? { accept: opts.accept } : {}) }
    let auth = await this.auth.authorization(scope)
    let res = await this.send(method, url, auth ? { ...headers, authorization: auth } : headers, opts.kind)
    if (res.statusCode === 401) {
      const challenge = headerValue(res.headers['www-authenticate'])
      if (await this.auth.rejected(scope, challenge)) {
        await res.body.dump().catch(() => {})
        auth = await this.auth.authorization(scope)
        res = await this.send(method, url, auth ? { ...headers, authorization: auth } : headers, opts.kind)
      }
    }
    return { res, url }
  }

  /**
   * How far a request to `url` may reach: a configured upstream's own origin
   * anywhere, what it names elsewhere as far as the upstream itself, all of a
   * registry nobody configured public addresses only.
   */
  private async reach(url: URL): Promise<Reach> {
    if (!this.access.trusted) return 'public'
    if (url.origin === this.base.origin) return 'internal'
    this.elsewhere ??= Promise.resolve(this.access.classify(this.base))
    return this.elsewhere
  }

  private async send(method: string, url: URL, headers: Record<string, string>, kind: UpstreamKind, body?: string): Promise<Dispatcher.ResponseData> {
    const reach = await this.reach(url)
    this.access.policy.check(url, this.registry, reach)
    const started = performance.now()
    let status: number | undefined
    try {
      const { request } = await loadUndici()
      this.requests++
      const res = await request(url, {
        method: method as Dispatcher.HttpMethod,
        headers: { 'user-agent': USER_AGENT, ...headers },
        ...(body !== undefined ? { body } : {}),
        dispatcher: await this.dispatcher(reach),
      })
      status = res.statusCode
      return res
    } catch (err) {
      throw asUpstreamError(err, method, url)
    } finally {
      this.observe?.({ registry: this.registry, endpoint: this.spec.label, kind, method, status, durationMs: performance.now() - started })
    }
  }

  /** Waits out a short rate-limit reset; throws TOOMANYREQUESTS, sending nothing, while a longer one runs. */
  private async beforeCountedGet(what: string): Promise<void> {
    const at = this.rateLimits.limitedUntil(this.spec.rateKey)
    if (at === undefined) return
    const left = at - this.clock.now()
    if (left <= SHORT_RETRY_AFTER_MS) {
      await sleep(left)
      return
    }
    throw new DproxyError(
      'TOOMANYREQUESTS',
      `${what}: not sent, as ${this.spec.rateKey} answered 429 (rate limited) and asked to wait until ` +
        `${new Date(at).toISOString()} (${Math.ceil(left / 1000)} s more)`,
      { detail: { registry: this.registry, ...resetDetail(at, left) } },
    )
  }

  /**
   * Only answers that went through the rate limiter carry its reading: a 2xx
   * or a 429. A 401 or 404 comes without RateLimit headers even from a
   * limited registry, and must not read as "unlimited".
   */
  private recordRateLimit(res: Dispatcher.ResponseData): void {
    const counted = (res.statusCode >= 200 && res.statusCode < 300) || res.statusCode === 429
    if (counted) this.rateLimits.record(this.spec.rateKey, (name) => headerValue(res.headers[name]))
  }

  /** Throws the DproxyError a non-2xx answer means, after reading a capped piece of its body. */
  /** `subject`: what was asked for, in the words of refusal.ts ("private/secret:latest"). */
  private async expectOk(res: Dispatcher.ResponseData, method: string, url: URL, kind: Kind, subject: string): Promise<void> {
    const status = res.statusCode
    const type = headerValue(res.headers['content-type']) ?? ''
    const where = `${method} ${redact(url)}`
    if (status >= 200 && status < 300) {
      // A blob may come with any type from a CDN; from a team cache, a page is its login or error page
      // (its bytes would reach clients before they failed their digest).
      if ((kind !== 'blob' || this.chained) && /^text\/html/i.test(type)) {
        discard(res.body)
        throw new DproxyError('UPSTREAM_UNAVAILABLE', `${where}: got an HTML page instead of a registry response`, {
          detail: { upstreamStatus: status, html: true },
        })
      }
      return
    }
    const text = method === 'HEAD' ? '' : await readCapped(res.body, ERROR_BODY_CAP).catch(() => '')
    if (method === 'HEAD') await res.body.dump().catch(() => {})
    const upstream = parseOciError(text)
    const said = upstream ? `: ${upstream.message || upstream.code}` : ''
    const html = /^text\/html/i.test(type)
    let code: ErrorCode
    let status2: number | undefined
    let reset: ReturnType<typeof resetDetail> | undefined
    if (status === 429) {
      code = 'TOOMANYREQUESTS'
      const now = this.clock.now()
      const wait = retryAfterMs((name) => headerValue(res.headers[name]), now) ?? DEFAULT_RETRY_AFTER_MS
      this.rateLimits.limitUntil(this.spec.rateKey, now + wait)
      reset = resetDetail(now + wait, wait)
    } else if (status >= 500 || html) code = 'UPSTREAM_UNAVAILABLE'
    else if (status === 404) code = upstream && isNotFoundCode(upstream.code) ? upstream.code : notFound[kind]
    else if (status === 401) code = 'UNAUTHORIZED'
    else if (status === 403) code = 'DENIED'
    else {
      code = 'UPSTREAM_UNAVAILABLE'
      status2 = 502
    }
    const retry = reset ? `; retry after ${reset.retryAfterSeconds} s (${reset.resetAt})` : ''
    let message = `${where}: HTTP ${status}${said}${retry}`
    // Named by what a login is keyed by: the registry at its origin, the endpoint's host elsewhere.
    const who = this.spec.credentialKey
    if (status === 401 || status === 403) message = refusedMessage({ registry: who, subject, status, ...(await this.auth.loginUsed()) })
    else if (status === 404) message = missingMessage(who, subject, code)
    throw new DproxyError(code, message, {
      ...(status2 ? { status: status2 } : {}),
      detail: { upstreamStatus: status, ...reset },
    })
  }
}

/** When a rate-limited registry may be asked again, for the error's detail (and the client's Retry-After). */
function resetDetail(at: number, leftMs: number): { retryAfterSeconds: number; resetAt: string } {
  return { retryAfterSeconds: Math.ceil(leftMs / 1000), resetAt: new Date(at).toISOString() }
}

/** ':latest' for a tag, '@sha256:...' for a digest. */
function refSuffix(reference: string): string {
  return reference.includes(':') ? `@${reference}` : `:${reference}`
}

const notFound: Record<Kind, ErrorCode> = { manifest: 'MANIFEST_UNKNOWN', blob: 'BLOB_UNKNOWN', tags: 'NAME_UNKNOWN' }

function isNotFoundCode(code: string): code is 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN' {
  return code === 'MANIFEST_UNKNOWN' || code === 'BLOB_UNKNOWN' || code === 'NAME_UNKNOWN'
}

function parseOciError(text: string): { code: string; message: string } | undefined {
  try {
    const first = (JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> }).errors?.[0]
    if (first && typeof first.code === 'string') {
      return { code: first.code, message: typeof first.message === 'string' ? first.message.slice(0, 300) : '' }
    }
  } catch {
    // not JSON: the status code says enough
  }
  return undefined
}

function manifestInfo(res: Dispatcher.ResponseData, method: string, url: URL): ManifestInfo {
  const mediaType = headerValue(res.headers['content-type'])?.split(';')[0]?.trim()
  if (!mediaType) {
    throw new DproxyError('UPSTREAM_INVALID', `${method} ${redact(url)}: manifest response without Content-Type`)
  }
  const length = headerValue(res.headers['content-length'])
  return {
    digest: headerValue(res.headers['docker-content-digest']),
    mediaType,
    size: length === undefined ? undefined : Number(length),
  }
}

/** The `n`/`last` query of a `rel="next"` link, resolved against the request URL. */
export function nextPage(link: string | undefined, base: URL): URLSearchParams | undefined {
  const m = link === undefined ? null : /<([^>]*)>\s*;\s*rel="?next"?/i.exec(link)
  if (!m) return undefined
  let target: URL
  try {
    target = new URL(m[1]!, base)
  } catch {
    return undefined
  }
  const next = new URLSearchParams()
  for (const key of ['n', 'last']) {
    const v = target.searchParams.get(key)
    if (v !== null) next.set(key, v)
  }
  return next.has('last') ? next : undefined
}

/** A byte count as a header states it: digits only, or undefined. */
function byteCount(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,15}$/.test(value.trim())) return undefined
  return Number(value.trim())
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308
}

/** The URL without query or credentials, for messages and logs. */
export function redact(url: URL): string {
  return `${url.origin}${url.pathname}`
}

function asUpstreamError(err: unknown, method: string, url: URL): DproxyError {
  return upstreamError(err, `${method} ${redact(url)}`)
}

/** Wraps a network-level failure (refused, reset, timeout) as UPSTREAM_UNAVAILABLE naming `where`. */
export function upstreamError(err: unknown, where: string): DproxyError {
  if (err instanceof DproxyError) return err
  const reason = err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.message) : String(err)
  return new DproxyError('UPSTREAM_UNAVAILABLE', `${where}: ${reason}`, { cause: err })
}
