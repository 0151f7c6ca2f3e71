import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import {
  applyPlan,
  clearCache,
  parseImageSelector,
  planClear,
  planPrune,
  prune,
  summarize,
} from '../../src/store/evict.js'
import { inventory, listImages } from '../../src/store/inventory.js'
import { Store } from '../../src/store/store.js'
import {
  OCI_MANIFEST,
  blobTimes,
  digestOf,
  hasBlob,
  hasManifest,
  link,
  manifestTimes,
  putBlob,
  putImage,
  putIndex,
  tag,
  type Descriptor,
} from '../helpers/cache.js'
import { parseDigest } from '../../src/oci/digest.js'

const NOW = Date.parse('2026-03-01T12:00:00Z')
const HOUR = 3_600_000
const DAY = 24 * HOUR
const clock = { now: () => NOW }
const typeBytes = OCI_MANIFEST.length + 1

/** Two images on a shared base layer, alpine (two tags on one digest) and redis; a third, unrelated one. */
async function twoImagesSharingABase(store: Store) {
  const base = await putBlob(store, Buffer.alloc(50_000, 'base'))
  const alpine = await putImage(store, 'alpine', [base, 20_000])
  const redis = await putImage(store, 'redis', [base, 30_000])
  const other = await putImage(store, 'other', [5_000])
  await tag(store, 'docker.io', 'library/alpine', 'latest', alpine.manifest)
  await tag(store, 'docker.io', 'library/alpine', '3', alpine.manifest)
  await tag(store, 'docker.io', 'bitnami/redis', '7.2', redis.manifest)
  await tag(store, 'ghcr.io', 'owner/other', '1', other.manifest)
  return { base, alpine, redis, other }
}

const own = (img: { manifest: Descriptor; config: Descriptor; layers: Descriptor[] }, skip = 0) =>
  img.manifest.size + typeBytes + img.config.size + img.layers.slice(skip).reduce((n, l) => n + l.size, 0)

t.test('parseImageSelector: docker pull names, tags, digests, registries with ports', async (t) => {
  t.strictSame(parseImageSelector('alpine'), { registry: 'docker.io', repository: 'library/alpine' })
  t.strictSame(parseImageSelector('alpine:3.19'), { registry: 'docker.io', repository: 'library/alpine', tag: '3.19' })
  t.strictSame(parseImageSelector('bitnami/redis:7.2'), { registry: 'docker.io', repository: 'bitnami/redis', tag: '7.2' })
  t.strictSame(parseImageSelector('localhost:5000/team/app'), { registry: 'localhost:5000', repository: 'team/app' })
  t.strictSame(parseImageSelector('registry-1.docker.io/library/alpine:1'), {
    registry: 'docker.io',
    repository: 'library/alpine',
    tag: '1',
  })
  const d = digestOf('x').value
  t.strictSame(parseImageSelector(`ghcr.io/o/i@${d}`), { registry: 'ghcr.io', repository: 'o/i', digest: d })
  for (const bad of ['', 'UPPER', 'alpine:bad tag', 'alpine@sha256:short', 'a//b', 'alpine:' + 'x'.repeat(200)]) {
    t.throws(() => parseImageSelector(bad), { code: 'USAGE' }, JSON.stringify(bad))
  }
})

t.test('clearing one image keeps a base layer another image uses', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const { base, alpine, redis, other } = await twoImagesSharingABase(store)

  const summary = await clearCache(store, { image: parseImageSelector('alpine') })
  t.equal(summary.dryRun, false)
  t.strictSame(summary.images.map((i) => i.tag).sort(), ['3', 'latest'], 'both tags of the repository')
  t.equal(summary.tags, 2)
  t.equal(summary.manifests, 1)
  t.equal(summary.blobs, 2, 'config and own layer, not the base')
  t.equal(summary.bytes, own(alpine, 1))
  t.equal(summary.remainingBytes, (await store.stats()).bytes)

  t.notOk(await hasManifest(store, alpine.manifest))
  t.notOk(await hasBlob(store, alpine.layers[1]!))
  t.notOk(await hasBlob(store, alpine.config))
  t.ok(await hasBlob(store, base), 'the shared base layer survives')
  t.ok(await hasManifest(store, redis.manifest))
  t.ok(await hasManifest(store, other.manifest))
  t.equal(await store.getTag('docker.io', 'library/alpine', 'latest'), undefined)
  t.strictSame(await store.listTags('docker.io', 'library/alpine'), [])
  await t.rejects(fs.stat(store.layout.manifestLink('docker.io', 'library/alpine', parseDigest(alpine.manifest.digest))), { code: 'ENOENT' })
  t.strictSame((await listImages(store)).map((i) => i.repository), ['bitnami/redis', 'owner/other'])

  // Now redis is the only user of the base: clearing it frees the base too.
  const second = await clearCache(store, { image: parseImageSelector('bitnami/redis:7.2') })
  t.equal(second.bytes, own(redis, 1) + base.size)
  t.notOk(await hasBlob(store, base))
})

t.test('one tag of two on the same manifest: only the tag goes', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const { alpine } = await twoImagesSharingABase(store)
  const summary = await clearCache(store, { image: parseImageSelector('alpine:3') })
  t.match(summary, { tags: 1, manifests: 0, blobs: 0, bytes: 0 })
  t.ok(await hasManifest(store, alpine.manifest))
  t.strictSame(await store.listTags('docker.io', 'library/alpine'), ['latest'])
  t.ok(await fs.stat(store.layout.manifestLink('docker.io', 'library/alpine', parseDigest(alpine.manifest.digest))), 'link kept for latest')
})

t.test('the same manifest in two repositories: clearing one keeps the content, drops its link', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const img = await putImage(store, 'mirrored', [1000])
  await tag(store, 'docker.io', 'library/one', '1', img.manifest)
  await tag(store, 'ghcr.io', 'mirror/one', '1', img.manifest)
  const summary = await clearCache(store, { image: parseImageSelector('one') })
  t.match(summary, { tags: 1, manifests: 0, blobs: 0 })
  t.ok(await hasManifest(store, img.manifest))
  await t.rejects(fs.stat(store.layout.manifestLink('docker.io', 'library/one', parseDigest(img.manifest.digest))), { code: 'ENOENT' })
  t.strictSame((await listImages(store)).map((i) => `${i.registry}/${i.repository}:${i.tag}`), ['ghcr.io/mirror/one:1'])
})

t.test('an index goes with its cached children, tag-less manifests of the repository too', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const amd = await putImage(store, 'amd', [1000])
  const arm = await putImage(store, 'arm', [1000])
  const index = await putIndex(store, [amd.manifest, arm.manifest])
  await tag(store, 'docker.io', 'library/multi', 'latest', index)
  await link(store, 'docker.io', 'library/multi', amd.manifest)
  await link(store, 'docker.io', 'library/multi', arm.manifest)
  const pinned = await putImage(store, 'pinned', [10])
  await link(store, 'docker.io', 'library/multi', pinned.manifest)
  const keep = await putImage(store, 'keep', [10])
  await tag(store, 'docker.io', 'library/keep', '1', keep.manifest)

  const plan = await planClear(store, { image: parseImageSelector('multi') })
  t.equal(plan.images.length, 2, 'the tag and the digest-only manifest')
  t.equal(plan.manifests.length, 4)
  t.equal(plan.blobs.length, 6)
  t.equal(plan.links.length, 4)
  await applyPlan(store, plan)
  for (const m of [index, amd.manifest, arm.manifest, pinned.manifest]) t.notOk(await hasManifest(store, m))
  t.ok(await hasManifest(store, keep.manifest))
  t.strictSame((await inventory(store)).orphans, { manifests: 0, blobs: 0, bytes: 0 }, 'nothing left behind')

  t.match(await clearCache(store, { image: parseImageSelector('nothing/here') }), { images: [], bytes: 0 })
})

t.test('a dry run reports exactly what a real run then does, and deletes nothing', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  await twoImagesSharingABase(store)
  const before = await store.stats()
  const dry = await clearCache(store, { image: parseImageSelector('alpine') }, { dryRun: true })
  t.equal(dry.dryRun, true)
  t.strictSame(await store.stats(), before, 'nothing deleted')
  const real = await clearCache(store, { image: parseImageSelector('alpine') })
  t.strictSame({ ...dry, dryRun: false }, real)

  const everythingDry = await clearCache(store, {}, { dryRun: true })
  t.equal(everythingDry.bytes, (await store.stats()).bytes)
  t.ok((await store.stats()).bytes > 0)
})

t.test('older-than uses when the manifest was stored, unused-for when it was last pulled', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const a = await putImage(store, 'a', [100]) // stored long ago, used recently
  const b = await putImage(store, 'b', [100]) // stored recently, unused for long (impossible in practice; keeps the filters apart)
  const c = await putImage(store, 'c', [100]) // old and unused
  await tag(store, 'docker.io', 'library/a', '1', a.manifest)
  await tag(store, 'docker.io', 'library/b', '1', b.manifest)
  await tag(store, 'docker.io', 'library/c', '1', c.manifest)
  await manifestTimes(store, a.manifest, NOW - HOUR, NOW - 40 * DAY)
  await manifestTimes(store, b.manifest, NOW - 40 * DAY, NOW - HOUR)
  await manifestTimes(store, c.manifest, NOW - 40 * DAY, NOW - 40 * DAY)
  const repos = async (filter: Parameters<typeof planClear>[1]) =>
    (await planClear(store, filter)).images.map((i) => i.repository).sort()

  t.strictSame(await repos({ olderThanMs: 30 * DAY }), ['library/a', 'library/c'])
  t.strictSame(await repos({ unusedForMs: 30 * DAY }), ['library/b', 'library/c'])
  t.strictSame(await repos({ olderThanMs: 30 * DAY, unusedForMs: 30 * DAY }), ['library/c'], 'criteria combine')
  t.strictSame(await repos({ olderThanMs: 40 * DAY }), [], 'strictly older')
  t.strictSame(await repos({ image: parseImageSelector('a'), unusedForMs: 30 * DAY }), [])
  t.strictSame(await repos({ olderThanMs: 30 * DAY }), ['library/a', 'library/c'], 'planning changed nothing')

  const cleared = await clearCache(store, { unusedForMs: 30 * DAY }, { now: NOW })
  t.equal(cleared.images.length, 2)
  t.ok(await hasManifest(store, a.manifest))
  t.notOk(await hasManifest(store, c.manifest))
})

t.test('clearing everything leaves downloads in progress alone', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  await twoImagesSharingABase(store)
  await putBlob(store, 'an orphan blob')
  const writer = await store.createBlobWriter(digestOf('in flight'))
  await writer.write(Buffer.from('in fl'))
  const leftover = join(store.layout.tmpDir, '999999999-abc-0123')
  await fs.writeFile(leftover, 'a killed download')
  const dry = await clearCache(store, {}, { dryRun: true })
  t.match(dry, { tempFiles: 1, tempBytes: 17 }, 'a dry run counts the leftover')
  t.ok(await fs.stat(leftover))
  const summary = await clearCache(store, {})
  t.match(summary, { tempFiles: 1, tempBytes: 17 }, 'the temp file of a killed writer is removed')
  await t.rejects(fs.stat(leftover), { code: 'ENOENT' })
  t.equal(summary.images.length, 4)
  t.equal(summary.orphans, 1)
  t.equal(summary.remainingBytes, 0)
  t.strictSame(await store.stats(), { bytes: 0, blobs: 0, manifests: 0, tags: 0, tempFiles: 1, tempBytes: 5 })
  let links = 0
  for (const repo of ['library/alpine', 'bitnami/redis']) {
    links += (await fs.readdir(join(store.layout.repository('docker.io', repo), '_manifests', 'sha256'))).length
  }
  t.equal(links, 0, 'links removed')
  t.ok(await fs.stat(writer.tempPath), 'the temp file of a download is untouched')
  await writer.write(Buffer.from('ight'))
  await writer.commit()
  t.equal(await store.statBlob(digestOf('in flight')), 9, 'and the download still commits')
})

t.test('a reader streaming a blob keeps every byte when it is cleared', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const img = await putImage(store, 'streamed', [1 << 20])
  await tag(store, 'docker.io', 'library/streamed', '1', img.manifest)
  const layer = img.layers[0]!
  const h = await store.openBlob(parseDigest(layer.digest))
  const half = Buffer.alloc(layer.size / 2)
  await h!.read(half, 0, half.length, 0)
  await clearCache(store, {})
  t.notOk(await hasBlob(store, layer))
  const rest = Buffer.alloc(layer.size - half.length)
  const bytesRead = await h!.read(rest, 0, rest.length, half.length)
  await h!.close()
  t.equal(bytesRead, rest.length)
  t.equal(digestOf(Buffer.concat([half, rest])).value, layer.digest)
})

t.test('a tag moved between plan and apply is left alone', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const first = await putImage(store, 'first', [100])
  const second = await putImage(store, 'second', [100])
  await tag(store, 'docker.io', 'library/moving', 'latest', first.manifest)
  const plan = await planClear(store, { image: parseImageSelector('moving:latest') })
  await tag(store, 'docker.io', 'library/moving', 'latest', second.manifest) // a pull moved it meanwhile
  const done = await applyPlan(store, plan)
  t.equal(done.tags, 0)
  t.equal((await store.getTag('docker.io', 'library/moving', 'latest'))?.digest, second.manifest.digest)
  t.ok(await hasManifest(store, second.manifest))
  t.notOk(await hasManifest(store, first.manifest))
})

t.test('files already gone by apply time are not counted', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const img = await putImage(store, 'racy', [100])
  await tag(store, 'docker.io', 'library/racy', '1', img.manifest)
  const plan = await planClear(store, {})
  await store.deleteBlob(parseDigest(img.layers[0]!.digest))
  const done = await applyPlan(store, plan)
  t.equal(done.blobs, 1)
  t.equal(done.bytes, plan.bytes - img.layers[0]!.size)
  t.equal(summarize(plan, true).blobs, 2)
})

t.test('prune evicts least recently used images until the cache fits', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const imgs: Record<string, Awaited<ReturnType<typeof putImage>>> = {}
  for (const [i, name] of ['old', 'mid', 'new'].entries()) {
    imgs[name] = await putImage(store, name, [10_000])
    await tag(store, 'docker.io', `library/${name}`, '1', imgs[name]!.manifest)
    await manifestTimes(store, imgs[name]!.manifest, NOW - (3 - i) * DAY, NOW - 50 * DAY)
  }
  const total = (await store.stats()).bytes
  const each = own(imgs.old!)

  t.match(await prune(store, { maxSizeBytes: total, dryRun: true }), { images: [], fits: true }, 'fits already')
  const one = await prune(store, { maxSizeBytes: total - 1, dryRun: true })
  t.strictSame(one.images.map((i) => i.repository), ['library/old'], 'the least recently used first')
  t.equal(one.remainingBytes, total - each)
  const two = await prune(store, { maxSizeBytes: total - each - 1, dryRun: true })
  t.strictSame(two.images.map((i) => i.repository).sort(), ['library/mid', 'library/old'])
  t.strictSame(
    (await prune(store, { maxSizeBytes: 0, keepUsedWithinMs: 2 * DAY + 1, dryRun: true })).images.map((i) => i.repository),
    ['library/old'],
    'never what was used within keepUsedWithinMs',
  )
  t.match(await prune(store, { maxSizeBytes: 0, keepUsedWithinMs: 2 * DAY + 1, dryRun: true }), { fits: false, maxSizeBytes: 0 })
  t.strictSame(
    (await prune(store, { ttlMs: 2 * DAY + 1, dryRun: true })).images.map((i) => i.repository),
    ['library/old'],
    'ttl: unused for longer than it',
  )
  t.match(await prune(store, { ttlMs: 2 * DAY + 1, dryRun: true }), { ttlMs: 2 * DAY + 1, maxSizeBytes: null, fits: true })

  const real = await prune(store, { maxSizeBytes: total - 1 })
  t.equal(real.dryRun, false)
  t.notOk(await hasManifest(store, imgs.old!.manifest))
  t.ok(await hasManifest(store, imgs.mid!.manifest))
  t.equal((await store.stats()).bytes, total - each)
})

t.test('prune with orphans: every unreferenced file not used within keepUsedWithinMs goes, images stay', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const img = await putImage(store, 'kept', [10_000])
  await tag(store, 'docker.io', 'library/kept', '1', img.manifest)
  await manifestTimes(store, img.manifest, NOW - 30 * DAY, NOW - 30 * DAY)
  const old = await putBlob(store, 'an old unreferenced blob')
  await blobTimes(store, old, NOW - 2 * DAY, NOW - 2 * DAY)
  const recent = await putBlob(store, 'a recent unreferenced blob')
  await blobTimes(store, recent, NOW - 60_000, NOW - 60_000)

  const summary = await prune(store, { orphans: true, keepUsedWithinMs: DAY })
  t.match(summary, { images: [], orphans: 1, blobs: 1 })
  t.notOk(await hasBlob(store, old), 'the old orphan went')
  t.ok(await hasBlob(store, recent), 'one used within keepUsedWithinMs stays')
  t.ok(await hasManifest(store, img.manifest), 'an image is no orphan, however old')
  t.match(await prune(store, { keepUsedWithinMs: 0, dryRun: true }), { orphans: 0 }, 'without orphans: no limit, nothing goes')
})

t.test('prune: evicting an image whose layers another uses frees only its own bytes', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const { base, alpine, redis, other } = await twoImagesSharingABase(store)
  await manifestTimes(store, alpine.manifest, NOW - 3 * DAY, NOW - 9 * DAY)
  await manifestTimes(store, redis.manifest, NOW - 2 * DAY, NOW - 9 * DAY)
  await manifestTimes(store, other.manifest, NOW - DAY, NOW - 9 * DAY)
  const orphan = await putBlob(store, Buffer.alloc(1000, 'orphan'))
  const { utimes } = fs
  await utimes(store.blobPath(parseDigest(orphan.digest)), (NOW - 10 * DAY) / 1000, (NOW - 10 * DAY) / 1000)
  const total = (await store.stats()).bytes

  // Just over by the orphan: the orphan (least recently used) goes and nothing else.
  const small = await planPrune(store, { maxSizeBytes: total - 1 })
  t.equal(small.orphans, 1)
  t.equal(small.images.length, 0)

  // To free the base, alpine (both tags) and redis must go: other stays.
  const target = total - orphan.size - own(alpine, 1) - own(redis, 1) - base.size
  const plan = await planPrune(store, { maxSizeBytes: target })
  t.strictSame(plan.images.map((i) => `${i.repository}:${i.tag}`).sort(), ['bitnami/redis:7.2', 'library/alpine:3', 'library/alpine:latest'])
  t.ok(plan.blobs.some((b) => b.digest === base.digest))
  t.equal(plan.totalBytes - plan.bytes, target)
})

t.test('a blob the OS refuses to delete while in use (Windows: EBUSY) is left for the next run', async (t) => {
  const realFs = await import('node:fs')
  const busyFs = {
    ...realFs,
    promises: {
      ...realFs.promises,
      unlink: async (path: string) => {
        if (path.includes('/blobs/')) throw Object.assign(new Error(`EBUSY: resource busy or locked, unlink '${path}'`), { code: 'EBUSY' })
        return realFs.promises.unlink(path)
      },
    },
  }
  // The store removes files through src/fs.ts: it gets the refusing fs too.
  const { Store: BusyStore } = await t.mockImport<typeof import('../../src/store/store.js')>('../../src/store/store.js', {
    'node:fs': busyFs,
    '../../src/fs.js': await t.mockImport<typeof import('../../src/fs.js')>('../../src/fs.js', { 'node:fs': busyFs }),
  })
  const store = await BusyStore.open(t.testdir(), { clock })
  const img = await putImage(store, 'busy', [100])
  await tag(store, 'docker.io', 'library/busy', '1', img.manifest)
  const done = await clearCache(store, {})
  t.match(done, { tags: 1, manifests: 1, blobs: 0, bytes: img.manifest.size + typeBytes })
  t.ok(await hasBlob(store, img.layers[0]!), 'still there')
  t.equal((await inventory(store)).orphans.blobs, 2, 'now unreferenced: the next run removes them')
})
