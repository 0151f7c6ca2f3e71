// Logging in to an upstream registry, as `docker login` does it, and handing
// the stored logins to the daemon.
//
// A login is checked before it is stored: the upstream is asked the way the
// daemon will ask it later (ping /v2/, then a token from the realm with HTTP
// Basic, or a Basic-authenticated GET /v2/), through the same TokenAuth and
// dispatcher, so a wrong password is refused at `dproxy login` and never turns
// into anonymous pulls and surprise rate limits later. For Docker Hub the
// token asked for is for the harmless `ratelimitpreview/test` repository.
//
// The daemon reads logins through storedCredentials(): a CredentialSource that
// asks the credential store at most once per registry every few seconds, so a
// login or logout applies to a running daemon without restart and without a
// keychain round trip per request.

import { systemClock, type Clock } from '../clock.js'
import { checkCredential, type Credential, type CredentialStore, CLIENT_SECRET_KEY } from '../credentials/credential.js'
import { DproxyError, isDproxyError } from '../errors.js'
import { silentLogger, type Logger } from '../log.js'
import type { CredentialSource, UpstreamCredential } from './auth.js'
import type { UpstreamTimeouts } from './client.js'
import type { UpstreamMap } from './registries.js'
import { DOCKER_HUB, parseRegistryHost } from '../oci/registry-host.js'

/** The scope asked for when checking a Docker Hub login: a public repository that exists for this purpose. */
export const DOCKER_HUB_LOGIN_SCOPE = 'repository:ratelimitpreview/test:pull'

/** How long the daemon trusts what it read from the credential store. */
export const CREDENTIAL_CACHE_MS = 5000

/**
 * The registry a `dproxy login REGISTRY` means: Docker Hub when omitted,
 * aliases folded ('index.docker.io' -> 'docker.io'), and the URL forms people
 * paste from docker (`https://index.docker.io/v1/`) reduced to their host.
 */
export function loginRegistry(input: string | undefined): string {
  if (input === undefined || input.trim() === '') return DOCKER_HUB
  const host = input.trim().replace(/^https?:\/\//i, '').replace(/\/.*$/s, '')
  const registry = parseRegistryHost(host, 'REGISTRY')
  if (registry === CLIENT_SECRET_KEY) {
    throw new DproxyError('USAGE', `'${CLIENT_SECRET_KEY}' is reserved for dproxy's own client password (see dproxy env)`)
  }
  return registry
}

export interface LoginOptions {
  /** As returned by loginRegistry(). */
  registry: string
  credential: Credential
  store: CredentialStore
  /** registry host -> base URL (--upstream, DPROXY_UPSTREAMS, config). */
  upstreams?: UpstreamMap
  timeouts?: Partial<UpstreamTimeouts>
}

export interface LoginResult {
  registry: string
  username: string
  /** The URL that checked the credentials (origin only). */
  upstream: string
  /** How the upstream authenticates: a token service or Basic on every request. */
  scheme: 'bearer' | 'basic'
  store: CredentialStore['kind']
}

/**
 * Checks the credential against the registry and stores it. Wrong credentials
 * throw UNAUTHORIZED "login failed: incorrect username or password" and
 * nothing is stored. No error message ever contains the secret.
 */
export async function login(opts: LoginOptions): Promise<LoginResult> {
  const { registry, credential, store } = opts
  checkCredential(registry, credential)
  const overrides = opts.upstreams ?? {}
  const candidate: UpstreamCredential = { username: credential.username, secret: credential.secret }
  // The HTTP client loads only for a login: storedCredentials (below) is on every command's path.
  const { Upstreams } = await import('./client.js')
  const upstreams = new Upstreams({
    overrides,
    credentials: async (r) => (r === registry ? candidate : undefined),
    ...(opts.timeouts ? { timeouts: opts.timeouts } : {}),
  })
  let verified: { scheme: 'bearer' | 'basic'; url: string }
  try {
    // A registry's login is checked at its origin; a chain endpoint's (by its host) at that endpoint.
    verified = await upstreams.verifyLogin(registry, registry === DOCKER_HUB ? DOCKER_HUB_LOGIN_SCOPE : undefined)
  } catch (err) {
    if (isDproxyError(err, 'UNAUTHORIZED')) {
      throw new DproxyError('UNAUTHORIZED', 'login failed: incorrect username or password', { cause: err, detail: { registry } })
    }
    throw err
  } finally {
    await upstreams.close()
  }
  await store.set(registry, credential)
  return {
    registry,
    username: credential.username,
    upstream: verified.url,
    scheme: verified.scheme,
    store: store.kind,
  }
}

/**
 * Removes the login for `registry` from every store given (the one in use and,
 * say, the keychain a login went to before the file existed). Returns the kinds
 * of store it was removed from; empty when there was none.
 */
export async function logout(registry: string, stores: readonly CredentialStore[]): Promise<Array<CredentialStore['kind']>> {
  const removedFrom: Array<CredentialStore['kind']> = []
  for (const store of stores) {
    if (await store.delete(registry)) removedFrom.push(store.kind)
  }
  return removedFrom
}

export interface StoredCredentialsOptions {
  ttlMs?: number
  clock?: Clock
  log?: Logger
}

/**
 * The daemon's CredentialSource: the store's login for a registry, re-read at
 * most every `ttlMs`. A store that fails (a keychain gone away) is logged and
 * treated as "no login" so pulls go on anonymously. The client password is
 * never handed out as an upstream credential.
 */
export function storedCredentials(
  lookup: ((registry: string) => Promise<(Credential & { source?: string; identityToken?: boolean }) | undefined>) & {
    refresh?: (registry: string, loginRefused?: boolean) => void
    problem?: (registry: string) => string | undefined
  },
  opts: StoredCredentialsOptions = {},
): CredentialSource {
  const ttl = opts.ttlMs ?? CREDENTIAL_CACHE_MS
  const clock = opts.clock ?? systemClock
  const log = opts.log ?? silentLogger
  const cache = new Map<string, { value: UpstreamCredential | undefined; readAt: number }>()
  const pending = new Map<string, Promise<UpstreamCredential | undefined>>()
  const read = async (registry: string): Promise<UpstreamCredential | undefined> => {
    let value: UpstreamCredential | undefined
    try {
      const cred = await lookup(registry)
      value = cred
        ? {
            username: cred.username,
            secret: cred.secret,
            ...(cred.source !== undefined ? { source: cred.source } : {}),
            ...(cred.identityToken === true ? { identityToken: true } : {}),
          }
        : undefined
    } catch (err) {
      log.warn(`cannot read the login for ${registry} (${err instanceof Error ? err.message : String(err)}); pulling anonymously`)
    }
    cache.set(registry, { value, readAt: clock.now() })
    return value
  }
  const source = async (registry: string): Promise<UpstreamCredential | undefined> => {
    if (registry === CLIENT_SECRET_KEY) return undefined
    const hit = cache.get(registry)
    if (hit && clock.now() - hit.readAt < ttl) return hit.value
    let p = pending.get(registry)
    if (!p) {
      p = read(registry).finally(() => pending.delete(registry))
      pending.set(registry, p)
    }
    return p
  }
  return Object.assign(source, {
    // A 401 for one request (a repository that does not exist) re-reads nothing here: the
    // short cache above already bounds how stale a login is. A refused login is read again now.
    refresh: (registry: string, loginRefused?: boolean) => {
      if (loginRefused === true) cache.delete(registry)
      lookup.refresh?.(registry, loginRefused)
    },
    problem: (registry: string) => lookup.problem?.(registry),
  })
}
