// What `dproxy start` and `dproxy stop` run: the daemon as a detached
// process with its output in a log file and its pid in a pid file, both in the
// state dir and keyed by the cache dir (statePaths), so that daemons on
// different cache dirs never touch each other's files. Who owns a cache dir is
// the daemon's lock (daemon/lifecycle.ts); the pid file is only the fallback
// for a daemon that never got as far as taking it.

import { spawn } from 'node:child_process'
import { readFileSync, promises as fs } from 'node:fs'
import { createHash } from 'node:crypto'
import { basename, join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { DproxyError } from '../errors.js'
import { isProcessAlive } from '../process.js'
import { alreadyRunning, clearStaleLock, DAEMON_NODE_FLAGS, daemonFile, readDaemonLock } from '../daemon/lifecycle.js'
import { findDaemon } from './admin-client.js'

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
