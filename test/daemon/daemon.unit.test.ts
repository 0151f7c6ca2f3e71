// The composition root with nothing behind it but memory: a real Daemon on a
// loopback port whose proxies pull through a memory store from a counting
// upstream double, so a client's requests go through the same router, proxy
// policy and send loop as in production and each test can say what they cost
// upstream. The end-to-end tests (daemon.test.ts, proxy/pull-through.test.ts)
// do the same against the real registry; these run in well under a second.

import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { DproxyError } from '../../src/errors.js'
import { digestOf, parseDigest } from '../../src/oci/digest.js'
import { MemoryStore } from '../../src/store/memory.js'
import { ACCEPT_ALL_MANIFESTS } from '../fixtures/images.js'
import { get, getRaw, settled, startDaemon } from '../helpers/daemon.js'
import { CountingUpstream } from '../helpers/upstream-double.js'
import { until } from '../helpers/process.js'

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
// Odd spacing: anything that re-serialised a manifest would change its digest.
const V1 = Buffer.from('{"schemaVersion":2,  "mediaType":"application/vnd.oci.image.manifest.v1+json","v":1}')
const V2 = Buffer.from('{"schemaVersion":2,  "mediaType":"application/vnd.oci.image.manifest.v1+json","v":2}')
const REPO = 'library/alpine'

async function start(t: Test) {
  const store = new MemoryStore()
  const upstream = new CountingUpstream()
  const daemon = await startDaemon(t, undefined, { store, upstream })
  const manifest = (ref: string, method = 'GET') => get(`${daemon.url}/v2/${REPO}/manifests/${ref}`, { accept: ACCEPT_ALL_MANIFESTS }, method)
  const blobUrl = (digest: string) => `${daemon.url}/v2/${REPO}/blobs/${digest}`
  return { daemon, store, upstream, manifest, blobUrl }
}

/** Polls until `cond` holds (bounded: 500 rounds of 10 ms). */
const outage = () => new DproxyError('UPSTREAM_UNAVAILABLE', 'connection refused')

t.test('a manifest by tag costs a HEAD and a GET, then a HEAD alone while the tag stays put', async (t) => {
  const { store, upstream, manifest } = await start(t)
  const v1 = upstream.addManifest(V1, OCI_MANIFEST, REPO, 'latest')

  const first = await manifest('latest')
  t.equal(first.status, 200)
  t.ok(first.body.equals(V1), 'byte for byte')
  t.equal(first.headers['docker-content-digest'], v1)
  t.equal(first.headers['content-type'], OCI_MANIFEST)
  t.match(upstream.calls, { headManifest: 1, getManifest: 1 })
  t.ok((await store.getManifest(parseDigest(v1)))?.bytes.equals(V1), 'kept in the store given to the daemon')

  const second = await manifest('latest')
  t.ok(second.body.equals(V1))
  t.match(upstream.calls, { headManifest: 2, getManifest: 1 }, 'an unchanged tag costs a HEAD, not a GET')

  const byDigest = await manifest(v1)
  t.ok(byDigest.body.equals(V1))
  t.match(upstream.calls, { headManifest: 2, getManifest: 1 }, 'a cached digest costs nothing')

  const v2 = upstream.addManifest(V2, OCI_MANIFEST, REPO, 'latest')
  const moved = await manifest('latest')
  t.equal(moved.headers['docker-content-digest'], v2)
  t.ok(moved.body.equals(V2))
  t.match(upstream.calls, { headManifest: 3, getManifest: 2 }, 'a moved tag costs one GET more')
})

t.test('concurrent GETs of a blob not cached: one upstream fetch feeds every client, then the cache does', async (t) => {
  const { daemon, store, upstream, blobUrl } = await start(t)
  const bytes = randomBytes(3 * 1024 * 1024 + 17)
  const digest = upstream.addBlob(bytes)
  upstream.hold = true
  const clients = 8

  const responses = Array.from({ length: clients }, () => getRaw(blobUrl(digest)))
  await until(() => upstream.held.length > 0, 'the download', 100)
  const body = upstream.held[0]!
  // Clients are let on a download once its first bytes are in the store.
  const MiB = 1024 * 1024
  body.push(bytes.subarray(0, MiB))
  await until(() => daemon.blobs.downloads()[0]?.clients === clients, `${clients} clients on one download`, 100)
  for (let at = MiB; at < bytes.length; at += MiB) body.push(bytes.subarray(at, at + MiB))
  body.end()

  for (const res of await Promise.all(responses)) {
    t.equal(res.status, 200)
    t.ok(res.complete, 'whole response')
    t.equal(digestOf(res.body), digest, 'every byte')
  }
  t.equal(upstream.calls.getBlob, 1, `one upstream fetch for ${clients} clients`)
  t.equal(upstream.held.length, 1)
  await settled(daemon)
  t.equal(await store.statBlob(parseDigest(digest)), bytes.length, 'committed to the store')

  const cached = await getRaw(blobUrl(digest))
  t.ok(cached.complete && digestOf(cached.body) === digest)
  t.equal(Number(cached.headers['content-length']), bytes.length)
  t.equal(upstream.calls.getBlob, 1, 'the next client is served from the cache')
})

t.test('upstream down: a cached tag and blob are served (the tag marked stale); what is not cached is an error', async (t) => {
  const { upstream, manifest, blobUrl, daemon } = await start(t)
  const v1 = upstream.addManifest(V1, OCI_MANIFEST, REPO, 'latest')
  const blob = randomBytes(64 * 1024)
  const digest = upstream.addBlob(blob)
  t.equal((await manifest('latest')).status, 200)
  t.equal((await getRaw(blobUrl(digest))).status, 200)
  await settled(daemon)
  const before = { ...upstream.calls }

  upstream.down = outage()
  const stale = await manifest('latest')
  t.equal(stale.status, 200, 'the cached tag is served')
  t.ok(stale.body.equals(V1))
  t.equal(stale.headers['docker-content-digest'], v1)
  t.match(String(stale.headers.warning), /stale/i, 'and said to be stale')
  t.equal(upstream.calls.headManifest, before.headManifest + 1, 'after asking upstream once')

  const cachedBlob = await getRaw(blobUrl(digest))
  t.ok(cachedBlob.complete && digestOf(cachedBlob.body) === digest, 'a cached blob needs no upstream')
  t.equal(upstream.calls.getBlob, before.getBlob)

  const missing = await manifest('other')
  t.equal(missing.status, 404, 'a tag never cached cannot be served')
  t.match(JSON.parse(missing.body.toString()), { errors: [{ code: 'MANIFEST_UNKNOWN', message: /not cached.*unavailable/ }] }, 'and the client is told why')
})

t.test('a blob whose bytes do not match its digest reaches no client whole and is not stored', async (t) => {
  const { daemon, store, upstream, blobUrl } = await start(t)
  const right = randomBytes(256 * 1024)
  const digest = digestOf(right)
  const wrong = Buffer.from(right)
  wrong[wrong.length - 1]! ^= 1
  upstream.blobs.set(digest, wrong)

  const res = await getRaw(blobUrl(digest))
  t.notOk(res.complete, 'the client sees a cut connection')
  t.ok(res.body.length < right.length, 'never a complete-looking body')
  await settled(daemon)
  t.equal(await store.statBlob(parseDigest(digest)), undefined, 'nothing stored under the digest')
  t.equal(store.bytes, 0, 'nor held back by the writer')

  upstream.blobs.set(digest, right)
  const retry = await getRaw(blobUrl(digest))
  t.ok(retry.complete && digestOf(retry.body) === digest, 'the next pull fetches again and gets the blob')
  t.equal(upstream.calls.getBlob, 2)
})

t.test('a manifest whose bytes do not match the digest asked for is an error and is not stored', async (t) => {
  const { store, upstream, manifest } = await start(t)
  const d1 = digestOf(V1)
  upstream.lie(d1, V2, OCI_MANIFEST)

  const res = await manifest(d1)
  t.not(res.status, 200, 'an error, not the wrong bytes')
  t.ok(JSON.parse(res.body.toString()).errors?.length > 0, 'in OCI JSON')
  t.notOk(await store.hasManifest(parseDigest(d1)), 'nothing stored under the digest asked for')
  t.notOk(await store.hasManifest(parseDigest(digestOf(V2))), 'nor under the digest of the bytes sent')
})
