// Which repository may have which cached blob, end to end: a real daemon in
// front of the Hub shim and its real registry. A cached blob is served under
// a repository that a cached manifest links it to, or that upstream confirms
// has it (one HEAD, counted by the shim); under any other name the client
// gets what a miss would get, never the bytes, and the answer does not tell
// whether the cache holds the blob. Restarts, imported archives, prefetch and
// a multi-arch pull by skopeo keep working without asking upstream again.
// The last tests hold a download open on the memory store and an upstream
// double that knows which repository has what, to put a client of another
// repository on a download in progress.

import { Writable } from 'node:stream'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import { makeTempDir, skopeoCopyAll } from '../fixtures/clients.js'
import { codeOf, get, pull, refusedAlike, settled, sha256, startDaemon } from '../helpers/daemon.js'
import { exportArchive } from '../../src/store/archive-export.js'
import { importArchive } from '../../src/store/archive-import.js'
import { Store } from '../../src/store/store.js'
import { Warmer } from '../../src/proxy/warm.js'
import { parseImageSelector } from '../../src/store/evict.js'
import { BlobProxy } from '../../src/proxy/blobs.js'
import { newCounters } from '../../src/proxy/counters.js'
import { MemoryStore } from '../../src/store/memory.js'
import { silentLogger } from '../../src/log.js'
import { DproxyError } from '../../src/errors.js'
import { parseDigest } from '../../src/oci/digest.js'
import { resolveImageName } from '../../src/oci/reference.js'
import { CountingUpstream } from '../helpers/upstream-double.js'

function layerOf(up: Upstream, image: 'alpine' | 'redis' | 'layers') {
  return up.images[image].blobs.find((b) => b.kind === 'layer')!
}

/** Blob requests the shim answered for `repository` past its auth challenge (the CDN does not know the name). */
function blobRequests(up: Upstream, repository: string, method: string): number {
  const asked = (r: { listener: string; method: string; path: string; status: number }) =>
    r.listener === 'hub' && r.method === method && r.status !== 401 && r.path.startsWith(`/v2/${repository}/blobs/`)
  return up.hub.counts.requests.filter(asked).length
}

t.test('a public layer cached for library/alpine is not served as /v2/private/secret/blobs/<it>', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'library/alpine', 'latest')
  await settled(d)
  const layer = layerOf(up, 'alpine')

  const theirs = await get(`${d.url}/v2/private/secret/blobs/${layer.digest}`)
  t.equal(theirs.status, 404)
  t.equal(codeOf(theirs.body), 'BLOB_UNKNOWN')
  t.notOk(theirs.body.length >= layer.size, 'not the bytes')
  const head = await get(`${d.url}/v2/private/secret/blobs/${layer.digest}`, {}, 'HEAD')
  t.equal(head.status, 404, 'nor its size')
  t.equal(blobRequests(up, 'private/secret', 'HEAD'), 2, 'upstream was asked for that repository, each time')

  up.hub.resetCounts()
  const ours = await get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  t.equal(ours.status, 200)
  t.equal(sha256(ours.body), layer.digest)
  t.equal(up.hub.counts.requests.length, 0, 'the repository whose manifest names it: from the cache, nothing asked')
})

t.test("upstream's word links a cached blob to another repository: one HEAD, then none", async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  await up.retag('library/alpine-copy', 'latest', up.images.alpine)
  const d = await startDaemon(t, up)
  await pull(d.url, 'library/alpine', 'latest')
  await settled(d)
  const layer = layerOf(up, 'alpine')
  up.hub.resetCounts()

  for (const round of ['first', 'second']) {
    const res = await get(`${d.url}/v2/library/alpine-copy/blobs/${layer.digest}`)
    t.equal(res.status, 200, `${round}: served`)
    t.equal(sha256(res.body), layer.digest, `${round}: whole`)
  }
  t.equal(up.hub.counts.blobHead[layer.digest], 1, 'one HEAD confirmed it, the second request asked nothing')
  t.equal(up.hub.counts.cdnGet[layer.digest] ?? 0, 0, 'the bytes came from the cache')
  t.equal(up.hub.counts.blobGet[layer.digest] ?? 0, 0)
  const head = await get(`${d.url}/v2/library/alpine-copy/blobs/${layer.digest}`, {}, 'HEAD')
  t.equal(Number(head.headers['content-length']), layer.size, 'a HEAD now answers from the cache')
  t.equal(up.hub.counts.blobHead[layer.digest], 1)
})

t.test('refused under a name: the same answer whether the cache holds the blob or not', async (t) => {
  const up = await startUpstream({ hub: { privateRepositories: ['private/secret'] } })
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'library/alpine', 'latest')
  await settled(d)
  const cached = layerOf(up, 'alpine').digest
  // A layer upstream has (in bitnami/redis) that this cache never fetched.
  const notCached = layerOf(up, 'redis').digest

  await refusedAlike(t, d.url, 'blobs', cached, notCached)
})

t.test('upstream unreachable: an unlinked cached blob is refused as a miss is; a linked one is served', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'library/alpine', 'latest')
  await settled(d)
  const layer = layerOf(up, 'alpine')
  await up.hub.setMode('down-5xx')

  const theirs = await get(`${d.url}/v2/someone/else/blobs/${layer.digest}`)
  t.equal(theirs.status, 404)
  t.equal(codeOf(theirs.body), 'BLOB_UNKNOWN')
  t.match(theirs.body.toString(), /upstream docker\.io is unavailable/)
  t.equal((await get(`${d.url}/v2/someone/else/blobs/${layer.digest}`, {}, 'HEAD')).status, 404)
  const ours = await get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  t.equal(ours.status, 200, 'the repository that has it keeps pulling through the outage')
  t.equal(sha256(ours.body), layer.digest)
})

t.test('a restarted daemon serves what the cached manifests link, multi-arch children included, without asking upstream', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const cacheDir = t.testdir()
  const first = await startDaemon(t, up, { cacheDir })
  const alpine = await pull(first.url, 'library/alpine', 'latest')
  const multi = await pull(first.url, 'library/multi', 'latest')
  await settled(first)
  await first.stop(0)

  const d = await startDaemon(t, up, { cacheDir })
  up.hub.resetCounts()
  for (const [repository, digests] of [['library/alpine', alpine.digests], ['library/multi', multi.digests]] as const) {
    for (const digest of digests) {
      const res = await get(`${d.url}/v2/${repository}/blobs/${digest}`)
      t.equal(res.status, 200, `${repository} ${digest.slice(7, 19)}`)
    }
  }
  t.equal(up.hub.counts.requests.length, 0, 'nothing asked upstream')
  t.equal((await get(`${d.url}/v2/private/secret/blobs/${multi.digests[0]!}`)).status, 404, 'and nothing under another name')
})

t.test('an imported archive serves its images under their repositories, and only there', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const source = await startDaemon(t, up)
  const { digests } = await pull(source.url, 'library/alpine', 'latest')
  await settled(source)
  const parts: Buffer[] = []
  await exportArchive(source.store, {
    stream: new Writable({
      write(chunk: Buffer, _e, done) {
        parts.push(chunk)
        done()
      },
    }),
  }, { images: [parseImageSelector('docker.io/library/alpine:latest')] })

  const cacheDir = t.testdir()
  const target = await Store.open(cacheDir)
  await importArchive(target, (async function* () {
    yield Buffer.concat(parts)
  })())
  await up.hub.setMode('down-5xx')
  const d = await startDaemon(t, up, { cacheDir })
  for (const digest of digests) t.equal((await get(`${d.url}/v2/library/alpine/blobs/${digest}`)).status, 200, `imported ${digest.slice(7, 19)}`)
  t.equal((await get(`${d.url}/v2/private/secret/blobs/${digests[0]!}`)).status, 404, 'not under another name')
})

t.test('prefetch links what it stores: its blobs are then served under the repository without asking upstream', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const warmer = new Warmer({ store: d.store, upstreams: d.upstreams, manifests: d.manifests, blobs: d.blobs })
  const target = { ref: 'docker.io/library/layers:1', image: { registry: 'docker.io', repository: 'library/layers' }, reference: { kind: 'tag' as const, tag: '1' } }
  const summary = await warmer.run([target], { platforms: { kind: 'all' }, jobs: 1 }, () => {})
  t.match(summary, { type: 'summary', fetched: 1, failed: [] })
  up.hub.resetCounts()
  for (const blob of up.images.layers.blobs) {
    const res = await get(`${d.url}/v2/library/layers/blobs/${blob.digest}`)
    t.equal(res.status, 200, blob.digest.slice(7, 19))
  }
  t.equal(up.hub.counts.requests.length, 0, 'nothing asked upstream')
  t.equal((await get(`${d.url}/v2/library/alpine/blobs/${layerOf(up, 'layers').digest}`)).status, 404, 'and not another repository')
})

t.test('skopeo copies a multi-arch image through dproxy, and the same index under a second name costs no blob request', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  await up.retag('library/multi-copy', 'latest', up.images.multi)
  const d = await startDaemon(t, up)
  const host = `127.0.0.1:${d.port}`
  for (const name of ['library/multi', 'library/multi-copy']) {
    const dest = makeTempDir('dproxy-scope-', t)
    await skopeoCopyAll(`${host}/${name}:latest`, dest, { timeoutMs: 120_000 })
    t.ok((await fs.readFile(join(dest, 'manifest.json'))).equals(up.images.multi.manifest), `${name}: the index byte for byte`)
    for (const blob of up.images.multi.blobs) {
      t.equal(sha256(await fs.readFile(join(dest, blob.digest.slice('sha256:'.length)))), blob.digest, `${name}: ${blob.kind} ${blob.digest.slice(7, 19)}`)
    }
    await settled(d)
  }
  t.equal(blobRequests(up, 'library/multi-copy', 'HEAD') + blobRequests(up, 'library/multi-copy', 'GET'), 0,
    "the second name's index links the cached children and their blobs")
})

/** An upstream double where only `has` repositories have any blob. */
class ScopedUpstream extends CountingUpstream {
  constructor(private readonly has: string[]) {
    super()
  }

  override async getBlob(repository: string, digest: string) {
    this.refuse(repository, digest)
    return super.getBlob(repository, digest)
  }

  override async headBlob(repository: string, digest: string) {
    const answer = await super.headBlob(repository, digest)
    this.refuse(repository, digest)
    return answer
  }

  private refuse(repository: string, digest: string): void {
    if (!this.has.includes(repository)) throw new DproxyError('BLOB_UNKNOWN', `${repository} has no blob ${digest}`)
  }
}

t.test('a client of another repository joins a download in progress only on upstream\'s word', async (t) => {
  const store = new MemoryStore()
  const upstream = new ScopedUpstream(['library/alpine', 'library/alpine-copy'])
  const proxy = new BlobProxy({ store, upstreams: upstream, counters: newCounters(), log: silentLogger })
  const bytes = Buffer.from('a layer several repositories may share')
  const d = parseDigest(upstream.addBlob(bytes))
  upstream.hold = true
  const first = proxy.open(resolveImageName('library/alpine'), d)
  for (let i = 0; i < 1000 && upstream.held.length === 0; i++) await new Promise((r) => setImmediate(r))
  upstream.held[0]!.push(bytes.subarray(0, 4))
  const source = await first
  t.equal(proxy.inflight, 1, 'downloading')

  await t.rejects(proxy.open(resolveImageName('private/secret'), d), { code: 'BLOB_UNKNOWN' }, 'refused while downloading')
  await t.rejects(proxy.size(resolveImageName('private/secret'), d), { code: 'BLOB_UNKNOWN' }, 'its size too')
  t.equal(upstream.calls.headBlob, 2, 'upstream was asked for it')
  const copy = await proxy.open(resolveImageName('library/alpine-copy'), d)
  t.equal(copy.joined, true, 'a repository upstream confirms joins the download')
  t.equal(upstream.calls.headBlob, 3)
  t.equal(upstream.calls.getBlob, 1, 'one download for all')

  upstream.held[0]!.push(bytes.subarray(4))
  upstream.held[0]!.end()
  await source.close()
  await copy.close()
  await proxy.drain(10_000)
  t.equal(await store.isLinked('docker.io', 'library/alpine', d), true, 'the download linked its own repository')
  t.equal(await store.isLinked('docker.io', 'library/alpine-copy', d), true, "and upstream's word the other")
  t.equal(await store.isLinked('docker.io', 'private/secret', d), false)
  await proxy.open(resolveImageName('library/alpine-copy'), d).then((s) => s.close())
  t.equal(upstream.calls.headBlob, 3, 'linked: asked no more')
})
