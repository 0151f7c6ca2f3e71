// Client authentication, in the shape of GitLab's Dependency Proxy: one user
// name ('dproxy') and one generated password (`dproxy env` prints it,
// `dproxy env --rotate` replaces it), exchanged for short-lived bearer tokens
// the way every registry client already knows how to do.
//
//   GET /v2/...            without a valid token: 401 with
//                          WWW-Authenticate: Bearer realm="http://<Host>/_dproxy/token",service="dproxy"
//   GET /_dproxy/token     HTTP Basic dproxy:<password> -> {token, access_token, expires_in, issued_at}
//   POST /_dproxy/token    the OAuth2 password grant containerd tries first
//
// A token is `dp1.<expiry>.<mac>`: an HMAC-SHA256 over the expiry, the user
// name and a digest of the current password, keyed by 32 random bytes that
// live in memory for the daemon's lifetime. Nothing is stored per token;
// restarting the daemon or rotating the password revokes every token issued
// before. Clients that skip the token dance may send Basic with the password,
// or with a token as the password, on every request.
//
// The password lives in the credential store under CLIENT_SECRET_KEY and is
// read through a short cache, so a rotation applies to a running daemon within
// seconds. It is never logged, and no error message contains it.

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { systemClock, type Clock } from '../clock.js'
import { type CredentialStore, CLIENT_SECRET_KEY } from '../credentials/credential.js'
import { DproxyError } from '../errors.js'
import { silentLogger, type Logger } from '../log.js'
import { sendError } from '../registry/errors.js'
import type { Handler } from '../registry/handler.js'
import { isValidRegistryHost } from '../oci/registry-host.js'

export const CLIENT_USERNAME = 'dproxy'
export const CLIENT_AUTH_SERVICE = 'dproxy'
export const TOKEN_PATH = '/_dproxy/token'
export const DEFAULT_CLIENT_TOKEN_SECONDS = 900
/** How long the daemon trusts the password it read from the credential store. */
export const CLIENT_SECRET_CACHE_MS = 5000

const TOKEN_PREFIX = 'dp1'
const FORM_BODY_CAP = 64 * 1024

export interface ClientAuthOptions {
  /** The current client password (undefined: none yet, nobody gets in). Called often: cache it (clientSecretReader). */
  secret: () => Promise<string | undefined>
  tokenTtlSeconds?: number
  clock?: Clock
  log?: Logger
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

export class ClientAuth {
  readonly username = CLIENT_USERNAME
  private readonly key = randomBytes(32)
  private readonly ttlSeconds: number
  private readonly clock: Clock
  private readonly log: Logger
  private readonly secret: () => Promise<string | undefined>

  constructor(opts: ClientAuthOptions) {
    const ttl = opts.tokenTtlSeconds ?? DEFAULT_CLIENT_TOKEN_SECONDS
    if (!Number.isInteger(ttl) || ttl < 1) {
      throw new DproxyError('CONFIG_INVALID', `expected tokenTtlSeconds to be a whole number of seconds, got ${ttl}`)
    }
    this.ttlSeconds = ttl
    this.secret = opts.secret
    this.clock = opts.clock ?? systemClock
    this.log = opts.log ?? silentLogger
  }

  private mac(expiry: number, secret: string): string {
    return createHmac('sha256', this.key)
      .update(`${TOKEN_PREFIX}.${expiry}.${this.username}.`)
      .update(digest(secret))
      .digest('base64url')
  }

  /** Whether user and password are the client's; false while there is no password. */
  async checkPassword(username: string, password: string): Promise<boolean> {
    const secret = await this.secret()
    if (secret === undefined) return false
    return sameText(username, this.username) && sameText(password, secret)
  }

  /** A new token, valid for the configured lifetime or until the password changes. */
  async issue(): Promise<IssuedToken> {
    const secret = await this.secret()
    if (secret === undefined) throw new DproxyError('UNAUTHORIZED', 'dproxy has no client password yet (run dproxy env)')
    const now = this.clock.now()
    const expiry = Math.floor(now / 1000) + this.ttlSeconds
    const token = `${TOKEN_PREFIX}.${expiry}.${this.mac(expiry, secret)}`
    return { token, access_token: token, expires_in: this.ttlSeconds, issued_at: new Date(now).toISOString() }
  }

  async verifyToken(token: string): Promise<boolean> {
    // One spelling per expiry, as issue() writes it: no leading zero, so that no other string carries the same MAC.
    const m = /^dp1\.([1-9]\d{0,11})\.([A-Za-z0-9_-]{43})$/.exec(token)
    if (!m) return false
    const expiry = Number(m[1])
    if (expiry * 1000 <= this.clock.now()) return false
    const secret = await this.secret()
    if (secret === undefined) return false
    const expected = Buffer.from(this.mac(expiry, secret))
    const given = Buffer.from(m[2]!)
    return expected.length === given.length && timingSafeEqual(expected, given)
  }

  /** A bearer token, or Basic with the password or with a token as the password. */
  async authorized(req: IncomingMessage): Promise<boolean> {
    const header = req.headers.authorization
    const bearer = bearerToken(header)
    if (bearer !== undefined) return this.verifyToken(bearer)
    const basic = basicCredentials(header)
    if (!basic) return false
    if (basic.password.startsWith(`${TOKEN_PREFIX}.`) && sameText(basic.username, this.username)) {
      return this.verifyToken(basic.password)
    }
    return this.checkPassword(basic.username, basic.password)
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
      if (await this.authorized(req)) return next(req, res)
      this.challenge(req, res)
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
      if (!(await this.checkPassword(username, password))) {
        res.setHeader('www-authenticate', `Basic realm="${CLIENT_AUTH_SERVICE}"`)
        throw new DproxyError('UNAUTHORIZED', 'incorrect username or password (dproxy env prints the credentials)')
      }
      const body = JSON.stringify(await this.issue())
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
