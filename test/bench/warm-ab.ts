// A quick A/B measurement of the warm path, for working on it (issue 17, and
// the TLS ratio of issue 18): each variant (a built tree) gets a plain and a
// --tls auto daemon, each filled with the 512 MiB blob by one GET; then, round
// after round in alternating order, N curl clients at once GET the cached blob
// from each of them and from the baselines serving the same file (nginx with
// sendfile when installed, and static-server.mjs). A round's figure is the
// bytes of all its clients over its wall time; the medians are printed, with
// the daemons' CPU seconds per GiB sent and their peak RSS.
//
//   node --import=@tapjs/typescript/import test/bench/warm-ab.ts [--rounds N] [--clients N,N] \
//     [--perf NAME] NAME=ROOT[::flag,flag] ...
//
// ROOT defaults to this checkout; without flags a daemon gets DAEMON_NODE_FLAGS.
// --perf NAME: `perf record -g` the plain daemon of variant NAME during its first round.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawnDaemon, stopProcess } from '../fixtures/clients.js'
import { startUpstream } from '../fixtures/upstream.js'
import { DAEMON_NODE_FLAGS } from '../../src/daemon/lifecycle.js'
import { pushBigImage } from './big-image.js'
import { curlGet, dproxyEnv, NGINX, startStaticServer, type CurlResult } from './processes.js'
import { readMemory, resetPeak } from './memory.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const MiB = 1024 * 1024

interface Variant {
  name: string
  root: string
  flags: string[]
}

interface Target {
  name: string
  url: string
  curlArgs: string[]
  pid?: number
  stop(): Promise<void>
}

function parseArgs(argv: string[]) {
  let rounds = 3
  let clients = [1, 16]
  let perf: string | undefined
  const variants: Variant[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--rounds') rounds = Number(argv[++i])
    else if (a === '--clients') clients = argv[++i]!.split(',').map(Number)
    else if (a === '--perf') perf = argv[++i]
    else {
      const m = /^([\w.-]+)=([^:]*)(?:::(.*))?$/.exec(a)
      if (!m) throw new Error(`expected NAME=ROOT[::flags], got ${a}`)
      variants.push({ name: m[1]!, root: resolve(m[2] || ROOT), flags: m[3] !== undefined ? m[3].split(',').filter(Boolean) : DAEMON_NODE_FLAGS })
    }
  }
  if (variants.length === 0) variants.push({ name: 'this', root: ROOT, flags: DAEMON_NODE_FLAGS })
  return { rounds, clients, perf, variants }
}

async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS
}

async function startDaemon(v: Variant, dir: string, hubUrl: string, tls: boolean): Promise<Target> {
  const env = dproxyEnv(dir)
  for (const d of ['home', 'config', 'state', 'cache']) await mkdir(join(dir, d), { recursive: true })
  const logFile = join(dir, 'dproxy.log')
  const args = [...v.flags, join(v.root, 'bin', 'dproxy.js'), 'serve', '--host', '127.0.0.1', '--port', '0', '--cache-dir', env.DPROXY_CACHE_DIR!]
  args.push('--upstream', `docker.io=${hubUrl}`)
  if (tls) args.push('--tls', 'auto')
  const child = spawnDaemon(process.execPath, args, logFile, env)
  const deadline = Date.now() + 15_000
  for (;;) {
    const log = await readFile(logFile, 'utf8').catch(() => '')
    const m = /dproxy listening on (https?:\/\/127\.0\.0\.1:\d+)/.exec(log)
    if (m && child.pid !== undefined) {
      const curlArgs = tls ? ['--cacert', join(dir, 'state', 'tls', 'ca.pem')] : []
      return { name: `${v.name}${tls ? ' tls' : ''}`, url: m[1]!, curlArgs, pid: child.pid, stop: () => stopProcess(child, 5000) }
    }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`daemon ${v.name} did not start:\n${log}`)
    await sleep(20)
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

async function stopPerf(perf: ChildProcess): Promise<void> {
  if (perf.exitCode !== null || perf.signalCode !== null) return
  const gone = new Promise((r) => perf.once('exit', r))
  perf.kill('SIGINT')
  await gone
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  const tmp = await mkdtemp(join(os.tmpdir(), 'dproxy-warmab-'))
  const up = await startUpstream({ hub: { unlimited: true } })
  const targets: Target[] = []
  try {
    process.stderr.write('pushing the 512 MiB layer\n')
    const big = await pushBigImage(up.registryUrl, join(tmp, 'blob512.tar'))
    const path = `/v2/${big.repository}/blobs/${big.layerDigest}`
    for (const kind of NGINX ? (['nginx', 'node-static'] as const) : (['node-static'] as const)) {
      const st = await startStaticServer(kind, big.file, join(tmp, `${kind}.log`))
      targets.push({ name: st.name, url: st.url, curlArgs: [], stop: () => st.stop() })
    }
    let n = 0
    for (const v of o.variants) {
      for (const tls of [false, true]) {
        const t = await startDaemon(v, join(tmp, `d${++n}`), up.hubUrl, tls)
        t.url += path
        targets.push(t)
      }
    }
    for (const t of targets) {
      const r = await curlGet(t.url, t.curlArgs)
      if (r.status !== 200 || r.bytes !== big.layerSize) throw new Error(`filling ${t.name}: ${JSON.stringify(r)}`)
    }
    for (const t of targets) if (t.pid) resetPeak(t.pid)
    const mibps = new Map<string, number[]>()
    const cpu = new Map<string, number[]>()
    let round = 0
    for (let r = 0; r < o.rounds; r++) {
      for (const clients of o.clients) {
        const order = round++ % 2 === 0 ? targets : [...targets].reverse()
        for (const t of order) {
          const key = `${t.name} x${clients}`
          let perf: ChildProcess | undefined
          if (o.perf && t.name === o.perf && r === 0 && t.pid) {
            perf = spawn('perf', ['record', '-g', '-o', join(process.cwd(), `perf-${o.perf}-${clients}.data`), '-p', String(t.pid)], { stdio: 'ignore' })
            await sleep(500)
          }
          const c0 = t.pid ? await cpuSeconds(t.pid) : 0
          const t0 = performance.now()
          const got: CurlResult[] = await Promise.all(Array.from({ length: clients }, () => curlGet(t.url, t.curlArgs)))
          const s = (performance.now() - t0) / 1000
          const c1 = t.pid ? await cpuSeconds(t.pid) : 0
          if (perf) await stopPerf(perf)
          for (const g of got) if (g.status !== 200 || g.bytes !== big.layerSize) throw new Error(`bad GET ${t.name}: ${JSON.stringify(g)}`)
          const bytes = clients * big.layerSize
          ;(mibps.get(key) ?? mibps.set(key, []).get(key)!).push(bytes / MiB / s)
          if (t.pid) (cpu.get(key) ?? cpu.set(key, []).get(key)!).push((c1 - c0) / (bytes / 1024 / MiB))
        }
      }
    }
    console.log(`rounds ${o.rounds}; load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`)
    for (const [key, xs] of mibps) {
      const t = targets.find((x) => key.startsWith(x.name + ' x'))!
      const c = cpu.get(key)
      const mem = t.pid ? `  peak ${(readMemory(t.pid).hwm / 1e6).toFixed(0)} MB` : ''
      console.log(
        `${key.padEnd(24)} ${median(xs).toFixed(0).padStart(6)} MiB/s [${xs.map((x) => x.toFixed(0)).join(' ')}]` +
          (c ? `  cpu ${median(c).toFixed(2)} s/GiB` : '') +
          mem,
      )
    }
  } finally {
    for (const t of targets) await t.stop().catch(() => {})
    await up.stop()
    await rm(tmp, { recursive: true, force: true })
  }
}

await main()
