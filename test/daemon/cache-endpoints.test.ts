// The /_dproxy/cache admin endpoints on a real daemon in front of the
// upstream fixture: listing, clearing, pruning, their errors, and that
// clearing never breaks a pull, whether the blob is streamed from disk or
// still being downloaded.

import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import t from 'tap'
import { request } from 'undici'
import type { Daemon } from '../../src/daemon/daemon.js'
import { ADMIN_TOKEN_HEADER } from '../../src/daemon/guard.js'
import type { CachedImage } from '../../src/store/inventory.js'
import type { EvictionSummary, PruneSummary } from '../../src/store/evict.js'
import { startUpstream } from '../fixtures/upstream.js'
import { putImage, tag } from '../helpers/cache.js'
import { get, pull, settled, startDaemon } from '../helpers/daemon.js'
import { parseDigest } from '../../src/oci/digest.js'

/** An admin request as the CLI makes it: with the daemon's admin token. */
async function admin<T>(d: Daemon, method: 'GET' | 'DELETE' | 'POST', path: string): Promise<{ status: number; body: T }> {
  const res = await request(`${d.url}${path}`, { method, headers: { [ADMIN_TOKEN_HEADER]: d.adminToken } })
  return { status: res.statusCode, body: (await res.body.json()) as T }
}

type ErrorBody = { errors: Array<{ code: string; message: string }> }

t.test('list, clear one image (dry run first), and pull it again from upstream', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const { alpine, redis, multi } = up.images
  await pull(d.url, 'alpine', 'latest')
  await pull(d.url, 'bitnami/redis', '7.2')
  await pull(d.url, 'multi', 'latest')
  await settled(d)

  const listed = await admin<CachedImage[]>(d, 'GET', '/_dproxy/cache/images')
  t.equal(listed.status, 200)
  t.strictSame(
    listed.body.map((i) => [i.repository, i.tag, i.digest, i.complete]),
    [
      ['bitnami/redis', '7.2', redis.digest, true],
      ['library/alpine', 'latest', alpine.digest, true],
      ['library/multi', 'latest', multi.digest, true],
    ],
  )
  const alpineSize = alpine.size + alpine.mediaType.length + 1 + alpine.blobs.reduce((n, b) => n + b.size, 0)
  t.equal(listed.body[1]!.size, alpineSize)
  t.equal(listed.body[2]!.manifests, 3, 'the multi-arch list and both platforms pulled')

  const dry = await admin<EvictionSummary>(d, 'DELETE', '/_dproxy/cache?image=alpine&dryRun=1')
  t.equal(dry.status, 200)
  t.match(dry.body, { dryRun: true, tags: 1, manifests: 1, blobs: alpine.blobs.length, bytes: alpineSize })
  t.equal((await d.store.stats()).tags, 3, 'dry run removed nothing')

  const real = await admin<EvictionSummary>(d, 'DELETE', '/_dproxy/cache?image=docker.io/library/alpine:latest')
  t.match(real.body, { dryRun: false, tags: 1, manifests: 1, blobs: alpine.blobs.length, bytes: alpineSize })
  t.strictSame((await admin<CachedImage[]>(d, 'GET', '/_dproxy/cache/images')).body.map((i) => i.repository), [
    'bitnami/redis',
    'library/multi',
  ])

  up.hub.resetCounts()
  await pull(d.url, 'alpine', 'latest')
  t.equal(up.hub.counts.manifestGet, 1, 'the manifest came from upstream again')
  for (const b of alpine.blobs) t.equal(up.hub.counts.cdnGet[b.digest], 1, 'and every blob')
  await settled(d)
  t.equal((await d.store.stats()).tags, 3)
})

t.test('prune by size through the endpoint; the configured limits when none are given', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up, { ttlMs: 365 * 24 * 3_600_000 })
  await pull(d.url, 'alpine', 'latest')
  await settled(d)
  await pull(d.url, 'bitnami/redis', '7.2')
  await settled(d)
  // alpine was used first: make that unmistakable for the LRU order.
  const old = new Date(Date.now() - 3_600_000)
  await fs.utimes(d.store.layout.manifest(parseDigest(up.images.alpine.digest)), old, old)
  const total = (await d.store.stats()).bytes

  const dry = await admin<PruneSummary>(d, 'POST', `/_dproxy/cache/prune?maxSize=${total - 1}&dryRun=1`)
  t.equal(dry.status, 200)
  t.match(dry.body, { dryRun: true, maxSizeBytes: total - 1, fits: true })
  t.strictSame(dry.body.images.map((i) => i.repository), ['library/alpine'])

  const configured = await admin<PruneSummary>(d, 'POST', '/_dproxy/cache/prune')
  t.match(configured.body, { ttlMs: 365 * 24 * 3_600_000, maxSizeBytes: null, images: [] }, 'the daemon ttl: nothing that old')

  const real = await admin<PruneSummary>(d, 'POST', `/_dproxy/cache/prune?maxSize=${total - 1}&ttl=0`)
  t.match(real.body, { dryRun: false, fits: true })
  t.equal((await d.store.stats()).bytes, real.body.remainingBytes)
  t.equal(await d.store.getTag('docker.io', 'library/alpine', 'latest'), undefined)
  t.ok(await d.store.getTag('docker.io', 'bitnami/redis', '7.2'))
})

t.test('bad requests are refused with a reason and change nothing', async (t) => {
  const d = await startDaemon(t, undefined)
  const stored = await putImage(d.store, 'x', [100])
  await tag(d.store, 'docker.io', 'library/x', '1', stored.manifest)
  const before = await d.store.stats()
  for (const [method, path, status, pattern] of [
    ['DELETE', '/_dproxy/cache?olderthan=1d', 400, /unknown query parameter 'olderthan'/],
    ['DELETE', '/_dproxy/cache?olderThan=soon', 400, /olderThan like '10m'/],
    ['DELETE', '/_dproxy/cache?image=UPPER', 400, /invalid image 'UPPER'/],
    ['DELETE', '/_dproxy/cache?image=x&dryRun=maybe', 400, /dryRun to be 1 or 0/],
    ['GET', '/_dproxy/cache', 405, /DELETE \/_dproxy\/cache: use DELETE|GET \/_dproxy\/cache: use DELETE/],
    ['POST', '/_dproxy/cache/images', 405, /use GET or HEAD/],
    ['POST', '/_dproxy/cache/prune', 400, /nothing to prune by/],
    ['POST', '/_dproxy/cache/prune?maxSize=lots', 400, /maxSize like '20GB'/],
    ['DELETE', '/_dproxy/cache/prune?maxSize=1', 405, /use POST/],
    ['GET', '/_dproxy/cache/images?all=1', 400, /it takes none/],
    ['GET', '/_dproxy/cachex', 404, /no such admin endpoint/],
  ] as const) {
    const res = await admin<ErrorBody>(d, method, path)
    t.equal(res.status, status, `${method} ${path}`)
    t.match(res.body.errors[0]?.message, pattern, `${method} ${path}`)
  }
  t.strictSame(await d.store.stats(), before)
})

t.test('content deleted behind the daemon is fetched again: a tag without its manifest, a missing blob', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  // With max-age the tag would be served without asking upstream, if its manifest were there.
  const d = await startDaemon(t, up, { maxAgeMs: 3_600_000 })
  const { alpine } = up.images
  await pull(d.url, 'alpine', 'latest')
  await settled(d)
  await d.store.deleteManifest(parseDigest(alpine.digest))
  await d.store.deleteBlob(parseDigest(alpine.blobs[0]!.digest))
  t.ok(await d.store.getTag('docker.io', 'library/alpine', 'latest'), 'the tag record is still there')

  up.hub.resetCounts()
  const again = await pull(d.url, 'alpine', 'latest')
  t.ok(again.manifest.body.equals(alpine.manifest))
  t.equal(up.hub.counts.manifestGet, 1, 'manifest fetched again')
  t.equal(up.hub.counts.cdnGet[alpine.blobs[0]!.digest], 1, 'the missing blob fetched again')
  await settled(d)
  t.ok(await d.store.hasManifest(parseDigest(alpine.digest)))
})

t.test('clearing never breaks a pull of the big image: streamed from disk, or still downloading', async (t) => {
  const up = await startUpstream({ big: true })
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up, { timeouts: { connectMs: 2000, headersMs: 10_000, bodyMs: 30_000 } })
  const big = up.images.big!
  const layer = big.blobs.find((b) => b.kind === 'layer')!

  // 1. Downloading: the layer is in tmp/ when everything is cleared, the client still gets verified bytes.
  const manifest = await get(`${d.url}/v2/library/big/manifests/1`, { accept: big.mediaType })
  t.equal(manifest.status, 200)
  const downloading = readBlob(`${d.url}/v2/library/big/blobs/${layer.digest}`)
  let sawTemp = false
  for (let i = 0; i < 2000 && !sawTemp; i++) {
    for (const name of await fs.readdir(d.store.layout.tmpDir)) {
      const st = await fs.stat(`${d.store.layout.tmpDir}/${name}`).catch(() => undefined)
      if (st && st.size > 0 && name.includes(layer.digest.slice(7, 23))) sawTemp = true
    }
    if (!sawTemp) await new Promise((r) => setTimeout(r, 2))
  }
  t.ok(sawTemp, 'caught the download in tmp/')
  const cleared = await admin<EvictionSummary>(d, 'DELETE', '/_dproxy/cache')
  t.equal(cleared.status, 200)
  t.equal(cleared.body.manifests, 1, 'the manifest was cleared while its layer downloaded')
  const first = await downloading
  t.equal(first.digest, layer.digest, 'the client got every byte, verified')
  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), layer.size, 'and the download still landed in the cache')

  // 2. From disk: a client half-way through reading the cached layer when it is deleted.
  const res = await request(`${d.url}/v2/library/big/blobs/${layer.digest}`)
  t.equal(res.statusCode, 200)
  const it = res.body[Symbol.asyncIterator]()
  const hash = createHash('sha256')
  let n = 0
  const firstChunk = await it.next()
  hash.update(firstChunk.value as Buffer)
  n += (firstChunk.value as Buffer).length
  const all = await admin<EvictionSummary>(d, 'DELETE', '/_dproxy/cache')
  t.equal(all.body.blobs, 1, 'the layer was deleted (an orphan by now)')
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), undefined)
  for (let r = await it.next(); !r.done; r = await it.next()) {
    hash.update(r.value as Buffer)
    n += (r.value as Buffer).length
  }
  t.equal(n, layer.size)
  t.equal(`sha256:${hash.digest('hex')}`, layer.digest, 'every byte, from the unlinked file')
})

async function readBlob(url: string): Promise<{ digest: string; size: number }> {
  const res = await request(url)
  if (res.statusCode !== 200) throw new Error(`GET ${url}: ${res.statusCode}`)
  const hash = createHash('sha256')
  let size = 0
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer)
    size += (chunk as Buffer).length
  }
  return { digest: `sha256:${hash.digest('hex')}`, size }
}

t.test('the daemon enforces maxSize by itself after downloads', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  let now = Date.now()
  const clock = { now: () => now }
  const { alpine, redis } = up.images
  const sizeOf = (img: typeof alpine) => img.size + img.mediaType.length + 1 + img.blobs.reduce((n, b) => n + b.size, 0)
  // Room for either image, not for both.
  const maxSizeBytes = Math.max(sizeOf(alpine), sizeOf(redis)) + 1000
  t.ok(maxSizeBytes < sizeOf(alpine) + sizeOf(redis))
  const d = await startDaemon(t, up, { clock, maxSizeBytes })
  await d.maintenance.autoPrune() // the start-up prune, so the size is known
  await pull(d.url, 'alpine', 'latest')
  await settled(d)
  t.ok(await d.store.getTag('docker.io', 'library/alpine', 'latest'))
  now += 3_600_000
  await pull(d.url, 'bitnami/redis', '7.2')
  await settled(d)
  // A check after each response starts a prune when the cache may be over; one that ran while a
  // layer was still downloading may have found it within the limit, and the next is at least
  // 30 s (daemon clock) later. So: some minutes pass, and any request checks again.
  now += 11 * 60_000
  t.equal((await get(`${d.url}/v2/`)).status, 200)
  let evicted = false
  for (let i = 0; i < 500 && !evicted; i++) {
    evicted = (await d.store.getTag('docker.io', 'library/alpine', 'latest')) === undefined
    if (!evicted) await new Promise((r) => setTimeout(r, 10))
  }
  t.ok(evicted, 'alpine, used an hour ago, was evicted')
  t.ok(await d.store.getTag('docker.io', 'bitnami/redis', '7.2'), 'redis, used more recently, stays')
  t.ok((await d.store.stats()).bytes <= maxSizeBytes)
})
