// Client authentication, in the shape of GitLab's Dependency Proxy: a user
// name and a secret, exchanged for short-lived bearer tokens the way every
// registry client already knows how to do. The users are the built-in
// `dproxy` (its generated password: `dproxy env` prints it, `dproxy env
// --rotate` replaces it) and the tokens `dproxy token create NAME` makes
// (credentials/tokens.ts): `docker login HOST -u NAME -p dpt_NAME_...`.
//
//   GET /v2/...            without a valid token: 401 with
//                          WWW-Authenticate: Bearer realm="http://<Host>/_dproxy/token",service="dproxy"
//   GET /_dproxy/token     HTTP Basic NAME:SECRET -> {token, access_token, expires_in, issued_at}
//   POST /_dproxy/token    the OAuth2 password grant containerd tries first
//
// A bearer token for `dproxy` is `dp1.<expiry>.<mac>`: an HMAC-SHA256 over the
// expiry, the user name and a digest of the current password; one for a named
// token is `dp2.<name>.<expiry>.<mac>`, the MAC over the expiry, the name and
// the token's stored hash. Both are keyed by 32 random bytes that live in
// memory for the daemon's lifetime. Nothing is stored per bearer token; each
// is checked against the current password or token entry on every use, so
// restarting the daemon, rotating the password, or revoking or rotating the
// token ends it within the time the daemon takes to see the change (5 s for
// the password, CHECK_EVERY_MS for tokens.json). Clients that skip the token
// dance may send Basic with the secret, or with a bearer token as the
// password, on every request.
//
// A token made with `--repos` may pull only matching repositories (`permit`):
// others get 403 DENIED, for manifests, blobs and tag lists alike.
//
// Failed logins (a wrong secret with Basic, on /v2/ or the token endpoint)
// are counted per source address (IPv6: per /64); past MAX_FAILURES within FAILURE_WINDOW_MS
// that address gets 429 with Retry-After until the window ends. Bearer tokens
// are not counted: a MAC is not something to guess, and clients retry
// expired ones in bulk. The book holds at most FAILURE_BOOK_SIZE addresses.
//
// The password lives in the credential store under CLIENT_SECRET_KEY and is
// read through a short cache. No secret is logged, and no error message
// contains one; the access log names the user (`user=NAME`).

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { LRUCache } from 'lru-cache'
import { systemClock, type Clock } from '../clock.js'
import { type CredentialStore, CLIENT_SECRET_KEY } from '../credentials/credential.js'
import { BUILTIN_TOKEN_NAME, parseToken, type RepoPattern, type TokenEntry } from '../credentials/tokens.js'
import { DproxyError } from '../errors.js'
import { silentLogger, type Logger } from '../log.js'
import type { ImageName } from '../oci/reference.js'
import { sendError } from '../registry/errors.js'
import type { Handler } from '../registry/handler.js'
import { note } from '../registry/note.js'
import { isValidRegistryHost } from '../oci/registry-host.js'

export const CLIENT_USERNAME = BUILTIN_TOKEN_NAME
export const CLIENT_AUTH_SERVICE = 'dproxy'
export const TOKEN_PATH = '/_dproxy/token'
export const DEFAULT_CLIENT_TOKEN_SECONDS = 900
/** How long the daemon trusts the password it read from the credential store. */
export const CLIENT_SECRET_CACHE_MS = 5000
/** Failed logins one source address may make within FAILURE_WINDOW_MS before it gets 429. */
export const MAX_FAILURES = 10
export const FAILURE_WINDOW_MS = 60_000
const FAILURE_BOOK_SIZE = 10_000

const TOKEN_PREFIX = 'dp1'
const NAMED_PREFIX = 'dp2'
const FORM_BODY_CAP = 64 * 1024

/** The named tokens (credentials/tokens.ts TokenBook), as client auth uses them. */
export interface TokenSource {
  check(name: string, secret: string): Promise<(TokenEntry & { pattern: RepoPattern | undefined }) | undefined>
  entry(name: string): Promise<(TokenEntry & { pattern: RepoPattern | undefined }) | undefined>
  used(name: string): void
  lastUsed(): Record<string, string>
  names?(): string[]
  /** Writes the last uses out (the daemon calls it about once a minute, and with `force` when it stops). */
  flush?(opts?: { force?: boolean }): Promise<void>
}

export interface ClientAuthOptions {
  /** The current client password (undefined: none yet, nobody gets in). Called often: cache it (clientSecretReader). */
  secret: () => Promise<string | undefined>
  /** Named tokens (dproxy token create); without them only the built-in user logs in. */
  tokens?: TokenSource
  tokenTtlSeconds?: number
  clock?: Clock
  log?: Logger
}

/** Who a request authenticated as: a user name, and the repositories it may pull (undefined: all). */
export interface ClientIdentity {
  name: string
  repos: RepoPattern | undefined
}

export interface IssuedToken {
  token: string
  access_token: string
  expires_in: number
  issued_at: string
}

/** The client password: the stored one, or a new random one stored now (`rotate` always makes a new one). */
export async function ensureClientSecret(
  store: CredentialStore,
  opts: { rotate?: boolean } = {},
): Promise<{ username: string; secret: string; created: boolean }> {
  if (!opts.rotate) {
    const current = await store.get(CLIENT_SECRET_KEY)
    if (current) return { username: CLIENT_USERNAME, secret: current.secret, created: false }
  }
  const secret = randomBytes(32).toString('base64url')
  await store.set(CLIENT_SECRET_KEY, { username: CLIENT_USERNAME, secret })
  // Two first starts at once (serve and env) both write; report what is stored now, so they agree.
  const stored = await store.get(CLIENT_SECRET_KEY)
  return { username: CLIENT_USERNAME, secret: stored?.secret ?? secret, created: true }
}

/**
 * Reads the client password from the store at most every `ttlMs`. When the
 * store fails, the last password read stays in force (and the failure is logged).
 */
export function clientSecretReader(
  store: Pick<CredentialStore, 'get'>,
  opts: { ttlMs?: number; clock?: Clock; log?: Logger } = {},
): () => Promise<string | undefined> {
  const ttl = opts.ttlMs ?? CLIENT_SECRET_CACHE_MS
  const clock = opts.clock ?? systemClock
  const log = opts.log ?? silentLogger
  let last: { value: string | undefined; readAt: number } | undefined
  let pending: Promise<string | undefined> | undefined
  const read = async (): Promise<string | undefined> => {
    let value = last?.value
    try {
      value = (await store.get(CLIENT_SECRET_KEY))?.secret
    } catch (err) {
      log.warn(`cannot read the client password (${err instanceof Error ? err.message : String(err)}); keeping the last one`)
    }
    last = { value, readAt: clock.now() }
    return value
  }
  return async () => {
    if (last && clock.now() - last.readAt < ttl) return last.value
    pending ??= read().finally(() => {
      pending = undefined
    })
    return pending
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}

function sameText(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b))
}

function basicCredentials(header: string | undefined): { username: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header ?? '')
  if (!m) return undefined
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return undefined
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}

function bearerToken(header: string | undefined): string | undefined {
  return /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1]
}

/** `host[:port]` as the client addressed us: its Host header when well-formed, else the socket's local address. */
export function requestAuthority(req: IncomingMessage): string {
  const host = req.headers.host?.trim().toLowerCase()
  if (host && isValidRegistryHost(host)) return host
  const address = req.socket.localAddress ?? '127.0.0.1'
  const plain = address.replace(/^::ffff:(?=\d+\.)/, '')
  return `${plain.includes(':') ? `[${plain}]` : plain}:${req.socket.localPort ?? 80}`
}

/** Failed logins per source address, bounded in addresses (least recently failed dropped first). */
class LoginFailures {
  private readonly book = new LRUCache<string, { since: number; count: number }>({ max: FAILURE_BOOK_SIZE })

  constructor(private readonly clock: Clock) {}

  /** Seconds until `address` may try again; 0 when it may now. */
  blockedFor(address: string): number {
    const entry = this.book.get(address)
    if (entry === undefined || entry.count < MAX_FAILURES) return 0
    const left = entry.since + FAILURE_WINDOW_MS - this.clock.now()
    if (left <= 0) {
      this.book.delete(address)
      return 0
    }
    return Math.ceil(left / 1000)
  }

  fail(address: string): void {
    const now = this.clock.now()
    const entry = this.book.get(address)
    if (entry === undefined || now - entry.since >= FAILURE_WINDOW_MS) this.book.set(address, { since: now, count: 1 })
    else entry.count++
  }
}

export class ClientAuth {
  readonly username = CLIENT_USERNAME
  private readonly key = randomBytes(32)
  private readonly ttlSeconds: number
  private readonly clock: Clock
  private readonly log: Logger
  private readonly secret: () => Promise<string | undefined>
  private readonly tokens: TokenSource | undefined
  private readonly failures: LoginFailures
  /** Who each request in flight authenticated as (for permit), as long as the request lives. */
  private readonly identities = new WeakMap<IncomingMessage, ClientIdentity>()
  /** Last use of the built-in user (named tokens keep theirs in the token book). */
  private builtinUsedAt: number | undefined

  constructor(opts: ClientAuthOptions) {
    const ttl = opts.tokenTtlSeconds ?? DEFAULT_CLIENT_TOKEN_SECONDS
    if (!Number.isInteger(ttl) || ttl < 1) {
      throw new DproxyError('CONFIG_INVALID', `expected tokenTtlSeconds to be a whole number of seconds, got ${ttl}`)
    }
    this.ttlSeconds = ttl
    this.secret = opts.secret
    this.tokens = opts.tokens
    this.clock = opts.clock ?? systemClock
    this.log = opts.log ?? silentLogger
    this.failures = new LoginFailures(this.clock)
  }

  private mac(expiry: number, secret: string): string {
    return createHmac('sha256', this.key)
      .update(`${TOKEN_PREFIX}.${expiry}.${this.username}.`)
      .update(digest(secret))
      .digest('base64url')
  }

  private namedMac(name: string, expiry: number, entryHash: string): string {
    return createHmac('sha256', this.key).update(`${NAMED_PREFIX}.${expiry}.${name}.${entryHash}`).digest('base64url')
  }

  /** Whether user and password are the built-in user's; false while there is no password. */
  async checkPassword(username: string, password: string): Promise<boolean> {
    const secret = await this.secret()
    if (secret === undefined) return false
    return sameText(username, this.username) && sameText(password, secret)
  }

  /** Who `username` and `password` log in as: the built-in user, or a named token whose text is the password. */
  async login(username: string, password: string): Promise<ClientIdentity | undefined> {
    if (username === this.username) return (await this.checkPassword(username, password)) ? { name: username, repos: undefined } : undefined
    const parsed = parseToken(password)
    if (parsed === undefined || parsed.name !== username || this.tokens === undefined) return undefined
    const entry = await this.tokens.check(parsed.name, parsed.secret)
    return entry ? { name: entry.name, repos: entry.pattern } : undefined
  }

  /** A new bearer token for `who` (default: the built-in user), valid for the configured lifetime or until its secret changes. */
  async issue(who: ClientIdentity = { name: this.username, repos: undefined }): Promise<IssuedToken> {
    const now = this.clock.now()
    const expiry = Math.floor(now / 1000) + this.ttlSeconds
    let token: string
    if (who.name === this.username) {
      const secret = await this.secret()
      if (secret === undefined) throw new DproxyError('UNAUTHORIZED', 'dproxy has no client password yet (run dproxy env)')
      token = `${TOKEN_PREFIX}.${expiry}.${this.mac(expiry, secret)}`
    } else {
      const entry = await this.tokens?.entry(who.name)
      if (entry === undefined) throw new DproxyError('UNAUTHORIZED', `token ${who.name} is revoked or expired`)
      token = `${NAMED_PREFIX}.${who.name}.${expiry}.${this.namedMac(who.name, expiry, entry.hash)}`
    }
    return { token, access_token: token, expires_in: this.ttlSeconds, issued_at: new Date(now).toISOString() }
  }

  /** Whether `token` is a valid bearer token of the built-in user. */
  async verifyToken(token: string): Promise<boolean> {
    return (await this.bearer(token))?.name === this.username
  }

  /** Who a bearer token was issued to, while it and its user's secret are current. */
  async bearer(token: string): Promise<ClientIdentity | undefined> {
    // One spelling per expiry, as issue() writes it: no leading zero, so that no other string carries the same MAC.
    const builtin = /^dp1\.([1-9]\d{0,11})\.([A-Za-z0-9_-]{43})$/.exec(token)
    if (builtin) {
      const expiry = Number(builtin[1])
      if (expiry * 1000 <= this.clock.now()) return undefined
      const secret = await this.secret()
      if (secret === undefined) return undefined
      return sameMac(this.mac(expiry, secret), builtin[2]!) ? { name: this.username, repos: undefined } : undefined
    }
    const named = /^dp2\.([A-Za-z0-9._-]{1,64})\.([1-9]\d{0,11})\.([A-Za-z0-9_-]{43})$/.exec(token)
    if (!named || this.tokens === undefined) return undefined
    const [, name, expiryText, mac] = named as unknown as [string, string, string, string]
    const expiry = Number(expiryText)
    if (expiry * 1000 <= this.clock.now()) return undefined
    const entry = await this.tokens.entry(name)
    if (entry === undefined) return undefined
    return sameMac(this.namedMac(name, expiry, entry.hash), mac) ? { name, repos: entry.pattern } : undefined
  }

  /** Who the request authenticated as (a bearer token, or Basic with a secret or a bearer token as the password). */
  async identify(req: IncomingMessage): Promise<ClientIdentity | undefined> {
    const header = req.headers.authorization
    const bearer = bearerToken(header)
    if (bearer !== undefined) return this.bearer(bearer)
    const basic = basicCredentials(header)
    if (!basic) return undefined
    if (/^dp[12]\./.test(basic.password)) {
      const who = await this.bearer(basic.password)
      return who !== undefined && sameText(basic.username, who.name) ? who : undefined
    }
    const who = await this.login(basic.username, basic.password)
    if (who === undefined) this.failures.fail(sourceOf(req))
    return who
  }

  /** Whether the request carries valid credentials. */
  async authorized(req: IncomingMessage): Promise<boolean> {
    return (await this.identify(req)) !== undefined
  }

  /** Refuses (403 DENIED) a repository the request's token may not pull; call after the guard let the request in. */
  permit(req: IncomingMessage, image: ImageName): void {
    const who = this.identities.get(req)
    if (who?.repos === undefined) return
    const repository = `${image.registry}/${image.repository}`
    if (!who.repos.matches(repository)) {
      throw new DproxyError('DENIED', `token ${who.name} may pull only ${who.repos.text}, not ${repository}`)
    }
  }

  /** When each user last logged in or pulled, since this daemon started: name -> ISO time. */
  lastUsed(): Record<string, string> {
    return {
      ...(this.builtinUsedAt !== undefined ? { [this.username]: new Date(this.builtinUsedAt).toISOString() } : {}),
      ...this.tokens?.lastUsed(),
    }
  }

  /** Every user this daemon knows (the built-in one first) and when it was last used; for status. */
  usage(): Array<{ name: string; lastUsed: string | null }> {
    const last = this.lastUsed()
    const names = [this.username, ...(this.tokens?.names?.() ?? Object.keys(last).filter((n) => n !== this.username).sort())]
    return names.map((name) => ({ name, lastUsed: last[name] ?? null }))
  }

  private used(req: IncomingMessage, res: ServerResponse, who: ClientIdentity): void {
    this.identities.set(req, who)
    note(res, { user: who.name })
    if (who.name === this.username) this.builtinUsedAt = this.clock.now()
    else this.tokens?.used(who.name)
  }

  /** Answers 429 when the request's address failed too often; true when it did. */
  private refuseBlocked(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.headers.authorization === undefined) return false
    const wait = this.failures.blockedFor(sourceOf(req))
    if (wait === 0) return false
    const err = new DproxyError('TOOMANYREQUESTS', `too many failed logins from this address; try again in ${wait} s`, {
      detail: { retryAfterSeconds: wait },
    })
    sendError(res, err, this.log, req.method)
    return true
  }

  /** Answers 401 with the Bearer challenge pointing at our token endpoint, as the client addressed us. */
  challenge(req: IncomingMessage, res: ServerResponse): void {
    const scheme = (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http'
    const realm = `${scheme}://${requestAuthority(req)}${TOKEN_PATH}`
    res.setHeader('www-authenticate', `Bearer realm="${realm}",service="${CLIENT_AUTH_SERVICE}"`)
    res.setHeader('docker-distribution-api-version', 'registry/2.0')
    const err = new DproxyError('UNAUTHORIZED', 'authentication required: log in with the values dproxy env prints')
    sendError(res, err, this.log, req.method)
  }

  /** Wraps the registry handler: only authorised requests reach it. */
  guard(next: Handler): Handler {
    return async (req, res) => {
      if (this.refuseBlocked(req, res)) return
      const who = await this.identify(req)
      if (who === undefined) return this.challenge(req, res)
      this.used(req, res, who)
      return next(req, res)
    }
  }

  /** GET (or HEAD) with Basic, or POST with the OAuth2 password grant. */
  readonly handleToken: Handler = async (req, res) => {
    const method = req.method ?? 'GET'
    try {
      let username: string | undefined
      let password: string | undefined
      if (method === 'GET' || method === 'HEAD') {
        const basic = basicCredentials(req.headers.authorization)
        username = basic?.username
        password = basic?.password
      } else if (method === 'POST') {
        const form = new URLSearchParams(await readForm(req))
        if (form.get('grant_type') !== 'password') {
          throw new DproxyError('UNSUPPORTED', 'only grant_type=password is supported; or GET with HTTP Basic', { status: 400 })
        }
        username = form.get('username') ?? undefined
        password = form.get('password') ?? undefined
      } else {
        res.setHeader('allow', 'GET, HEAD, POST')
        throw new DproxyError('UNSUPPORTED', `${method} ${TOKEN_PATH}`, { status: 405 })
      }
      if (username === undefined || password === undefined) {
        res.setHeader('www-authenticate', `Basic realm="${CLIENT_AUTH_SERVICE}"`)
        throw new DproxyError('UNAUTHORIZED', 'authentication required: log in with the values dproxy env prints')
      }
      const wait = this.failures.blockedFor(sourceOf(req))
      if (wait > 0) {
        throw new DproxyError('TOOMANYREQUESTS', `too many failed logins from this address; try again in ${wait} s`, {
          detail: { retryAfterSeconds: wait },
        })
      }
      const who = await this.login(username, password)
      if (who === undefined) {
        this.failures.fail(sourceOf(req))
        res.setHeader('www-authenticate', `Basic realm="${CLIENT_AUTH_SERVICE}"`)
        throw new DproxyError('UNAUTHORIZED', 'incorrect username or password (dproxy env prints the credentials)')
      }
      this.used(req, res, who)
      const body = JSON.stringify(await this.issue(who))
      res.statusCode = 200
      res.setHeader('content-type', 'application/json; charset=utf-8')
      res.setHeader('content-length', Buffer.byteLength(body))
      res.setHeader('cache-control', 'no-store')
      res.end(method === 'HEAD' ? undefined : body)
    } catch (err) {
      sendError(res, err, this.log, method)
    }
  }
}

function sameMac(expected: string, given: string): boolean {
  const a = Buffer.from(expected)
  const b = Buffer.from(given)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** The address failed logins are counted under. */
function sourceOf(req: IncomingMessage): string {
  return failureKey(req.socket.remoteAddress ?? '')
}

/**
 * An IPv4 address as it is; an IPv6 address as its /64, since one machine
 * commonly holds a whole /64 and could otherwise try from a fresh address
 * each time (Docker Hub counts its limits the same way).
 */
export function failureKey(address: string): string {
  const plain = address.replace(/^::ffff:(?=\d+\.)/i, '').replace(/%.*$/, '').toLowerCase()
  if (!plain.includes(':')) return plain
  const [head = '', tail] = plain.split('::') as [string, string | undefined]
  const front = head === '' ? [] : head.split(':')
  const back = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? front : [...front, ...new Array<string>(Math.max(0, 8 - front.length - back.length)).fill('0'), ...back]
  return `${groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':')}::/64`
}

async function readForm(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  let total = 0
  for await (const chunk of req) {
    total += (chunk as Buffer).length
    if (total > FORM_BODY_CAP) throw new DproxyError('SIZE_INVALID', `the token request body is over ${FORM_BODY_CAP} bytes`)
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}
