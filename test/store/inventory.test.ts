import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { clearCache, parseImageSelector } from '../../src/store/evict.js'
import { inventory, listImages } from '../../src/store/inventory.js'
import { Store } from '../../src/store/store.js'
import {
  OCI_INDEX,
  OCI_MANIFEST,
  blobTimes,
  digestOf,
  link,
  manifestTimes,
  putBlob,
  putImage,
  putIndex,
  putManifest,
  tag,
} from '../helpers/cache.js'

const NOW = Date.parse('2026-03-01T12:00:00Z')
const HOUR = 3_600_000
const DAY = 24 * HOUR
const clock = { now: () => NOW }
const typeBytes = (mediaType: string) => mediaType.length + 1

t.test('images with a shared base layer: size counts it for each, unique bytes only once', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const base = await putBlob(store, Buffer.alloc(10_000, 'base'))
  const a = await putImage(store, 'a', [base, 3000])
  const b = await putImage(store, 'b', [base, 5000])
  await tag(store, 'docker.io', 'library/a', 'latest', a.manifest)
  await tag(store, 'ghcr.io', 'owner/b', '1', b.manifest)
  await manifestTimes(store, a.manifest, NOW - 2 * HOUR, NOW - 3 * DAY)
  await manifestTimes(store, b.manifest, NOW - HOUR, NOW - DAY)
  // A blob's atime does not make an image look used (base layers are shared).
  await blobTimes(store, base, NOW, NOW - 3 * DAY)

  const images = await listImages(store)
  t.equal(images.length, 2)
  const [ia, ib] = images
  const own = (img: typeof a) => img.manifest.size + typeBytes(OCI_MANIFEST) + img.config.size + img.layers[1]!.size
  t.match(ia, {
    registry: 'docker.io',
    repository: 'library/a',
    tag: 'latest',
    digest: a.manifest.digest,
    mediaType: OCI_MANIFEST,
    manifests: 1,
    blobs: 3,
    complete: true,
    size: own(a) + base.size,
    uniqueBytes: own(a),
    storedAt: new Date(NOW - 3 * DAY).toISOString(),
    lastUsed: new Date(NOW - 2 * HOUR).toISOString(),
  })
  t.match(ib, { registry: 'ghcr.io', repository: 'owner/b', tag: '1', size: own(b) + base.size, uniqueBytes: own(b) })
  t.equal(ib!.lastUsed, new Date(NOW - HOUR).toISOString())

  const inv = await inventory(store)
  t.equal(inv.scan.bytes, own(a) + own(b) + base.size, 'scan total counts the shared blob once')
  t.equal(inv.scan.bytes, (await store.stats()).bytes, 'same total as Store.stats')
  t.strictSame(inv.orphans, { manifests: 0, blobs: 0, bytes: 0 })
})

t.test('an index is one image with its cached children; uncached platforms are not missing', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const amd = await putImage(store, 'amd64', [2000])
  const armBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, arm: true }))
  const index = await putIndex(store, [amd.manifest, { mediaType: OCI_MANIFEST, digest: digestOf(armBytes).value, size: armBytes.length }])
  await tag(store, 'docker.io', 'library/multi', 'latest', index)
  await link(store, 'docker.io', 'library/multi', amd.manifest) // a pull fetches the child by digest
  await manifestTimes(store, index, NOW - 5 * HOUR, NOW - DAY)
  await manifestTimes(store, amd.manifest, NOW - 4 * HOUR, NOW - DAY)

  const images = await listImages(store)
  t.equal(images.length, 1, 'the child is not listed on its own')
  t.match(images[0], {
    tag: 'latest',
    digest: index.digest,
    mediaType: OCI_INDEX,
    manifests: 2,
    blobs: 2,
    complete: true,
    lastUsed: new Date(NOW - 4 * HOUR).toISOString(),
    size: index.size + typeBytes(OCI_INDEX) + amd.manifest.size + typeBytes(OCI_MANIFEST) + amd.config.size + amd.layers[0]!.size,
  })
})

t.test('manifests linked without a tag: pulled by digest, or what a tag pointed at before it moved', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const old = await putImage(store, 'old', [1000])
  const cur = await putImage(store, 'cur', [1000])
  const byDigest = await putImage(store, 'pinned', [1000])
  await tag(store, 'docker.io', 'library/app', 'latest', old.manifest)
  await tag(store, 'docker.io', 'library/app', 'latest', cur.manifest) // moved
  await link(store, 'docker.io', 'library/app', byDigest.manifest)
  const oldChild = await putImage(store, 'old-child', [10])
  const oldIndex = await putIndex(store, [oldChild.manifest])
  await link(store, 'docker.io', 'library/app', oldIndex)
  await link(store, 'docker.io', 'library/app', oldChild.manifest)

  const images = await listImages(store)
  t.strictSame(
    images.map((i) => [i.tag, i.digest]).sort(),
    [
      ['latest', cur.manifest.digest],
      [null, old.manifest.digest],
      [null, byDigest.manifest.digest],
      [null, oldIndex.digest],
    ].sort(),
    'an old index is one tag-less image; its child is part of it',
  )
  t.equal(images[0]!.tag, 'latest', 'tags come before tag-less manifests')
})

t.test('partial pulls, dangling tags, orphans and stray files', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const config = await putBlob(store, '{"config":1}')
  const missing = { mediaType: 'application/octet-stream', digest: digestOf('never fetched').value, size: 13 }
  const partial = await putManifest(store, config, [missing])
  await tag(store, 'docker.io', 'library/partial', '1', partial)
  const gone = digestOf('a manifest that was deleted')
  await store.putTag('docker.io', 'library/gone', '1', { digest: gone.value, mediaType: OCI_MANIFEST, size: 1, checkedAt: NOW - DAY })
  const orphanBlob = await putBlob(store, 'fetched by digest, no manifest names it')
  const orphanManifest = await putManifest(store, orphanBlob, [])
  // Files the scan must skip: not digests, misplaced, a temp file.
  await fs.writeFile(join(store.layout.blobsDir, 'README'), 'x')
  await fs.mkdir(join(store.layout.blobsDir, 'sha256', 'zz'), { recursive: true })
  await fs.writeFile(join(store.layout.blobsDir, 'sha256', 'zz', 'nothex'), 'x')
  await fs.writeFile(join(store.layout.tmpDir, 'download-in-progress'), 'x'.repeat(1000))

  const inv = await inventory(store)
  const byRepo = new Map(inv.images.map((i) => [i.repository, i]))
  t.match(byRepo.get('library/partial'), { complete: false, blobs: 1, manifests: 1 })
  t.match(byRepo.get('library/gone'), {
    complete: false,
    size: 0,
    manifests: 0,
    lastUsed: new Date(NOW - DAY).toISOString(),
  })
  t.equal(inv.orphans.manifests, 1, 'a manifest no repository links')
  t.equal(inv.orphans.blobs, 1, 'its blob: no image reaches it either')
  t.equal(inv.orphans.bytes, orphanManifest.size + typeBytes(OCI_MANIFEST) + orphanBlob.size)
  t.notOk(inv.scan.blobs.has('sha256:nothex'))
})

t.test('listing does not make anything look used (relatime would bump atimes on read)', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const img = await putImage(store, 'quiet', [100])
  await tag(store, 'docker.io', 'library/quiet', '1', img.manifest)
  const used = Math.floor(Date.now() / 1000) * 1000 - 30 * DAY
  // utimes sets ctime to now, so with relatime the next plain read would move atime.
  await manifestTimes(store, img.manifest, used, Date.now() - 40 * DAY)
  const first = await listImages(store)
  const second = await listImages(store)
  t.equal(first[0]!.lastUsed, new Date(used).toISOString())
  t.equal(second[0]!.lastUsed, new Date(used).toISOString(), 'still the same after reading the manifest')
})

t.test('an empty or missing cache lists nothing', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const inv = await inventory(store)
  t.strictSame(inv.images, [])
  t.equal(inv.scan.bytes, 0)
})

t.test('tags that differ only in case are listed and cleared under their real names', async (t) => {
  const store = await Store.open(t.testdir(), { clock })
  const upper = await putImage(store, 'upper', [100])
  const lower = await putImage(store, 'lower', [200])
  await tag(store, 'docker.io', 'library/app', 'V1', upper.manifest)
  await tag(store, 'docker.io', 'library/app', 'v1', lower.manifest)
  const listed = (await listImages(store)).map((i) => [i.tag, i.digest])
  t.strictSame(listed, [
    ['V1', upper.manifest.digest],
    ['v1', lower.manifest.digest],
  ])
  const summary = await clearCache(store, { image: parseImageSelector('app:V1') })
  t.strictSame(summary.images.map((i) => i.tag), ['V1'])
  t.strictSame(await store.listTags('docker.io', 'library/app'), ['v1'], 'v1 stays')
  t.equal((await store.getTag('docker.io', 'library/app', 'v1'))?.digest, lower.manifest.digest)
})
