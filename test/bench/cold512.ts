// The cold path on the 512 MiB layer (issue 17): what the first pull of a big
// image costs against the same pull straight from upstream, and what 16 clients
// of one cold blob cost against one. A fresh daemon (empty cache) per dproxy
// run, which first pulls library/alpine untimed, as the ~100 MiB cold pull row
// does: loading undici and compiling the download path are once in a daemon's
// life. Runs alternate with their baseline; medians are reported.

import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { skopeoCopyAll } from '../fixtures/clients.js'
import { freshDaemon, type BenchContext, type Measured } from './measure.js'
import { curlGet } from './processes.js'
import { fixed, median, verdict } from './report.js'

const PULL_PAIRS = 5
const CLIENT_PAIRS = 3
const CLIENTS = 16
/** Issue 17: a cold pull of the 512 MiB layer through dproxy, against the same pull direct. */
export const COLD_PULL_512_TARGET = 1.2

export async function measureColdPull512(ctx: BenchContext): Promise<Measured> {
  const { up, big } = ctx
  const dest = join(ctx.tmp, 'skopeo-512')
  const removeDest = () => rm(dest, { recursive: true, force: true })
  ctx.resources.defer(`temp dir ${dest}`, removeDest)
  const ref = `${big.repository}:${big.tag}`
  const pull = async (hostPort: string, image: string): Promise<number> => {
    await removeDest()
    return (await skopeoCopyAll(`${hostPort}/${image}`, dest, { timeoutMs: 180_000 })).durationMs
  }
  /** A fresh daemon, warmed up with a small image, for `fn`. */
  const throughDproxy = async <T>(fn: (hostPort: string, url: string) => Promise<T>): Promise<T> => {
    const { daemon, dispose } = await freshDaemon(ctx)
    try {
      await pull(`127.0.0.1:${daemon.port}`, up.images.alpine.ref)
      return await fn(`127.0.0.1:${daemon.port}`, daemon.url)
    } finally {
      await dispose()
    }
  }
  const direct = `127.0.0.1:${up.hub.port}`
  // Untimed: the registry's files and the hub's code paths warmed for both sides.
  await pull(direct, ref)
  const ms = { dproxy: [] as number[], direct: [] as number[] }
  for (let i = 0; i < PULL_PAIRS; i++) {
    for (const side of i % 2 === 0 ? (['dproxy', 'direct'] as const) : (['direct', 'dproxy'] as const)) {
      ctx.progress(`cold pull 512: ${side} ${i + 1}/${PULL_PAIRS}`)
      if (side === 'direct') ms.direct.push(await pull(direct, ref))
      else ms.dproxy.push(await throughDproxy((hostPort) => pull(hostPort, ref)))
    }
  }
  await removeDest()

  // Curl clients of the cold layer: the one download teed to all of them.
  const path = `/v2/${big.repository}/blobs/${big.layerDigest}`
  const clients = async (n: number): Promise<number> =>
    throughDproxy(async (_hostPort, url) => {
      const started = performance.now()
      const got = await Promise.all(Array.from({ length: n }, () => curlGet(`${url}${path}`)))
      const elapsed = performance.now() - started
      const bad = got.filter((g) => g.status !== 200 || g.bytes !== big.layerSize)
      if (bad.length > 0) throw new Error(`cold clients got ${JSON.stringify(bad)} (want 200 and ${big.layerSize} bytes)`)
      return elapsed
    })
  const wall = { one: [] as number[], many: [] as number[] }
  for (let i = 0; i < CLIENT_PAIRS; i++) {
    ctx.progress(`cold blob: 1 and ${CLIENTS} clients ${i + 1}/${CLIENT_PAIRS}`)
    if (i % 2 === 0) {
      wall.one.push(await clients(1))
      wall.many.push(await clients(CLIENTS))
    } else {
      wall.many.push(await clients(CLIENTS))
      wall.one.push(await clients(1))
    }
  }

  const m = { dproxy: median(ms.dproxy), direct: median(ms.direct), one: median(wall.one), many: median(wall.many) }
  const ratio = m.dproxy / m.direct
  return {
    rows: [
      {
        id: 'cold_pull_512',
        metric: `cold pull ${ref} (512 MiB layer), skopeo (median of ${PULL_PAIRS})`,
        dproxy: `${fixed(m.dproxy, 0)} ms`,
        baseline: `${fixed(m.direct, 0)} ms (direct from hub)`,
        ratio,
        target: `<= ${COLD_PULL_512_TARGET.toFixed(2)}x`,
        verdict: verdict(ratio <= COLD_PULL_512_TARGET),
      },
      {
        id: 'cold_pull_512_clients',
        metric: `cold 512 MiB blob, ${CLIENTS} curl clients at once vs 1 (median of ${CLIENT_PAIRS})`,
        dproxy: `${fixed(m.many, 0)} ms (${CLIENTS} clients)`,
        baseline: `${fixed(m.one, 0)} ms (1 client)`,
        ratio: m.many / m.one,
        target: 'none set',
        verdict: 'INFO',
      },
    ],
    raw: { image: ref, client: 'skopeo copy --all to dir:', ms, medianMs: m, clients: CLIENTS, wallMs: wall },
  }
}
