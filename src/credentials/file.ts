// The credential store used when no OS keychain answers: one JSON file,
// <configDir>/credentials.json, readable only by its owner (file 0600, its
// directory 0700), which is what docker and npm do on machines without a
// keychain. Every write goes to a temporary file created 0600 in the same
// directory and is renamed over the old one, so a crash leaves either the old
// or the new file and never a readable half-written one. On Windows the modes
// mean little; the file sits in the user's own profile.
//
//   { "version": 1, "credentials": { "docker.io": { "username": "...", "secret": "..." } } }
//
// Mutations from one store instance are queued so that two concurrent `set`s
// cannot each read the old file and lose the other's entry. The file is removed
// when its last credential is.

import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { DproxyError } from '../errors.js'
import { checkCredential, isCredential, parseSecretJson, type Credential, type CredentialStore } from './credential.js'
import { parseRegistryHost } from '../oci/registry-host.js'

export const credentialsFileName = 'credentials.json'

interface FileShape {
  version: 1
  credentials: Record<string, Credential>
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT'
}

export class FileCredentialStore implements CredentialStore {
  readonly kind = 'file' as const
  readonly path: string
  readonly #dir: string
  #queue: Promise<unknown> = Promise.resolve()

  constructor(configDir: string) {
    this.#dir = configDir
    this.path = path.join(configDir, credentialsFileName)
  }

  async get(registry: string): Promise<Credential | undefined> {
    const key = parseRegistryHost(registry)
    const cred = (await this.#read()).credentials[key]
    return cred === undefined ? undefined : { username: cred.username, secret: cred.secret }
  }

  async set(registry: string, cred: Credential): Promise<void> {
    const key = parseRegistryHost(registry)
    checkCredential(key, cred)
    await this.#mutate((data) => {
      data.credentials[key] = { username: cred.username, secret: cred.secret }
      return true
    })
  }

  async delete(registry: string): Promise<boolean> {
    const key = parseRegistryHost(registry)
    return this.#mutate((data) => {
      if (!Object.hasOwn(data.credentials, key)) return false
      delete data.credentials[key]
      return true
    })
  }

  async list(): Promise<Array<{ registry: string; username: string }>> {
    const { credentials } = await this.#read()
    return Object.entries(credentials)
      .map(([registry, cred]) => ({ registry, username: cred.username }))
      .sort((a, b) => a.registry.localeCompare(b.registry))
  }

  /** Runs `change` on the current contents after every earlier mutation; writes only if it returns true. */
  #mutate(change: (data: FileShape) => boolean): Promise<boolean> {
    const run = async (): Promise<boolean> => {
      const data = await this.#read()
      if (!change(data)) return false
      await this.#write(data)
      return true
    }
    const result = this.#queue.then(run, run)
    this.#queue = result.catch(() => undefined)
    return result
  }

  async #read(): Promise<FileShape> {
    let text: string
    try {
      text = await fs.readFile(this.path, 'utf8')
    } catch (err) {
      if (isMissing(err)) return { version: 1, credentials: {} }
      throw new DproxyError('INTERNAL', `cannot read credentials file ${this.path}`, { cause: err })
    }
    const value = parseSecretJson(text, `credentials file ${this.path}`)
    const credentials = (value as { credentials?: unknown } | null)?.credentials
    if (credentials === null || typeof credentials !== 'object' || Array.isArray(credentials)) {
      throw new DproxyError('CONFIG_INVALID', `credentials file ${this.path} has no "credentials" object; fix or remove it`)
    }
    const out: Record<string, Credential> = {}
    for (const [registry, cred] of Object.entries(credentials)) {
      if (!isCredential(cred)) {
        throw new DproxyError('CONFIG_INVALID', `credentials file ${this.path}: the entry for ${registry} needs username and secret`)
      }
      out[registry] = cred
    }
    return { version: 1, credentials: out }
  }

  async #write(data: FileShape): Promise<void> {
    if (Object.keys(data.credentials).length === 0) {
      await fs.rm(this.path, { force: true })
      return
    }
    await fs.mkdir(this.#dir, { recursive: true, mode: 0o700 })
    // mkdir's mode is filtered by the umask and ignored for an existing directory.
    await fs.chmod(this.#dir, 0o700)
    const temp = path.join(this.#dir, `.${credentialsFileName}.${randomBytes(6).toString('hex')}.tmp`)
    const handle = await fs.open(temp, 'wx', 0o600)
    try {
      try {
        await handle.chmod(0o600)
        await handle.writeFile(`${JSON.stringify(data, null, 2)}\n`)
        await handle.sync()
      } finally {
        await handle.close()
      }
      await fs.rename(temp, this.path)
    } catch (err) {
      await fs.rm(temp, { force: true })
      throw new DproxyError('INTERNAL', `cannot write credentials file ${this.path}`, { cause: err })
    }
  }
}
