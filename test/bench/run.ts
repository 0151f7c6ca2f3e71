// `npm run bench`: how dproxy compares with what it stands in for, measured in
// one run on this machine. Each number has a baseline measured right next to it
// (a static file server, a direct pull, the plain registry, an idle daemon,
// `node -e 0`), and is reported as a ratio with its target and PASS/MISS. The
// table goes to stdout, then one JSON line with every raw number; progress goes
// to stderr. It is not part of `npm test`: it takes a few minutes and its
// numbers depend on the machine.
//
// The upstream is the test fixture (the real registry behind the Hub shim, in
// this process); dproxy runs as a separate `dproxy serve` process so its memory
// can be read from /proc. Everything started or created is released at the end,
// on failure, on SIGINT/SIGTERM, and when the time budget runs out. The exit
// code is 1 only when a measurement could not be taken; a MISS is a result.

import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join, resolve } from 'node:path'
import { startUpstream } from '../fixtures/upstream.js'
import { BIG_BLOB_BYTES, pushBigImage } from './big-image.js'
import { measureArchive } from './archive.js'
import { measureChain } from './chain.js'
import { measureColdPull512 } from './cold512.js'
import { measurePrefetch } from './prefetch.js'
import { measureTls } from './tls.js'
import {
  freshDaemon,
  measureCliStartup,
  measureColdPull,
  measureConcurrentPulls,
  measureManifests,
  measureMemory,
  measureThroughput,
  type BenchContext,
  type Measured,
} from './measure.js'
import { haveBuild } from './processes.js'
import { formatTable, type Row } from './report.js'
import { Resources } from './resources.js'
import { VERSION } from '../../src/version.js'

const BUDGET_MS = 780_000
/** Rows are shown in the order the measurements are listed in README.md, whatever order they ran in. */
const ROW_ORDER = ['warm_blob', 'cold_pull', 'concurrent_pull', 'manifest', 'rss', 'tls', 'cli', 'archive', 'prefetch', 'chain']

const progress = (msg: string) => process.stderr.write(`bench: ${msg}\n`)

async function main(): Promise<number> {
  const started = Date.now()
  const loadBefore = os.loadavg()
  // Other work on the machine moves every ratio; say so rather than let a noisy run pass for a clean one.
  if (loadBefore[0]! > os.cpus().length / 2) {
    progress(`warning: load average ${loadBefore[0]!.toFixed(2)} on ${os.cpus().length} CPUs: something else is running`)
  }
  const resources = new Resources()
  const abort = (why: string, code: number) => {
    progress(why)
    void resources.releaseAll(progress).finally(() => process.exit(code))
  }
  process.once('SIGINT', () => abort('interrupted; cleaning up', 130))
  process.once('SIGTERM', () => abort('terminated; cleaning up', 143))
  const watchdog = setTimeout(() => abort(`time budget of ${BUDGET_MS / 1000} s exceeded; cleaning up`, 1), BUDGET_MS)
  watchdog.unref()

  const rows: Row[] = []
  const raw: Record<string, unknown> = {}
  const failed: Record<string, string> = {}
  try {
    if (!haveBuild()) throw new Error('dist/ is missing: run `npm run build` first (npm run bench does)')
    const tmp = await mkdtemp(join(os.tmpdir(), 'dproxy-bench-'))
    if (process.env.DPROXY_BENCH_KEEP) progress(`keeping ${tmp} (DPROXY_BENCH_KEEP)`)
    else resources.defer(`temp dir ${tmp}`, () => rm(tmp, { recursive: true, force: true }))

    progress('starting the upstream fixture (registry with library/big:1, Hub shim)')
    const up = await startUpstream({ big: true, hub: { unlimited: true } })
    resources.defer('upstream fixture', () => up.stop())

    progress('building and pushing library/big512:1 (one 512 MiB layer)')
    const t = Date.now()
    const big = await pushBigImage(up.registryUrl, join(tmp, 'blob512.tar'))
    raw.setup = { big512: { ...big, buildAndPushMs: Date.now() - t } }

    // DPROXY_BENCH_PROFILE=dir: the cold pulls' daemons write .cpuprofile files there (profile-summary.mjs reads them).
    const profileDir = process.env.DPROXY_BENCH_PROFILE ? resolve(process.env.DPROXY_BENCH_PROFILE) : undefined
    if (profileDir) {
      await mkdir(profileDir, { recursive: true })
      progress(`CPU profiles of the cold pulls' daemons go to ${profileDir} (DPROXY_BENCH_PROFILE)`)
    }
    const ctx: BenchContext = { tmp, up, big, resources, progress, profileDir }
    // DPROXY_BENCH_ONLY=memory,cli_startup runs only those steps (for iterating on one number).
    const only = process.env.DPROXY_BENCH_ONLY?.split(',')
    const step = async (name: string, fn: () => Promise<Measured>) => {
      if (only && !only.includes(name)) return
      progress(name.replace(/_/g, ' '))
      try {
        const m = await fn()
        rows.push(...m.rows)
        raw[name] = m.raw
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err)
        failed[name] = message
        progress(`${name} failed: ${message}`)
        rows.push({ id: name, metric: `${name}: could not measure`, dproxy: 'error', baseline: '-', ratio: null,
          target: '-', verdict: 'MISS' })
      }
    }

    // CLI startup first, while nothing else runs on the machine.
    await step('cli_startup', () => measureCliStartup(ctx))
    // One daemon for the blob and manifest measurements: its cache is filled by the first.
    const { daemon, dispose } = await freshDaemon(ctx)
    raw.daemon = { pid: daemon.pid, url: daemon.url }
    await step('memory', () => measureMemory(ctx, daemon))
    await step('warm_blob_throughput', () => measureThroughput(ctx, daemon))
    await step('manifests', () => measureManifests(ctx, daemon))
    await dispose()
    await step('cold_pull', () => measureColdPull(ctx))
    await step('cold_pull_512', () => measureColdPull512(ctx))
    await step('concurrent_pulls', () => measureConcurrentPulls(ctx))
    await step('archive', () => measureArchive(ctx))
    await step('prefetch', () => measurePrefetch(ctx))
    await step('chain', () => measureChain(ctx))
    await step('tls', () => measureTls(ctx))
  } catch (err) {
    progress(`aborted: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
    failed.setup = err instanceof Error ? err.message : String(err)
  } finally {
    clearTimeout(watchdog)
    await resources.releaseAll(progress)
  }

  const rank = (r: Row) => {
    const i = ROW_ORDER.findIndex((p) => r.id.startsWith(p))
    return i < 0 ? ROW_ORDER.length : i
  }
  rows.sort((a, b) => rank(a) - rank(b))
  process.stdout.write(formatTable(rows) + '\n\n')
  const summary = {
    bench: 'dproxy',
    version: VERSION,
    date: new Date(started).toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    bigBlobBytes: BIG_BLOB_BYTES,
    durationMs: Date.now() - started,
    loadavg: { before: loadBefore, after: os.loadavg() },
    pass: rows.filter((r) => r.verdict === 'PASS').length,
    miss: rows.filter((r) => r.verdict === 'MISS').length,
    rows,
    raw,
    failed,
  }
  process.stdout.write(JSON.stringify(summary) + '\n')
  return Object.keys(failed).length > 0 ? 1 : 0
}

process.exitCode = await main()
