// The credential store contract shared by the keychain and the file store, and
// the JSON form both use for one credential. Secrets are handled here with one
// rule: no error message, thrown error text or `cause` may contain one. That is
// why decoding never passes on JSON.parse's message (V8 quotes the input).

import { DproxyError } from '../errors.js'

/**
 * Pseudo-registry under which the daemon's client password (`dproxy env
 * --rotate`) lives in the credential store. It is a valid registry key, so it
 * needs no code of its own, and no real registry is called that (no dot, no port).
 */
export const CLIENT_SECRET_KEY = 'dproxy-client'

export interface Credential {
  username: string
  secret: string
}

/**
 * Where registry logins (and the daemon's client password, under
 * CLIENT_SECRET_KEY) are kept: one credential per registry, as with
 * `docker login`. Registry names are normalised (Docker Hub aliases -> docker.io).
 */
export interface CredentialStore {
  readonly kind: 'keychain' | 'file'
  get(registry: string): Promise<Credential | undefined>
  set(registry: string, cred: Credential): Promise<void>
  /** True when a credential was removed. */
  delete(registry: string): Promise<boolean>
  /** Registries and user names, sorted by registry; never secrets. */
  list(): Promise<Array<{ registry: string; username: string }>>
}

/** Refuses credentials that could not be used (or stored) without naming the secret. */
export function checkCredential(registry: string, cred: Credential): void {
  if (typeof cred.username !== 'string' || cred.username === '' || /[\r\n\0]/.test(cred.username)) {
    throw new DproxyError('USAGE', `expected a user name for ${registry} (non-empty, one line)`, { detail: { registry } })
  }
  if (typeof cred.secret !== 'string' || cred.secret === '' || /[\r\n\0]/.test(cred.secret)) {
    throw new DproxyError('USAGE', `expected a password or token for ${registry} (non-empty, one line)`, {
      detail: { registry },
    })
  }
}

export function encodeCredential(cred: Credential): string {
  return JSON.stringify({ username: cred.username, secret: cred.secret })
}

export function isCredential(value: unknown): value is Credential {
  if (value === null || typeof value !== 'object') return false
  const { username, secret } = value as Record<string, unknown>
  return typeof username === 'string' && username !== '' && typeof secret === 'string'
}

/** Decodes `{username, secret}`; `where` describes the entry in the error, which never quotes the text. */
export function decodeCredential(text: string, where: string): Credential {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new DproxyError('CONFIG_INVALID', `${where} is not a dproxy credential (not JSON)`)
  }
  if (!isCredential(value)) {
    throw new DproxyError('CONFIG_INVALID', `${where} is not a dproxy credential (expected username and secret)`)
  }
  return { username: value.username, secret: value.secret }
}

/** Parses JSON whose text may hold secrets; failures say `what` is broken, never quote it. */
export function parseSecretJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw new DproxyError('CONFIG_INVALID', `${what} is not valid JSON; fix or remove it`)
  }
}
