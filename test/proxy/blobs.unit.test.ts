// The blob proxy's policy on its own: the memory store, a counting upstream
// double and registry/send.ts writing into an in-memory sink, no HTTP and no
// disk. blobs.test.ts drives the same rules end to end through real clients.

import { Writable } from 'node:stream'
import t from 'tap'
import { BlobProxy } from '../../src/proxy/blobs.js'
import { newCounters } from '../../src/proxy/counters.js'
import { SendBuffers } from '../../src/registry/buffers.js'
import { sendBlob } from '../../src/registry/send.js'
import { MemoryStore } from '../../src/store/memory.js'
import { silentLogger } from '../../src/log.js'
import { type Digest, parseDigest } from '../../src/oci/digest.js'
import { resolveImageName } from '../../src/oci/reference.js'
import { CountingUpstream } from '../helpers/upstream-double.js'
import type { BlobBody } from '../../src/upstream/client.js'

const image = resolveImageName('library/alpine')
const BLOB = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz')

/** A client's socket: collects what it is sent; `cut` when destroyed before its end. */
class Sink extends Writable {
  readonly chunks: Buffer[] = []
  ended = false
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.chunks.push(Buffer.from(chunk))
    done()
  }
  override _final(done: () => void): void {
    this.ended = true
    done()
  }
  get body(): Buffer {
    return Buffer.concat(this.chunks)
  }
  get cut(): boolean {
    return this.destroyed && !this.ended
  }
}

function setup(storeOptions: ConstructorParameters<typeof MemoryStore>[0] = {}) {
  const store = new MemoryStore(storeOptions)
  const upstream = new CountingUpstream()
  const counters = newCounters()
  const proxy = new BlobProxy({ store, upstreams: upstream, counters, log: silentLogger })
  const buffers = new SendBuffers({ chunkSize: 8 })
  return { store, upstream, counters, proxy, buffers }
}

/** Lets pending I/O callbacks and promises run (bounded). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setImmediate(r))
  if (!cond()) throw new Error(`never happened: ${what}`)
}

/**
 * Opens `count` sources of a blob upstream sends only when told: they resolve
 * once the download has taken its first `first` bytes.
 */
async function onDownload(o: ReturnType<typeof setup>, d: Digest, first: number, count = 1) {
  o.upstream.hold = true
  const opening = Array.from({ length: count }, () => o.proxy.open(image, d))
  await until(() => o.upstream.held.length === 1, 'the download started')
  const body = o.upstream.held[0]!
  body.push(o.upstream.blobs.get(d.value)!.subarray(0, first))
  return { sources: await Promise.all(opening), body }
}

t.test('a cached blob is served with zero upstream calls', async (t) => {
  const { store, upstream, counters, proxy, buffers } = setup()
  const digest = upstream.addBlob(BLOB)
  const w = await store.createBlobWriter(parseDigest(digest), BLOB.length)
  await w.write(BLOB)
  await w.commit()
  await store.linkBlob(image.registry, image.repository, parseDigest(digest))
  const source = await proxy.open(image, parseDigest(digest))
  t.match(source, { kind: 'follow', size: BLOB.length, cached: true })
  const sink = new Sink()
  await sendBlob(source, sink, 0, BLOB.length - 1, buffers)
  t.ok(sink.body.equals(BLOB))
  t.equal(await proxy.size(image, parseDigest(digest)), BLOB.length)
  t.strictSame(upstream.calls, { getBlob: 0, headBlob: 0, headManifest: 0, getManifest: 0, listTags: 0 })
  t.match(counters, { cacheHits: 1, cacheMisses: 0, bytesFromCache: BLOB.length, bytesFromUpstream: 0 })
  t.ok(store.lastUsed.has(digest), 'the hit is recorded as a use')
})

t.test('N concurrent misses cause one upstream fetch, and every client gets the whole blob', async (t) => {
  const o = setup()
  const { store, upstream, counters, proxy, buffers } = o
  const d = parseDigest(upstream.addBlob(BLOB))
  const N = 8
  const { sources, body } = await onDownload(o, d, 10, N)
  t.equal(proxy.inflight, 1)
  const sinks = sources.map(() => new Sink())
  const sending = sources.map((s, i) => sendBlob(s, sinks[i]!, 0, BLOB.length - 1, buffers))
  body.push(BLOB.subarray(10))
  body.end()
  await Promise.all(sending)
  for (const sink of sinks) t.ok(sink.ended && sink.body.equals(BLOB), 'whole and verified')
  t.equal(upstream.calls.getBlob, 1, 'one upstream GET')
  t.match(counters, { cacheMisses: 1, cacheHits: N - 1, bytesFromUpstream: BLOB.length })
  await proxy.drain(10_000)
  t.equal(await store.statBlob(d), BLOB.length, 'and cached')
  t.equal(proxy.inflight, 0)
})

t.test('a download counts the clients reading from it now: one that goes away is let go', async (t) => {
  const o = setup()
  const { upstream, proxy, buffers } = o
  const d = parseDigest(upstream.addBlob(BLOB))
  const clients = () => proxy.downloads().map((x) => x.clients)
  const { sources: [a, b], body } = await onDownload(o, d, 10, 2)
  t.strictSame(clients(), [2], 'two clients joined the held download')
  const sinks = [new Sink(), new Sink()]
  const sending = [sendBlob(a!, sinks[0]!, 0, BLOB.length - 1, buffers), sendBlob(b!, sinks[1]!, 0, BLOB.length - 1, buffers)]
  await until(() => sinks.every((s) => s.body.length === 9), 'both sent what is there but its last byte')
  sinks[0]!.destroy()
  await sending[0]
  t.strictSame(clients(), [1], 'the one that went away no longer counts')
  await a!.close()
  t.strictSame(clients(), [1], 'closing again changes nothing')
  sinks[1]!.destroy()
  await sending[1]
  t.strictSame(clients(), [0], 'both gone: the download goes on for the cache, with nobody waiting')
  const c = await proxy.open(image, d)
  t.strictSame(clients(), [1], 'a late client joins')
  const sink = new Sink()
  const last = sendBlob(c, sink, 0, BLOB.length - 1, buffers)
  body.push(BLOB.subarray(10))
  body.end()
  await last
  t.ok(sink.ended && sink.body.equals(BLOB), 'and gets the whole blob')
  await proxy.drain(10_000)
  t.strictSame(clients(), [], 'no download left')
})

t.test('content that fails verification is never committed and cuts every reader, full and ranged', async (t) => {
  const o = setup()
  const { store, upstream, proxy, buffers } = o
  const d = parseDigest(upstream.addBlob(BLOB))
  const wrong = Buffer.from(BLOB)
  wrong[20] = 0x21
  upstream.blobs.set(d.value, wrong)
  const { sources: [full, ranged], body } = await onDownload(o, d, 30, 2)
  const sinks = [new Sink(), new Sink()]
  const sending = [sendBlob(full!, sinks[0]!, 0, BLOB.length - 1, buffers), sendBlob(ranged!, sinks[1]!, 25, 33, buffers)]
  body.push(wrong.subarray(30))
  body.end()
  const results = await Promise.allSettled(sending)
  t.match(results, [{ status: 'rejected', reason: { code: 'DIGEST_INVALID' } }, { status: 'rejected', reason: { code: 'DIGEST_INVALID' } }])
  t.ok(sinks[0]!.cut, 'the full response is cut')
  t.ok(sinks[0]!.body.length < BLOB.length, 'short of its length')
  t.ok(sinks[1]!.cut, 'the ranged response is cut')
  t.ok(sinks[1]!.body.length < 9, 'short of its range')
  await proxy.drain(10_000)
  t.equal(await store.statBlob(d), undefined, 'nothing committed')
  t.equal(store.bytes, 0, 'nothing kept')
})

t.test('a range on a download gets its bytes as they arrive, its last one only after verification', async (t) => {
  const o = setup()
  const { upstream, proxy, buffers } = o
  const d = parseDigest(upstream.addBlob(BLOB))
  const { sources: [source], body } = await onDownload(o, d, 4)
  const sink = new Sink()
  const sending = sendBlob(source!, sink, 2, 9, buffers)
  body.push(BLOB.subarray(4, BLOB.length - 1))
  await until(() => sink.body.length === 7, 'the range but its last byte')
  t.notOk(sink.ended, 'held back: the blob did not verify yet')
  body.push(BLOB.subarray(BLOB.length - 1))
  body.end()
  await sending
  t.ok(sink.ended)
  t.equal(sink.body.toString(), '23456789')
  t.equal(upstream.calls.getBlob, 1)
})

t.test('a store that refuses the blob: the client gets it streamed past the cache, verified', async (t) => {
  const { store, upstream, proxy, buffers } = setup({ maxBytes: 10 })
  const d = parseDigest(upstream.addBlob(BLOB))
  const source = await proxy.open(image, d)
  t.match(source, { kind: 'stream', cached: false, size: BLOB.length })
  const sink = new Sink()
  await sendBlob(source, sink, 5, 14, buffers)
  t.equal(sink.body.toString(), '56789abcde')
  t.ok(sink.ended)
  t.equal(upstream.calls.getBlob, 2, 'the download that met the full store, and the one past it')
  t.equal(await store.statBlob(d), undefined)
})

t.test('a store that fills up mid-download: a client not sent a byte yet is switched to a stream past the cache', async (t) => {
  const o = setup({ maxBytes: 20 })
  const { store, upstream, proxy, buffers } = o
  const d = parseDigest(upstream.addBlob(BLOB))
  const { sources: [source], body } = await onDownload(o, d, 10)
  const sink = new Sink()
  const sending = sendBlob(source!, sink, 15, 24, buffers)
  body.push(BLOB.subarray(10))
  body.end()
  await until(() => upstream.held.length === 2, 'the stream past the cache started')
  upstream.held[1]!.push(BLOB)
  upstream.held[1]!.end()
  await sending
  t.equal(sink.body.toString(), 'fghijklmno')
  t.ok(sink.ended)
  t.equal(upstream.calls.getBlob, 2)
  await proxy.drain(10_000)
  t.equal(await store.statBlob(d), undefined)
})

t.test('a blob upstream lies about is cut past the cache too', async (t) => {
  const { upstream, proxy, buffers } = setup({ maxBytes: 10 })
  const d = parseDigest(upstream.addBlob(BLOB))
  upstream.blobs.set(d.value, Buffer.from(BLOB).fill(0x30, 30))
  const source = await proxy.open(image, d)
  const sink = new Sink()
  await t.rejects(sendBlob(source, sink, 0, BLOB.length - 1, buffers), { code: 'DIGEST_INVALID' })
  t.ok(sink.cut)
  t.ok(sink.body.length < BLOB.length)
})

/**
 * A chain of two endpoints over one double: the first answer is a held body
 * from an endpoint with another behind it (marked bad when it fails), the
 * next ones are the last endpoint's.
 */
function chainOf(o: ReturnType<typeof setup>) {
  const bodies: number[] = []
  const chain = {
    get: () => chain,
    headBlob: (repository: string, digest: string) => o.upstream.headBlob(repository, digest),
    getBlob: async (repository: string, digest: string): Promise<BlobBody> => {
      const body = await o.upstream.getBlob(repository, digest)
      bodies.push(body.size ?? -1)
      return bodies.length === 1 ? { ...body, chained: true, rejected: () => true } : body
    },
  }
  const proxy = new BlobProxy({ store: o.store, upstreams: chain, counters: o.counters, log: silentLogger })
  return { proxy, bodies }
}

t.test('a small blob from an endpoint with another behind it: nothing goes out before it verified, and wrong bytes are replaced by the next endpoint\'s in the same response', async (t) => {
  const o = setup()
  const { upstream, buffers } = o
  const { proxy } = chainOf(o)
  const d = parseDigest(upstream.addBlob(BLOB))
  const wrong = Buffer.from(BLOB).fill(0x30, 20)
  upstream.hold = true
  const opening = proxy.open(image, d)
  await until(() => upstream.held.length === 1, 'the download started')
  upstream.held[0]!.push(wrong.subarray(0, 30))
  const source = await opening
  t.match(source, { kind: 'follow', whole: true })
  const sink = new Sink()
  const sending = sendBlob(source, sink, 0, BLOB.length - 1, buffers)
  upstream.held[0]!.push(wrong.subarray(30, BLOB.length - 1))
  await until(() => o.counters.bytesFromUpstream === BLOB.length - 1, 'all but the last byte arrived')
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r))
  t.equal(sink.body.length, 0, 'not a byte before the blob verified')
  // The next download is the last endpoint's: it sends the blob at once.
  upstream.hold = false
  upstream.held[0]!.push(wrong.subarray(BLOB.length - 1))
  upstream.held[0]!.end()
  await sending
  t.ok(sink.ended && sink.body.equals(BLOB), 'the right bytes, whole, in the same response')
  t.equal(upstream.calls.getBlob, 2, 'the first endpoint once, then the next')
  await proxy.drain(10_000)
})

t.test('an endpoint that announced a wrong size: the next one\'s blob cannot fill the response, which is cut with nothing sent', async (t) => {
  const o = setup()
  const { upstream, buffers } = o
  const { proxy, bodies } = chainOf(o)
  const d = parseDigest(upstream.addBlob(BLOB))
  upstream.blobs.set(d.value, Buffer.concat([BLOB, Buffer.from('!')]))
  const source = await proxy.open(image, d)
  upstream.blobs.set(d.value, BLOB)
  t.equal(source.size, BLOB.length + 1, 'the length the first endpoint announced')
  const sink = new Sink()
  await t.rejects(sendBlob(source, sink, 0, source.size - 1, buffers), { code: 'DIGEST_INVALID' })
  t.ok(sink.cut, 'cut')
  t.equal(sink.body.length, 0, 'with nothing sent')
  t.strictSame(bodies, [BLOB.length + 1, BLOB.length], 'the next endpoint was asked, and its size did not match')
  await proxy.drain(10_000)
})

t.test('ensure caches without sending, joins a running download, and reports progress', async (t) => {
  const { store, upstream, proxy } = setup()
  const d = parseDigest(upstream.addBlob(BLOB))
  const seen: number[] = []
  t.strictSame(await proxy.ensure(image, d, (n) => seen.push(n)), { size: BLOB.length, fetched: true })
  t.equal(await store.statBlob(d), BLOB.length)
  t.ok(seen.includes(BLOB.length))
  t.strictSame(await proxy.ensure(image, d), { size: BLOB.length, fetched: false }, 'cached: nothing fetched')
  t.equal(upstream.calls.getBlob, 1)
})

t.test('upstream down and nothing cached: BLOB_UNKNOWN that says why; HEAD asks upstream for the size', async (t) => {
  const { upstream, proxy } = setup()
  const d = parseDigest(upstream.addBlob(BLOB))
  t.equal(await proxy.size(image, d), BLOB.length)
  t.equal(upstream.calls.headBlob, 1)
  const { DproxyError } = await import('../../src/errors.js')
  upstream.down = new DproxyError('UPSTREAM_UNAVAILABLE', 'connection refused')
  await t.rejects(proxy.open(image, d), { code: 'BLOB_UNKNOWN', message: /not cached, and upstream docker\.io is unavailable: connection refused/ })
  await t.rejects(proxy.size(image, d), { code: 'BLOB_UNKNOWN' })
})
