// The six measurements. Each one measures dproxy and its baseline in the same
// run, on the same machine state, and returns table rows plus every raw number
// behind them. Repeated samples are interleaved (dproxy, baseline, dproxy, ...)
// so that a machine getting busier or quieter during the run shifts both sides
// alike; medians are reported. Counts and repetitions are fixed and small so
// the whole bench stays well under five minutes.

import { execFileSync } from 'node:child_process'
import { mkdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { run, skopeoCopyAll } from '../fixtures/clients.js'
import { ACCEPT_ALL_MANIFESTS } from '../fixtures/images.js'
import type { Upstream } from '../fixtures/upstream.js'
import { pull } from '../helpers/daemon.js'
import type { BigImage } from './big-image.js'
import { processName, readMemory, resetPeak, RssSampler, waitForRssUnder } from './memory.js'
import {
  curlGet,
  dproxyEnv,
  DPROXY_BIN,
  probeCommand,
  startDaemonProcess,
  NGINX,
  startStaticServer,
  timeCommand,
  type CurlResult,
  type DaemonProcess,
  type StaticServer,
} from './processes.js'
import { fixed, MB, median, MiB, verdict, type Row } from './report.js'
import type { Resources } from './resources.js'

export interface BenchContext {
  tmp: string
  up: Upstream
  big: BigImage
  resources: Resources
  progress(msg: string): void
  /** DPROXY_BENCH_PROFILE: where the cold pulls' daemons write their CPU profiles. */
  profileDir?: string | undefined
}

export interface Measured {
  rows: Row[]
  raw: Record<string, unknown>
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const mb = (bytes: number) => `${fixed(bytes / MB)} MB`

let daemons = 0

/** A dproxy process with an empty cache of its own; released (stopped, files removed) by the returned dispose. */
export async function freshDaemon(
  ctx: BenchContext,
  o: { profile?: boolean } = {},
): Promise<{ daemon: DaemonProcess; dispose: () => Promise<void> }> {
  const dir = join(ctx.tmp, `dproxy-${++daemons}`)
  const removeDir = ctx.resources.defer(`temp dir ${dir}`, () => rm(dir, { recursive: true, force: true }))
  const profileDir = o.profile ? ctx.profileDir : undefined
  const daemon = await startDaemonProcess(dir, { 'docker.io': ctx.up.hubUrl }, { profileDir })
  const stop = ctx.resources.defer(`dproxy pid ${daemon.pid}`, () => daemon.stop())
  return {
    daemon,
    dispose: async () => {
      await stop()
      await removeDir()
    },
  }
}

// ---------------------------------------------------------------------------
// 6. CLI startup

export interface CliCase {
  name: string
  args: string[]
  /**
   * Timed only when `dproxy <probe> --help` prints that command's own usage.
   * The exit code alone proves nothing: commander answers `--help` after an
   * unknown command with the top-level help and exit 0.
   */
  probe?: string
}

/** The commands whose startup is timed; add a line when a command worth timing appears. */
export const CLI_CASES: CliCase[] = [
  { name: 'dproxy --version', args: ['--version'] },
  { name: 'dproxy config path', args: ['config', 'path'] },
  { name: 'dproxy env', args: ['env'], probe: 'env' },
  { name: 'dproxy status --json', args: ['status', '--json'], probe: 'status' },
]

const CLI_RUNS = 10
export const CLI_TARGET_MS = 300

export async function measureCliStartup(ctx: BenchContext): Promise<Measured> {
  const dir = join(ctx.tmp, 'cli')
  for (const d of ['home', 'config', 'state', 'cache']) await mkdir(join(dir, d), { recursive: true })
  // Commands that contact an upstream (status probes the rate limit) reach the fixture, never the internet.
  const env = { ...dproxyEnv(dir), DPROXY_UPSTREAMS: `docker.io=${ctx.up.hubUrl}` }
  const skipped: Record<string, string> = {}
  const cases: CliCase[] = []
  for (const c of CLI_CASES) {
    if (c.probe !== undefined) {
      const p = await probeCommand(process.execPath, [DPROXY_BIN, c.probe, '--help'], env)
      if (p.code !== 0 || !new RegExp(`^Usage: dproxy ${c.probe}\\b`, 'm').test(p.stdout)) {
        skipped[c.name] = `\`dproxy ${c.probe} --help\` exited ${p.code} without its own usage: command not there yet`
        continue
      }
    }
    cases.push(c)
  }
  const all = [{ name: 'node -e 0', args: ['-e', '0'], baseline: true }, ...cases.map((c) => ({ ...c, baseline: false }))]
  const times = new Map<string, number[]>(all.map((c) => [c.name, []]))
  const codes = new Map<string, Set<number | null>>(all.map((c) => [c.name, new Set()]))
  // One untimed round loads node, the bundle and the config dir into the page cache.
  for (let round = -1; round < CLI_RUNS; round++) {
    for (const c of round % 2 === 0 ? all : [...all].reverse()) {
      const argv = c.baseline ? c.args : [DPROXY_BIN, ...c.args]
      const r = await timeCommand(process.execPath, argv, env)
      if (round >= 0) times.get(c.name)!.push(r.ms)
      codes.get(c.name)!.add(r.code)
    }
  }
  const base = median(times.get('node -e 0')!)
  const rows: Row[] = cases.map((c) => {
    const m = median(times.get(c.name)!)
    const exits = [...codes.get(c.name)!]
    const note = exits.every((e) => e === 0) ? '' : ` (exit ${exits.join('/')})`
    return {
      id: `cli_${c.args.join('_').replace(/\W+/g, '')}`,
      metric: `startup: ${c.name}${note}`,
      dproxy: `${fixed(m)} ms`,
      baseline: `${fixed(base)} ms (node -e 0)`,
      ratio: m / base,
      target: `< ${CLI_TARGET_MS} ms`,
      verdict: verdict(m < CLI_TARGET_MS),
    }
  })
  const raw = {
    runs: CLI_RUNS,
    ms: Object.fromEntries(times),
    medianMs: Object.fromEntries([...times].map(([k, v]) => [k, median(v)])),
    exitCodes: Object.fromEntries([...codes].map(([k, v]) => [k, [...v]])),
    skipped,
  }
  return { rows, raw }
}

// ---------------------------------------------------------------------------
// 5. Memory: idle, a cold blob, a curve of clients on a cached blob, after the load

export const IDLE_RSS_TARGET = 60 * MB
export const COLD_RSS_TARGET = 120 * MB
export const CACHED_RSS_TARGET = 100 * MB
export const SETTLED_RSS_TARGET = 80 * MB
const SETTLE_WITHIN_MS = 60_000
const COLD_CLIENTS = 16
/** The points of the curve; the target is set for the last and holds for every one. */
export const CACHED_CLIENTS = [1, 8, 32, 64]

/** Resident memory of a bare node process that waits: what any node daemon costs before its own code. */
async function bareNodeRss(): Promise<number> {
  const script = 'setTimeout(() => process.stdout.write(String(process.memoryUsage().rss)), 500)'
  const r = await run(process.execPath, ['-e', script], { timeoutMs: 10_000 })
  const rss = Number(r.stdout)
  if (r.code !== 0 || !Number.isFinite(rss)) throw new Error(`node -e exited ${r.code}: ${r.stderr.slice(-300)}`)
  return rss
}

async function memoryPhase(pid: number, url: string, size: number, clientCount: number) {
  const peakReset = resetPeak(pid)
  const before = readMemory(pid)
  const sampler = new RssSampler(pid, 20)
  sampler.start()
  const started = performance.now()
  let clients: CurlResult[]
  try {
    clients = await Promise.all(Array.from({ length: clientCount }, () => curlGet(url)))
  } catch (err) {
    sampler.stop()
    throw err
  }
  const peak = sampler.stop()
  const elapsedMs = performance.now() - started
  const bad = clients.filter((c) => c.status !== 200 || c.bytes !== size)
  if (bad.length > 0) throw new Error(`memory phase: clients got ${JSON.stringify(bad)} (want 200 and ${size} bytes)`)
  // VmHWM is exact when it could be reset for this phase; otherwise only the samples belong to it.
  const peakBytes = peakReset ? Math.max(peak.hwm, peak.maxRss) : peak.maxRss
  const perClientMiBps = median(clients.map((c) => c.bytes / MiB / c.seconds))
  const totalMiBps = (size * clientCount) / MiB / (elapsedMs / 1000)
  return { clients: clientCount, peakBytes, peakReset, before, after: readMemory(pid), ...peak, elapsedMs, perClientMiBps, totalMiBps }
}

export async function measureMemory(ctx: BenchContext, d: DaemonProcess): Promise<Measured> {
  const { big, up } = ctx
  // Startup garbage is what a daemon that nobody uses keeps; give it a moment to settle as it would.
  await sleep(1000)
  const idle = readMemory(d.pid)
  const bare = await bareNodeRss()
  const url = `${d.url}/v2/${big.repository}/blobs/${big.layerDigest}`
  up.hub.resetCounts()
  ctx.progress(`memory: ${COLD_CLIENTS} clients, 512 MiB blob, uncached`)
  const cold = await memoryPhase(d.pid, url, big.layerSize, COLD_CLIENTS)
  const upstreamFetches = up.hub.counts.cdnGet[big.layerDigest] ?? 0
  const cached: Array<Awaited<ReturnType<typeof memoryPhase>>> = []
  for (const n of CACHED_CLIENTS) {
    ctx.progress(`memory: ${n} clients, 512 MiB blob, cached`)
    cached.push(await memoryPhase(d.pid, url, big.layerSize, n))
  }
  ctx.progress(`memory: waiting up to ${SETTLE_WITHIN_MS / 1000} s for RSS <= ${mb(SETTLED_RSS_TARGET)}`)
  const settled = await waitForRssUnder(d.pid, SETTLED_RSS_TARGET, SETTLE_WITHIN_MS)

  const peakRow = (id: string, what: string, p: (typeof cached)[number], target: number): Row => ({
    id,
    metric: `peak RSS, ${p.clients} client${p.clients > 1 ? 's' : ''} x 512 MiB blob, ${what}`,
    dproxy: `${mb(p.peakBytes)}, ${fixed(p.perClientMiBps, 0)} MiB/s/client`,
    baseline: `${mb(idle.rss)} idle`,
    ratio: p.peakBytes / idle.rss,
    target: `<= ${mb(target)}`,
    verdict: verdict(p.peakBytes <= target),
  })
  const rows: Row[] = [
    {
      id: 'rss_idle',
      metric: 'RSS idle, before the first pull',
      dproxy: mb(idle.rss),
      baseline: `${mb(bare)} (bare node)`,
      ratio: idle.rss / bare,
      target: `<= ${mb(IDLE_RSS_TARGET)}`,
      verdict: verdict(idle.rss <= IDLE_RSS_TARGET),
    },
    peakRow('rss_cold', 'uncached', cold, COLD_RSS_TARGET),
    ...cached.map((p) => peakRow(`rss_cached_${p.clients}`, 'cached', p, CACHED_RSS_TARGET)),
    {
      id: 'rss_settled',
      metric: `RSS after the load (polled every 1 s for up to ${SETTLE_WITHIN_MS / 1000} s)`,
      dproxy:
        settled.ms === undefined
          ? `${mb(settled.reading.rss)} after ${SETTLE_WITHIN_MS / 1000} s`
          : `${mb(settled.reading.rss)} after ${fixed(settled.ms / 1000)} s`,
      baseline: `${mb(idle.rss)} idle`,
      ratio: settled.reading.rss / idle.rss,
      target: `<= ${mb(SETTLED_RSS_TARGET)} within ${SETTLE_WITHIN_MS / 1000} s`,
      verdict: verdict(settled.ms !== undefined),
    },
  ]
  return {
    rows,
    raw: {
      process: processName(d.pid),
      bareNodeRssBytes: bare,
      idle,
      cold: { ...cold, upstreamFetches },
      cached,
      settled,
    },
  }
}

// ---------------------------------------------------------------------------
// 1. Warm blob GET throughput

const THROUGHPUT_RUNS = 3
export const THROUGHPUT_TARGET = 1.0
/** Issue 17's target against nginx sending the file with sendfile (used when nginx is installed). */
export const SENDFILE_TARGET = 0.9
/** The many-clients row: this many curl clients at once, each reading this much of the blob. */
const WARM_CLIENTS = 16
const WARM_CLIENT_BYTES = 128 * MiB

export async function measureThroughput(ctx: BenchContext, d: DaemonProcess): Promise<Measured> {
  const { big } = ctx
  const dproxyUrl = `${d.url}/v2/${big.repository}/blobs/${big.layerDigest}`
  const servers: StaticServer[] = []
  const kinds = ['node-static', 'python-http.server', ...(NGINX ? (['nginx'] as const) : [])] as const
  for (const kind of kinds) {
    const s = await startStaticServer(kind, big.file, join(ctx.tmp, `${kind}.log`))
    ctx.resources.defer(kind, () => s.stop())
    servers.push(s)
  }
  const targets = [{ name: 'dproxy', url: dproxyUrl }, ...servers.map((s) => ({ name: s.name, url: s.url }))]
  const samples = new Map<string, CurlResult[]>(targets.map((t) => [t.name, []]))
  // Round -1 warms: dproxy's cache is already filled, this puts every file in the page cache.
  for (let round = -1; round < THROUGHPUT_RUNS; round++) {
    const order = targets.map((_, i) => targets[(i + Math.max(round, 0)) % targets.length]!)
    for (const t of order) {
      const r = await curlGet(t.url)
      if (r.status !== 200 || r.bytes !== big.layerSize) {
        throw new Error(`GET ${t.name}: ${r.status}, ${r.bytes} bytes (want 200, ${big.layerSize})`)
      }
      if (round >= 0) samples.get(t.name)!.push(r)
    }
  }
  const mibps = (rs: CurlResult[]) => rs.map((r) => r.bytes / MiB / r.seconds)
  const medians = Object.fromEntries([...samples].map(([k, v]) => [k, median(mibps(v))]))
  // nginx (sendfile, issue 17's reference) when installed, else the faster of the copying servers.
  const copying = servers.filter((s) => s.name !== 'nginx').map((s) => s.name)
  const best = NGINX ? 'nginx' : copying.reduce((a, b) => (medians[a]! >= medians[b]! ? a : b))
  const target = NGINX ? SENDFILE_TARGET : THROUGHPUT_TARGET
  const ratio = medians.dproxy! / medians[best]!

  // Many clients at once: dproxy and that baseline, alternating.
  ctx.progress(`warm blob GET: ${WARM_CLIENTS} clients at once, dproxy and ${best} alternating`)
  const many: Record<string, number[]> = { dproxy: [], [best]: [] }
  const pair = [targets[0]!, targets.find((t) => t.name === best)!]
  for (let round = 0; round < THROUGHPUT_RUNS; round++) {
    for (const t of round % 2 === 0 ? pair : [...pair].reverse()) {
      const t0 = performance.now()
      const got = await Promise.all(Array.from({ length: WARM_CLIENTS }, () => curlGet(t.url, ['-r', `0-${WARM_CLIENT_BYTES - 1}`])))
      const seconds = (performance.now() - t0) / 1000
      const bad = got.find((r) => r.status !== 206 || r.bytes !== WARM_CLIENT_BYTES)
      if (bad) throw new Error(`GET ${t.name} x${WARM_CLIENTS}: ${bad.status}, ${bad.bytes} bytes (want 206, ${WARM_CLIENT_BYTES})`)
      many[t.name]!.push((WARM_CLIENTS * WARM_CLIENT_BYTES) / MiB / seconds)
    }
  }
  const manyMedians = { dproxy: median(many.dproxy!), [best]: median(many[best]!) }
  const manyRatio = manyMedians.dproxy! / manyMedians[best]!
  return {
    rows: [
      {
        id: 'warm_blob_throughput',
        metric: 'warm blob GET, 512 MiB, curl (median of 3)',
        dproxy: `${fixed(medians.dproxy!, 0)} MiB/s`,
        baseline: `${fixed(medians[best]!, 0)} MiB/s (${best})`,
        ratio,
        target: `>= ${target.toFixed(2)}x`,
        verdict: verdict(ratio >= target),
      },
      {
        id: `warm_blob_throughput_${WARM_CLIENTS}`,
        metric: `warm blob GET, ${WARM_CLIENTS} curl clients x ${WARM_CLIENT_BYTES / MiB} MiB at once (median of 3)`,
        dproxy: `${fixed(manyMedians.dproxy!, 0)} MiB/s`,
        baseline: `${fixed(manyMedians[best]!, 0)} MiB/s (${best})`,
        ratio: manyRatio,
        target: `>= ${target.toFixed(2)}x`,
        verdict: verdict(manyRatio >= target),
      },
    ],
    raw: {
      bytes: big.layerSize,
      runs: THROUGHPUT_RUNS,
      baseline: best,
      medianMiBps: medians,
      seconds: Object.fromEntries([...samples].map(([k, v]) => [k, v.map((r) => r.seconds)])),
      clients: { clients: WARM_CLIENTS, bytesEach: WARM_CLIENT_BYTES, MiBps: many, medianMiBps: manyMedians },
    },
  }
}

// ---------------------------------------------------------------------------
// 4. Manifest GETs per second

const LOADGEN = fileURLToPath(new URL('./manifest-load.mjs', import.meta.url))
const MANIFEST_CONCURRENCY = 8
const MANIFEST_DURATION_MS = 5000
const MANIFEST_MAX_REQUESTS = 2000

export interface LoadResult {
  requests: number
  ok: number
  bytes: number
  statuses: Record<string, number>
  errors: Record<string, number>
  elapsedMs: number
  rps: number
}

export async function load(url: string, ca?: string): Promise<LoadResult> {
  const spec = {
    url,
    ...(ca !== undefined ? { ca } : {}),
    accept: ACCEPT_ALL_MANIFESTS,
    concurrency: MANIFEST_CONCURRENCY,
    durationMs: MANIFEST_DURATION_MS,
    maxRequests: MANIFEST_MAX_REQUESTS,
  }
  const r = await run(process.execPath, [LOADGEN, JSON.stringify(spec)], { timeoutMs: MANIFEST_DURATION_MS + 20_000 })
  if (r.code !== 0) throw new Error(`manifest load generator exited ${r.code}: ${r.stderr.slice(-500)}`)
  return JSON.parse(r.stdout) as LoadResult
}

export async function measureManifests(ctx: BenchContext, d: DaemonProcess): Promise<Measured> {
  const { up } = ctx
  const image = up.images.alpine
  const path = (ref: string) => `/v2/${image.repository}/manifests/${ref}`
  // Cache the manifest (by tag and digest) so the loops measure the steady state.
  for (const ref of [image.tag, image.digest]) {
    const warm = await load(d.url + path(ref))
    if (warm.ok === 0) throw new Error(`manifest ${ref} through dproxy: ${JSON.stringify(warm.statuses)}`)
  }
  const results: Record<string, { dproxy: LoadResult; registry: LoadResult; upstream: { head: number; get: number } }> = {}
  for (const [kind, ref] of [['tag', image.tag], ['digest', image.digest]] as const) {
    ctx.progress(`manifests by ${kind}: dproxy, then the plain registry`)
    up.hub.resetCounts()
    const viaDproxy = await load(d.url + path(ref))
    const upstream = { head: up.hub.counts.manifestHead, get: up.hub.counts.manifestGet }
    const direct = await load(up.registryUrl + path(ref))
    results[kind] = { dproxy: viaDproxy, registry: direct, upstream }
  }
  const rows: Row[] = []
  const failures = (r: LoadResult) => r.requests - r.ok
  for (const kind of ['tag', 'digest'] as const) {
    const r = results[kind]!
    const bad = failures(r.dproxy) + failures(r.registry)
    rows.push({
      id: `manifest_rps_${kind}`,
      metric: `manifest GET/s by ${kind}, c=${MANIFEST_CONCURRENCY}${bad > 0 ? ` (${bad} failed)` : ''}`,
      dproxy: `${fixed(r.dproxy.rps, 0)}/s (${r.dproxy.ok} req)`,
      baseline: `${fixed(r.registry.rps, 0)}/s (registry)`,
      ratio: r.dproxy.rps / r.registry.rps,
      target: 'none set',
      verdict: bad > 0 ? 'MISS' : 'INFO',
    })
  }
  const tag = results.tag!
  const dig = results.digest!
  rows.push({
    id: 'manifest_upstream_tag',
    metric: 'upstream requests per manifest GET by tag',
    dproxy: `${tag.upstream.head} HEAD + ${tag.upstream.get} GET / ${tag.dproxy.requests}`,
    baseline: `${tag.dproxy.requests} requests`,
    ratio: (tag.upstream.head + tag.upstream.get) / tag.dproxy.requests,
    target: '<= 1 HEAD, 0 GET each',
    verdict: verdict(tag.upstream.head >= 1 && tag.upstream.head <= tag.dproxy.requests && tag.upstream.get === 0),
  })
  rows.push({
    id: 'manifest_upstream_digest',
    metric: 'upstream requests per manifest GET by digest',
    dproxy: `${dig.upstream.head} HEAD + ${dig.upstream.get} GET / ${dig.dproxy.requests}`,
    baseline: `${dig.dproxy.requests} requests`,
    ratio: (dig.upstream.head + dig.upstream.get) / dig.dproxy.requests,
    target: '0',
    verdict: verdict(dig.upstream.head + dig.upstream.get === 0),
  })
  return {
    rows,
    raw: {
      image: image.ref,
      concurrency: MANIFEST_CONCURRENCY,
      durationMs: MANIFEST_DURATION_MS,
      maxRequests: MANIFEST_MAX_REQUESTS,
      ...results,
    },
  }
}

// ---------------------------------------------------------------------------
// 2. Cold pull of library/big:1 with skopeo

const COLD_PULL_RUNS = 5
/** Issue 17: the bench's ~100 MiB image, where a fixed cost per pull or per layer adds to the per-byte one. */
export const COLD_PULL_TARGET = 1.3
/** Issue 17: the daemon's CPU for a cold pull, per byte, against the same pull once cached. */
export const COLD_CPU_TARGET = 2

/** CPU seconds a process has used so far in user and in system mode, from /proc/<pid>/stat. */
async function cpuTimes(pid: number): Promise<{ user: number; system: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  // After "pid (comm) ": state is field 3, utime 14, stime 15 (comm may contain anything, so count from its ')').
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { user: Number(fields[11]) / CLOCK_TICKS, system: Number(fields[12]) / CLOCK_TICKS }
}
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100

export async function measureColdPull(ctx: BenchContext): Promise<Measured> {
  const { up } = ctx
  const image = up.images.big!
  const dest = join(ctx.tmp, 'skopeo-dest')
  const removeDest = () => rm(dest, { recursive: true, force: true })
  ctx.resources.defer(`temp dir ${dest}`, removeDest)
  const pullFrom = async (hostPort: string): Promise<number> => {
    await removeDest()
    const r = await skopeoCopyAll(`${hostPort}/${image.ref}`, dest, { timeoutMs: 120_000 })
    return r.durationMs
  }
  const warmUp = async (hostPort: string): Promise<void> => {
    await removeDest()
    await skopeoCopyAll(`${hostPort}/${up.images.alpine.ref}`, dest, { timeoutMs: 60_000 })
  }
  const direct = `127.0.0.1:${up.hub.port}`
  // Untimed: skopeo, the registry's files and the hub's code paths warmed for both sides.
  await pullFrom(direct)
  const times = { dproxy: [] as number[], direct: [] as number[] }
  // The daemon's CPU seconds for each cold pull, and for the same pull again from its cache right after.
  const cpu = { cold: [] as number[], warm: [] as number[], coldSystem: [] as number[], warmSystem: [] as number[] }
  for (let i = 0; i < COLD_PULL_RUNS; i++) {
    for (const side of i % 2 === 0 ? (['dproxy', 'direct'] as const) : (['direct', 'dproxy'] as const)) {
      if (side === 'direct') {
        times.direct.push(await pullFrom(direct))
        continue
      }
      const { daemon, dispose } = await freshDaemon(ctx, { profile: true })
      try {
        // Untimed: a small image through the same daemon first, so that what a daemon does once in its
        // life (loading undici, compiling its parser and the download path) is not counted per byte.
        await warmUp(`127.0.0.1:${daemon.port}`)
        const before = await cpuTimes(daemon.pid)
        times.dproxy.push(await pullFrom(`127.0.0.1:${daemon.port}`))
        const cold = await cpuTimes(daemon.pid)
        await pullFrom(`127.0.0.1:${daemon.port}`)
        const warm = await cpuTimes(daemon.pid)
        cpu.cold.push(cold.user + cold.system - before.user - before.system)
        cpu.warm.push(warm.user + warm.system - cold.user - cold.system)
        cpu.coldSystem.push(cold.system - before.system)
        cpu.warmSystem.push(warm.system - cold.system)
      } finally {
        await dispose()
      }
    }
  }
  await removeDest()
  const m = { dproxy: median(times.dproxy), direct: median(times.direct) }
  const ratio = m.dproxy / m.direct
  // Sums, not medians: one pull is a few clock ticks of CPU, and the same bytes go through both.
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0)
  const cpuRatio = sum(cpu.warm) > 0 ? sum(cpu.cold) / sum(cpu.warm) : null
  const bytes = image.blobs.reduce((n, b) => n + b.size, 0)
  const perMiB = (secs: number) => `${fixed((1000 * secs) / COLD_PULL_RUNS / (bytes / MiB), 2)} ms/MiB`
  return {
    rows: [
      {
        id: 'cold_pull',
        metric: `cold pull ${image.ref} (~100 MiB), skopeo (median of ${COLD_PULL_RUNS})`,
        dproxy: `${fixed(m.dproxy, 0)} ms`,
        baseline: `${fixed(m.direct, 0)} ms (direct from hub)`,
        ratio,
        target: `<= ${COLD_PULL_TARGET.toFixed(2)}x`,
        verdict: verdict(ratio <= COLD_PULL_TARGET),
      },
      {
        id: 'cold_pull_cpu',
        metric: `daemon CPU per byte, cold pull of ${image.ref} vs the same pull cached (sum of ${COLD_PULL_RUNS})`,
        dproxy: `${perMiB(sum(cpu.cold))} cold`,
        baseline: `${perMiB(sum(cpu.warm))} cached`,
        ratio: cpuRatio,
        target: `<= ${COLD_CPU_TARGET.toFixed(2)}x`,
        verdict: verdict(cpuRatio !== null && cpuRatio <= COLD_CPU_TARGET),
      },
    ],
    raw: { image: image.ref, client: 'skopeo copy --all to dir:', ms: times, medianMs: m, bytes, cpuSeconds: cpu, clockTicks: CLOCK_TICKS },
  }
}

// ---------------------------------------------------------------------------
// 3. Upstream fetches for 20 concurrent cold pulls

const CONCURRENT_PULLS = 20

export async function measureConcurrentPulls(ctx: BenchContext): Promise<Measured> {
  const { up } = ctx
  const image = up.images.layers
  const { daemon, dispose } = await freshDaemon(ctx)
  try {
    up.hub.resetCounts()
    const started = performance.now()
    await Promise.all(Array.from({ length: CONCURRENT_PULLS }, () => pull(daemon.url, image.repository, image.tag)))
    const elapsedMs = performance.now() - started
    const perBlob = Object.fromEntries(image.blobs.map((b) => [b.digest, up.hub.counts.cdnGet[b.digest] ?? 0]))
    const counts = Object.values(perBlob)
    const total = counts.reduce((a, b) => a + b, 0)
    return {
      rows: [
        {
          id: 'concurrent_pull_fetches',
          metric: `upstream blob fetches, ${CONCURRENT_PULLS} concurrent cold pulls of ${image.ref}`,
          dproxy: `${total} for ${counts.length} blobs (max ${Math.max(...counts)}/blob)`,
          baseline: `${counts.length} (1 per blob)`,
          ratio: total / counts.length,
          target: 'exactly 1 per blob',
          verdict: verdict(counts.every((c) => c === 1)),
        },
      ],
      raw: {
        image: image.ref,
        clients: CONCURRENT_PULLS,
        elapsedMs,
        cdnGetPerBlob: perBlob,
        blobGetAtFront: { ...up.hub.counts.blobGet },
        manifestGet: up.hub.counts.manifestGet,
        manifestHead: up.hub.counts.manifestHead,
        tokenRequests: up.hub.counts.tokenRequests,
      },
    }
  } finally {
    await dispose()
  }
}
