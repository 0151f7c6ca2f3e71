// Upstream chains: what a team cache between the laptop's dproxy and the Hub
// costs or saves, and what a dead team cache costs once its breaker is open.
// The team tier is Debian's docker-registry in proxy mode in front of the Hub
// shim (what teams run on object storage); the laptop tier is `dproxy serve`
// with `--upstream docker.io=<team>,<hub> --no-origin` (the Hub shim stands
// in for the origin as the chain's last endpoint; with no origin implied,
// nothing is asked of a public host). Every pull is `skopeo copy --all` of
// library/big:1 (~100 MiB) into an empty `dir:`, samples of each side
// interleaved, medians reported.
//
//   chain_cold          laptop -> team -> hub, both tiers empty, vs straight
//                       from the hub (INFO: the ratio is what the extra hop costs)
//   chain_warm_team     laptop empty, team already holding the image, vs the
//                       same pull from a laptop dproxy that holds it (INFO)
//   chain_blackhole     a first endpoint that accepts and never answers: the
//                       first cold pull (its breaker still closed: one
//                       first-byte timeout), and a cold pull after the breaker
//                       opened (another image pulled first), vs the same cold
//                       pull with that endpoint removed; target: after-open
//                       <= 1.1x removed. The first-byte limit is 2 s here
//                       (--chain-first-byte-timeout) to keep the bench short;
//                       the before-open pull pays it once.

import { rm } from 'node:fs/promises'
import { createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { skopeoCopyAll } from '../fixtures/clients.js'
import { startRegistry, type Registry } from '../fixtures/registry.js'
import type { BenchContext, Measured } from './measure.js'
import { startDaemonProcess, type DaemonProcess } from './processes.js'
import { fixed, median, verdict } from './report.js'

const RUNS = 3
export const BLACKHOLE_TARGET = 1.1
const FIRST_BYTE = '2s'

let n = 0

export async function measureChain(ctx: BenchContext): Promise<Measured> {
  const { up } = ctx
  const image = up.images.big
  if (!image) throw new Error('the chain rows need library/big:1 in the upstream')
  const dest = join(ctx.tmp, 'chain-dest')
  const removeDest = () => rm(dest, { recursive: true, force: true })
  ctx.resources.defer(`temp dir ${dest}`, removeDest)
  const pullFrom = async (hostPort: string, ref = image.ref): Promise<number> => {
    await removeDest()
    return (await skopeoCopyAll(`${hostPort}/${ref}`, dest, { timeoutMs: 120_000 })).durationMs
  }
  const hostOf = (url: string) => new URL(url).host
  const direct = hostOf(up.hubUrl)

  /** A team registry with empty storage, stopped and removed by the returned dispose. */
  const team = async (): Promise<{ registry: Registry; dispose: () => Promise<void> }> => {
    const work = join(ctx.tmp, `team-${++n}`)
    const registry = await startRegistry({ storageDir: join(work, 'storage'), workDir: work, removeOnStop: true, proxyRemoteUrl: up.hubUrl })
    const dispose = ctx.resources.defer(`team registry ${registry.url}`, () => registry.stop())
    return { registry, dispose }
  }
  /** A laptop dproxy with an empty cache whose docker.io chain is `endpoints` (no origin implied). */
  const laptop = async (endpoints: string[]): Promise<{ daemon: DaemonProcess; dispose: () => Promise<void> }> => {
    const dir = join(ctx.tmp, `laptop-${++n}`)
    const removeDir = ctx.resources.defer(`temp dir ${dir}`, () => rm(dir, { recursive: true, force: true }))
    const daemon = await startDaemonProcess(dir, { 'docker.io': endpoints.join(',') }, {
      serveArgs: ['--no-origin', '--chain-first-byte-timeout', FIRST_BYTE],
    })
    const stop = ctx.resources.defer(`dproxy pid ${daemon.pid}`, () => daemon.stop())
    return {
      daemon,
      dispose: async () => {
        await stop()
        await removeDir()
      },
    }
  }

  // Untimed: skopeo, the registry's files and the hub's code paths warmed.
  await pullFrom(direct)

  // (a) Cold at both tiers vs straight from the hub.
  const cold = { chain: [] as number[], direct: [] as number[] }
  for (let i = 0; i < RUNS; i++) {
    for (const side of i % 2 === 0 ? (['chain', 'direct'] as const) : (['direct', 'chain'] as const)) {
      if (side === 'direct') {
        cold.direct.push(await pullFrom(direct))
        continue
      }
      const t = await team()
      const l = await laptop([t.registry.url, up.hubUrl])
      try {
        cold.chain.push(await pullFrom(hostOf(l.daemon.url)))
      } finally {
        await l.dispose()
        await t.dispose()
      }
    }
  }

  // (b) Warm at the team (laptop empty) vs warm at the laptop.
  const warm = { team: [] as number[], laptop: [] as number[] }
  {
    const t = await team()
    const held = await laptop([t.registry.url, up.hubUrl])
    try {
      await pullFrom(hostOf(t.registry.url)) // the team tier now holds the image
      await pullFrom(hostOf(held.daemon.url)) // and so does this laptop
      for (let i = 0; i < RUNS; i++) {
        for (const side of i % 2 === 0 ? (['team', 'laptop'] as const) : (['laptop', 'team'] as const)) {
          if (side === 'laptop') {
            warm.laptop.push(await pullFrom(hostOf(held.daemon.url)))
            continue
          }
          const l = await laptop([t.registry.url, up.hubUrl])
          try {
            warm.team.push(await pullFrom(hostOf(l.daemon.url)))
          } finally {
            await l.dispose()
          }
        }
      }
    } finally {
      await held.dispose()
      await t.dispose()
    }
  }

  // (c) A black-holed first endpoint: before its breaker opens, after, and removed.
  const sockets = new Set<Socket>()
  const hole = createServer((s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve))
  ctx.resources.defer('black hole', async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => hole.close(() => resolve()))
  })
  const address = hole.address()
  if (address === null || typeof address === 'string') throw new Error('the black hole has no TCP address')
  const blackhole = `http://127.0.0.1:${address.port}`
  const opener = up.images.alpine.ref
  const bh = { before: [] as number[], after: [] as number[], removed: [] as number[] }
  for (let i = 0; i < RUNS; i++) {
    const order = i % 2 === 0 ? (['before', 'after', 'removed'] as const) : (['removed', 'after', 'before'] as const)
    for (const side of order) {
      const l = await laptop(side === 'removed' ? [up.hubUrl] : [blackhole, up.hubUrl])
      try {
        if (side === 'after') await pullFrom(hostOf(l.daemon.url), opener) // one timeout opens the breaker
        bh[side].push(await pullFrom(hostOf(l.daemon.url)))
      } finally {
        await l.dispose()
      }
    }
  }

  const m = {
    cold: { chain: median(cold.chain), direct: median(cold.direct) },
    warm: { team: median(warm.team), laptop: median(warm.laptop) },
    blackhole: { before: median(bh.before), after: median(bh.after), removed: median(bh.removed) },
  }
  const afterRatio = m.blackhole.after / m.blackhole.removed
  const ms = (v: number) => `${fixed(v, 0)} ms`
  return {
    rows: [
      {
        id: 'chain_cold',
        metric: `cold pull ${image.ref} laptop dproxy -> team registry (proxy mode) -> hub, both empty (median of ${RUNS})`,
        dproxy: ms(m.cold.chain),
        baseline: `${ms(m.cold.direct)} (direct from hub)`,
        ratio: m.cold.chain / m.cold.direct,
        target: 'none',
        verdict: 'INFO',
      },
      {
        id: 'chain_warm_team',
        metric: `pull ${image.ref}, laptop empty, team registry holding it (median of ${RUNS})`,
        dproxy: ms(m.warm.team),
        baseline: `${ms(m.warm.laptop)} (laptop dproxy holding it)`,
        ratio: m.warm.team / m.warm.laptop,
        target: 'none',
        verdict: 'INFO',
      },
      {
        id: 'chain_blackhole_before',
        metric: `first cold pull ${image.ref}, first endpoint black-holed, breaker closed (${FIRST_BYTE} first-byte limit; median of ${RUNS})`,
        dproxy: ms(m.blackhole.before),
        baseline: `${ms(m.blackhole.removed)} (endpoint removed)`,
        ratio: m.blackhole.before / m.blackhole.removed,
        target: 'none',
        verdict: 'INFO',
      },
      {
        id: 'chain_blackhole_after',
        metric: `cold pull ${image.ref}, first endpoint black-holed, breaker open (median of ${RUNS})`,
        dproxy: ms(m.blackhole.after),
        baseline: `${ms(m.blackhole.removed)} (endpoint removed)`,
        ratio: afterRatio,
        target: `<= ${BLACKHOLE_TARGET.toFixed(2)}x`,
        verdict: verdict(afterRatio <= BLACKHOLE_TARGET),
      },
    ],
    raw: { image: image.ref, runs: RUNS, firstByteLimit: FIRST_BYTE, ms: { cold, warm, blackhole: bh }, medianMs: m },
  }
}
