// Token authentication against a registry, as clients do it: ping `/v2/`,
// read the challenge, and exchange (optional) credentials at the token realm
// for a bearer token scoped to one repository. Tokens are cached per scope and
// credential until they expire, so a pull costs one token request at most, and
// nothing here runs until a request really has to go upstream. Clients name
// repositories freely, so that cache is bounded: the least recently used
// token goes first and is simply fetched again when needed.
//
// The realm comes from the registry's answer and is treated as hostile: it
// must be http(s), is called through the same address policy as every other
// upstream request (policy.ts: on another origin than the registry, an
// internal address only when the registry was configured and is itself on an
// internal address; never dproxy's own listeners), only receives credentials
// when it belongs to the same site as the registry (distribution's
// realmAllowed), and never over plain http when the registry itself speaks
// https.

import { isIP } from 'node:net'
import { LRUCache } from 'lru-cache'
import type { Dispatcher } from 'undici'
import type { Clock } from '../clock.js'
import { DproxyError } from '../errors.js'
import { SingleFlight } from '../singleflight.js'
import { parseChallenge, type Challenge } from './challenge.js'
import { discard, headerValue, readCapped } from './http.js'
import { loginRefusedMessage, type LoginUsed } from './refusal.js'

// Re-exported while proxy/blobs.ts (being split) still imports it from here.
export { discard }

export interface UpstreamCredential {
  username: string
  secret: string
  /** Where the login was found, for messages ("docker credsStore secretservice"); never the secret. */
  source?: string
  /** The secret is an OAuth refresh token (docker's identitytoken): exchanged by POST at the realm. */
  identityToken?: boolean
}

/**
 * Where upstream credentials come from; asked on every token fetch, so a new
 * login applies at once. `refresh` (optional) forgets a cached answer after
 * the registry refused it, so a short-lived token from a credential helper is
 * asked for again; `problem` says why no login was found, for messages.
 */
export type CredentialSource = ((registry: string) => Promise<UpstreamCredential | undefined>) & {
  /** `loginRefused`: the token service refused the login itself (not just one request). */
  refresh?: (registry: string, loginRefused?: boolean) => void
  problem?: (registry: string) => string | undefined
}

export const anonymous: CredentialSource = async () => undefined

interface CachedToken {
  value: string
  expiresAt: number
}

const MIN_TOKEN_SECONDS = 60
const EXPIRY_MARGIN_MS = 10_000
const TOKEN_BODY_CAP = 1 << 20
/** Tokens kept per registry client (one per repository and credential). */
export const MAX_TOKENS = 1000

/** The registrable part of a host name, naively the last two labels (auth.docker.io ~ registry-1.docker.io). */
function site(hostname: string): string {
  if (isIP(hostname.replace(/^\[|\]$/g, '')) !== 0) return hostname
  return hostname.split('.').slice(-2).join('.')
}

/**
 * Validates a token realm; returns the URL to call and whether credentials may
 * go there. `downgrade`: the realm is of the registry's site but plain http
 * while the registry is https, so a token request with credentials is refused.
 */
export function checkRealm(realm: string, upstream: URL): { url: URL; sendCredentials: boolean; downgrade: boolean } {
  let url: URL
  try {
    url = new URL(realm)
  } catch {
    throw new DproxyError('UPSTREAM_INVALID', `${upstream.origin} sent an unparsable token realm`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new DproxyError('UPSTREAM_INVALID', `${upstream.origin} sent a token realm with protocol ${url.protocol}`)
  }
  const sameSite = url.hostname === upstream.hostname || site(url.hostname) === site(upstream.hostname)
  const downgrade = sameSite && url.protocol === 'http:' && upstream.protocol === 'https:'
  return { url, sendCredentials: sameSite && !downgrade, downgrade }
}

function downgradeRefused(registry: string, url: URL): DproxyError {
  return new DproxyError(
    'DENIED',
    `${registry} asks for credentials at ${url.origin} over plain http while it speaks https; refusing to send them there`,
  )
}

export class TokenAuth {
  private challenge: Challenge | null | undefined
  private pinging: Promise<Challenge | null> | undefined
  private readonly tokens: LRUCache<string, CachedToken>
  private readonly fetching = new SingleFlight<CachedToken>()

  constructor(
    private readonly registry: string,
    private readonly base: URL,
    private readonly credentials: CredentialSource,
    private readonly clock: Clock,
    private readonly send: (method: string, url: URL, headers: Record<string, string>, body?: string) => Promise<Dispatcher.ResponseData>,
    maxTokens = MAX_TOKENS,
  ) {
    // Entries expire on the project clock; ttlResolution 0 reads it on every check rather than caching "now".
    this.tokens = new LRUCache({ max: maxTokens, perf: { now: () => clock.now() }, ttlResolution: 0 })
  }

  /** Tokens held now (bounded by maxTokens). */
  get cachedTokens(): number {
    return this.tokens.size
  }

  /** The Authorization header for a request in `scope`, pinging and fetching a token when needed. */
  async authorization(scope: string): Promise<string | undefined> {
    const challenge = await this.currentChallenge()
    if (!challenge) return undefined
    if (challenge.scheme === 'basic') {
      const cred = await this.credentials(this.registry)
      return cred ? basic(cred) : undefined
    }
    if (challenge.scheme !== 'bearer') return undefined
    const token = await this.token(challenge, scope)
    return `Bearer ${token.value}`
  }

  /**
   * After a 401: adopt the challenge it carried and forget the token for
   * `scope`. Returns whether a retry can help (the caller retries once).
   */
  async rejected(scope: string, header: string | undefined): Promise<boolean> {
    const challenge = parseChallenge(header)
    const cred = await this.credentials(this.registry)
    this.tokens.delete(tokenKey(scope, cred))
    // The login itself may be what expired (a helper's short-lived token): ask its source again. With
    // Basic (ECR's helper tokens) a 401 to a request that carried the login is a refusal of the login.
    this.credentials.refresh?.(this.registry, cred !== undefined && challenge?.scheme === 'basic')
    if (!challenge) return false
    this.challenge = challenge
    return true
  }

  /**
   * For `dproxy login`: proves that the registry accepts this source's
   * credentials before anyone stores them. With a Bearer challenge a token is
   * requested with them (never from a realm that may not receive them); with a
   * Basic one, GET /v2/ is sent with them. Throws UNAUTHORIZED when refused.
   */
  async verify(scope: string | undefined): Promise<'bearer' | 'basic'> {
    const cred = await this.credentials(this.registry)
    if (!cred) throw new DproxyError('USAGE', `no credentials to check for ${this.registry}`)
    const challenge = await this.currentChallenge()
    const origin = this.base.origin
    if (!challenge) {
      throw new DproxyError(
        'UNSUPPORTED',
        `${origin} did not answer GET /v2/ with an authentication challenge, so it would never be sent credentials`,
        { status: 400 },
      )
    }
    if (challenge.scheme === 'bearer') {
      const realm = challenge.params.realm
      const checked = realm ? checkRealm(realm, this.base) : undefined
      if (checked?.downgrade) throw downgradeRefused(this.registry, checked.url)
      if (realm && !checked?.sendCredentials) {
        throw new DproxyError(
          'DENIED',
          `${origin} asks for credentials at ${new URL(realm).origin}, which is not the same site; refusing to send them there`,
        )
      }
      await this.fetchToken(challenge, scope ?? '', cred)
      return 'bearer'
    }
    if (challenge.scheme === 'basic') {
      const url = new URL('/v2/', this.base)
      const res = await this.send('GET', url, { authorization: basic(cred) })
      await res.body.dump({ limit: 64 * 1024 }).catch(() => {})
      if (res.statusCode === 401 || res.statusCode === 403) {
        throw new DproxyError(
          'UNAUTHORIZED',
          `GET ${url.href}: the registry rejected the credentials for ${this.registry} (HTTP ${res.statusCode})`,
        )
      }
      if (res.statusCode < 200 || res.statusCode >= 300) {
        throw new DproxyError('UPSTREAM_UNAVAILABLE', `GET ${url.href}: HTTP ${res.statusCode}`)
      }
      return 'basic'
    }
    throw new DproxyError('UNSUPPORTED', `${origin} asks for ${challenge.scheme} authentication, which dproxy does not speak`, {
      status: 400,
    })
  }

  private async currentChallenge(): Promise<Challenge | null> {
    if (this.challenge !== undefined) return this.challenge
    this.pinging ??= this.ping().finally(() => {
      this.pinging = undefined
    })
    return this.pinging
  }

  private async ping(): Promise<Challenge | null> {
    const res = await this.send('GET', new URL('/v2/', this.base), {})
    await res.body.dump({ limit: 64 * 1024 }).catch(() => {})
    let challenge: Challenge | null = null
    if (res.statusCode === 401) {
      challenge = parseChallenge(headerValue(res.headers['www-authenticate'])) ?? null
    } else if (res.statusCode >= 500 || res.statusCode === 429) {
      throw new DproxyError(
        res.statusCode === 429 ? 'TOOMANYREQUESTS' : 'UPSTREAM_UNAVAILABLE',
        `GET ${new URL('/v2/', this.base).href}: HTTP ${res.statusCode}`,
        { detail: { upstreamStatus: res.statusCode } },
      )
    }
    this.challenge = challenge
    return challenge
  }

  /** The login requests are sent with now, as messages name it, and why there is none when a source failed. */
  async loginUsed(): Promise<{ login: LoginUsed | undefined; problem: string | undefined }> {
    const cred = await this.credentials(this.registry)
    return {
      login: cred && { username: cred.username, ...(cred.source !== undefined ? { source: cred.source } : {}) },
      problem: this.credentials.problem?.(this.registry),
    }
  }

  private async token(challenge: Challenge, scope: string): Promise<CachedToken> {
    let cred = await this.credentials(this.registry)
    let token: CachedToken
    try {
      token = await this.tokenFor(challenge, scope, cred)
    } catch (err) {
      // A refused login may be a short-lived one its source has renewed since: ask once more, retry if it changed.
      if (!cred || !this.credentials.refresh || !(err instanceof DproxyError && err.code === 'UNAUTHORIZED')) throw err
      this.credentials.refresh(this.registry, true)
      const fresh = await this.credentials(this.registry)
      if (!fresh || (fresh.username === cred.username && fresh.secret === cred.secret)) throw err
      cred = fresh
      token = await this.tokenFor(challenge, scope, cred)
    }
    return token
  }

  private async tokenFor(challenge: Challenge, scope: string, cred: UpstreamCredential | undefined): Promise<CachedToken> {
    const key = tokenKey(scope, cred)
    const cached = this.tokens.get(key)
    if (cached) return cached
    const token = await this.fetching.do(key, () => this.fetchToken(challenge, scope, cred))
    const ttl = token.expiresAt - this.clock.now()
    if (ttl > 0) this.tokens.set(key, token, { ttl })
    return token
  }

  private async fetchToken(challenge: Challenge, scope: string, cred: UpstreamCredential | undefined): Promise<CachedToken> {
    const realm = challenge.params.realm
    if (!realm) throw new DproxyError('UPSTREAM_INVALID', `${this.base.origin} sent a Bearer challenge without a realm`)
    const { url, sendCredentials, downgrade } = checkRealm(realm, this.base)
    if (cred && downgrade) throw downgradeRefused(this.registry, url)
    const started = this.clock.now()
    let res: Dispatcher.ResponseData
    if (cred?.identityToken && sendCredentials) {
      // An identity token is an OAuth refresh token: exchanged by POST, as the docker CLI does (distribution's oauth.md).
      const form = new URLSearchParams({ grant_type: 'refresh_token', client_id: 'dproxy', refresh_token: cred.secret })
      if (challenge.params.service) form.set('service', challenge.params.service)
      if (scope) form.set('scope', scope)
      res = await this.send('POST', url, { 'content-type': 'application/x-www-form-urlencoded' }, form.toString())
    } else {
      if (challenge.params.service) url.searchParams.set('service', challenge.params.service)
      if (scope) url.searchParams.append('scope', scope)
      const headers: Record<string, string> = {}
      if (cred && sendCredentials) headers.authorization = basic(cred)
      res = await this.send('GET', url, headers)
    }
    const text = await readCapped(res.body, TOKEN_BODY_CAP)
    const where = `GET ${url.origin}${url.pathname}`
    if (/^text\/html/i.test(headerValue(res.headers['content-type']) ?? '')) {
      throw new DproxyError('UPSTREAM_UNAVAILABLE', `${where}: got an HTML page (HTTP ${res.statusCode}) instead of a token`)
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      const message =
        cred && sendCredentials
          ? loginRefusedMessage(this.registry, /^repository:(.+):[^:]+$/.exec(scope)?.[1], res.statusCode, cred)
          : `${where}: the token service refused an anonymous token for ${this.registry} (HTTP ${res.statusCode}); log in with \`dproxy login ${this.registry}\``
      throw new DproxyError('UNAUTHORIZED', message, { detail: { upstreamStatus: res.statusCode } })
    }
    if (res.statusCode === 429) throw new DproxyError('TOOMANYREQUESTS', `${where}: HTTP 429`)
    if (res.statusCode !== 200) throw new DproxyError('UPSTREAM_UNAVAILABLE', `${where}: HTTP ${res.statusCode}`)
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown }
    try {
      body = JSON.parse(text)
    } catch {
      throw new DproxyError('UPSTREAM_UNAVAILABLE', `${where}: the token response is not JSON`)
    }
    const value = typeof body.token === 'string' && body.token ? body.token : body.access_token
    if (typeof value !== 'string' || !value) throw new DproxyError('UPSTREAM_INVALID', `${where}: no token in the response`)
    const seconds = Math.max(MIN_TOKEN_SECONDS, typeof body.expires_in === 'number' ? body.expires_in : MIN_TOKEN_SECONDS)
    return { value, expiresAt: started + seconds * 1000 - EXPIRY_MARGIN_MS }
  }
}

function tokenKey(scope: string, cred: UpstreamCredential | undefined): string {
  return `${cred?.username ?? ''}\u0000${scope}`
}

function basic(cred: UpstreamCredential): string {
  return `Basic ${Buffer.from(`${cred.username}:${cred.secret}`).toString('base64')}`
}


