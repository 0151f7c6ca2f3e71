// `dproxy prefetch` of a project against `skopeo copy` of the same images
// straight from the upstream. The project (written here) names every image of
// the fixture catalogue through a compose file, a Dockerfile and an image
// list, library/big:1 (about 100 MiB) included, so the time is mostly bytes
// moved, not process start. dproxy runs as the user runs it: the whole CLI,
// no daemon running (it starts one for the run), an empty cache each round,
// `--platform all`. The baseline copies each image with `skopeo copy --all`
// into a `dir:` from the Hub shim (token auth, 307 to the CDN), as many at a
// time as prefetch's default --jobs, into empty directories. Rounds are
// interleaved after an untimed one; medians reported.

import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { skopeoCopyAll } from '../fixtures/clients.js'
import { catalogueImages } from '../fixtures/images.js'
import type { BenchContext, Measured } from './measure.js'
import { dproxyEnv, DPROXY_BIN, timeCommand } from './processes.js'
import { fixed, median, verdict } from './report.js'

const RUNS = 3
/** prefetch's default --jobs, used for the baseline too. */
const JOBS = 4
export const PREFETCH_TARGET = 1.2

export async function measurePrefetch(ctx: BenchContext): Promise<Measured> {
  const { up } = ctx
  const images = catalogueImages(up.images)
  if (!up.images.big) throw new Error('the prefetch row needs library/big:1 in the upstream')
  const dir = join(ctx.tmp, 'prefetch')
  ctx.resources.defer(`temp dir ${dir}`, () => rm(dir, { recursive: true, force: true }))
  const project = join(dir, 'project')
  const [alpine, redis, multi, ociindex, ...listed] = images.map((i) => i.ref)
  await mkdir(project, { recursive: true })
  await writeFile(join(project, 'compose.yaml'), `services:\n  web:\n    image: ${alpine}\n  cache:\n    image: ${redis}\n  app:\n    build: .\n`)
  await writeFile(join(project, 'Dockerfile'), `FROM ${multi}\nCOPY --from=${ociindex} /a /a\n`)
  await writeFile(join(project, 'project.images'), listed.join('\n') + '\n')

  const env: Record<string, string> = { ...dproxyEnv(dir), DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` }
  const cache = env.DPROXY_CACHE_DIR!
  const copies = join(dir, 'copies')
  const fresh = async (d: string) => {
    await rm(d, { recursive: true, force: true })
    await mkdir(d, { recursive: true })
  }
  for (const d of ['home', 'config', 'state']) await mkdir(join(dir, d), { recursive: true })

  const prefetch = async (): Promise<number> => {
    await fresh(cache)
    const r = await timeCommand(process.execPath, [DPROXY_BIN, 'prefetch', project, '--platform', 'all', '--jobs', String(JOBS), '--json'], env)
    if (r.code !== 0) throw new Error(`dproxy prefetch exited ${r.code}`)
    return r.ms
  }
  const direct = async (): Promise<number> => {
    await fresh(copies)
    const started = performance.now()
    let next = 0
    const worker = async () => {
      while (next < images.length) {
        const image = images[next++]!
        await skopeoCopyAll(`127.0.0.1:${up.hub.port}/${image.ref}`, join(copies, image.repository.replace('/', '_')), { timeoutMs: 120_000 })
      }
    }
    await Promise.all(Array.from({ length: JOBS }, worker))
    return performance.now() - started
  }

  const ms = { dproxy: [] as number[], direct: [] as number[] }
  // Round -1 is untimed: skopeo, the registry's files and both code paths warmed alike.
  for (let round = -1; round < RUNS; round++) {
    const keep = (list: number[], v: number) => (round >= 0 ? list.push(v) : 0)
    if (round % 2 === 0) {
      keep(ms.dproxy, await prefetch())
      keep(ms.direct, await direct())
    } else {
      keep(ms.direct, await direct())
      keep(ms.dproxy, await prefetch())
    }
  }
  await rm(copies, { recursive: true, force: true })
  const m = { dproxy: median(ms.dproxy), direct: median(ms.direct) }
  const ratio = m.dproxy / m.direct
  return {
    rows: [
      {
        id: 'prefetch',
        metric: `prefetch of a project, ${images.length} images (~100 MiB), --platform all (median of ${RUNS})`,
        dproxy: `${fixed(m.dproxy, 0)} ms`,
        baseline: `${fixed(m.direct, 0)} ms (skopeo copy --all, ${JOBS} at a time)`,
        ratio,
        target: `<= ${PREFETCH_TARGET.toFixed(2)}x`,
        verdict: verdict(ratio <= PREFETCH_TARGET),
      },
    ],
    raw: { images: images.map((i) => i.ref), jobs: JOBS, ms, medianMs: m },
  }
}
