// Never a wrong byte: what a client receives of a blob whose upstream answer
// is odd (no Content-Length, a wrong one, wrong bytes), and of a download it
// joins that then fails verification. A client must either get the whole
// verified blob (or range) or see a cut connection; the cache keeps nothing
// that did not verify. The upstream is the real registry behind the Hub shim,
// whose CDN listener injects the faults.

import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { basename, join } from 'node:path'
import { promises as fs } from 'node:fs'
import { get as httpGet, type IncomingMessage } from 'node:http'
import t, { type Test } from 'tap'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import type { Fault } from '../fixtures/hub.js'
import { getRaw, settled, sha256, startDaemon } from '../helpers/daemon.js'
import type { Daemon } from '../../src/daemon/daemon.js'
import { parseDigest } from '../../src/oci/digest.js'
import { until } from '../helpers/process.js'
import { blobTimes, putBlob } from '../helpers/cache.js'
import { fillUntil, mountTmpfs, TMPFS_NEEDS } from '../helpers/tmpfs.js'
import { walk } from '../../src/store/store.js'

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

/**
 * A daemon whose cache is on a real tmpfs of `size`, with the default catalogue
 * upstream; undefined (the test planned for nothing) where no tmpfs can be mounted.
 */
async function onTmpfs(t: Test, size: string) {
  let d: Daemon | undefined
  let up: Upstream | undefined
  const dir = await mountTmpfs(t, size, async () => {
    await d?.stop(0)
    await up?.stop()
  })
  if (dir === undefined) {
    t.plan(0, TMPFS_NEEDS)
    return undefined
  }
  up = await startUpstream()
  d = await startDaemon(t, up, { cacheDir: join(dir, 'cache') })
  const layer = alpineLayer(up)
  return { dir, up, d, layer, url: `${d.url}/v2/library/alpine/blobs/${layer.digest}` }
}

/** Every file under the cache's blobs/ holds the content its name says, and tmp/ is empty. */
async function cacheIsSound(t: Test, d: Daemon): Promise<void> {
  const names: string[] = []
  await walk(d.store.layout.blobsDir, async (path) => {
    const digest = `sha256:${basename(path)}`
    names.push(digest)
    t.equal(sha256(await fs.readFile(path)), digest, `cached ${digest.slice(7, 19)} is what its name says`)
  })
  t.strictSame(await fs.readdir(d.store.layout.tmpDir), [], 'no temp file left')
}

t.test('a blob bigger than the free disk: its clients get it whole, the next streams past the cache, it is cached once there is room', async (t) => {
  const env = await onTmpfs(t, '16m')
  if (!env) return
  const { dir, up, d, layer, url } = env
  const half = Math.floor(layer.size / 2)
  // Room for the half the CDN sends before its hold, not for the whole layer.
  const filler = await fillUntil(dir, Math.floor(layer.size * 0.75))

  let release!: () => void
  up.hub.inject({ kind: 'length', digest: layer.digest, at: 'cdn', hold: new Promise<void>((r) => (release = r)) })
  const clients = [getRaw(url), getRaw(url), getRaw(url)]
  const download = () => d.blobs.downloads()[0]
  await until(() => download()?.clients === 3 && download()?.written === half, () => `three clients and half the layer on disk: ${JSON.stringify(download())}`, 200)
  release()
  for (const [i, got] of (await Promise.all(clients)).entries()) {
    t.equal(got.status, 200, `client ${i}: 200`)
    t.ok(got.complete, `client ${i}: the whole response`)
    t.equal(got.body.length, layer.size, `client ${i}: every byte`)
    t.equal(sha256(got.body), layer.digest, `client ${i}: the verified blob`)
  }
  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), undefined, 'not cached: it does not fit')
  t.strictSame(await fs.readdir(d.store.layout.tmpDir), [], 'the temp file is gone')
  t.equal(up.hub.counts.cdnGet[layer.digest], 1, 'one upstream GET for the three')

  // The next request streams past the cache: no download into the cache is started.
  up.hub.inject({ kind: 'length', digest: layer.digest, at: 'cdn', hold: new Promise<void>((r) => (release = r)) })
  const misses = d.counters.cacheMisses
  const next = getRaw(url)
  await until(() => up.hub.counts.cdnBytes[layer.digest]! >= layer.size + half, 'the next request to reach the hold', 200)
  t.equal(d.blobs.inflight, 0, 'no cached download runs')
  t.strictSame(await fs.readdir(d.store.layout.tmpDir), [], 'and no temp file is written')
  release()
  const got = await next
  t.ok(got.complete && sha256(got.body) === layer.digest, 'the next client gets the verified blob past the cache')
  t.equal(d.counters.cacheMisses, misses + 1, 'counted as a miss')
  t.equal(up.hub.counts.cdnGet[layer.digest], 2)
  await cacheIsSound(t, d)

  // Room again: caching is tried again and succeeds.
  await fs.rm(filler)
  const again = await getRaw(url)
  t.ok(again.complete && sha256(again.body) === layer.digest)
  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), layer.size, 'cached once the disk has room for it')
  t.equal(up.hub.counts.cdnGet[layer.digest], 3)
  await cacheIsSound(t, d)
})

t.test('a disk that fills up mid-download: unreferenced files are evicted to make room, and the blob is cached', async (t) => {
  const env = await onTmpfs(t, '16m')
  if (!env) return
  const { dir, up, d, layer, url } = env
  // An unreferenced blob nobody used for an hour: eviction may take it.
  const orphan = await putBlob(d.store, randomBytes(3 * 1024 * 1024))
  const hourAgo = Date.now() - 3_600_000
  await blobTimes(d.store, orphan, hourAgo, hourAgo)
  await fillUntil(dir, Math.floor(layer.size * 0.75))

  const got = await getRaw(url)
  t.ok(got.complete && sha256(got.body) === layer.digest, 'the client gets the verified blob')
  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), layer.size, 'cached: eviction made room')
  t.equal(await d.store.statBlob(parseDigest(orphan.digest)), undefined, 'the unreferenced blob went')
  t.equal(up.hub.counts.cdnGet[layer.digest], 1)
  await cacheIsSound(t, d)
})

t.test('past a full disk the bytes are still checked: wrong content cuts every client following, nothing is kept', async (t) => {
  const env = await onTmpfs(t, '16m')
  if (!env) return
  const { dir, up, d, layer, url } = env
  const half = Math.floor(layer.size / 2)
  await fillUntil(dir, Math.floor(layer.size * 0.75))
  // The byte after the hold is flipped: it arrives after the disk is full.
  let release!: () => void
  up.hub.inject({ kind: 'wrongBytes', digest: layer.digest, at: 'cdn', hold: new Promise<void>((r) => (release = r)) })
  const clients = [getRaw(url), getRaw(url)]
  const download = () => d.blobs.downloads()[0]
  await until(() => download()?.clients === 2 && download()?.written === half, () => `two clients and half the layer on disk: ${JSON.stringify(download())}`, 200)
  release()
  for (const [i, got] of (await Promise.all(clients)).entries()) {
    t.notOk(got.complete, `client ${i}: a cut connection`)
    t.ok(got.body.length < layer.size, `client ${i}: never the whole length (${got.body.length} of ${layer.size})`)
  }
  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), undefined, 'not cached')
  await cacheIsSound(t, d)
})
