// The HTTP client for upstream registries, built on undici. One UpstreamClient
// per registry host holds its token auth; all of them share one connection
// pool and one rate-limit book. It speaks only the few pull-side calls the
// proxy needs and turns every failure into a DproxyError that says whether the
// upstream is down (the proxy may serve stale content) or answered "no".
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
import { DproxyError, type ErrorCode } from '../errors.js'
import { USER_AGENT } from '../version.js'
import { anonymous, TokenAuth, type CredentialSource } from './auth.js'
import { discard, headerValue, readCapped } from './http.js'
import { AddressPolicy, type AddressPolicyOptions, type Reach } from './policy.js'
import { DEFAULT_RETRY_AFTER_MS, RateLimitBook, retryAfterMs } from './ratelimit.js'
import { missingMessage, refusedMessage } from './refusal.js'
import { upstreamBaseUrl } from './registries.js'
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
}

export interface BlobBody {
  /** Content-Length, when upstream sent one. */
  size: number | undefined
  /** Consume with `for await`; failures mid-body are raw undici errors (see upstreamError). */
  body: Readable
  /** Where the bytes come from, redacted, for messages. */
  url: string
  answer?: UpstreamAnswer
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

export interface UpstreamsOptions {
  /** registry host -> base URL, from --upstream / DPROXY_UPSTREAMS / config. */
  overrides?: Readonly<Record<string, string>>
  credentials?: CredentialSource
  clock?: Clock
  timeouts?: Partial<UpstreamTimeouts>
  /** Resolver, address classifier and dproxy's own listeners, for the address policy (policy.ts). */
  policy?: AddressPolicyOptions
  /**
   * Registries the user configured: their own origin is contacted wherever it
   * is, and what they name elsewhere gets their classification. Default:
   * every registry in `overrides`. Tests pass [] to see a fixture treated like
   * a registry a client named.
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
}

/** What an upstream request was for: the API call it made, or a hop of one. */
export type UpstreamKind = 'ping' | 'token' | 'manifest_head' | 'manifest_get' | 'blob' | 'tags'

export interface UpstreamCall {
  registry: string
  kind: UpstreamKind
  method: string
  /** The answer's status; undefined when none came (refused, reset, timed out). */
  status: number | undefined
  /** Until the response headers arrived. */
  durationMs: number
}

export type UpstreamObserver = (call: UpstreamCall) => void

/** Counts of what went upstream, for the status endpoint and tests. */
export interface UpstreamCounters {
  manifestGets: number
  manifestHeads: number
  blobGets: number
}

export class Upstreams {
  readonly rateLimits: RateLimitBook
  readonly counters: UpstreamCounters = { manifestGets: 0, manifestHeads: 0, blobGets: 0 }
  private readonly clients = new LRUCache<string, UpstreamClient>({ max: MAX_CLIENTS })
  /** Dispatchers made on first use, per reach: `public` connects only to addresses the policy's lookup allows. */
  private readonly agents: { [R in Reach]?: Promise<Dispatcher> } = {}
  private readonly dispatcher: (reach: Reach) => Promise<Dispatcher>
  private readonly policy: AddressPolicy
  private readonly classify: (base: URL) => Reach | Promise<Reach>
  private readonly trusted: ReadonlySet<string>
  private readonly allowed: ReadonlySet<string> | undefined
  private readonly overrides: Readonly<Record<string, string>>
  private readonly credentials: CredentialSource
  private readonly clock: Clock
  private readonly observe: UpstreamObserver | undefined

  constructor(options: UpstreamsOptions = {}) {
    const t: UpstreamTimeouts = { connectMs: 10_000, headersMs: 30_000, bodyMs: 60_000, ...options.timeouts }
    const policy = (this.policy = new AddressPolicy(options.policy))
    this.classify = options.classify ?? ((base) => policy.classify(base))
    const agent = (reach: Reach) =>
      loadUndici().then(({ Agent, buildConnector }) => {
        const base = buildConnector({ timeout: t.connectMs, lookup: reach === 'public' ? policy.lookup : policy.lookupAny })
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
        return new Agent({ connect, headersTimeout: t.headersMs, bodyTimeout: t.bodyMs })
      })
    this.dispatcher = (reach) => (this.agents[reach] ??= agent(reach))
    this.overrides = options.overrides ?? {}
    this.trusted = new Set(options.trusted ?? Object.keys(this.overrides))
    this.allowed = options.allowRegistries ? new Set(options.allowRegistries) : undefined
    this.credentials = options.credentials ?? anonymous
    this.clock = options.clock ?? systemClock
    this.rateLimits = new RateLimitBook(this.clock)
    this.observe = options.observe
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

  get(registry: string): UpstreamClient {
    let client = this.clients.get(registry)
    if (!client) {
      const trusted = this.trusted.has(registry)
      client = new UpstreamClient(
        registry,
        upstreamBaseUrl(registry, this.overrides),
        this.dispatcher,
        { policy: this.policy, trusted, classify: this.classify },
        this.credentials,
        this.clock,
        this.rateLimits,
        this.counters,
        this.observe,
      )
      this.clients.set(registry, client)
    }
    return client
  }

  /** How many per-registry clients are kept (bounded). */
  get clientCount(): number {
    return this.clients.size
  }

  async close(): Promise<void> {
    for (const agent of Object.values(this.agents)) await (await agent).close()
  }
}

type Kind = 'manifest' | 'blob' | 'tags'

interface Access {
  policy: AddressPolicy
  /** Configured by the user (see UpstreamsOptions.trusted). */
  trusted: boolean
  classify: (base: URL) => Reach | Promise<Reach>
}

export class UpstreamClient {
  private readonly auth: TokenAuth
  /** The reach of what this (configured) upstream names elsewhere, once classified. */
  private elsewhere: Promise<Reach> | undefined

  constructor(
    readonly registry: string,
    readonly base: URL,
    private readonly dispatcher: (reach: Reach) => Promise<Dispatcher>,
    private readonly access: Access,
    credentials: CredentialSource,
    private readonly clock: Clock,
    private readonly rateLimits: RateLimitBook,
    private readonly counters: UpstreamCounters,
    private readonly observe?: UpstreamObserver,
  ) {
    // TokenAuth sends two things: the /v2/ ping and the token request at the realm.
    const authSend = (method: string, url: URL, headers: Record<string, string>, body?: string) =>
      this.send(method, url, headers, url.pathname.endsWith('/v2/') && url.origin === base.origin ? 'ping' : 'token', body)
    this.auth = new TokenAuth(registry, base, credentials, clock, authSend)
  }

  /** For `dproxy login`: proves the registry accepts the credentials (TokenAuth.verify). */
  verifyCredentials(scope?: string): Promise<'bearer' | 'basic'> {
    return this.auth.verify(scope)
  }

  /** `probe`: the rate-limit probe (`dproxy status`), which is no pull and so is not counted among the HEADs. */
  async headManifest(repository: string, reference: string, opts: { probe?: boolean } = {}): Promise<ManifestInfo> {
    if (opts.probe !== true) this.counters.manifestHeads++
    const { res, url } = await this.call('HEAD', repository, `manifests/${reference}`, { accept: MANIFEST_ACCEPT, kind: 'manifest_head' })
    this.recordRateLimit(res)
    await this.expectOk(res, 'HEAD', url, 'manifest', `${repository}${refSuffix(reference)}`)
    await res.body.dump().catch(() => {})
    return manifestInfo(res, 'HEAD', url)
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
      this.counters.manifestGets++
      answer = await this.call('GET', repository, `manifests/${reference}`, { accept: MANIFEST_ACCEPT, kind: 'manifest_get' })
      this.recordRateLimit(answer.res)
      if (answer.res.statusCode !== 429 || attempt > 1) break
      const wait = retryAfterMs((name) => headerValue(answer.res.headers[name]), this.clock.now())
      if (wait === undefined || wait > SHORT_RETRY_AFTER_MS) break
      await answer.res.body.dump().catch(() => {})
      this.rateLimits.limitUntil(this.registry, this.clock.now() + wait)
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
    return { endpoint: `${this.base.origin}${this.base.pathname.replace(/\/+$/, '')}`, status }
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
    const url = new URL(`${this.base.pathname.replace(/\/$/, '')}/v2/${repository}/${rest}`, this.base)
    const scope = `repository:${repository}:pull`
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
      this.observe?.({ registry: this.registry, kind, method, status, durationMs: performance.now() - started })
    }
  }

  /** Waits out a short rate-limit reset; throws TOOMANYREQUESTS, sending nothing, while a longer one runs. */
  private async beforeCountedGet(what: string): Promise<void> {
    const at = this.rateLimits.limitedUntil(this.registry)
    if (at === undefined) return
    const left = at - this.clock.now()
    if (left <= SHORT_RETRY_AFTER_MS) {
      await sleep(left)
      return
    }
    throw new DproxyError(
      'TOOMANYREQUESTS',
      `${what}: not sent, as ${this.registry} answered 429 (rate limited) and asked to wait until ` +
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
    if (counted) this.rateLimits.record(this.registry, (name) => headerValue(res.headers[name]))
  }

  /** Throws the DproxyError a non-2xx answer means, after reading a capped piece of its body. */
  /** `subject`: what was asked for, in the words of refusal.ts ("private/secret:latest"). */
  private async expectOk(res: Dispatcher.ResponseData, method: string, url: URL, kind: Kind, subject: string): Promise<void> {
    const status = res.statusCode
    const type = headerValue(res.headers['content-type']) ?? ''
    const where = `${method} ${redact(url)}`
    if (status >= 200 && status < 300) {
      if (kind !== 'blob' && /^text\/html/i.test(type)) {
        discard(res.body)
        throw new DproxyError('UPSTREAM_UNAVAILABLE', `${where}: got an HTML page instead of a registry response`)
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
      this.rateLimits.limitUntil(this.registry, now + wait)
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
    if (status === 401 || status === 403) message = refusedMessage({ registry: this.registry, subject, status, ...(await this.auth.loginUsed()) })
    else if (status === 404) message = missingMessage(this.registry, subject, code)
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
