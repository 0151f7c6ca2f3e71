// A pid lock: a file, created exclusively, whose JSON names the process that
// holds something ({"pid": 4242, ...}). The daemon's `<cacheDir>/daemon.json`
// and the CLI's `<cacheDir>/cache.lock` are both this; only what they write
// besides the pid differs.
//
// A file whose pid is dead is stale and may be taken over (a daemon killed by
// SIGKILL, a laptop that lost power). Deleting it is the dangerous step: a
// taker that judged the file stale and deletes it a moment later could delete
// the live file another taker wrote in between. So a stale file is removed
// only under a takeover guard named after exactly what was judged stale (its
// content, inode and mtime): `<lock>.takeover-<hash>`, created with O_EXCL,
// holding the taker's pid. Only one process can hold the guard for a given
// stale file; under it the file is re-read and removed only if it is still
// that file. Nothing else ever removes that file (its owner is dead), so the
// check and the removal cannot be separated by another writer.
//
// A guard is judged like a lock, by its pid, never by its age: a taker that
// is merely slow (paused, swapping) keeps its guard. A guard left by a taker
// that died is taken over the same way, with a guard named after it; the
// chain is bounded. Guards are removed by whoever finishes the takeover, and a
// late taker that recreates one finds the stale file already gone and
// removes nothing.
//
// An unreadable file (not JSON, no pid) is presumed to be mid-write while it
// is young, and stale once older than a grace period.

import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { isNotFound } from './fs.js'
import { isProcessAlive } from './process.js'

export interface PidLockOptions {
  /** Liveness check; default: signal 0, zombies dead (process.ts). */
  isAlive?: (pid: number) => boolean
  /** The pid a takeover guard is written with; default this process. */
  pid?: number
  /** An unreadable file younger than this is presumed mid-write. Default 5 s. */
  partialGraceMs?: number
  /** How many times to try before giving up (50 ms apart when waiting). Default 200. */
  attempts?: number
  /**
   * Runs holding the takeover guard, after the re-check and before the stale
   * file is removed: where a paused taker would be dangerous; for tests.
   */
  beforeRemove?: (stale: LockFile) => Promise<void>
}

/** A lock file as read: what it says, and the identity of that very file. */
export interface LockFile {
  text: string
  /** The holder's pid; undefined when the file is unreadable (mid-write, or garbage). */
  pid: number | undefined
  mtimeMs: number
  /** Content, inode and mtime: a replaced file never has the same identity. */
  identity: string
}

export type AcquireResult = { acquired: true } | { acquired: false; holder: LockFile | undefined }

const RETRY_MS = 50
/** How many dead takers in a row a takeover steps over. */
const MAX_GUARD_CHAIN = 8

/** The lock file at `path`, or undefined when there is none. */
export async function readLockFile(path: string): Promise<LockFile | undefined> {
  let text: string
  let st: { ino: number; mtimeMs: number }
  try {
    const fh = await fs.open(path, 'r')
    try {
      st = await fh.stat()
      text = await fh.readFile('utf8')
    } finally {
      await fh.close()
    }
  } catch (err) {
    if (isNotFound(err)) return undefined
    throw err
  }
  return { text, pid: pidOf(text), mtimeMs: st.mtimeMs, identity: `${st.ino}:${st.mtimeMs}:${text}` }
}

function pidOf(text: string): number | undefined {
  try {
    const pid = (JSON.parse(text) as { pid?: unknown } | null)?.pid
    return typeof pid === 'number' && Number.isSafeInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

type Judgement = 'live' | 'young' | 'stale'

function judge(file: LockFile, opts: PidLockOptions): Judgement {
  if (file.pid !== undefined) return (opts.isAlive ?? isProcessAlive)(file.pid) ? 'live' : 'stale'
  return Date.now() - file.mtimeMs < (opts.partialGraceMs ?? 5000) ? 'young' : 'stale'
}

/**
 * Creates `path` with `text` (which must be JSON naming the holder's pid),
 * taking over a stale file. When a live process holds it, returns that file;
 * when the attempts run out (others keep taking it), holder is undefined.
 */
export async function acquirePidLock(path: string, text: string, opts: PidLockOptions = {}): Promise<AcquireResult> {
  for (let attempt = 0; attempt < (opts.attempts ?? 200); attempt++) {
    try {
      await fs.writeFile(path, text, { flag: 'wx', mode: 0o600 })
      return { acquired: true }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const seen = await readLockFile(path)
    if (!seen) continue
    const state = judge(seen, opts)
    if (state === 'live') return { acquired: false, holder: seen }
    if (state === 'stale' && (await removeStale(path, seen, opts)) !== 'busy') continue
    await sleep(RETRY_MS)
  }
  return { acquired: false, holder: undefined }
}

/**
 * Removes `path` when it is stale; true when it was removed here. A live or
 * young file is left alone (false), as is one another taker is removing.
 */
export async function removeStalePidLock(path: string, opts: PidLockOptions = {}): Promise<boolean> {
  for (let attempt = 0; attempt < (opts.attempts ?? 200); attempt++) {
    const seen = await readLockFile(path)
    if (!seen || judge(seen, opts) !== 'stale') return false
    const outcome = await removeStale(path, seen, opts)
    if (outcome !== 'busy') return outcome === 'removed'
    await sleep(RETRY_MS)
  }
  return false
}

/** Removes the holder's own file: only if it still says exactly what the holder last wrote. */
export async function releasePidLock(path: string, written: string): Promise<void> {
  const now = await readLockFile(path)
  if (now?.text === written) await fs.rm(path, { force: true })
}

function guardName(path: string, of: LockFile): string {
  return `${path}.takeover-${createHash('sha256').update(of.identity).digest('hex').slice(0, 16)}`
}

/**
 * Removes `stale` from `path` under its takeover guard: 'changed' when the
 * file is no longer that one, 'busy' when another live taker holds the guard
 * (the caller waits and looks again).
 */
async function removeStale(path: string, stale: LockFile, opts: PidLockOptions): Promise<'removed' | 'changed' | 'busy'> {
  const held = await takeGuard(path, stale, opts, 0)
  if (!held) return 'busy'
  try {
    if ((await readLockFile(path))?.identity !== stale.identity) return 'changed'
    await opts.beforeRemove?.(stale)
    await fs.rm(path, { force: true })
    return 'removed'
  } finally {
    for (const guard of held) await fs.rm(guard, { force: true })
  }
}

/**
 * The guard for taking over `of`: the files to remove when done (this guard,
 * and the guards of dead takers stepped over), or undefined when a live taker
 * holds it.
 */
async function takeGuard(path: string, of: LockFile, opts: PidLockOptions, depth: number): Promise<string[] | undefined> {
  const guard = guardName(path, of)
  try {
    await fs.writeFile(guard, JSON.stringify({ pid: opts.pid ?? process.pid }) + '\n', { flag: 'wx', mode: 0o600 })
    return [guard]
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  const holder = await readLockFile(guard)
  // Gone already: its taker finished; look at the lock again.
  if (!holder || depth >= MAX_GUARD_CHAIN || judge(holder, opts) !== 'stale') return undefined
  const over = await takeGuard(path, holder, opts, depth + 1)
  return over ? [...over, guard] : undefined
}
