// The processes the bench measures or compares against, each in its own OS
// process so that its CPU and memory are its own: `dproxy serve` started the
// way a user starts it (the built CLI under node), and the static file servers
// that are the throughput baseline (two that copy, and nginx with sendfile
// when it is installed). They are started with the fixtures'
// spawnDaemon, which gives them a parent-death signal, so even a bench killed
// outright does not leave them running.
//
// dproxy gets fresh temp directories for everything it could read or write
// (cache, config, state, HOME) and none of the caller's DPROXY_* variables, so
// a developer's own settings neither change the numbers nor get touched.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { baseEnv, freePort, runOk, spawnDaemon, stopProcess, tail } from '../fixtures/clients.js'
import { DAEMON_NODE_FLAGS } from '../../src/daemon/lifecycle.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const DPROXY_BIN = join(ROOT, 'bin', 'dproxy.js')
export const DPROXY_ENTRY = join(ROOT, 'dist', 'cli', 'main.js')
const STATIC_SERVER = fileURLToPath(new URL('./static-server.mjs', import.meta.url))

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The environment for anything dproxy: scrubbed, with every dproxy directory under `dir`. */
export function dproxyEnv(dir: string): Record<string, string> {
  const env = baseEnv()
  for (const key of Object.keys(env)) if (key.startsWith('DPROXY_')) delete env[key]
  return {
    ...env,
    HOME: join(dir, 'home'),
    DPROXY_CONFIG_DIR: join(dir, 'config'),
    DPROXY_STATE_DIR: join(dir, 'state'),
    DPROXY_CACHE_DIR: join(dir, 'cache'),
  }
}

export interface DaemonProcess {
  pid: number
  /** `http://127.0.0.1:<port>` */
  url: string
  port: number
  cacheDir: string
  logFile: string
  stop(): Promise<void>
}

/**
 * Starts `dproxy serve` on an OS-chosen loopback port and waits for its
 * "listening on" line. `args` go after the serve flags (`--no-origin`). With `profileDir`, node writes a CPU profile of the
 * daemon there when it stops (`--cpu-prof`: node refuses it in NODE_OPTIONS,
 * so it goes on the command line; the profile is written when the process
 * exits by itself, which `dproxy serve` does on SIGTERM once it has stopped).
 */
export async function startDaemonProcess(
  dir: string,
  upstreams: Record<string, string>,
  /** `serveArgs`: more flags for `dproxy serve` (`--tls auto`: the url is then https). */
  o: { profileDir?: string | undefined; serveArgs?: readonly string[] } = {},
): Promise<DaemonProcess> {
  const env = dproxyEnv(dir)
  // For measuring what a V8 flag buys the daemon alone (the bench and the baselines keep their defaults).
  const flags = process.env.DPROXY_BENCH_NODE_OPTIONS
  if (flags) env.NODE_OPTIONS = [env.NODE_OPTIONS, flags].filter(Boolean).join(' ')
  for (const d of ['home', 'config', 'state', 'cache']) await mkdir(join(dir, d), { recursive: true })
  const logFile = join(dir, 'dproxy.log')
  // The flags `dproxy start` gives its daemon, so the bench measures the daemon users run.
  const profile = o.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${o.profileDir}`] : []
  const args = [...DAEMON_NODE_FLAGS, ...profile, DPROXY_BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--cache-dir', env.DPROXY_CACHE_DIR!]
  for (const [host, url] of Object.entries(upstreams)) args.push('--upstream', `${host}=${url}`)
  args.push(...(o.serveArgs ?? []))
  const child = spawnDaemon(process.execPath, args, logFile, env)
  const stop = () => stopProcess(child, 5000)
  const deadline = Date.now() + 15_000
  try {
    for (;;) {
      const log = await readFile(logFile, 'utf8').catch(() => '')
      const m = /dproxy listening on (https?:\/\/127\.0\.0\.1:(\d+))/.exec(log)
      if (m && child.pid !== undefined) {
        return { pid: child.pid, url: m[1]!, port: Number(m[2]), cacheDir: env.DPROXY_CACHE_DIR!, logFile, stop }
      }
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`dproxy serve exited (${child.exitCode ?? child.signalCode}) before listening:\n${tail(log, 30)}`)
      }
      if (Date.now() > deadline) throw new Error(`dproxy serve did not say "listening on" within 15 s:\n${tail(log, 30)}`)
      await sleep(20)
    }
  } catch (err) {
    await stop()
    throw err
  }
}

export interface StaticServer {
  name: 'node-static' | 'python-http.server' | 'nginx'
  /** URL of the one file it serves. */
  url: string
  stop(): Promise<void>
}

/** nginx's binary when it is installed (the bench then has a sendfile baseline). */
export const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p))

/**
 * Serves `file` with a minimal node:http + fs.createReadStream server, with
 * `python3 -m http.server`, or with nginx (sendfile on, a worker per core,
 * everything under a prefix next to `logFile`), on a free loopback port.
 */
export async function startStaticServer(kind: StaticServer['name'], file: string, logFile: string): Promise<StaticServer> {
  const port = await freePort()
  const child =
    kind === 'node-static'
      ? spawnDaemon(process.execPath, [STATIC_SERVER, file, String(port)], logFile)
      : kind === 'nginx'
        ? spawnDaemon(NGINX ?? 'nginx', await nginxArgs(file, port, `${logFile}.d`), logFile)
        : spawnDaemon('python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', dirname(file)], logFile)
  const url = `http://127.0.0.1:${port}/${basename(file)}`
  const stop = () => stopProcess(child, 3000)
  try {
    await waitHttp(url, Date.now() + 15_000, () => child.exitCode !== null || child.signalCode !== null)
  } catch (err) {
    await stop()
    const log = await readFile(logFile, 'utf8').catch(() => '')
    throw new Error(`${kind} did not start: ${(err as Error).message}\n${tail(log, 20)}`)
  }
  return { name: kind, url, stop }
}

/** A foreground nginx serving the directory of `file`, its pid, logs and temp paths under `prefix`. */
async function nginxArgs(file: string, port: number, prefix: string): Promise<string[]> {
  await mkdir(join(prefix, 'logs'), { recursive: true })
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `${k}_temp_path ${prefix};`).join(' ')
  const conf = [
    'daemon off;',
    'worker_processes auto;',
    // As root, workers would switch to a user that cannot read the bench's 0700 temp dir.
    ...(process.getuid?.() === 0 ? ['user root;'] : []),
    `pid ${join(prefix, 'nginx.pid')};`,
    `error_log ${join(prefix, 'logs', 'error.log')};`,
    'events { worker_connections 1024; }',
    `http { access_log off; sendfile on; tcp_nopush on; ${temp} server { listen 127.0.0.1:${port}; root ${dirname(file)}; } }`,
  ].join('\n')
  const confFile = join(prefix, 'nginx.conf')
  await writeFile(confFile, conf)
  return ['-p', prefix, '-c', confFile]
}

async function waitHttp(url: string, deadline: number, exited: () => boolean): Promise<void> {
  while (Date.now() < deadline) {
    if (exited()) throw new Error('exited during startup')
    try {
      const res = await request(url, { method: 'HEAD', headersTimeout: 1000 })
      await res.body.dump()
      if (res.statusCode === 200) return
    } catch {
      // not listening yet
    }
    await sleep(20)
  }
  throw new Error(`${url} did not answer 200 in time`)
}

export interface CurlResult {
  status: number
  bytes: number
  seconds: number
}

/** One GET with curl, body discarded: what curl saw and how long the whole transfer took. `args`: more (`--cacert F`, `-r 0-N`). */
export async function curlGet(url: string, args: readonly string[] = []): Promise<CurlResult> {
  const r = await runOk('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}', ...args, url], {
    timeoutMs: 180_000,
  })
  const [status, bytes, seconds] = r.stdout.trim().split(/\s+/).map(Number)
  if (status === undefined || bytes === undefined || seconds === undefined || Number.isNaN(seconds)) {
    throw new Error(`unexpected curl output: ${r.stdout}`)
  }
  return { status, bytes, seconds }
}

/** Wall time of one run of a command, from spawn to exit, output discarded. */
export function timeCommand(cmd: string, args: readonly string[], env: Record<string, string>): Promise<{ ms: number; code: number | null }> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint()
    const child = spawn(cmd, args, { env, stdio: 'ignore' })
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      resolve({ ms: Number(process.hrtime.bigint() - started) / 1e6, code })
    })
  })
}

/** Runs a command and returns its exit code and stdout (for probing whether a subcommand exists). */
export function probeCommand(cmd: string, args: readonly string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'ignore'] })
    let stdout = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout }))
  })
}

export function haveBuild(): boolean {
  return existsSync(DPROXY_ENTRY)
}
