// A quick A/B measurement of the cold path, for working on it (issue 17): the
// daemon's CPU seconds (user + system, /proc/<pid>/stat) and the wall time of
// one curl GET of the 512 MiB blob through a fresh daemon (cold), then of the
// same GET from its cache (warm), for each variant in turn, alternating the
// order per round. A variant is a built tree (its bin/dproxy.js and dist/) and
// the node flags its daemon gets, so two builds of dproxy, or one build with
// two V8 flags, are compared in one run on the same upstream. CPU seconds move
// much less than wall time with whatever else runs on the machine.
//
//   node --import=@tapjs/typescript/import test/bench/cold-cpu.ts [--rounds N] [--clients N] \
//     [--perf NAME] NAME=ROOT[::flag,flag] ...
//
// ROOT defaults to this checkout; without flags a daemon gets DAEMON_NODE_FLAGS; a flag env:K=V sets
// the daemon's environment variable K instead.
// --clients N: N curl clients of the cold blob at once (the single download teed to all).
// --settle S: the daemon's RSS S seconds after the warm GET (the send pool lets go after 5 s idle).
// --perf NAME: `perf record -g` the first cold pull of variant NAME (perf-NAME.data in the cwd;
// add --perf-basic-prof to its flags for JS frames).
// The "direct" line is one curl of the blob from the Hub shim's CDN (the daemon's upstream).

import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { spawnDaemon, stopProcess } from '../fixtures/clients.js'
import { fetchToken } from '../fixtures/hub.js'
import { startUpstream } from '../fixtures/upstream.js'
import { DAEMON_NODE_FLAGS } from '../../src/daemon/lifecycle.js'
import { pushBigImage } from './big-image.js'
import { curlGet, dproxyEnv } from './processes.js'
import { readMemory } from './memory.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Variant {
  name: string
  root: string
  flags: string[]
}

function parseArgs(argv: string[]) {
  let rounds = 3
  let clients = 1
  let perf: string | undefined
  let settle = 0
  const variants: Variant[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--rounds') rounds = Number(argv[++i])
    else if (a === '--clients') clients = Number(argv[++i])
    else if (a === '--perf') perf = argv[++i]
    else if (a === '--settle') settle = Number(argv[++i])
    else {
      const m = /^([\w.-]+)=([^:]*)(?:::(.*))?$/.exec(a)
      if (!m) throw new Error(`expected NAME=ROOT[::flags], got ${a}`)
      variants.push({ name: m[1]!, root: resolve(m[2] || ROOT), flags: m[3] !== undefined ? m[3].split(',').filter(Boolean) : DAEMON_NODE_FLAGS })
    }
  }
  if (variants.length === 0) variants.push({ name: 'this', root: ROOT, flags: DAEMON_NODE_FLAGS })
  return { rounds, clients, perf, settle, variants }
}

async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS
}

async function startDaemon(v: Variant, dir: string, hubUrl: string): Promise<{ pid: number; url: string; child: ChildProcess }> {
  const env = dproxyEnv(dir)
  for (const f of v.flags) if (f.startsWith('env:')) env[f.slice(4, f.indexOf('='))] = f.slice(f.indexOf('=') + 1)
  for (const d of ['home', 'config', 'state', 'cache']) await mkdir(join(dir, d), { recursive: true })
  const logFile = join(dir, 'dproxy.log')
  const args = [...v.flags.filter((f) => !f.startsWith('env:')), join(v.root, 'bin', 'dproxy.js'), 'serve', '--host', '127.0.0.1', '--port', '0', '--cache-dir', env.DPROXY_CACHE_DIR!]
  args.push('--upstream', `docker.io=${hubUrl}`)
  const child = spawnDaemon(process.execPath, args, logFile, env)
  const deadline = Date.now() + 15_000
  for (;;) {
    const log = await readFile(logFile, 'utf8').catch(() => '')
    const m = /dproxy listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log)
    if (m && child.pid !== undefined) return { pid: child.pid, url: m[1]!, child }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`daemon ${v.name} did not start:\n${log}`)
    await sleep(20)
  }
}

/** perf writes its file when interrupted; by its pid, once. */
async function stopPerf(perf: ChildProcess): Promise<void> {
  if (perf.exitCode !== null || perf.signalCode !== null) return
  const gone = new Promise((r) => perf.once('exit', r))
  perf.kill('SIGINT')
  await gone
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2))
  const tmp = await mkdtemp(join(os.tmpdir(), 'dproxy-coldcpu-'))
  const up = await startUpstream({ hub: { unlimited: true } })
  try {
    process.stderr.write('pushing the 512 MiB layer\n')
    const big = await pushBigImage(up.registryUrl, join(tmp, 'blob512.tar'))
    const path = `/v2/${big.repository}/blobs/${big.layerDigest}`
    // The CDN URL the hub redirects to, for the direct line.
    const token = await fetchToken(up.hub, [big.repository])
    const front = await request(`${up.hubUrl}${path}`, { headers: { authorization: `Bearer ${token}` } })
    await front.body.dump()
    const cdn = String(front.headers.location)
    const results = new Map<string, { cold: number[]; warm: number[]; coldS: number[]; warmS: number[]; peakMB: number[]; settledMB: number[] }>()
    const direct: number[] = []
    for (const v of o.variants) results.set(v.name, { cold: [], warm: [], coldS: [], warmS: [], peakMB: [], settledMB: [] })
    let n = 0
    for (let round = 0; round < o.rounds; round++) {
      direct.push((await curlGet(cdn)).seconds)
      const order = round % 2 === 0 ? o.variants : [...o.variants].reverse()
      for (const v of order) {
        const dir = join(tmp, `d${++n}`)
        const d = await startDaemon(v, dir, up.hubUrl)
        let perf: ChildProcess | undefined
        try {
          await sleep(300)
          if (o.perf === v.name && round === 0) {
            perf = spawn('perf', ['record', '-g', '-o', `perf-${v.name}.data`, '-p', String(d.pid)], { stdio: 'ignore' })
            await sleep(500)
          }
          const c0 = await cpuSeconds(d.pid)
          const t0 = performance.now()
          const got = await Promise.all(Array.from({ length: o.clients }, () => curlGet(`${d.url}${path}`)))
          const coldS = (performance.now() - t0) / 1000
          const c1 = await cpuSeconds(d.pid)
          if (perf) await stopPerf(perf)
          const peak = readMemory(d.pid)
          const t1 = performance.now()
          const warm = await curlGet(`${d.url}${path}`)
          const warmS = (performance.now() - t1) / 1000
          const c2 = await cpuSeconds(d.pid)
          for (const g of [...got, warm]) if (g.status !== 200 || g.bytes !== big.layerSize) throw new Error(`bad GET: ${JSON.stringify(g)}`)
          const r = results.get(v.name)!
          if (o.settle > 0) {
            await sleep(o.settle * 1000)
            r.settledMB.push(readMemory(d.pid).rss / 1e6)
          }
          r.cold.push(c1 - c0)
          r.warm.push(c2 - c1)
          r.coldS.push(coldS)
          r.warmS.push(warmS)
          r.peakMB.push(peak.hwm / 1e6)
          process.stderr.write(
            `${v.name}: cold ${(c1 - c0).toFixed(2)} s CPU ${coldS.toFixed(2)} s wall; warm ${(c2 - c1).toFixed(2)} s CPU ${warmS.toFixed(2)} s wall; peak ${(peak.hwm / 1e6).toFixed(0)} MB\n`,
          )
        } finally {
          if (perf) await stopPerf(perf)
          await stopProcess(d.child, 5000)
          await rm(dir, { recursive: true, force: true })
        }
      }
    }
    const f = (xs: number[]) => `${median(xs).toFixed(2)} [${xs.map((x) => x.toFixed(2)).join(' ')}]`
    console.log(`direct (CDN) wall: ${f(direct)} s; clients ${o.clients}; rounds ${o.rounds}; load ${os.loadavg()[0]!.toFixed(2)}`)
    for (const [name, r] of results) {
      const ratio = r.cold.map((c, i) => c / r.warm[i]!)
      console.log(`${name}: cold CPU ${f(r.cold)}  warm CPU ${f(r.warm)}  cold/warm ${f(ratio)}  cold wall ${f(r.coldS)}  warm wall ${f(r.warmS)}  peak MB ${f(r.peakMB)}${r.settledMB.length ? `  settled MB ${f(r.settledMB)}` : ''}`)
    }
  } finally {
    await up.stop()
    await rm(tmp, { recursive: true, force: true })
  }
}

await main()
