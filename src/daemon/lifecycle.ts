// Which daemon owns a cache directory, and how the CLI finds it.
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

import { spawn } from 'node:child_process'
import { readFileSync, promises as fs } from 'node:fs'
import { createHash } from 'node:crypto'
import { basename, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { DproxyError } from '../errors.js'
import { Layout } from '../store/layout.js'
import type { StatusReport } from './admin.js'
import { isProcessAlive } from '../process.js'
import { isLoopbackHost } from '../net.js'

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

export { isProcessAlive }

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

function alreadyRunning(info: DaemonInfo, cacheDir: string): DproxyError {
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
  return addresses.map((a) => `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`)
}

/**
 * The URL the CLI should use for the admin endpoints (which answer loopback
 * clients only): a loopback address if the daemon has one, else the loopback
 * of a wildcard address, else the first address.
 */
export function adminUrl(addresses: ReadonlyArray<{ host: string; port: number }>): string | undefined {
  const url = (host: string, port: number) => `http://${host.includes(':') ? `[${host}]` : host}:${port}`
  const loop = addresses.find((a) => isLoopbackHost(a.host))
  if (loop) return url(loop.host, loop.port)
  for (const a of addresses) {
    if (a.host === '0.0.0.0') return url('127.0.0.1', a.port)
    if (a.host === '::') return url('::1', a.port)
  }
  const first = addresses[0]
  return first ? url(first.host, first.port) : undefined
}

export interface RunningDaemon {
  info: DaemonInfo
  status: StatusReport
}

/**
 * GET <url>/_dproxy/status (with `?probe=1`: after a fresh rate-limit probe),
 * bounded; undefined when it does not answer 200 with JSON. A loopback call to
 * our own daemon, so it uses the runtime's fetch: the CLI need not load the
 * upstream HTTP client for it.
 */
export async function fetchStatus(url: string, timeoutMs = 3000, probe = false): Promise<StatusReport | undefined> {
  try {
    const res = await fetch(`${url}/_dproxy/status${probe ? '?probe=1' : ''}`, { signal: AbortSignal.timeout(timeoutMs) })
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => {})
      return undefined
    }
    return (await res.json()) as StatusReport
  } catch {
    return undefined
  }
}

/**
 * The daemon serving `cacheDir`, when there is one that is alive and answers
 * its status endpoint as the pid its lock file names; otherwise undefined.
 */
export async function findDaemon(
  cacheDir: string,
  opts: { timeoutMs?: number; isAlive?: (pid: number) => boolean; probe?: boolean } = {},
): Promise<RunningDaemon | undefined> {
  const lock = await readDaemonLock(cacheDir, opts)
  if (!lock?.alive || lock.info.url === undefined) return undefined
  const status = await fetchStatus(lock.info.url, opts.timeoutMs, opts.probe)
  if (!status || status.pid !== lock.info.pid) return undefined
  return { info: lock.info, status }
}

/** Waits until `pid` is gone, polling; true when it went within `timeoutMs`. */
export async function waitForExit(pid: number, timeoutMs: number, isAlive = isProcessAlive): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false
    await sleep(50)
  }
  return true
}

export const DAEMON_LOG = 'dproxy.log'
export const DAEMON_PID = 'dproxy.pid'

/**
 * The log and pid files `dproxy start` writes for the daemon of `cacheDir`:
 * `<stateDir>/dproxy-<key>.log` and `.pid`, the key a hash of the absolute
 * cache dir, so that daemons on different cache dirs sharing a state dir
 * never touch each other's files. Without a cache dir: `dproxy.log` and
 * `dproxy.pid` (the one daemon a service unit runs).
 */
export function statePaths(stateDir: string, cacheDir?: string): { logFile: string; pidFile: string } {
  if (cacheDir === undefined) return { logFile: join(stateDir, DAEMON_LOG), pidFile: join(stateDir, DAEMON_PID) }
  const key = createHash('sha256').update(resolve(cacheDir)).digest('hex').slice(0, 12)
  return { logFile: join(stateDir, `dproxy-${key}.log`), pidFile: join(stateDir, `dproxy-${key}.pid`) }
}

// ---- running the daemon in the background (`dproxy start`, `dproxy stop`)

/** The pid in a pid file (statePaths), or undefined when there is none or it is not a pid. */
export async function readPidFile(pidFile: string): Promise<number | undefined> {
  const text = await fs.readFile(pidFile, 'utf8').catch(() => undefined)
  const pid = text === undefined ? NaN : Number(text.trim())
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined
}

async function removePidFile(pidFile: string, pid: number): Promise<void> {
  if ((await readPidFile(pidFile)) === pid) await fs.rm(pidFile, { force: true })
}

/**
 * Whether a live pid from a pid file is plausibly dproxy, so that a stale pid
 * file whose number was reused does not get an unrelated process signalled.
 * Only Linux can tell cheaply (/proc/<pid>/cmdline); elsewhere the file is trusted.
 */
function looksLikeDproxy(pid: number): boolean {
  if (process.platform !== 'linux') return true
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    return args.some((a) => /^dproxy(\.js)?$/.test(basename(a)))
  } catch {
    return false
  }
}

/** The last `lines` lines of a file from byte `from` on; '' when unreadable. */
export async function logTail(file: string, from = 0, lines = 20): Promise<string> {
  const text = await fs.readFile(file).catch(() => Buffer.alloc(0))
  return text.subarray(from).toString('utf8').trimEnd().split('\n').slice(-lines).join('\n')
}

/**
 * V8 flags for the long-running daemon. Node's default young generation grows
 * to 16 MiB semi-spaces under load and costs the daemon about 55 MB of peak
 * RSS while clients stream blobs (bench, 16 to 64 clients); 1 MiB keeps
 * throughput. They only apply at process start; a foreground `dproxy serve`
 * or a service unit gets a like cap from tuneHeap() (src/heap.ts).
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1']

export interface StartDetachedOptions {
  cacheDir: string
  stateDir: string
  /** Absolute path of bin/dproxy.js. */
  binPath: string
  /** Flags for `dproxy serve` (without --detach); `--cache-dir <cacheDir>` and `--log-file` are added. */
  serveArgs: string[]
  env: NodeJS.ProcessEnv
  /** Default process.execPath. */
  nodePath?: string
  /** How long to wait for the status endpoint. Default 15 s. */
  timeoutMs?: number
}

export interface Started {
  pid: number
  listen: string[]
  url: string
  cacheDir: string
  logFile: string
  pidFile: string
}

/**
 * Starts `dproxy serve` as a detached process with its output appended to
 * the cache dir's log in the state dir, records its pid in its pid file (statePaths), and
 * returns once its status endpoint answers. Refuses when a daemon already owns
 * the cache dir; when the daemon exits or does not answer in time it is
 * stopped, and the error carries the tail of its log.
 */
export async function startDetached(o: StartDetachedOptions): Promise<Started> {
  const existing = await readDaemonLock(o.cacheDir)
  if (existing?.alive) throw alreadyRunning(existing.info, o.cacheDir)
  await fs.mkdir(o.stateDir, { recursive: true })
  const { logFile, pidFile } = statePaths(o.stateDir, o.cacheDir)
  const log = await fs.open(logFile, 'a', 0o600)
  const logStart = (await log.stat()).size
  let child: ReturnType<typeof spawn>
  let exited: string | undefined
  let spawnError: Error | undefined
  let spawned: Promise<void>
  try {
    child = spawn(
      o.nodePath ?? process.execPath,
      [...DAEMON_NODE_FLAGS, o.binPath, 'serve', ...o.serveArgs, '--cache-dir', o.cacheDir, '--log-file', logFile],
      // cwd: the state dir, so the daemon pins no directory the user may want to unmount or delete.
      { detached: true, stdio: ['ignore', log.fd, log.fd], env: o.env, cwd: o.stateDir },
    )
    // Listen before anything is awaited: 'spawn' and 'error' may fire on the next tick.
    spawned = new Promise<void>((resolve) => {
      child.once('spawn', resolve)
      child.once('error', (err) => {
        spawnError = err
        resolve()
      })
    })
    child.on('exit', (code, signal) => (exited = signal ? `was killed by ${signal}` : `exited with status ${code}`))
    child.unref()
  } finally {
    await log.close()
  }
  const fail = async (why: string): Promise<never> => {
    const tail = await logTail(logFile, logStart)
    throw new DproxyError('START_FAILED', `dproxy ${why}${tail ? `; the end of ${logFile}:\n${tail}` : ` (see ${logFile})`}`)
  }
  await spawned
  if (spawnError || child.pid === undefined) return fail(`could not be started: ${spawnError?.message ?? 'no pid'}`)
  const pid = child.pid
  await fs.writeFile(pidFile, `${pid}\n`)
  const deadline = Date.now() + (o.timeoutMs ?? 15_000)
  for (;;) {
    if (exited) {
      await removePidFile(pidFile, pid)
      return fail(`${exited} before it answered`)
    }
    const found = await findDaemon(o.cacheDir, { timeoutMs: 1000 })
    if (found?.info.pid === pid && found.info.url !== undefined) {
      return { pid, listen: found.info.listen, url: found.info.url, cacheDir: o.cacheDir, logFile, pidFile }
    }
    if (Date.now() >= deadline) {
      try {
        process.kill(pid, 'SIGTERM')
      } catch {
        // Already gone.
      }
      await waitForExit(pid, 5000)
      await removePidFile(pidFile, pid)
      return fail(`did not answer on its status endpoint within ${Math.round((o.timeoutMs ?? 15_000) / 1000)}s and was stopped`)
    }
    await sleep(100)
  }
}

export interface StopOptions {
  cacheDir: string
  stateDir: string
  /** How long to wait for the daemon to exit after SIGTERM. Default 15 s (it lets responses in flight finish for up to 10 s). */
  timeoutMs?: number
}

/** What is true once stopDaemon returns: nothing runs (`running`), and whether this call stopped it. */
export type StopResult =
  | { running: false; stopped: false; cleaned: string[] }
  | { running: false; stopped: true; pid: number; foundBy: 'lock' | 'pidFile' }

/**
 * Stops the daemon that owns `cacheDir` (or, failing that, the one named by
 * the cache dir's pid file in the state dir) with SIGTERM and waits for it to exit. Not running
 * is not an error: stale pid and lock files are removed and named in `cleaned`.
 * Throws STOP_FAILED when the daemon is still alive after `timeoutMs`.
 */
export async function stopDaemon(o: StopOptions): Promise<StopResult> {
  const { pidFile } = statePaths(o.stateDir, o.cacheDir)
  const lock = await readDaemonLock(o.cacheDir)
  let target: { pid: number; foundBy: 'lock' | 'pidFile' } | undefined
  if (lock?.alive) target = { pid: lock.info.pid, foundBy: 'lock' }
  else {
    const pid = await readPidFile(pidFile)
    if (pid !== undefined && pid !== process.pid && isProcessAlive(pid) && looksLikeDproxy(pid)) target = { pid, foundBy: 'pidFile' }
  }
  if (!target) {
    const cleaned: string[] = []
    const stalePid = await readPidFile(pidFile)
    if (stalePid !== undefined) {
      await removePidFile(pidFile, stalePid)
      cleaned.push(pidFile)
    }
    if (await clearStaleLock(o.cacheDir)) cleaned.push(daemonFile(o.cacheDir))
    return { running: false, stopped: false, cleaned }
  }
  if (target.pid === process.pid) {
    throw new DproxyError('STOP_FAILED', `the daemon on ${o.cacheDir} runs in this very process (pid ${target.pid})`)
  }
  try {
    process.kill(target.pid, 'SIGTERM')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') {
      throw new DproxyError('STOP_FAILED', `cannot signal dproxy (pid ${target.pid}): ${(err as Error).message}`, { cause: err })
    }
  }
  const timeoutMs = o.timeoutMs ?? 15_000
  if (!(await waitForExit(target.pid, timeoutMs))) {
    throw new DproxyError(
      'STOP_FAILED',
      `dproxy (pid ${target.pid}) is still running ${Math.round(timeoutMs / 1000)}s after SIGTERM ` +
        `(finishing downloads?); try again, or force it with: kill -KILL ${target.pid}`,
      { detail: { pid: target.pid } },
    )
  }
  await removePidFile(pidFile, target.pid)
  // A daemon that died without cleaning up (it should not on SIGTERM) leaves its lock behind.
  await clearStaleLock(o.cacheDir)
  return { running: false, stopped: true, ...target }
}
