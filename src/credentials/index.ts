// Chooses where credentials live. The OS keychain is preferred; when neither
// keytar nor @napi-rs/keyring loads (keychain.ts) or the keychain does not answer a probe in time, credentials go to a
// 0600 file in the config directory and the caller is told why in one line,
// once: when the first credential is actually written there (not when a
// command merely opens the store, as every serve, start and status does, nor
// before a login that fails). From then on the file exists and is used
// without probing, so the note does not come back.
//
// DPROXY_CREDENTIAL_STORE=file|keychain forces one; a forced keychain that does
// not answer is an error, not a silent fallback. Without it, an existing
// credentials.json keeps being used even if a keychain answers later, so that
// logins made while there was none are not silently lost; removing the file
// (`dproxy logout` of every registry) moves future logins to the keychain.
//
// Besides registry logins, the daemon's client password (`dproxy env --rotate`)
// is stored here under the pseudo-registry CLIENT_SECRET_KEY ('dproxy-client'),
// and the key that client tokens are hashed with under TOKEN_KEY_ENTRY
// ('dproxy-tokens', tokens.ts).

import fs from 'node:fs'
import { DproxyError } from '../errors.js'
import type { Credential, CredentialStore } from './credential.js'
import { FileCredentialStore } from './file.js'
import { KeychainCredentialStore, loadKeychain, probeKeychain, type KeychainBackend } from './keychain.js'

export { CLIENT_SECRET_KEY, type Credential, type CredentialStore } from './credential.js'
export { TOKEN_KEY_ENTRY } from './tokens.js'
export { FileCredentialStore, credentialsFileName } from './file.js'
export { KeychainCredentialStore, keychainService, type KeychainBackend, type Keytar } from './keychain.js'

/** How long the keychain gets to answer the probe; a locked keyring may be asking its user. */
export const defaultProbeTimeoutMs = 5000

export interface OpenCredentialStoreOptions {
  configDir: string
  env?: NodeJS.ProcessEnv
  /** Told, in one line, why credentials are going to a file instead of the keychain, when the first one is stored. */
  onFallback?: (reason: string) => void
  probeTimeoutMs?: number
  /** Replaces loading keytar or @napi-rs/keyring (keychain.ts); for tests. */
  loadKeychain?: () => Promise<KeychainBackend>
}

async function answeringKeychain(opts: OpenCredentialStoreOptions): Promise<KeychainCredentialStore> {
  const backend = await (opts.loadKeychain ?? loadKeychain)()
  await probeKeychain(backend.keytar, opts.probeTimeoutMs ?? defaultProbeTimeoutMs)
  return new KeychainCredentialStore(backend.keytar, backend.name)
}

function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** DPROXY_CREDENTIAL_STORE: the store it forces, if any; an unknown value is refused. */
function forcedStore(env: NodeJS.ProcessEnv): 'file' | 'keychain' | undefined {
  const forced = env.DPROXY_CREDENTIAL_STORE ?? ''
  if (forced === 'file' || forced === 'keychain') return forced
  if (forced === '') return undefined
  throw new DproxyError('CONFIG_INVALID', `expected DPROXY_CREDENTIAL_STORE like 'keychain' or 'file', got '${forced}'`)
}

export async function openCredentialStore(opts: OpenCredentialStoreOptions): Promise<CredentialStore> {
  const forced = forcedStore(opts.env ?? process.env)
  const file = new FileCredentialStore(opts.configDir)
  switch (forced) {
    case 'file':
      return file
    case 'keychain':
      try {
        return await answeringKeychain(opts)
      } catch (err) {
        throw new DproxyError(
          'CONFIG_INVALID',
          `DPROXY_CREDENTIAL_STORE=keychain, but no OS keychain answered (${reasonOf(err)})`,
          { cause: err },
        )
      }
  }
  if (fs.existsSync(file.path)) return file
  try {
    return await answeringKeychain(opts)
  } catch (err) {
    const note = `no OS keychain answered (${reasonOf(err)}); storing credentials in ${file.path} (mode 0600)`
    return new FallbackFileStore(opts.configDir, () => opts.onFallback?.(note))
  }
}

/** The store a daemon reads logins from, opened when first needed. */
export interface LazyCredentialStore {
  get(registry: string): Promise<Credential | undefined>
  /** Opens the store (once; later calls share the result). */
  open(): Promise<CredentialStore>
}

/**
 * openCredentialStore() deferred to the first lookup. A daemon asks for a
 * login only when an upstream wants a token, so a daemon that sits idle does
 * not load keytar or @napi-rs/keyring (a native module) nor probe the
 * keychain: idle RSS 61 -> 56 MB.
 * DPROXY_CREDENTIAL_STORE is checked here, so a typo still stops `serve` at
 * once; a forced keychain that does not answer fails the lookups instead.
 */
export function lazyCredentialStore(opts: OpenCredentialStoreOptions): LazyCredentialStore {
  forcedStore(opts.env ?? process.env)
  let opened: Promise<CredentialStore> | undefined
  const open = () => (opened ??= openCredentialStore(opts))
  return {
    open,
    get: async (registry) => (await open()).get(registry),
  }
}

/** The file store taken because no keychain answered: says so once, after it first stores a credential. */
class FallbackFileStore extends FileCredentialStore {
  #note: (() => void) | undefined

  constructor(configDir: string, note: () => void) {
    super(configDir)
    this.#note = note
  }

  override async set(registry: string, cred: Credential): Promise<void> {
    await super.set(registry, cred)
    const note = this.#note
    this.#note = undefined
    note?.()
  }
}
