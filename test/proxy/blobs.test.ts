// Never a wrong byte: what a client receives of a blob whose upstream answer
// is odd (no Content-Length, a wrong one, wrong bytes), and of a download it
// joins that then fails verification. A client must either get the whole
// verified blob (or range) or see a cut connection; the cache keeps nothing
// that did not verify. The upstream is the real registry behind the Hub shim,
// whose CDN listener injects the faults.

import { once } from 'node:events'
import { promises as fs } from 'node:fs'
import { get as httpGet, type IncomingMessage } from 'node:http'
import t, { type Test } from 'tap'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import type { Fault } from '../fixtures/hub.js'
import { getRaw, settled, sha256, startDaemon } from '../helpers/daemon.js'
import type { Daemon } from '../../src/daemon/daemon.js'
import { parseDigest } from '../../src/oci/digest.js'
import { until } from '../helpers/process.js'

function alpineLayer(up: Upstream) {
  return up.images.alpine.blobs.find((b) => b.kind === 'layer')!
}

async function notCached(t: Test, d: Daemon, digest: string, what: string): Promise<void> {
  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(digest)), undefined, `${what}: not cached`)
  t.strictSame((await fs.readdir(d.store.layout.tmpDir)).filter((n) => !n.startsWith('w-')), [], `${what}: temp file removed`)
}

t.test('a blob upstream sends without Content-Length reaches the first client whole, chunked', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = alpineLayer(up)
  const url = `${d.url}/v2/library/alpine/blobs/${layer.digest}`
  up.hub.inject({ kind: 'length', length: 'none', digest: layer.digest, at: 'cdn' })

  const first = await getRaw(url)
  t.equal(first.status, 200)
  t.equal(first.headers['content-length'], undefined, 'no length is claimed')
  t.equal(first.headers['transfer-encoding'], 'chunked')
  t.ok(first.complete, 'terminating chunk sent')
  t.equal(first.body.length, layer.size, 'every byte')
  t.equal(sha256(first.body), layer.digest)

  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), layer.size, 'and cached')
  const second = await getRaw(url)
  t.equal(Number(second.headers['content-length']), layer.size, 'from cache with its length')
  t.equal(sha256(second.body), layer.digest)
  t.equal(up.hub.counts.cdnGet[layer.digest], 1)
})

t.test('no, too short or too long Content-Length with bad content: a cut connection, nothing cached', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = alpineLayer(up)
  const url = `${d.url}/v2/library/alpine/blobs/${layer.digest}`
  const cases: Array<[string, Omit<Fault, 'digest' | 'at'>]> = [
    ['chunked, wrong bytes', { kind: 'wrongBytes', length: 'none' }],
    ['chunked, truncated', { kind: 'truncate', length: 'none' }],
    ['chunked, reset', { kind: 'reset', length: 'none' }],
    ['length one byte short', { kind: 'length', length: 'short' }],
    ['length too long', { kind: 'length', length: 'long' }],
  ]
  for (const [what, fault] of cases) {
    up.hub.inject({ ...fault, digest: layer.digest, at: 'cdn' })
    const res = await getRaw(url)
    t.equal(res.status, 200, `${what}: the download started`)
    t.notOk(res.complete, `${what}: the client sees a cut connection`)
    t.ok(res.body.length < layer.size, `${what}: never a complete-looking body`)
    await notCached(t, d, layer.digest, what)
    const ok = await getRaw(url)
    t.ok(ok.complete && sha256(ok.body) === layer.digest, `${what}: the next pull gets the blob`)
    await settled(d)
    await d.store.deleteBlob(parseDigest(layer.digest))
  }
})

// A range that ends before the last byte of a blob still downloading is held
// back by one byte too: the client gets nothing it could take for verified.
t.test('clients joining a download that fails verification see a cut connection, full and ranged', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = alpineLayer(up)
  const url = `${d.url}/v2/library/alpine/blobs/${layer.digest}`
  for (const length of [undefined, 'none'] as const) {
    const what = length === 'none' ? 'chunked' : 'with length'
    let release!: () => void
    const hold = new Promise<void>((r) => (release = r))
    up.hub.inject({ kind: 'wrongBytes', digest: layer.digest, at: 'cdn', hold, ...(length ? { length } : {}) })
    const hits = d.counters.cacheHits
    const first = getRaw(url)
    await until(() => d.blobs.inflight === 1, 'the download', 40)
    const full = getRaw(url)
    const ranged = getRaw(url, { range: 'bytes=0-99' })
    const tail = getRaw(url, { range: 'bytes=-10' })
    await until(() => d.counters.cacheHits === hits + 3, 'three clients joining', 40)
    release()
    for (const [name, res] of [['first', await first], ['joined', await full], ['ranged 0-99', await ranged], ['suffix', await tail]] as const) {
      t.notOk(res.complete, `${what}, ${name}: cut connection`)
    }
    await notCached(t, d, layer.digest, what)
  }
})

/** A daemon whose first client of the alpine layer starts a download the hub holds half-way until `release()`. */
async function heldDownload(t: Test) {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = alpineLayer(up)
  const url = `${d.url}/v2/library/alpine/blobs/${layer.digest}`
  let release!: () => void
  up.hub.inject({ kind: 'length', digest: layer.digest, at: 'cdn', hold: new Promise<void>((r) => (release = r)) })
  const first = getRaw(url)
  await until(() => d.blobs.inflight === 1, 'the download', 40)
  return { up, d, layer, url, first, release }
}

t.test('a range inside a download that verifies is served whole', async (t) => {
  const { up, d, layer, url, first, release } = await heldDownload(t)
  const ranged = getRaw(url, { range: 'bytes=0-99' })
  await until(() => d.counters.cacheHits === 1, 'the ranged client joining', 40)
  release()
  const [a, b] = [await first, await ranged]
  t.ok(a.complete && sha256(a.body) === layer.digest)
  t.equal(b.status, 206)
  t.ok(b.complete)
  t.ok(b.body.equals(layer.data.subarray(0, 100)))
  t.equal(up.hub.counts.cdnGet[layer.digest], 1)
})

t.test('a client that leaves a held download no longer counts among its clients; the other still gets the blob', async (t) => {
  const { up, d, layer, url, first: staying, release } = await heldDownload(t)
  const leaving = httpGet(url)
  leaving.on('error', () => {})
  const [res] = (await once(leaving, 'response')) as [IncomingMessage]
  const clients = () => d.blobs.downloads().map((x) => x.clients)
  t.strictSame(clients(), [2], 'two clients on the download')
  res.destroy()
  await until(() => clients()[0] === 1, 'the client that left to be let go', 40)
  t.strictSame(clients(), [1])
  release()
  const got = await staying
  t.ok(got.complete && sha256(got.body) === layer.digest, 'the one that stayed gets the whole blob')
  await settled(d)
  t.strictSame(clients(), [], 'no download left')
  t.equal(up.hub.counts.cdnGet[layer.digest], 1)
})
