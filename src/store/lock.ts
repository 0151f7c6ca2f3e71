// `<cacheDir>/cache.lock`: taken by a CLI command that changes the cache
// directly because no daemon runs (`dproxy cache clear`, `prune`), so that two
// such commands never plan against each other's half-applied deletions. A
// running daemon does this work itself, serialised in-process, and the CLI asks
// it through the admin endpoint instead.
//
// The file holds {"pid"}; it is a pid lock like the daemon's daemon.json
// (src/pidlock.ts: one left by a process that died is taken over, and racing
// takers cannot delete each other's fresh file). Released in a finally,
// whatever the work did.

import { DproxyError } from '../errors.js'
import { acquirePidLock, releasePidLock, type PidLockOptions } from '../pidlock.js'
import { Layout } from './layout.js'

export interface CacheLockOptions extends Pick<PidLockOptions, 'isAlive' | 'partialGraceMs' | 'beforeRemove'> {
  /** The pid written to the lock; default this process. */
  pid?: number
}

const ATTEMPTS = 20

/** Runs `fn` holding `<root>/cache.lock`; throws CACHE_LOCKED when a live process holds it. */
export async function withCacheLock<T>(root: string, fn: () => Promise<T>, opts: CacheLockOptions = {}): Promise<T> {
  const path = new Layout(root).cacheLock
  const pid = opts.pid ?? process.pid
  const text = JSON.stringify({ pid }) + '\n'
  const got = await acquirePidLock(path, text, { ...opts, pid, attempts: ATTEMPTS })
  if (!got.acquired) {
    const holder = got.holder?.pid
    if (holder === undefined) throw new DproxyError('CACHE_LOCKED', `could not take ${path}: other processes keep taking it`)
    throw new DproxyError(
      'CACHE_LOCKED',
      `another dproxy command (pid ${holder}) is changing the cache; try again when it has finished, or remove ${path} if pid ${holder} is not dproxy`,
      { detail: { pid: holder } },
    )
  }
  try {
    return await fn()
  } finally {
    await releasePidLock(path, text)
  }
}
