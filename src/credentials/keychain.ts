// Credentials in the OS keychain (macOS Keychain, Windows Credential Manager,
// the Secret Service on Linux) through keytar, or, when keytar's native module
// is missing, through @napi-rs/keyring's keytar-shaped API. keytar is archived
// and its install script (which builds or fetches the native module) is
// blocked by npm 11 in global installs, so most users have the second one:
// prebuilt, no install script. Each registry is one entry:
// service 'dproxy', account = the normalised registry ('docker.io'), password =
// JSON {username, secret}. One credential per registry, as `docker login` has
// it, and the account name alone finds it without knowing the user.
//
// keytar is an optional native module, so it is imported lazily and may be
// missing or fail to load. Even when it loads, a keychain may not answer: on a
// headless Linux box libsecret throws (no D-Bus) or waits for a secret service
// that never comes. `probeKeychain` asks once with a deadline before the store
// is trusted. A call that hangs past the deadline still holds a libuv worker
// thread, and Node waits for it at exit (even after process.exit) until D-Bus
// gives up, about 25s later (measured with a broken gnome-keyring). Once a
// credential is in credentials.json, index.ts stops probing, so a machine
// like that pays this only until its first login.

import { DproxyError } from '../errors.js'
import { checkCredential, decodeCredential, encodeCredential, type Credential, type CredentialStore } from './credential.js'
import { parseRegistryHost } from '../oci/registry-host.js'

export const keychainService = 'dproxy'

/** The part of keytar this store uses; tests pass doubles. */
export interface Keytar {
  getPassword(service: string, account: string): Promise<string | null>
  setPassword(service: string, account: string, password: string): Promise<void>
  deletePassword(service: string, account: string): Promise<boolean>
  findCredentials(service: string): Promise<Array<{ account: string; password: string }>>
}

function isKeytar(value: unknown): value is Keytar {
  if (value === null || typeof value !== 'object') return false
  const candidate = value as Record<string, unknown>
  return ['getPassword', 'setPassword', 'deletePassword', 'findCredentials'].every((name) => typeof candidate[name] === 'function')
}

function reasonOf(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? err.name
  return String(err)
}

/**
 * Imports a module with keytar's API (`name` in messages). Both candidates are
 * CommonJS, so their functions arrive on `default`. The specifier is a
 * variable so that type-checking does not need the optional package
 * installed; the result is checked at run time instead.
 */
async function importKeytarApi(specifier: string, name: string): Promise<Keytar> {
  let mod: unknown
  try {
    mod = await import(specifier)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | null)?.code
    const reason = code === 'ERR_MODULE_NOT_FOUND' ? `${name} is not installed` : `${name} failed to load: ${reasonOf(err)}`
    throw new DproxyError('INTERNAL', reason, { cause: err })
  }
  const candidate = (mod as { default?: unknown } | null)?.default ?? mod
  if (!isKeytar(candidate)) throw new DproxyError('INTERNAL', `${name} loaded but does not have the keytar API`)
  return candidate
}

export function loadKeytar(): Promise<Keytar> {
  return importKeytarApi('keytar', 'keytar')
}

/** @napi-rs/keyring's keytar-compatible module. */
export function loadNapiKeyring(): Promise<Keytar> {
  return importKeytarApi('@napi-rs/keyring/keytar.js', '@napi-rs/keyring')
}

export type KeychainBackendName = 'keytar' | '@napi-rs/keyring'

/** A keychain API and which module provides it. */
export interface KeychainBackend {
  name: KeychainBackendName | (string & {})
  keytar: Keytar
}

/**
 * keytar when it loads, else @napi-rs/keyring; the loaders are parameters so
 * that a test can make keytar fail to load. When neither loads, the error
 * gives both reasons.
 */
export async function loadKeychain(
  loaders: { keytar?: () => Promise<Keytar>; napi?: () => Promise<Keytar> } = {},
): Promise<KeychainBackend> {
  try {
    return { name: 'keytar', keytar: await (loaders.keytar ?? loadKeytar)() }
  } catch (keytarErr) {
    try {
      return { name: '@napi-rs/keyring', keytar: await (loaders.napi ?? loadNapiKeyring)() }
    } catch (napiErr) {
      throw new DproxyError('INTERNAL', `${reasonOf(keytarErr)}; ${reasonOf(napiErr)}`, { cause: napiErr })
    }
  }
}

/** Resolves once the keychain answers a lookup within `timeoutMs`; rejects with a one-line reason otherwise. */
export async function probeKeychain(keytar: Keytar, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DproxyError('INTERNAL', `no answer within ${timeoutMs}ms`)), timeoutMs)
  })
  const lookup = keytar.findCredentials(keychainService).then(
    () => undefined,
    (err: unknown) => {
      throw new DproxyError('INTERNAL', reasonOf(err), { cause: err })
    },
  )
  // A lookup that fails after the deadline must not surface as an unhandled rejection.
  lookup.catch(() => undefined)
  try {
    await Promise.race([lookup, deadline])
  } finally {
    clearTimeout(timer)
  }
}

export class KeychainCredentialStore implements CredentialStore {
  readonly kind = 'keychain' as const
  readonly #keytar: Keytar

  /** `backend`: which module talks to the keychain, for diagnostics. */
  constructor(
    keytar: Keytar,
    readonly backend: string = 'keytar',
  ) {
    this.#keytar = keytar
  }

  async get(registry: string): Promise<Credential | undefined> {
    const key = parseRegistryHost(registry)
    const stored = await this.#call(`read the credential for ${key}`, () => this.#keytar.getPassword(keychainService, key))
    return stored === null ? undefined : decodeCredential(stored, `keychain entry ${keychainService}/${key}`)
  }

  async set(registry: string, cred: Credential): Promise<void> {
    const key = parseRegistryHost(registry)
    checkCredential(key, cred)
    await this.#call(`store the credential for ${key}`, () =>
      this.#keytar.setPassword(keychainService, key, encodeCredential(cred)),
    )
  }

  async delete(registry: string): Promise<boolean> {
    const key = parseRegistryHost(registry)
    return this.#call(`delete the credential for ${key}`, () => this.#keytar.deletePassword(keychainService, key))
  }

  async list(): Promise<Array<{ registry: string; username: string }>> {
    const entries = await this.#call('list credentials', () => this.#keytar.findCredentials(keychainService))
    const out: Array<{ registry: string; username: string }> = []
    for (const { account, password } of entries) {
      // Entries that are not ours (or were edited by hand) are left out of the list rather than failing it.
      try {
        out.push({ registry: account, username: decodeCredential(password, account).username })
      } catch {
        continue
      }
    }
    return out.sort((a, b) => a.registry.localeCompare(b.registry))
  }

  async #call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      // keytar's messages come from the OS and never include the password it was given.
      throw new DproxyError('INTERNAL', `keychain: could not ${what}: ${reasonOf(err)}`, { cause: err })
    }
  }
}
