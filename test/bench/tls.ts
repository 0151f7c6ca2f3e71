// What TLS costs the daemon: two daemons on the same cache contents (each
// filled by one GET), one plain, one with --tls auto, measured interleaved:
// warm blob GETs with curl (--cacert for the TLS one), manifest GETs by digest
// from keep-alive connections (manifest-load.mjs, trusting the CA), and the
// peak resident memory while 64 TLS clients each read 64 MiB of the cached
// blob at once, next to the same for plain HTTP.

import { join } from 'node:path'
import { rm } from 'node:fs/promises'
import { load, type BenchContext, type Measured } from './measure.js'
import { readMemory, resetPeak, RssSampler } from './memory.js'
import { curlGet, startDaemonProcess, type CurlResult, type DaemonProcess } from './processes.js'
import { fixed, MB, median, MiB, verdict, type Row } from './report.js'

const RUNS = 3
const CLIENTS = 64
const RANGE_BYTES = 64 * MiB
/** The issue's target for warm blob GETs over TLS against plain HTTP. */
const BLOB_RATIO_TARGET = 0.7

async function daemon(ctx: BenchContext, name: string, serveArgs: string[]): Promise<{ d: DaemonProcess; curlArgs: string[]; ca?: string }> {
  const dir = join(ctx.tmp, `dproxy-${name}`)
  ctx.resources.defer(`temp dir ${dir}`, () => rm(dir, { recursive: true, force: true }))
  const d = await startDaemonProcess(dir, { 'docker.io': ctx.up.hubUrl }, { serveArgs })
  ctx.resources.defer(`dproxy pid ${d.pid}`, () => d.stop())
  if (!d.url.startsWith('https:')) return { d, curlArgs: [] }
  const ca = join(dir, 'state', 'tls', 'ca.pem')
  return { d, curlArgs: ['--cacert', ca], ca }
}

async function peak(d: DaemonProcess, url: string, curlArgs: string[]) {
  const reset = resetPeak(d.pid)
  const sampler = new RssSampler(d.pid, 20)
  sampler.start()
  let clients: CurlResult[]
  try {
    clients = await Promise.all(Array.from({ length: CLIENTS }, () => curlGet(url, [...curlArgs, '-r', `0-${RANGE_BYTES - 1}`])))
  } catch (err) {
    sampler.stop()
    throw err
  }
  const p = sampler.stop()
  const bad = clients.filter((c) => c.status !== 206 || c.bytes !== RANGE_BYTES)
  if (bad.length > 0) throw new Error(`${CLIENTS} clients: ${JSON.stringify(bad.slice(0, 3))} (want 206 and ${RANGE_BYTES} bytes)`)
  return { bytes: reset ? Math.max(p.hwm, p.maxRss) : p.maxRss, reset }
}

export async function measureTls(ctx: BenchContext): Promise<Measured> {
  const { big, up } = ctx
  const plain = await daemon(ctx, 'plain', [])
  const tls = await daemon(ctx, 'tls', ['--tls', 'auto'])
  const blob = (d: DaemonProcess) => `${d.url}/v2/${big.repository}/blobs/${big.layerDigest}`
  const both = [
    { name: 'plain', ...plain },
    { name: 'tls', ...tls },
  ]
  for (const x of both) {
    const r = await curlGet(blob(x.d), x.curlArgs)
    if (r.status !== 200 || r.bytes !== big.layerSize) throw new Error(`filling ${x.name}: ${r.status}, ${r.bytes} bytes`)
  }
  const idle = { plain: readMemory(plain.d.pid).rss, tls: readMemory(tls.d.pid).rss }

  ctx.progress(`tls: warm blob GETs, plain and TLS interleaved (${RUNS} each)`)
  const mibps: Record<string, number[]> = { plain: [], tls: [] }
  for (let round = 0; round < RUNS; round++) {
    for (const x of round % 2 === 0 ? both : [...both].reverse()) {
      const r = await curlGet(blob(x.d), x.curlArgs)
      if (r.status !== 200 || r.bytes !== big.layerSize) throw new Error(`GET ${x.name}: ${r.status}, ${r.bytes} bytes`)
      mibps[x.name]!.push(r.bytes / MiB / r.seconds)
    }
  }
  const blobRatio = median(mibps.tls!) / median(mibps.plain!)

  ctx.progress('tls: manifest GETs by digest, plain then TLS')
  const manifest = (d: DaemonProcess) => `${d.url}/v2/${up.images.alpine.repository}/manifests/${up.images.alpine.digest}`
  for (const x of both) await load(manifest(x.d), x.ca)
  const rps = { plain: await load(manifest(plain.d)), tls: await load(manifest(tls.d), tls.ca) }
  const failed = rps.plain.requests - rps.plain.ok + rps.tls.requests - rps.tls.ok

  ctx.progress(`tls: peak RSS with ${CLIENTS} clients x ${RANGE_BYTES / MiB} MiB, plain then TLS`)
  const plainPeak = await peak(plain.d, blob(plain.d), plain.curlArgs)
  const tlsPeak = await peak(tls.d, blob(tls.d), tls.curlArgs)

  const rows: Row[] = [
    {
      id: 'tls_blob_throughput',
      metric: `warm blob GET over TLS, 512 MiB, curl (median of ${RUNS})`,
      dproxy: `${fixed(median(mibps.tls!), 0)} MiB/s (https)`,
      baseline: `${fixed(median(mibps.plain!), 0)} MiB/s (http)`,
      ratio: blobRatio,
      target: `>= ${BLOB_RATIO_TARGET}`,
      verdict: verdict(blobRatio >= BLOB_RATIO_TARGET),
    },
    {
      id: 'tls_manifest_rps',
      metric: `manifest GET/s by digest over TLS, keep-alive${failed > 0 ? ` (${failed} failed)` : ''}`,
      dproxy: `${fixed(rps.tls.rps, 0)}/s (https)`,
      baseline: `${fixed(rps.plain.rps, 0)}/s (http)`,
      ratio: rps.tls.rps / rps.plain.rps,
      target: 'none set',
      verdict: failed > 0 ? 'MISS' : 'INFO',
    },
    {
      id: 'tls_rss_64',
      metric: `peak RSS, ${CLIENTS} TLS clients x ${RANGE_BYTES / MiB} MiB of the cached blob`,
      dproxy: `${fixed(tlsPeak.bytes / MB)} MB (${fixed(idle.tls / MB)} MB idle)`,
      baseline: `${fixed(plainPeak.bytes / MB)} MB (plain HTTP, same load)`,
      ratio: tlsPeak.bytes / plainPeak.bytes,
      target: 'none set',
      verdict: 'INFO',
    },
  ]
  return { rows, raw: { mibps, rps, idle, plainPeak, tlsPeak } }
}
