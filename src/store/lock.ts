// `<cacheDir>/cache.lock`: taken by a CLI command that changes the cache
// directly because no daemon runs (`dproxy cache clear`, `prune`), so that two
// such commands never plan against each other's half-applied deletions. A
// running daemon does this work itself, serialised in-process, and the CLI asks
// it through the admin endpoint instead.
//
// The file is created with 'wx' and holds {"pid"}. One left by a process
// that died is stale and taken over: the taker renames it aside, and puts it
// back if what it moved is not the stale file it judged (someone else took
// over first and already wrote a live one). Released in a finally, whatever
// the work did.

import { randomBytes } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { DproxyError } from '../errors.js'
import { Layout } from './layout.js'
import { isNotFound } from './store.js'
import { isProcessAlive } from '../process.js'

export interface CacheLockOptions {
  /** Liveness check; default: signal 0 (EPERM means the process exists). */
  isAlive?: (pid: number) => boolean
  /** The pid written to the lock; default this process. */
  pid?: number
  /** An unreadable lock younger than this is presumed mid-write. Default 5 s. */
  partialGraceMs?: number
}

const ATTEMPTS = 20

/** Runs `fn` holding `<root>/cache.lock`; throws CACHE_LOCKED when a live process holds it. */
export async function withCacheLock<T>(root: string, fn: () => Promise<T>, opts: CacheLockOptions = {}): Promise<T> {
  const path = new Layout(root).cacheLock
  const pid = opts.pid ?? process.pid
  await acquire(path, pid, opts)
  try {
    return await fn()
  } finally {
    await release(path, pid)
  }
}

async function acquire(path: string, pid: number, opts: CacheLockOptions): Promise<void> {
  const isAlive = opts.isAlive ?? isProcessAlive
  const text = JSON.stringify({ pid }) + '\n'
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    try {
      await fs.writeFile(path, text, { flag: 'wx' })
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const seen = await read(path)
    if (seen === undefined) continue
    const holder = holderOf(seen.text)
    if (holder !== undefined && isAlive(holder)) {
      throw new DproxyError('CACHE_LOCKED', `another dproxy command (pid ${holder}) is changing the cache; try again when it has finished, or remove ${path} if pid ${holder} is not dproxy`, {
        detail: { pid: holder },
      })
    }
    if (holder === undefined && Date.now() - seen.mtimeMs < (opts.partialGraceMs ?? 5000)) {
      await new Promise((r) => setTimeout(r, 50))
      continue
    }
    await takeOver(path, seen.text)
  }
  throw new DproxyError('CACHE_LOCKED', `could not take ${path}: other processes keep taking it`)
}

/** Moves a stale lock aside; if what moved is not the file judged stale, puts it back. */
async function takeOver(path: string, staleText: string): Promise<void> {
  const aside = `${path}.${randomBytes(6).toString('hex')}.stale`
  try {
    await fs.rename(path, aside)
  } catch (err) {
    if (isNotFound(err)) return
    throw err
  }
  const moved = await fs.readFile(aside, 'utf8').catch(() => undefined)
  if (moved !== staleText) {
    // A live lock written by another taker: link it back unless a third process already holds the name.
    await fs.link(aside, path).catch(() => {})
  }
  await fs.rm(aside, { force: true })
}

async function release(path: string, pid: number): Promise<void> {
  const seen = await read(path)
  if (seen && holderOf(seen.text) === pid) await fs.rm(path, { force: true })
}

async function read(path: string): Promise<{ text: string; mtimeMs: number } | undefined> {
  try {
    const [text, st] = await Promise.all([fs.readFile(path, 'utf8'), fs.stat(path)])
    return { text, mtimeMs: st.mtimeMs }
  } catch (err) {
    if (isNotFound(err)) return undefined
    throw err
  }
}

function holderOf(text: string): number | undefined {
  try {
    const pid = (JSON.parse(text) as { pid?: unknown }).pid
    return typeof pid === 'number' && Number.isSafeInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}
