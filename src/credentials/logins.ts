// Where the daemon's login for a registry comes from, in order: what
// `dproxy login` stored (the dproxy keychain, or its 0600 file), then the
// logins this machine already has (docker-config.ts: docker's helpers and
// config.json, podman's auth.json), unless that lookup is turned off
// (`--no-docker-credentials`, config `dockerCredentials false`).
//
// Answers from the machine's sources are kept for a short while
// (MACHINE_LOGIN_CACHE_MS): a credential helper is a process, and some ask a
// cloud service. `refresh(registry)` forgets the answer, which the upstream
// side calls when a registry answers 401, so a short-lived token from a
// helper (ECR, GCR, ACR) is fetched again instead of failing until the cache
// runs out. The last reason a source was passed over is kept per registry,
// for the error a refused pull reports.

import { systemClock, type Clock } from '../clock.js'
import type { Credential } from './credential.js'
import { findMachineLogin, type FindOptions, type MachineLogin } from './docker-config.js'

/** How long an answer of docker's or podman's files (or their helpers) is trusted. */
export const MACHINE_LOGIN_CACHE_MS = 5 * 60_000

/**
 * How old an answer must be before a 401 for a request makes it asked again.
 * Clients choose what to pull, and a registry answers 401 for every
 * repository that does not exist: without a floor, each such pull would run
 * the helpers. With a login, it is asked again after a second; "no login"
 * only after half a minute (a `docker login` meanwhile is rare). A login the
 * token service refused is asked again at once.
 */
export const REFRESH_FLOOR_MS = { login: 1000, none: 30_000 }

/** A login and where it was found, for messages: "dproxy keychain", "docker credsStore secretservice". */
export interface FoundLogin extends Credential {
  source: string
  /** The secret is an OAuth refresh token (docker's `identitytoken`), exchanged with a POST at the token realm. */
  identityToken?: boolean
}

export interface LoginLookup {
  (registry: string): Promise<FoundLogin | undefined>
  /**
   * Forgets the cached answer for `registry` so the next lookup asks again (a
   * helper runs again): `loginRefused` (the token service refused the login
   * itself) at once, otherwise (a 401 for a request) only past REFRESH_FLOOR_MS.
   */
  refresh(registry: string, loginRefused?: boolean): void
  /** Why the machine's sources gave nothing usable for `registry` last time, if one failed. */
  problem(registry: string): string | undefined
}

export interface LoginLookupOptions {
  /** dproxy's own store (`dproxy login`), asked first; its kind names the source. */
  store?: { get(registry: string): Promise<Credential | undefined>; kind(): Promise<'keychain' | 'file'> }
  /** Look in docker's and podman's files too (default true). */
  machine?: boolean
  /** For docker-config.ts: the environment whose files and PATH are used, the helper timeout. */
  find?: Omit<FindOptions, 'onProblem'>
  clock?: Clock
  cacheMs?: number
  /** Told each problem once per lookup (never a secret). */
  onProblem?: (registry: string, problem: string) => void
}

export function storeSourceName(kind: 'keychain' | 'file'): string {
  return kind === 'keychain' ? 'dproxy keychain' : 'dproxy credentials file'
}

export function loginLookup(opts: LoginLookupOptions): LoginLookup {
  const clock = opts.clock ?? systemClock
  const ttl = opts.cacheMs ?? MACHINE_LOGIN_CACHE_MS
  const cache = new Map<string, { value: MachineLogin | undefined; problem: string | undefined; at: number }>()
  const pending = new Map<string, Promise<{ value: MachineLogin | undefined; problem: string | undefined }>>()

  const machine = (registry: string) => {
    const hit = cache.get(registry)
    if (hit && clock.now() - hit.at < ttl) return Promise.resolve(hit)
    let p = pending.get(registry)
    if (!p) {
      const problems: string[] = []
      p = findMachineLogin(registry, {
        ...opts.find,
        onProblem: (text) => {
          problems.push(text)
          opts.onProblem?.(registry, text)
        },
      })
        .then((value) => {
          const entry = { value, problem: problems.length > 0 ? problems.join('; ') : undefined, at: clock.now() }
          // Bounded by the registries the daemon talks to; a registry a client names freely still costs one entry.
          if (cache.size >= 1000) cache.clear()
          cache.set(registry, entry)
          return entry
        })
        .finally(() => pending.delete(registry))
      pending.set(registry, p)
    }
    return p
  }

  const lookup = async (registry: string): Promise<FoundLogin | undefined> => {
    if (opts.store) {
      try {
        const own = await opts.store.get(registry)
        if (own) return { username: own.username, secret: own.secret, source: storeSourceName(await opts.store.kind()) }
      } catch (err) {
        // A keychain gone away must not hide the machine's own logins.
        if (opts.machine === false) throw err
        opts.onProblem?.(registry, `dproxy's credential store: ${(err as Error).message}`)
      }
    }
    if (opts.machine === false) return undefined
    const { value } = await machine(registry)
    return value && { username: value.username, secret: value.secret, source: value.source, identityToken: value.identityToken }
  }
  return Object.assign(lookup, {
    refresh: (registry: string, loginRefused = false) => {
      const hit = cache.get(registry)
      const floor = loginRefused ? 0 : hit?.value ? REFRESH_FLOOR_MS.login : REFRESH_FLOOR_MS.none
      if (hit && clock.now() - hit.at >= floor) cache.delete(registry)
    },
    problem: (registry: string) => cache.get(registry)?.problem,
  })
}
