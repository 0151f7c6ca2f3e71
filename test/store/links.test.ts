// The link index on its own (a counting source: what it reads, and when) and
// over the file store (what a restart, or a cache written before the index
// existed, gives back). The contract suite (contract.ts) holds both stores to
// what a repository has.

import t from 'tap'
import { LinkIndex, type LinkSource } from '../../src/store/links.js'
import type { StoredManifest } from '../../src/store/api.js'
import { Store } from '../../src/store/store.js'
import { clearCache, parseImageSelector } from '../../src/store/evict.js'
import { parseDigest, type Digest } from '../../src/oci/digest.js'
import { digestOf, putImage, putIndex, tag } from '../helpers/cache.js'

const MANIFEST = 'application/vnd.oci.image.manifest.v1+json'

/** Manifests and links in Maps, counting every read the index makes. */
class CountingSource implements LinkSource {
  readonly manifests = new Map<string, StoredManifest>()
  readonly links = new Map<string, Digest[]>()
  reads = { links: 0, manifests: 0 }
  failLinks = false

  async linkedManifests(registry: string, repository: string): Promise<Digest[]> {
    this.reads.links++
    if (this.failLinks) throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })
    return this.links.get(`${registry}/${repository}`) ?? []
  }

  async getManifest(d: Digest): Promise<StoredManifest | undefined> {
    this.reads.manifests++
    return this.manifests.get(d.value)
  }

  /** An image manifest naming `layers` blobs of its own; returns its digest and its blobs'. */
  image(seed: string, layers = 1): { d: Digest; blobs: Digest[] } {
    const blobs = Array.from({ length: layers + 1 }, (_, i) => digestOf(`${seed} ${i}`))
    const desc = (b: Digest) => ({ mediaType: 'application/octet-stream', digest: b.value, size: 1 })
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, config: desc(blobs[0]!), layers: blobs.slice(1).map(desc) }))
    const d = digestOf(bytes)
    this.manifests.set(d.value, { digest: d.value, mediaType: MANIFEST, bytes })
    return { d, blobs }
  }
}

t.test('a repository is read once: later questions, yes or no, read nothing', async (t) => {
  const source = new CountingSource()
  const img = source.image('a')
  source.links.set('docker.io/library/alpine', [img.d])
  const index = new LinkIndex(source)
  t.equal(await index.has('docker.io', 'library/alpine', img.blobs[1]!), true)
  t.strictSame(source.reads, { links: 1, manifests: 1 }, 'one listing, one manifest read')
  for (let i = 0; i < 100; i++) {
    await index.has('docker.io', 'library/alpine', img.blobs[1]!)
    await index.has('docker.io', 'library/alpine', digestOf(`not linked ${i}`))
  }
  t.strictSame(source.reads, { links: 1, manifests: 1 }, 'warm: no reads at all')
  await index.addManifest('docker.io', 'library/alpine', img.d)
  t.strictSame(source.reads, { links: 1, manifests: 1 }, 'a manifest linked again reads nothing either')
})

t.test('bounded: the least recently used repository is forgotten, and read again when asked', async (t) => {
  const source = new CountingSource()
  const a = source.image('a', 3)
  const b = source.image('b', 3)
  source.links.set('docker.io/library/a', [a.d])
  source.links.set('docker.io/library/b', [b.d])
  // Room for one repository of 5 digests (manifest, config, three layers) and a bit.
  const index = new LinkIndex(source, { maxDigests: 8 })
  t.equal(await index.has('docker.io', 'library/a', a.blobs[3]!), true)
  t.equal(await index.has('docker.io', 'library/b', b.blobs[3]!), true)
  t.equal(source.reads.links, 2)
  t.equal(await index.has('docker.io', 'library/a', a.blobs[3]!), true, 'still known after it was forgotten')
  t.equal(source.reads.links, 3, 'by reading it again')
})

t.test('a repository holds at most maxPerRepository digests; what is past it needs upstream each time', async (t) => {
  const source = new CountingSource()
  const big = source.image('big', 10)
  source.links.set('docker.io/library/big', [big.d])
  const index = new LinkIndex(source, { maxPerRepository: 4 })
  const known = await Promise.all(big.blobs.map((b) => index.has('docker.io', 'library/big', b)))
  t.equal(known.filter(Boolean).length, 3, 'the manifest and the first three of its blobs')
  await index.addBlob('docker.io', 'library/big', digestOf('confirmed'))
  t.equal(await index.has('docker.io', 'library/big', digestOf('confirmed')), false, 'a full repository takes no more')
})

t.test('links that cannot be read lend nothing, and are read again next time', async (t) => {
  const source = new CountingSource()
  const img = source.image('a')
  source.links.set('docker.io/library/alpine', [img.d])
  source.failLinks = true
  const index = new LinkIndex(source)
  t.equal(await index.has('docker.io', 'library/alpine', img.blobs[1]!), false, 'unreadable: not linked (upstream is asked instead)')
  source.failLinks = false
  t.equal(await index.has('docker.io', 'library/alpine', img.blobs[1]!), true, 'readable again')
})

t.test('a child not cached when its index was linked lends its blobs once cached; a forgotten repository is derived again', async (t) => {
  const source = new CountingSource()
  const child = source.image('child')
  const childBytes = source.manifests.get(child.d.value)!
  source.manifests.delete(child.d.value)
  const indexBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MANIFEST, digest: child.d.value, size: 1 }] }))
  const indexDigest = digestOf(indexBytes)
  source.manifests.set(indexDigest.value, { digest: indexDigest.value, mediaType: 'application/vnd.oci.image.index.v1+json', bytes: indexBytes })
  const index = new LinkIndex(source)
  await index.addManifest('docker.io', 'library/multi', indexDigest)
  t.equal(await index.has('docker.io', 'library/multi', child.blobs[1]!), false)
  source.manifests.set(child.d.value, childBytes)
  t.equal(await index.has('docker.io', 'library/multi', child.blobs[1]!), true)
  index.forget('docker.io', 'library/multi')
  t.equal(await index.has('docker.io', 'library/multi', child.blobs[1]!), false, 'forgotten, and no link on the source names the index')
})

t.test('file store: links survive a restart, and a cache written before the index existed serves its images', async (t) => {
  const dir = t.testdir()
  const before = await Store.open(dir)
  const alpine = await putImage(before, 'alpine', [64])
  await tag(before, 'docker.io', 'library/alpine', 'latest', alpine.manifest)
  const amd = await putImage(before, 'multi-amd64', [32])
  const arm = await putImage(before, 'multi-arm64', [32])
  const multi = await putIndex(before, [amd.manifest, arm.manifest])
  await tag(before, 'docker.io', 'library/multi', 'latest', multi)
  await before.linkBlob('docker.io', 'library/alpine', digestOf('confirmed by upstream'))

  // A new store on the same directory knows only what is on disk: the tags and the _manifests markers.
  const after = await Store.open(dir)
  const has = (repository: string, d: string | Digest) => after.isLinked('docker.io', repository, typeof d === 'string' ? parseDigest(d) : d)
  t.equal(await has('library/alpine', alpine.layers[0]!.digest), true, 'a layer')
  t.equal(await has('library/alpine', alpine.config.digest), true, 'the config')
  t.equal(await has('library/multi', arm.layers[0]!.digest), true, "an index's child's layer")
  t.equal(await has('library/multi', amd.config.digest), true, "an index's child's config")
  t.equal(await has('private/secret', alpine.layers[0]!.digest), false, 'nothing under another name')
  t.equal(await has('library/alpine', amd.layers[0]!.digest), false, "nor another repository's layers")
  t.equal(await has('library/alpine', digestOf('confirmed by upstream')), false, 'what only upstream confirmed is asked again after a restart')
})

t.test('file store: clearing an image takes its links with it, while the daemon runs', async (t) => {
  const store = await Store.open(t.testdir())
  const shared = await putImage(store, 'base', [64])
  const other = await putImage(store, 'other', [shared.layers[0]!])
  await tag(store, 'docker.io', 'library/alpine', 'latest', shared.manifest)
  await tag(store, 'docker.io', 'library/other', 'latest', other.manifest)
  const layer = parseDigest(shared.layers[0]!.digest)
  t.equal(await store.isLinked('docker.io', 'library/alpine', layer), true)
  await clearCache(store, { image: parseImageSelector('docker.io/library/alpine') })
  t.equal(await store.statBlob(layer), 64, 'the layer stays: another image uses it')
  t.equal(await store.isLinked('docker.io', 'library/alpine', layer), false, 'but no longer for the cleared repository')
  t.equal(await store.isLinked('docker.io', 'library/other', layer), true, 'still for the one that keeps it')
})
