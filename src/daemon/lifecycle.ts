// Which daemon owns a cache directory: the running daemon's side. The CLI's
// side (start, stop, finding and asking the daemon) is src/control/.
//
// A running daemon holds `<cacheDir>/daemon.json`, created exclusively (open
// with 'wx') before the store opens, so that only the owner migrates the
// layout and removes temp files, and removed on a clean stop. It says who
// owns the cache and where to reach it:
//
//   {"pid": 4242, "startedAt": "...", "listen": ["127.0.0.1:5000", "[::1]:5000"],
//    "url": "http://127.0.0.1:5000", "version": "0.1.0", "logFile": "..."}
//
// `listen` is empty and `url` absent until the daemon listens. `url` is the
// address the admin endpoints answer on, so always a loopback one when the
// daemon listens on loopback or on a wildcard address.
//
// A second daemon on the same cache dir is refused while the owner's pid is
// alive. A file left by a process that died (SIGKILL, power loss) is stale and
// taken over, by the pid-lock protocol that cache.lock shares (src/pidlock.ts:
// racing takers cannot delete each other's fresh file).
//
// "Alive" is `kill(pid, 0)` succeeding (EPERM counts: someone else's process
// exists), except that on Linux a zombie is dead: in a container whose init
// does not reap, an exited daemon stays a zombie and still answers signal 0.
// A pid reused by an unrelated process makes a stale file look live; the
// refusal says which file to remove in that case.

import { promises as fs } from 'node:fs'
import { DproxyError } from '../errors.js'
import { Layout } from '../store/layout.js'
import { isProcessAlive } from '../process.js'
import { formatHost, isLoopbackHost } from '../net.js'
import { acquirePidLock, readLockFile, releasePidLock, removeStalePidLock, type PidLockOptions } from '../pidlock.js'

export interface DaemonInfo {
  pid: number
  /** ISO 8601 */
  startedAt: string
  /** `host:port` per listening address (IPv6 in brackets); empty until listening. */
  listen: string[]
  /** Base URL of the admin endpoints; absent until listening. */
  url?: string
  version: string
  /** Where the daemon's output goes when `dproxy start` launched it. */
  logFile?: string
}

/** Liveness check and grace for a mid-write file; a test hook (pidlock.ts). */
export type LockOptions = Pick<PidLockOptions, 'isAlive' | 'partialGraceMs' | 'beforeRemove'>

export function daemonFile(cacheDir: string): string {
  return new Layout(cacheDir).daemonFile
}

function isDaemonInfo(value: unknown): value is DaemonInfo {
  if (value === null || typeof value !== 'object') return false
  const v = value as Record<string, unknown>
  return (
    typeof v.pid === 'number' &&
    Number.isSafeInteger(v.pid) &&
    typeof v.startedAt === 'string' &&
    Array.isArray(v.listen) &&
    v.listen.every((a) => typeof a === 'string') &&
    typeof v.version === 'string' &&
    (v.url === undefined || typeof v.url === 'string') &&
    (v.logFile === undefined || typeof v.logFile === 'string')
  )
}

function parseInfo(text: string): DaemonInfo | undefined {
  try {
    const parsed: unknown = JSON.parse(text)
    return isDaemonInfo(parsed) ? parsed : undefined
  } catch {
    return undefined
  }
}

/** What the cache dir's daemon.json says, and whether its pid is alive; undefined when there is none or it is unreadable. */
export async function readDaemonLock(
  cacheDir: string,
  opts: Pick<LockOptions, 'isAlive'> = {},
): Promise<{ info: DaemonInfo; alive: boolean } | undefined> {
  const file = await readLockFile(daemonFile(cacheDir))
  const info = file && parseInfo(file.text)
  if (!info) return undefined
  return { info, alive: (opts.isAlive ?? isProcessAlive)(info.pid) }
}

/** The refusal when a live daemon owns the cache dir (also `dproxy start`'s). */
export function alreadyRunning(info: DaemonInfo, cacheDir: string): DproxyError {
  const where = info.listen.length > 0 ? `listening on ${info.listen.join(', ')}` : 'starting'
  return new DproxyError(
    'ALREADY_RUNNING',
    `dproxy (pid ${info.pid}) is already ${where} with cache dir ${cacheDir}; stop it first ` +
      `(dproxy stop), or remove ${daemonFile(cacheDir)} if pid ${info.pid} is not dproxy`,
    { detail: { pid: info.pid, listen: info.listen, url: info.url } },
  )
}

/** Removes a daemon.json whose owner is dead; true when one was removed. For `dproxy stop` and tests. */
export async function clearStaleLock(cacheDir: string, opts: LockOptions = {}): Promise<boolean> {
  return removeStalePidLock(daemonFile(cacheDir), opts)
}

/** The cache dir's ownership by this process; see the module comment. */
export class DaemonLock {
  private released = false

  private constructor(
    readonly path: string,
    private current: DaemonInfo,
    /** The file's content as this lock last wrote it: ownership is "the file still says exactly this". */
    private written: string,
  ) {}

  get info(): DaemonInfo {
    return this.current
  }

  /**
   * Takes `<cacheDir>/daemon.json` for `info.pid`, taking over a stale file.
   * Throws ALREADY_RUNNING when a live process holds it.
   */
  static async acquire(cacheDir: string, info: DaemonInfo, opts: LockOptions = {}): Promise<DaemonLock> {
    const path = daemonFile(cacheDir)
    const text = JSON.stringify(info, null, 2) + '\n'
    const got = await acquirePidLock(path, text, { ...opts, pid: info.pid })
    if (got.acquired) return new DaemonLock(path, info, text)
    const holder = got.holder && parseInfo(got.holder.text)
    if (holder) throw alreadyRunning(holder, cacheDir)
    throw new DproxyError('ALREADY_RUNNING', `could not take ${path}: another process keeps replacing it`)
  }

  /** Records where the daemon listens (atomically: readers never see a half-written file). */
  async update(patch: Partial<Pick<DaemonInfo, 'listen' | 'url' | 'logFile'>>): Promise<void> {
    if (this.released) return
    this.current = { ...this.current, ...patch }
    const text = JSON.stringify(this.current, null, 2) + '\n'
    const tmp = `${this.path}.${this.current.pid}.tmp`
    await fs.writeFile(tmp, text)
    await fs.rename(tmp, this.path)
    this.written = text
  }

  /** Removes the file, if it is still ours (exactly what this lock last wrote). */
  async release(): Promise<void> {
    if (this.released) return
    this.released = true
    await releasePidLock(this.path, this.written)
  }
}

/** `host:port` strings from the daemon's listening addresses, IPv6 in brackets. */
export function formatListen(addresses: ReadonlyArray<{ host: string; port: number }>): string[] {
  return addresses.map((a) => `${formatHost(a.host)}:${a.port}`)
}

/**
 * The URL the CLI should use for the admin endpoints (which answer loopback
 * clients only): a loopback address if the daemon has one, else the loopback
 * of a wildcard address, else the first address.
 */
export function adminUrl(addresses: ReadonlyArray<{ host: string; port: number }>): string | undefined {
  const url = (host: string, port: number) => `http://${formatHost(host)}:${port}`
  const loop = addresses.find((a) => isLoopbackHost(a.host))
  if (loop) return url(loop.host, loop.port)
  for (const a of addresses) {
    if (a.host === '0.0.0.0') return url('127.0.0.1', a.port)
    if (a.host === '::') return url('::1', a.port)
  }
  const first = addresses[0]
  return first ? url(first.host, first.port) : undefined
}

/**
 * V8 flags for the long-running daemon. Node's default young generation grows
 * to 16 MiB semi-spaces under load and costs the daemon about 55 MB of peak
 * RSS while clients stream blobs (bench, 16 to 64 clients); 1 MiB keeps
 * throughput. They only apply at process start; a foreground `dproxy serve`
 * or a service unit gets a like cap from tuneHeap() (src/heap.ts).
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1']
