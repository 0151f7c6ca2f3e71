// Client tokens: one login per person or CI runner (`dproxy token create`),
// each revocable on its own, next to the built-in `dproxy` user whose password
// lives in the credential store (CLIENT_SECRET_KEY, `dproxy env`).
//
// A token is the text `dpt_<name>_<secret>`: the fixed prefix, the token's name
// (NAME_RE: letters, digits, `.`, `_`, `-`, at most 64), `_`, and 43 characters
// of base64url carrying 32 random bytes. The secret has a fixed length, so the
// name is whatever lies between the prefix and the last 44 characters: one
// reading, whatever the name holds. Carrying the name lets the daemon find the
// entry in O(1) (no trial of every hash) and lets a Basic login check that the
// user name and the token agree.
//
// Stored, per name, in `<stateDir>/tokens.json` (0600, in a 0700 dir):
//
//   { "version": 1, "tokens": { "ci-runner-1": { "hash": "<base64url>", "created": "<ISO>",
//     "expires": "<ISO>" | null, "repos": "docker.io/library/*" | null } } }
//
// `hash` is HMAC-SHA-256(key, "dpt1\0<name>\0<secret>"), the key being 32 random
// bytes kept in the credential store (keychain, else credentials.json in the
// config dir) under TOKEN_KEY_ENTRY, never in this file. Why a keyed hash and
// not a slow one (scrypt, argon2): a slow hash protects low-entropy passwords
// against guessing; these secrets are 256 random bits, which no guessing
// reaches, while a slow hash would cost tens of milliseconds of CPU on every
// Basic-authenticated request. The key adds what a slow hash cannot: the tokens
// file alone (a backup, a stray copy) does not even let anyone check a guess
// offline. Comparisons use timingSafeEqual on equal-length digests.
//
// Writers (the CLI: create, rotate, revoke) take `<stateDir>/tokens.lock` (the
// pid lock, pidlock.ts) around read-modify-write, and write a temp file that
// is renamed over the old one. The daemon only reads tokens.json (TokenBook:
// a stat at most every CHECK_EVERY_MS, a re-read when it changed), so a
// revocation applies within about a second. When each token was last used is
// the daemon's to know: it keeps that in memory (status shows it) and writes
// `<stateDir>/tokens-used.json` at most once a minute and when it stops, a
// separate file so that the daemon never rewrites tokens.json and cannot undo
// a revocation that raced with its write.
//
// Repository patterns (`--repos`): comma-separated globs over
// `<registry>/<repository>` as the daemon resolves them (Docker Hub is
// `docker.io`, single names get `library/`): `*` matches within one path
// component, `**` across components; nothing else is special. For example
// `docker.io/library/*,ghcr.io/acme/**`.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { promises as fs } from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { systemClock, type Clock } from '../clock.js'
import { DproxyError } from '../errors.js'
import { isNotFound } from '../fs.js'
import { silentLogger, type Logger } from '../log.js'
import { acquirePidLock, releasePidLock } from '../pidlock.js'
import { parseSecretJson, type CredentialStore } from './credential.js'

export const TOKENS_FILE = 'tokens.json'
export const TOKENS_USED_FILE = 'tokens-used.json'
export const TOKENS_LOCK_FILE = 'tokens.lock'
/** Pseudo-registry under which the tokens' HMAC key lives in the credential store. */
export const TOKEN_KEY_ENTRY = 'dproxy-tokens'
/** The built-in user (`dproxy env`), whose password is CLIENT_SECRET_KEY in the credential store. */
export const BUILTIN_TOKEN_NAME = 'dproxy'
export const TOKEN_PREFIX = 'dpt_'
const SECRET_CHARS = 43
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
/** How often the daemon looks at tokens.json for changes. */
export const CHECK_EVERY_MS = 1000
/** How often the daemon writes tokens-used.json, at most. */
export const USED_FLUSH_MS = 60_000
/** How long a writer waits for another one to finish with tokens.json. */
const LOCK_WAIT_MS = 10_000
const LOCK_RETRY_MS = 50
const MAX_PATTERNS = 16
const MAX_PATTERN_TEXT = 512

export interface TokenEntry {
  name: string
  /** HMAC-SHA-256 of the secret, base64url. */
  hash: string
  created: string
  expires: string | null
  repos: string | null
}

/** What `token ls` shows: never the hash. */
export type TokenInfo = Omit<TokenEntry, 'hash'> & { lastUsed: string | null }

interface FileShape {
  version: 1
  tokens: Record<string, Omit<TokenEntry, 'name'>>
}

/** Throws a usage error unless `name` is a valid token name (NAME_RE); the built-in name is refused where `builtin` says. */
export function checkTokenName(name: string, opts: { allowBuiltin?: boolean } = {}): void {
  if (!NAME_RE.test(name)) {
    throw new DproxyError('USAGE', `expected a token name of letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit), got '${name.slice(0, 80)}'`)
  }
  if (name === BUILTIN_TOKEN_NAME && !opts.allowBuiltin) {
    throw new DproxyError('USAGE', `'${BUILTIN_TOKEN_NAME}' is the built-in user: dproxy env prints its password and dproxy env --rotate replaces it`)
  }
}

export function isTokenName(name: string): boolean {
  return NAME_RE.test(name)
}

export function formatToken(name: string, secret: string): string {
  return `${TOKEN_PREFIX}${name}_${secret}`
}

/** The name and secret of a token text, or undefined when it is not one. */
export function parseToken(text: string): { name: string; secret: string } | undefined {
  if (!text.startsWith(TOKEN_PREFIX) || text.length < TOKEN_PREFIX.length + 2 + SECRET_CHARS) return undefined
  const secret = text.slice(-SECRET_CHARS)
  if (text[text.length - SECRET_CHARS - 1] !== '_' || !/^[A-Za-z0-9_-]+$/.test(secret)) return undefined
  const name = text.slice(TOKEN_PREFIX.length, -SECRET_CHARS - 1)
  return NAME_RE.test(name) ? { name, secret } : undefined
}

export function tokenHash(key: Buffer, name: string, secret: string): string {
  return createHmac('sha256', key).update(`dpt1\0${name}\0${secret}`, 'utf8').digest('base64url')
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'base64url')
  const y = Buffer.from(b, 'base64url')
  return x.length === 32 && y.length === 32 && timingSafeEqual(x, y)
}

/** A repository pattern, parsed (see the module comment). */
export interface RepoPattern {
  text: string
  matches(repository: string): boolean
}

export function parseRepoPattern(text: string): RepoPattern {
  const parts = text.split(',').map((p) => p.trim()).filter((p) => p !== '')
  const bad = (why: string) =>
    new DproxyError('USAGE', `expected --repos like 'docker.io/library/*' or 'ghcr.io/acme/**' (comma-separated), got '${text.slice(0, 80)}': ${why}`)
  if (text.length > MAX_PATTERN_TEXT) throw bad(`longer than ${MAX_PATTERN_TEXT} characters`)
  if (parts.length === 0) throw bad('no pattern')
  if (parts.length > MAX_PATTERNS) throw bad(`more than ${MAX_PATTERNS} patterns`)
  const res = parts.map((p) => {
    if (!/^[a-z0-9.*-]+(:\d+)?(\/[a-z0-9._*-]+)+$/.test(p)) {
      throw bad(`'${p}' is not <registry>/<path> in lower case with only * and ** as wildcards`)
    }
    if (/\*\*\*/.test(p)) throw bad(`'${p}' has *** (use * or **)`)
    const source = p
      .split(/(\*\*|\*)/)
      .map((piece) => (piece === '**' ? '.*' : piece === '*' ? '[^/]*' : piece.replace(/[.]/g, '\\.')))
      .join('')
    return new RegExp(`^${source}$`)
  })
  const normal = parts.join(',')
  return { text: normal, matches: (repository) => res.some((re) => re.test(repository)) }
}

function newSecret(): string {
  return randomBytes(32).toString('base64url')
}

/** The HMAC key from the credential store; created (and stored) when `create` and missing. */
export async function tokenKey(store: Pick<CredentialStore, 'get' | 'set'>, opts: { create?: boolean } = {}): Promise<Buffer | undefined> {
  const stored = await store.get(TOKEN_KEY_ENTRY)
  if (stored) {
    const key = Buffer.from(stored.secret, 'base64url')
    if (key.length !== 32) throw new DproxyError('CONFIG_INVALID', `the token key in the credential store (${TOKEN_KEY_ENTRY}) is not 32 bytes; remove it (every token must then be created again)`)
    return key
  }
  if (!opts.create) return undefined
  await store.set(TOKEN_KEY_ENTRY, { username: 'hmac-sha256', secret: randomBytes(32).toString('base64url') })
  // Two first creations at once: both use what is stored now.
  return tokenKey(store)
}

function decodeFile(text: string, file: string): FileShape {
  const value = parseSecretJson(text, `tokens file ${file}`) as { tokens?: unknown } | null
  const tokens = value?.tokens
  if (tokens === null || typeof tokens !== 'object' || Array.isArray(tokens)) {
    throw new DproxyError('CONFIG_INVALID', `tokens file ${file} has no "tokens" object; fix or remove it`)
  }
  const out: FileShape = { version: 1, tokens: {} }
  for (const [name, raw] of Object.entries(tokens as Record<string, unknown>)) {
    const e = raw as Record<string, unknown> | null
    const ok =
      NAME_RE.test(name) &&
      e !== null &&
      typeof e === 'object' &&
      typeof e.hash === 'string' &&
      typeof e.created === 'string' &&
      (e.expires === null || typeof e.expires === 'string') &&
      (e.repos === null || typeof e.repos === 'string')
    if (!ok) throw new DproxyError('CONFIG_INVALID', `tokens file ${file}: the entry '${name.slice(0, 80)}' needs hash, created, expires and repos`)
    out.tokens[name] = { hash: e.hash as string, created: e.created as string, expires: e.expires as string | null, repos: e.repos as string | null }
  }
  return out
}

async function readFileShape(file: string): Promise<FileShape> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    if (isNotFound(err)) return { version: 1, tokens: {} }
    throw new DproxyError('INTERNAL', `cannot read tokens file ${file}`, { cause: err })
  }
  return decodeFile(text, file)
}

/** Writes `text` to `file` through a 0600 temp file renamed into place (in a 0700 dir). */
async function writeAtomic(file: string, text: string): Promise<void> {
  const dir = path.dirname(file)
  await fs.mkdir(dir, { recursive: true, mode: 0o700 })
  const temp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    const handle = await fs.open(temp, 'wx', 0o600)
    try {
      await handle.chmod(0o600)
      await handle.writeFile(text)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await fs.rename(temp, file)
  } catch (err) {
    await fs.rm(temp, { force: true })
    throw new DproxyError('INTERNAL', `cannot write ${file}`, { cause: err })
  }
}

async function readUsed(file: string): Promise<Record<string, string>> {
  try {
    const value = JSON.parse(await fs.readFile(file, 'utf8')) as { lastUsed?: unknown } | null
    const used = value?.lastUsed
    if (used === null || typeof used !== 'object') return {}
    return Object.fromEntries(Object.entries(used as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string'))
  } catch {
    // Missing or broken: it is only a record of the past.
    return {}
  }
}

export interface CreatedToken {
  name: string
  /** The token text: shown once, stored nowhere. */
  token: string
  expires: string | null
}

/** The tokens file as the CLI changes it: every change under the tokens lock. */
export class TokenFile {
  readonly path: string
  readonly usedPath: string
  readonly #lock: string
  readonly #clock: Clock
  #queue: Promise<unknown> = Promise.resolve()

  constructor(stateDir: string, opts: { clock?: Clock } = {}) {
    this.path = path.join(stateDir, TOKENS_FILE)
    this.usedPath = path.join(stateDir, TOKENS_USED_FILE)
    this.#lock = path.join(stateDir, TOKENS_LOCK_FILE)
    this.#clock = opts.clock ?? systemClock
  }

  /** A new token; refused when `name` exists (unless `replace`, which keeps nothing of the old one). */
  async create(
    key: Buffer,
    name: string,
    opts: { expiresMs?: number | undefined; repos?: string | undefined; replace?: boolean } = {},
  ): Promise<CreatedToken> {
    checkTokenName(name)
    const repos = opts.repos === undefined ? null : parseRepoPattern(opts.repos).text
    const now = this.#clock.now()
    const expires = opts.expiresMs === undefined || opts.expiresMs === 0 ? null : new Date(now + opts.expiresMs).toISOString()
    const secret = newSecret()
    await this.#mutate((data) => {
      if (Object.hasOwn(data.tokens, name) && !opts.replace) {
        throw new DproxyError('USAGE', `a token named '${name}' exists; dproxy token revoke ${name} first, or rotate it with dproxy env --for ${name} --rotate`)
      }
      data.tokens[name] = { hash: tokenHash(key, name, secret), created: new Date(now).toISOString(), expires, repos }
      return true
    })
    return { name, token: formatToken(name, secret), expires }
  }

  /** A new secret for an existing token; its expiry and repositories stay. */
  async rotate(key: Buffer, name: string): Promise<CreatedToken> {
    checkTokenName(name)
    const secret = newSecret()
    let expires: string | null = null
    await this.#mutate((data) => {
      const entry = data.tokens[name]
      if (!Object.hasOwn(data.tokens, name) || entry === undefined) throw new DproxyError('USAGE', `no token named '${name}'`)
      entry.hash = tokenHash(key, name, secret)
      expires = entry.expires
      return true
    })
    return { name, token: formatToken(name, secret), expires }
  }

  /** True when a token was removed. */
  async revoke(name: string): Promise<boolean> {
    checkTokenName(name)
    return this.#mutate((data) => {
      if (!Object.hasOwn(data.tokens, name)) return false
      delete data.tokens[name]
      return true
    })
  }

  async has(name: string): Promise<boolean> {
    return Object.hasOwn((await readFileShape(this.path)).tokens, name)
  }

  /** Every token, sorted by name, with when it was last used (tokens-used.json, or `fresher` from a running daemon). */
  async list(fresher: Record<string, string> = {}): Promise<TokenInfo[]> {
    const data = await readFileShape(this.path)
    const used = { ...(await readUsed(this.usedPath)), ...fresher }
    return Object.entries(data.tokens)
      .map(([name, e]) => {
        const last = used[name]
        // A name used before it was revoked and created again: that use was the old token's.
        const lastUsed = last !== undefined && Date.parse(last) >= Date.parse(e.created) ? last : null
        return { name, created: e.created, expires: e.expires, repos: e.repos, lastUsed }
      })
      .sort((a, b) => a.name.localeCompare(b.name))
  }

  /** Runs `change` under the tokens lock (waiting up to LOCK_WAIT_MS for another writer); writes when it returns true. */
  #mutate(change: (data: FileShape) => boolean): Promise<boolean> {
    const run = () => this.#locked(change)
    const result = this.#queue.then(run, run)
    this.#queue = result.catch(() => undefined)
    return result
  }

  async #locked(change: (data: FileShape) => boolean): Promise<boolean> {
    await fs.mkdir(path.dirname(this.path), { recursive: true, mode: 0o700 })
    const mark = JSON.stringify({ pid: process.pid, purpose: 'tokens', nonce: randomBytes(6).toString('hex') })
    let holder: number | undefined
    for (let waited = 0; ; waited += LOCK_RETRY_MS) {
      const got = await acquirePidLock(this.#lock, mark)
      if (got.acquired) break
      holder = got.holder?.pid
      if (waited >= LOCK_WAIT_MS) {
        throw new DproxyError('CACHE_LOCKED', `another dproxy command (pid ${holder ?? '?'}) holds ${this.#lock}; try again`)
      }
      await sleep(LOCK_RETRY_MS)
    }
    try {
      const data = await readFileShape(this.path)
      if (!change(data)) return false
      await writeAtomic(this.path, `${JSON.stringify(data, null, 2)}\n`)
      return true
    } finally {
      await releasePidLock(this.#lock, mark)
    }
  }
}

export interface TokenBookOptions {
  stateDir: string
  /** The HMAC key (credential store); asked again while it is missing, when the file changes. */
  key: () => Promise<Buffer | undefined>
  clock?: Clock
  log?: Logger
  checkEveryMs?: number
}

/**
 * The daemon's view of tokens.json: re-read when its identity (inode, size,
 * mtime) changes, looked at no more than every `checkEveryMs`. When a read
 * fails, the last good view stays and the failure is logged once per change.
 */
export class TokenBook {
  readonly #file: string
  readonly #usedFile: string
  readonly #key: () => Promise<Buffer | undefined>
  readonly #clock: Clock
  readonly #log: Logger
  readonly #every: number
  #entries = new Map<string, TokenEntry & { pattern: RepoPattern | undefined }>()
  #keyValue: Buffer | undefined
  #seen = ''
  #checkedAt = -Infinity
  #pending: Promise<void> | undefined
  readonly #used = new Map<string, number>()
  #usedDirty = false
  #flushedAt = -Infinity
  #usedLoaded = false

  constructor(opts: TokenBookOptions) {
    this.#file = path.join(opts.stateDir, TOKENS_FILE)
    this.#usedFile = path.join(opts.stateDir, TOKENS_USED_FILE)
    this.#key = opts.key
    this.#clock = opts.clock ?? systemClock
    this.#log = opts.log ?? silentLogger
    this.#every = opts.checkEveryMs ?? CHECK_EVERY_MS
  }

  async #refresh(): Promise<void> {
    if (this.#clock.now() - this.#checkedAt < this.#every) return
    this.#pending ??= this.#reload().finally(() => {
      this.#checkedAt = this.#clock.now()
      this.#pending = undefined
    })
    return this.#pending
  }

  async #reload(): Promise<void> {
    let identity = 'missing'
    try {
      const st = await fs.stat(this.#file)
      identity = `${st.ino}:${st.size}:${st.mtimeMs}`
    } catch (err) {
      if (!isNotFound(err)) identity = `error:${(err as NodeJS.ErrnoException).code ?? ''}`
    }
    if (identity === this.#seen && (this.#keyValue !== undefined || this.#entries.size === 0)) return
    this.#seen = identity
    if (!this.#usedLoaded) {
      this.#usedLoaded = true
      for (const [name, at] of Object.entries(await readUsed(this.#usedFile))) {
        const time = Date.parse(at)
        if (Number.isFinite(time) && !this.#used.has(name)) this.#used.set(name, time)
      }
    }
    try {
      const data = await readFileShape(this.#file)
      const entries = new Map<string, TokenEntry & { pattern: RepoPattern | undefined }>()
      for (const [name, e] of Object.entries(data.tokens)) {
        let pattern: RepoPattern | undefined
        try {
          pattern = e.repos === null ? undefined : parseRepoPattern(e.repos)
        } catch {
          // A pattern this daemon cannot read must not widen what the token may pull: the token is left out.
          this.#log.warn(`token ${name}: its repository pattern cannot be read; the token is refused until it is fixed`)
          continue
        }
        entries.set(name, { name, ...e, pattern })
      }
      this.#entries = entries
      if (this.#keyValue === undefined && entries.size > 0) this.#keyValue = await this.#key()
    } catch (err) {
      this.#log.warn(`cannot read the client tokens (${err instanceof Error ? err.message : String(err)}); keeping the last ones`)
    }
  }

  /** The entry when `secret` is this name's and the token has not expired. */
  async check(name: string, secret: string): Promise<(TokenEntry & { pattern: RepoPattern | undefined }) | undefined> {
    const entry = await this.entry(name)
    const key = this.#keyValue
    if (entry === undefined || key === undefined) return undefined
    return sameHash(tokenHash(key, name, secret), entry.hash) ? entry : undefined
  }

  /** The current, unexpired entry of `name`, as of at most `checkEveryMs` ago. */
  async entry(name: string): Promise<(TokenEntry & { pattern: RepoPattern | undefined }) | undefined> {
    await this.#refresh()
    const entry = this.#entries.get(name)
    if (entry === undefined) return undefined
    if (entry.expires !== null && Date.parse(entry.expires) <= this.#clock.now()) return undefined
    return entry
  }

  /** Notes a use of `name` (memory; written out by flush). */
  used(name: string): void {
    this.#used.set(name, this.#clock.now())
    this.#usedDirty = true
  }

  /** The names of the tokens as last read (expired ones included). */
  names(): string[] {
    return [...this.#entries.keys()].sort()
  }

  /** Last use per name (this daemon's, and what tokens-used.json said when it started), ISO times. */
  lastUsed(): Record<string, string> {
    return Object.fromEntries([...this.#used].map(([name, at]) => [name, new Date(at).toISOString()]))
  }

  /** Writes tokens-used.json when something changed and the last write is `USED_FLUSH_MS` old (or `force`). */
  async flush(opts: { force?: boolean } = {}): Promise<void> {
    if (!this.#usedDirty) return
    if (!opts.force && this.#clock.now() - this.#flushedAt < USED_FLUSH_MS) return
    this.#usedDirty = false
    this.#flushedAt = this.#clock.now()
    try {
      const merged = { ...(await readUsed(this.#usedFile)), ...this.lastUsed() }
      await writeAtomic(this.#usedFile, `${JSON.stringify({ version: 1, lastUsed: merged }, null, 2)}\n`)
    } catch (err) {
      this.#log.warn(`cannot record when tokens were last used (${err instanceof Error ? err.message : String(err)})`)
    }
  }
}
