// The logins this machine already has, as docker and podman left them, read
// the way their own clients read them, for a registry dproxy holds no login
// of its own for (`dproxy login` comes first; see logins.ts):
//
//   1. Docker's config: $DOCKER_CONFIG/config.json, else ~/.docker/config.json
//        credHelpers[host]  -> docker-credential-<helper> get
//        credsStore         -> docker-credential-<store> get
//        auths[host]        -> base64 "user:password" in `auth`, or `identitytoken`
//   2. podman's auth.json, the first of $REGISTRY_AUTH_FILE,
//      $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json
//      that has an entry for the host (same `auths` shape)
//
// Keys are matched by host: `https://ghcr.io`, `ghcr.io/` and `ghcr.io` are
// one registry, and Docker Hub's legacy key `https://index.docker.io/v1/` (what
// `docker login` writes for Hub) counts for docker.io, as do its other
// aliases. podman entries scoped to a namespace (`quay.io/org`) are not used:
// dproxy asks per registry, and a namespace's login may not fit another.
//
// The files are the user's: they are read as they are on every lookup (they
// are small; logins.ts keeps the answers a few minutes), and a broken one is
// reported by name, never quoted (it holds secrets). The daemon reads the
// files of the user it runs as, from its own environment: a daemon run by
// root reads root's files.

import fs from 'node:fs/promises'
import path from 'node:path'
import { DproxyError } from '../errors.js'
import { canonicalRegistry, DOCKER_HUB, isValidRegistryHost } from '../oci/registry-host.js'
import { parseSecretJson } from './credential.js'
import { helperGet, helperList, isHelperName, type RunHelperOptions } from './helper.js'

/** The key `docker login` uses for Docker Hub, and the server URL helpers know Hub by. */
export const DOCKER_HUB_LEGACY_KEY = 'https://index.docker.io/v1/'

/** Where a login was found, in words a person recognises: "docker credsStore secretservice". */
export type LoginSourceKind = 'docker-helper' | 'docker-store' | 'docker-auths' | 'podman-auths'

export interface MachineLogin {
  username: string
  secret: string
  /** An OAuth refresh token (`identitytoken`, or a helper's `<token>` user) rather than a password. */
  identityToken: boolean
  kind: LoginSourceKind
  /** "docker credHelpers ecr-login", "docker credsStore secretservice", "docker config.json auths", "podman auth.json". */
  source: string
  /** The file the entry or helper setting is in. */
  file: string
}

export interface LoginFiles {
  docker: string
  podman: string[]
}

type Env = NodeJS.ProcessEnv

function home(env: Env): string {
  return env.HOME ?? env.USERPROFILE ?? ''
}

/** The files this environment's docker and podman read logins from (podman's in its order). */
export function loginFiles(env: Env): LoginFiles {
  const dockerDir = env.DOCKER_CONFIG !== undefined && env.DOCKER_CONFIG !== '' ? env.DOCKER_CONFIG : path.join(home(env), '.docker')
  const podman: string[] = []
  if (env.REGISTRY_AUTH_FILE) podman.push(env.REGISTRY_AUTH_FILE)
  if (env.XDG_RUNTIME_DIR) podman.push(path.join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'))
  podman.push(path.join(env.XDG_CONFIG_HOME || path.join(home(env), '.config'), 'containers', 'auth.json'))
  return { docker: path.join(dockerDir, 'config.json'), podman: [...new Set(podman)] }
}

/** The registry a config key names ('https://index.docker.io/v1/' -> 'docker.io'), or undefined for a namespace or junk. */
export function registryOfKey(key: string): string | undefined {
  const stripped = key.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')
  const slash = stripped.indexOf('/')
  const host = slash === -1 ? stripped : stripped.slice(0, slash)
  const rest = slash === -1 ? '' : stripped.slice(slash)
  if (!isValidRegistryHost(host)) return undefined
  const registry = canonicalRegistry(host)
  // A path is a namespace (podman's quay.io/org), except Docker Hub's legacy /v1/.
  if (rest !== '' && rest !== '/' && !(registry === DOCKER_HUB && /^\/v1\/?$/.test(rest))) return undefined
  return registry
}

export interface ConfigShape {
  auths: Record<string, { auth?: string; identitytoken?: string; username?: string; password?: string }>
  credHelpers: Record<string, string>
  credsStore: string | undefined
}

/** Reads a docker config.json or podman auth.json; undefined when it does not exist. */
/** A login file, or undefined with the reason told to `problem` when it cannot be read. */
async function readOrTell(file: string, problem: (text: string) => void): Promise<ConfigShape | undefined> {
  try {
    return await readLoginFile(file)
  } catch (err) {
    problem((err as Error).message)
    return undefined
  }
}

export async function readLoginFile(file: string): Promise<ConfigShape | undefined> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined
    throw new DproxyError('CONFIG_INVALID', `cannot read ${file} (${code ?? 'error'})`, { cause: err })
  }
  if (text.trim() === '') return { auths: {}, credHelpers: {}, credsStore: undefined }
  const value = parseSecretJson(text, file)
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new DproxyError('CONFIG_INVALID', `${file} is not a JSON object; fix or remove it`)
  }
  const { auths, credHelpers, credsStore } = value as Record<string, unknown>
  const objectOr = (v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {})
  const shape: ConfigShape = { auths: {}, credHelpers: {}, credsStore: typeof credsStore === 'string' && credsStore !== '' ? credsStore : undefined }
  for (const [key, entry] of Object.entries(objectOr(auths))) shape.auths[key] = objectOr(entry) as ConfigShape['auths'][string]
  for (const [key, helper] of Object.entries(objectOr(credHelpers))) if (typeof helper === 'string') shape.credHelpers[key] = helper
  return shape
}

/** The entry of `record` for `registry`: a key that is exactly the host first, then any spelling of it. */
function entryFor<T>(record: Record<string, T>, registry: string): { key: string; value: T } | undefined {
  const keys = Object.keys(record)
  const exact = keys.find((k) => k.toLowerCase() === registry)
  const key = exact ?? keys.find((k) => registryOfKey(k) === registry)
  return key === undefined ? undefined : { key, value: record[key]! }
}

/** user:password from an `auths` entry (`auth` base64, or plain fields), or its identity token. */
export function decodeAuthEntry(
  entry: ConfigShape['auths'][string],
  where: string,
): { username: string; secret: string; identityToken: boolean } | undefined {
  let username = typeof entry.username === 'string' ? entry.username : ''
  let password = typeof entry.password === 'string' ? entry.password : ''
  if (typeof entry.auth === 'string' && entry.auth !== '') {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon <= 0) throw new DproxyError('CONFIG_INVALID', `${where}: "auth" is not base64 of user:password`)
    username = decoded.slice(0, colon)
    password = decoded.slice(colon + 1)
  }
  if (typeof entry.identitytoken === 'string' && entry.identitytoken !== '') {
    return { username: username || '<token>', secret: entry.identitytoken, identityToken: true }
  }
  if (username === '' || password === '') return undefined
  if (/[\r\n\0]/.test(username) || /[\r\n\0]/.test(password)) {
    throw new DproxyError('CONFIG_INVALID', `${where}: the user name or password holds a line break`)
  }
  return { username, secret: password, identityToken: false }
}

/** The server URL a helper is asked for: Hub's legacy key for docker.io (what `docker login` stored), else the key or host. */
function serverUrl(registry: string, key: string | undefined): string {
  if (registry === DOCKER_HUB) return DOCKER_HUB_LEGACY_KEY
  return key ?? registry
}

export interface FindOptions extends RunHelperOptions {
  /** Where to read; default loginFiles(env). */
  files?: LoginFiles
  /** Told about each source that failed and was passed over (the message never holds a secret). */
  onProblem?: (problem: string) => void
}

/**
 * The machine's login for `registry`, looked up in the order above. A source
 * that fails (a helper missing, hanging or failing; a broken file) is passed
 * over and told to `onProblem`, so a broken credsStore does not hide a
 * working podman login.
 */
export async function findMachineLogin(registry: string, opts: FindOptions = {}): Promise<MachineLogin | undefined> {
  const env = opts.env ?? process.env
  const files = opts.files ?? loginFiles(env)
  const problem = (text: string) => opts.onProblem?.(text)
  const run = { env, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) }

  const docker = await readOrTell(files.docker, problem)
  if (docker) {
    const helper = entryFor(docker.credHelpers, registry)
    const attempts: Array<{ name: string; key: string | undefined; kind: LoginSourceKind; source: string }> = []
    if (helper) attempts.push({ name: helper.value, key: helper.key, kind: 'docker-helper', source: `docker credHelpers ${helper.value}` })
    if (docker.credsStore !== undefined) {
      const stored = entryFor(docker.auths, registry)
      attempts.push({ name: docker.credsStore, key: stored?.key, kind: 'docker-store', source: `docker credsStore ${docker.credsStore}` })
    }
    for (const a of attempts) {
      if (!isHelperName(a.name)) {
        problem(`${files.docker}: '${a.name.slice(0, 64)}' is not a credential helper name`)
        continue
      }
      try {
        const found = await helperGet(a.name, serverUrl(registry, a.key), run)
        if (found) return { ...found, kind: a.kind, source: a.source, file: files.docker }
      } catch (err) {
        problem(`${a.source} (${files.docker}): ${(err as Error).message}`)
      }
    }
    const found = fromAuths(docker, registry, files.docker, 'docker-auths', 'docker config.json auths', problem)
    if (found) return found
  }
  for (const file of files.podman) {
    const podman = await readOrTell(file, problem)
    const found = podman && fromAuths(podman, registry, file, 'podman-auths', 'podman auth.json', problem)
    if (found) return found
  }
  return undefined
}

function fromAuths(
  shape: ConfigShape,
  registry: string,
  file: string,
  kind: LoginSourceKind,
  source: string,
  problem: (text: string) => void,
): MachineLogin | undefined {
  const entry = entryFor(shape.auths, registry)
  if (!entry) return undefined
  try {
    const found = decodeAuthEntry(entry.value, `${file} ${entry.key}`)
    return found && { ...found, kind, source, file }
  } catch (err) {
    problem((err as Error).message)
    return undefined
  }
}

export interface ListedLogin {
  registry: string
  username: string
  source: string
  file: string
}

/**
 * Every registry the machine's files have a login for, with its user and
 * source (never the secret), the first source per registry as the lookup
 * would take it. Helpers are asked `list` (credsStore) or `get` (credHelpers);
 * a failing one becomes a problem, not a failure of the whole list.
 */
export async function listMachineLogins(opts: FindOptions = {}): Promise<ListedLogin[]> {
  const env = opts.env ?? process.env
  const files = opts.files ?? loginFiles(env)
  const problem = (text: string) => opts.onProblem?.(text)
  const run = { env, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) }
  const out = new Map<string, ListedLogin>()
  const add = (registry: string | undefined, username: string, source: string, file: string) => {
    if (registry !== undefined && username !== '' && !out.has(registry)) out.set(registry, { registry, username, source, file })
  }
  const docker = await readOrTell(files.docker, problem)
  if (docker) {
    for (const [key, name] of Object.entries(docker.credHelpers)) {
      const registry = registryOfKey(key)
      if (registry === undefined || !isHelperName(name)) continue
      try {
        const found = await helperGet(name, serverUrl(registry, key), run)
        if (found) add(registry, found.username, `docker credHelpers ${name}`, files.docker)
      } catch (err) {
        problem(`docker credHelpers ${name} (${files.docker}): ${(err as Error).message}`)
      }
    }
    if (docker.credsStore !== undefined && isHelperName(docker.credsStore)) {
      try {
        for (const [url, user] of Object.entries(await helperList(docker.credsStore, run))) {
          add(registryOfKey(url), user, `docker credsStore ${docker.credsStore}`, files.docker)
        }
      } catch (err) {
        problem(`docker credsStore ${docker.credsStore} (${files.docker}): ${(err as Error).message}`)
      }
    }
    listAuths(docker, files.docker, 'docker config.json auths', add, problem)
  }
  for (const file of files.podman) {
    const podman = await readOrTell(file, problem)
    if (podman) listAuths(podman, file, 'podman auth.json', add, problem)
  }
  return [...out.values()].sort((a, b) => a.registry.localeCompare(b.registry))
}

function listAuths(
  shape: ConfigShape,
  file: string,
  source: string,
  add: (registry: string | undefined, username: string, source: string, file: string) => void,
  problem: (text: string) => void,
): void {
  for (const [key, entry] of Object.entries(shape.auths)) {
    try {
      const found = decodeAuthEntry(entry, `${file} ${key}`)
      if (found) add(registryOfKey(key), found.username, source, file)
    } catch (err) {
      problem((err as Error).message)
    }
  }
}

export interface HelperProblem {
  helper: string
  /** "docker credsStore secretservice" */
  source: string
  file: string
  problem: string
  fix: string
}

/**
 * Helpers the docker config names that cannot work: not installed, or
 * failing `list` (which every helper answers without a server URL). For
 * `dproxy doctor`.
 */
export async function checkHelpers(opts: FindOptions = {}): Promise<{ file: string; helpers: number; problems: HelperProblem[] }> {
  const env = opts.env ?? process.env
  const files = opts.files ?? loginFiles(env)
  const run = { env, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) }
  const problems: HelperProblem[] = []
  let docker: ConfigShape | undefined
  try {
    docker = await readLoginFile(files.docker)
  } catch (err) {
    problems.push({ helper: '', source: 'docker config', file: files.docker, problem: (err as Error).message, fix: `fix or remove ${files.docker}` })
  }
  const named = new Map<string, string>()
  if (docker?.credsStore !== undefined) named.set(docker.credsStore, `docker credsStore ${docker.credsStore}`)
  for (const [key, name] of Object.entries(docker?.credHelpers ?? {})) if (!named.has(name)) named.set(name, `docker credHelpers ${name} (for ${key})`)
  for (const [name, source] of named) {
    if (!isHelperName(name)) {
      problems.push({ helper: name, source, file: files.docker, problem: `'${name.slice(0, 64)}' is not a credential helper name`, fix: `correct it in ${files.docker}` })
      continue
    }
    try {
      await helperList(name, run)
    } catch (err) {
      const message = (err as Error).message
      const missing = /not installed/.test(message)
      problems.push({
        helper: name,
        source,
        file: files.docker,
        problem: message,
        fix: missing
          ? `install docker-credential-${name} (Debian: golang-docker-credential-helpers has secretservice and pass), or remove it from ${files.docker}`
          : `run 'docker-credential-${name} list' to see why (a locked keyring? no network?), or remove it from ${files.docker}; dproxy login REGISTRY stores a login dproxy uses first`,
      })
    }
  }
  return { file: files.docker, helpers: named.size, problems }
}
