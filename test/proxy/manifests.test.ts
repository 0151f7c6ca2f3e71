// The manifest proxy's policy on its own, against the memory store and a
// counting upstream double: what costs a HEAD, what costs a GET, and what is
// served stale. pull-through.test.ts checks the same end to end.

import t from 'tap'
import { DproxyError } from '../../src/errors.js'
import { newCounters } from '../../src/proxy/counters.js'
import { ManifestProxy } from '../../src/proxy/manifests.js'
import { MemoryStore } from '../../src/store/memory.js'
import { silentLogger } from '../../src/log.js'
import { parseDigest } from '../../src/oci/digest.js'
import { parseReference, resolveImageName } from '../../src/oci/reference.js'
import { CountingUpstream } from '../helpers/upstream-double.js'

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
const image = resolveImageName('library/alpine')
// Odd spacing: anything that re-serialised the manifest would change its digest.
const V1 = Buffer.from('{"schemaVersion":2,  "mediaType":"application/vnd.oci.image.manifest.v1+json","v":1}')
const V2 = Buffer.from('{"schemaVersion":2,  "mediaType":"application/vnd.oci.image.manifest.v1+json","v":2}')

function setup(maxAgeMs = 0) {
  let now = 1_000_000
  const clock = { now: () => now }
  const store = new MemoryStore({ clock })
  const upstream = new CountingUpstream()
  const counters = newCounters()
  const proxy = new ManifestProxy({ store, upstreams: upstream, counters, clock, log: silentLogger, maxAgeMs })
  return { store, upstream, counters, proxy, advance: (ms: number) => (now += ms) }
}

const noCalls = { getBlob: 0, headBlob: 0, headManifest: 0, getManifest: 0, listTags: 0 }
const outage = () => new DproxyError('UPSTREAM_UNAVAILABLE', 'connection refused')

t.test('by digest: one GET for concurrent misses, stored byte for byte; then zero upstream calls', async (t) => {
  const { store, upstream, counters, proxy } = setup()
  const digest = upstream.addManifest(V1, OCI_MANIFEST)
  const ref = parseReference(digest)
  const first = await Promise.all(Array.from({ length: 5 }, () => proxy.get(image, ref)))
  for (const m of first) t.ok(m.bytes.equals(V1))
  t.equal(upstream.calls.getManifest, 1, 'one GET for five clients')
  t.ok((await store.getManifest(parseDigest(digest)))?.bytes.equals(V1), 'byte for byte in the store')
  upstream.calls.getManifest = 0
  const again = await proxy.get(image, ref)
  t.match(again, { digest, mediaType: OCI_MANIFEST, stale: false, fetched: false })
  t.strictSame(upstream.calls, noCalls, 'a cached digest costs nothing upstream')
  t.equal(counters.cacheHits, 1)
  const other = resolveImageName('library/other')
  t.ok(store.linked(image.registry, image.repository, parseDigest(digest)), 'the GET linked it to its repository')
  t.notOk(store.linked(other.registry, other.repository, parseDigest(digest)), 'and to no other')
  t.match(await proxy.get(other, ref), { digest, fetched: false })
  t.equal(upstream.calls.headManifest, 1, 'under another name, a hit asks upstream whether the repository has it (a free HEAD)')
  t.equal(upstream.calls.getManifest, 0, 'not a GET')
  t.ok(store.linked(other.registry, other.repository, parseDigest(digest)), "upstream's word is recorded")
})

t.test('by tag: HEAD first, GET only when the digest changed', async (t) => {
  const { store, upstream, counters, proxy } = setup()
  const v1 = upstream.addManifest(V1, OCI_MANIFEST, image.repository, 'latest')
  const ref = parseReference('latest')
  t.match(await proxy.get(image, ref), { digest: v1, fetched: true })
  t.match(upstream.calls, { headManifest: 1, getManifest: 1 })
  t.match(await store.getTag(image.registry, image.repository, 'latest'), { digest: v1, mediaType: OCI_MANIFEST, size: V1.length })
  t.ok(store.linked(image.registry, image.repository, parseDigest(v1)), 'the repository is recorded as using it')

  t.match(await proxy.get(image, ref), { digest: v1, fetched: false, stale: false })
  t.match(upstream.calls, { headManifest: 2, getManifest: 1 }, 'unchanged: a HEAD and no GET')
  t.equal(counters.manifestGetsAvoided, 1)

  const v2 = upstream.addManifest(V2, OCI_MANIFEST, image.repository, 'latest')
  const moved = await proxy.get(image, ref)
  t.match(moved, { digest: v2, fetched: true })
  t.ok(moved.bytes.equals(V2))
  t.match(upstream.calls, { headManifest: 3, getManifest: 2 }, 'moved: a HEAD and a GET')
})

t.test('an outage: a cached tag is served stale, an uncached one fails saying why', async (t) => {
  const { upstream, counters, proxy } = setup()
  const v1 = upstream.addManifest(V1, OCI_MANIFEST, image.repository, 'latest')
  await proxy.get(image, parseReference('latest'))
  upstream.down = outage()
  t.match(await proxy.get(image, parseReference('latest')), { digest: v1, stale: true })
  t.equal(counters.staleServed, 1)
  await t.rejects(proxy.get(image, parseReference('other')), {
    code: 'MANIFEST_UNKNOWN',
    message: /library\/alpine:other is not cached, and upstream docker\.io is unavailable: connection refused/,
  })
  t.match(await proxy.get(image, parseReference(v1)), { digest: v1, stale: false }, 'by digest needs no upstream')
})

t.test('a tag that upstream says does not exist is not served stale', async (t) => {
  const { store, upstream, proxy } = setup()
  const v1 = upstream.addManifest(V1, OCI_MANIFEST)
  await store.putManifest(parseDigest(v1), V1, OCI_MANIFEST)
  await store.putTag(image.registry, image.repository, 'gone', { digest: v1, mediaType: OCI_MANIFEST, size: V1.length, checkedAt: 0 })
  await t.rejects(proxy.get(image, parseReference('gone')), { code: 'MANIFEST_UNKNOWN' })
})

t.test('max-age: a tag checked recently is served with no upstream call', async (t) => {
  const { upstream, proxy, advance } = setup(60_000)
  upstream.addManifest(V1, OCI_MANIFEST, image.repository, 'latest')
  await proxy.get(image, parseReference('latest'))
  upstream.calls.headManifest = upstream.calls.getManifest = 0
  advance(59_000)
  await proxy.get(image, parseReference('latest'))
  t.strictSame(upstream.calls, noCalls)
  advance(2_000)
  await proxy.get(image, parseReference('latest'))
  t.equal(upstream.calls.headManifest, 1, 'older than max-age: asked again')
})

t.test('check HEADs a tag and says whether a pull would need a GET, changing nothing', async (t) => {
  const { store, upstream, proxy } = setup()
  const v1 = upstream.addManifest(V1, OCI_MANIFEST, image.repository, 'latest')
  t.strictSame(await proxy.check(image, 'latest'), { digest: v1, mediaType: OCI_MANIFEST, cached: false, charged: true })
  t.equal(await store.getTag(image.registry, image.repository, 'latest'), undefined)
  await proxy.get(image, parseReference('latest'))
  t.strictSame(await proxy.check(image, 'latest'), { digest: v1, mediaType: OCI_MANIFEST, cached: true, charged: true })
})

t.test('tags/list: upstream first, the cached tags when upstream is down', async (t) => {
  const { upstream, proxy } = setup()
  upstream.addManifest(V1, OCI_MANIFEST, image.repository, 'a')
  upstream.addManifest(V2, OCI_MANIFEST, image.repository, 'b')
  t.strictSame(await proxy.listTags(image, new URLSearchParams()), { tags: ['a', 'b'], stale: false })
  await proxy.get(image, parseReference('b'))
  upstream.down = outage()
  t.strictSame(await proxy.listTags(image, new URLSearchParams()), { tags: ['b'], stale: true })
  await t.rejects(proxy.listTags(resolveImageName('library/never'), new URLSearchParams()), { code: 'NAME_UNKNOWN' })
})

t.test('a store that refuses writes: the manifest is still served', async (t) => {
  const { store, upstream, proxy } = setup()
  const v1 = upstream.addManifest(V1, OCI_MANIFEST, image.repository, 'latest')
  const refuse = async () => {
    throw new DproxyError('CACHE_UNAVAILABLE', 'disk full')
  }
  store.putManifest = refuse
  store.putTag = refuse
  store.linkManifest = refuse
  t.match(await proxy.get(image, parseReference('latest')), { digest: v1, fetched: true })
  t.equal(await store.getManifest(parseDigest(v1)), undefined)
})
