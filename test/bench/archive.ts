// `dproxy cache export` and `cache import` against `tar` of the same files:
// a cache holding library/big512:1 (filled by skopeo through a daemon, which
// is then stopped) is exported to an archive and imported into an empty
// cache, each as a whole CLI run; the baselines are `tar -cf` of the cache's
// blobs/ and manifests/ and `tar -xf` of that into an empty directory.
// Throughput is archive bytes per second; runs are interleaved, medians
// reported. Import does more than `tar -x` (hashes every byte, syncs every
// blob before renaming it): the ratio says what that costs.

import { mkdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { skopeoCopyAll } from '../fixtures/clients.js'
import type { BenchContext, Measured } from './measure.js'
import { dproxyEnv, DPROXY_BIN, startDaemonProcess, timeCommand } from './processes.js'
import { fixed, median, MiB, verdict } from './report.js'

const RUNS = 3
export const ARCHIVE_TARGET = 0.8

export async function measureArchive(ctx: BenchContext): Promise<Measured> {
  const dir = join(ctx.tmp, 'archive')
  ctx.resources.defer(`temp dir ${dir}`, () => rm(dir, { recursive: true, force: true }))
  const daemon = await startDaemonProcess(dir, { 'docker.io': ctx.up.hubUrl })
  const stopDaemon = ctx.resources.defer(`dproxy pid ${daemon.pid}`, () => daemon.stop())
  const ref = `${ctx.big.repository}:${ctx.big.tag}`
  const pulled = join(dir, 'pulled')
  await skopeoCopyAll(`127.0.0.1:${daemon.port}/${ref}`, pulled, { timeoutMs: 300_000 })
  // Stopping lets the daemon finish writing what it served; then nothing else touches the cache.
  await stopDaemon()
  await rm(pulled, { recursive: true, force: true })

  const env = dproxyEnv(dir)
  const cache = daemon.cacheDir
  const file = join(dir, 'dproxy.tar')
  const tarFile = join(dir, 'tar.tar')
  const into = join(dir, 'into')
  const fresh = async () => {
    await rm(into, { recursive: true, force: true })
    await mkdir(into, { recursive: true })
  }
  const timed = async (cmd: string, args: string[]) => {
    const r = await timeCommand(cmd, args, env)
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}`)
    return r.ms
  }
  const ms = { export: [] as number[], tarCreate: [] as number[], import: [] as number[], tarExtract: [] as number[] }
  for (let round = -1; round < RUNS; round++) {
    const keep = <T>(list: T[], v: T) => (round >= 0 ? list.push(v) : 0)
    const pair = async (a: () => Promise<void>, b: () => Promise<void>) => (round % 2 === 0 ? (await a(), await b()) : (await b(), await a()))
    await rm(file, { force: true })
    await pair(
      async () => void keep(ms.export, await timed(process.execPath, [DPROXY_BIN, 'cache', 'export', file, '--cache-dir', cache, '--json'])),
      async () => void keep(ms.tarCreate, await timed('tar', ['-cf', tarFile, '-C', cache, 'blobs', 'manifests'])),
    )
    await pair(
      async () => {
        await fresh()
        keep(ms.import, await timed(process.execPath, [DPROXY_BIN, 'cache', 'import', file, '--cache-dir', into, '--json']))
      },
      async () => {
        await fresh()
        keep(ms.tarExtract, await timed('tar', ['-xf', tarFile, '-C', into]))
      },
    )
  }
  await rm(into, { recursive: true, force: true })
  const bytes = { dproxy: (await stat(file)).size, tar: (await stat(tarFile)).size }
  const rate = (b: number, list: number[]) => b / MiB / (median(list) / 1000)
  const rows = (
    [
      ['export', 'cache export', ms.export, ms.tarCreate, 'tar -cf'],
      ['import', 'cache import', ms.import, ms.tarExtract, 'tar -xf'],
    ] as const
  ).map(([id, what, ours, theirs, baseline]) => {
    const d = rate(bytes.dproxy, ours)
    const b = rate(bytes.tar, theirs)
    const ratio = d / b
    return {
      id: `archive_${id}`,
      metric: `${what}, ${ref} (${fixed(bytes.dproxy / MiB, 0)} MiB archive, median of ${RUNS})`,
      dproxy: `${fixed(d, 0)} MiB/s`,
      baseline: `${fixed(b, 0)} MiB/s (${baseline})`,
      ratio,
      target: `>= ${ARCHIVE_TARGET.toFixed(2)}x`,
      verdict: verdict(ratio >= ARCHIVE_TARGET),
    }
  })
  return { rows, raw: { image: ref, bytes, ms } }
}
