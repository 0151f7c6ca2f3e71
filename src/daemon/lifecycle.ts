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
// taken over. Two processes may find the same stale file at once; only the one
// holding `daemon.json.takeover` (also created with 'wx') may delete it, and it
// re-reads the file under that guard first, so a live owner's fresh file is
// never deleted by a late taker.
//
// "Alive" is `kill(pid, 0)` succeeding (EPERM counts: someone else's process
// exists), except that on Linux a zombie is dead: in a container whose init
// does not reap, an exited daemon stays a zombie and still answers signal 0.
// A pid reused by an unrelated process makes a stale file look live; the
// refusal says which file to remove in that case.

import { promises as fs } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { DproxyError } from '../errors.js'
import { Layout } from '../store/layout.js'
import { isProcessAlive } from '../process.js'
import { formatHost, isLoopbackHost } from '../net.js'

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

export interface LockOptions {
  /** Replaces the liveness check; for tests. */
  isAlive?: (pid: number) => boolean
  /** How long an unreadable lock file is presumed to be mid-write before it counts as stale. Default 5 s. */
  partialGraceMs?: number
}

const TAKEOVER_STALE_MS = 10_000
const MAX_ATTEMPTS = 200

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

interface RawLock {
  /** Exactly what was read, to check later that nobody replaced it. */
  text: string
  info: DaemonInfo | undefined
  mtimeMs: number
}

async function readRaw(path: string): Promise<RawLock | undefined> {
  let text: string
  let mtimeMs: number
  try {
    const fh = await fs.open(path, 'r')
    try {
      mtimeMs = (await fh.stat()).mtimeMs
      text = await fh.readFile('utf8')
    } finally {
      await fh.close()
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  let info: DaemonInfo | undefined
  try {
    const parsed: unknown = JSON.parse(text)
    if (isDaemonInfo(parsed)) info = parsed
  } catch {
    info = undefined
  }
  return { text, info, mtimeMs }
}

/** What the cache dir's daemon.json says, and whether its pid is alive; undefined when there is none or it is unreadable. */
export async function readDaemonLock(
  cacheDir: string,
  opts: Pick<LockOptions, 'isAlive'> = {},
): Promise<{ info: DaemonInfo; alive: boolean } | undefined> {
  const raw = await readRaw(daemonFile(cacheDir))
  if (!raw?.info) return undefined
  return { info: raw.info, alive: (opts.isAlive ?? isProcessAlive)(raw.info.pid) }
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

/**
 * Removes the lock file if it still holds exactly `seen`, under the takeover
 * guard. Returns false when the guard is busy (the caller retries).
 */
async function removeIfUnchanged(path: string, seen: string): Promise<boolean> {
  const guard = `${path}.takeover`
  try {
    await fs.writeFile(guard, String(process.pid), { flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    // A taker that crashed while holding the guard leaves it behind; it is tiny work, so an old guard is abandoned.
    const st = await fs.stat(guard).catch(() => undefined)
    if (st && Date.now() - st.mtimeMs > TAKEOVER_STALE_MS) await fs.rm(guard, { force: true })
    return false
  }
  try {
    const now = await readRaw(path)
    if (now?.text === seen) await fs.rm(path, { force: true })
    return true
  } finally {
    await fs.rm(guard, { force: true })
  }
}

/** Removes a daemon.json whose owner is dead; true when one was removed. For `dproxy stop` and tests. */
export async function clearStaleLock(cacheDir: string, opts: LockOptions = {}): Promise<boolean> {
  const path = daemonFile(cacheDir)
  const isAlive = opts.isAlive ?? isProcessAlive
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const raw = await readRaw(path)
    if (!raw) return false
    if (raw.info && isAlive(raw.info.pid)) return false
    if (!raw.info && Date.now() - raw.mtimeMs < (opts.partialGraceMs ?? 5000)) return false
    if (await removeIfUnchanged(path, raw.text)) return true
    await sleep(50)
  }
  return false
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
    const isAlive = opts.isAlive ?? isProcessAlive
    const text = JSON.stringify(info, null, 2) + '\n'
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      try {
        await fs.writeFile(path, text, { flag: 'wx' })
        return new DaemonLock(path, info, text)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      const raw = await readRaw(path)
      if (!raw) continue
      if (raw.info && isAlive(raw.info.pid)) throw alreadyRunning(raw.info, cacheDir)
      if (!raw.info && Date.now() - raw.mtimeMs < (opts.partialGraceMs ?? 5000)) {
        // Just created by another process that has not written it yet.
        await sleep(50)
        continue
      }
      if (!(await removeIfUnchanged(path, raw.text))) await sleep(50)
    }
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
    const raw = await readRaw(this.path)
    if (raw?.text === this.written) await fs.rm(this.path, { force: true })
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
 * throughput. They only apply at process start, so a foreground
 * `dproxy serve` gets them through NODE_OPTIONS.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1']
