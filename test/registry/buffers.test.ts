// The send buffer pool on its own, then inside a real daemon: many clients
// that stop reading mid-blob must cost the pool's cap, not megabytes each,
// and every buffer must come back when they go away.

import { createHash, randomBytes } from 'node:crypto'
import { request, type ClientRequest, type IncomingMessage } from 'node:http'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { tuneHeap } from '../../src/heap.js'
import { SendBuffers } from '../../src/registry/buffers.js'
import { Store } from '../../src/store/store.js'
import { putBlob, putManifest, tag } from '../helpers/cache.js'
import { startDaemon } from '../helpers/daemon.js'
import { parseDigest } from '../../src/oci/digest.js'

// Live buffer bytes only, not garbage waiting for a collection.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void
const liveBufferBytes = () => {
  gc()
  return process.memoryUsage().arrayBuffers
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('reuses its buffers up to the cap, then hands out small ones it does not keep', async (t) => {
  const pool = new SendBuffers({ chunkSize: 1024, maxBuffers: 2, overflowSize: 16 })
  const a = pool.acquire()
  const b = pool.acquire()
  t.equal(a.length, 1024)
  t.equal(pool.outstanding, 2)
  const extra = pool.acquire()
  t.equal(extra.length, 16, 'the pool is exhausted: a small buffer instead of waiting')
  t.equal(pool.overflows, 1)
  pool.release(extra)
  t.equal(pool.size, 2, 'an overflow buffer is not kept')
  pool.release(a)
  t.equal(pool.acquire(), a, 'a released buffer is reused')
  pool.release(a)
  pool.release(b)
  t.equal(pool.outstanding, 0)
})

t.test('shares its cap evenly among the responses sending, in buffers of 4, 2 or 1 chunks, all within the cap', async (t) => {
  const pool = new SendBuffers({ chunkSize: 1024, maxBuffers: 16, overflowSize: 16, largeChunks: 64 })
  t.equal(pool.share(), 4, 'nobody sending: the largest')
  pool.enter()
  t.equal(pool.share(), 4, 'one response: 16 chunks, at most 4 a read')
  for (let i = 0; i < 5; i++) pool.enter()
  t.equal(pool.share(), 2, 'six: 16 / 6 is 2 and a bit, so 2')
  for (let i = 0; i < 10; i++) pool.enter()
  t.equal(pool.share(), 1, 'a crowd: 1 chunk a read, as before')
  for (let i = 0; i < 17; i++) pool.leave()
  t.equal(pool.share(), 4, 'leave() does not go below nobody')
  const part = new SendBuffers({ chunkSize: 1024, maxBuffers: 64 })
  part.enter()
  part.enter()
  t.equal(part.share(), 4, 'two responses: 4 chunks a read of the 8 large reads share by default')
  part.enter()
  t.equal(part.share(), 2, 'three: 2')
  for (let i = 0; i < 2; i++) part.enter()
  t.equal(part.share(), 1, 'five: 1, though the cap has room (a few clients keep only a part resident)')

  const big = [pool.acquire(4), pool.acquire(4), pool.acquire(4)]
  t.same(
    big.map((b) => b.length),
    [4096, 4096, 4096],
  )
  t.equal(pool.size, 12, 'the cap counts chunks')
  t.equal(pool.acquire(4).length, 4096)
  const smaller = pool.acquire(4)
  t.equal(smaller.length, 16, 'at the cap: a small one of its own, not a pooled one')
  t.equal(pool.overflows, 1)
  pool.release(big[0]!)
  t.equal(pool.outstanding, 12)
  const ones = [pool.acquire(1), pool.acquire(1)]
  t.equal(ones[0], big[0], 'at the cap a read of one takes the free buffer of four: none is dropped')
  t.equal(ones[1]!.length, 16, 'and then a small one')
  t.equal(pool.size, 16, 'within the cap')
  pool.release(big[1]!)
  pool.release(ones[0]!)
  t.equal(pool.acquire(2), big[0], 'free buffers are reused whatever their size')
})

t.test('drops its buffers once idle', async (t) => {
  const pool = new SendBuffers({ chunkSize: 1024, idleMs: 1 })
  pool.release(pool.acquire())
  t.equal(pool.size, 1)
  for (let i = 0; i < 200 && pool.size > 0; i++) await sleep(10)
  t.equal(pool.size, 0)
  const again = pool.acquire()
  t.equal(pool.size, 1, 'and allocates again when needed')
  pool.release(again)
})

t.test('validates its options', async (t) => {
  t.throws(() => new SendBuffers({ chunkSize: 0 }), /expected chunkSize to be a positive integer, got 0/)
  t.throws(() => new SendBuffers({ maxBuffers: 1.5 }), /expected maxBuffers/)
})

const CLIENTS = 32
const BLOB_CHUNKS = 32

/** Caches a 32 MiB blob without holding it in memory; returns its digest. */
async function putBigBlob(store: Store): Promise<string> {
  const chunk = randomBytes(1024 * 1024)
  const hash = createHash('sha256')
  for (let i = 0; i < BLOB_CHUNKS; i++) hash.update(chunk)
  const digest = `sha256:${hash.digest('hex')}`
  const w = await store.createBlobWriter(parseDigest(digest), chunk.length * BLOB_CHUNKS)
  for (let i = 0; i < BLOB_CHUNKS; i++) await w.write(chunk)
  await w.commit()
  // Served under library/big only when a manifest of it names the blob (proxy/blobs.ts).
  const config = await putBlob(store, JSON.stringify({ architecture: 'amd64', os: 'linux' }))
  const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest, size: chunk.length * BLOB_CHUNKS }
  await tag(store, 'docker.io', 'library/big', 'latest', await putManifest(store, config, [layer]))
  return digest
}

/** GETs `url` and resolves with the response once its first bytes arrived, then stops reading. */
function stalledGet(url: string): Promise<{ req: ClientRequest; res: IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      if (res.statusCode !== 200) {
        res.resume()
        reject(new Error(`GET ${url}: ${res.statusCode}, not 200`))
        return
      }
      res.once('data', () => {
        res.pause()
        resolve({ req, res })
      })
    })
    req.once('error', reject)
    req.end()
  })
}

t.test('clients that stop reading mid-blob cost the pool, not megabytes each', async (t) => {
  const cacheDir = t.testdir()
  const store = await Store.open(cacheDir)
  const digest = await putBigBlob(store)
  const d = await startDaemon(t, undefined, { cacheDir })
  const url = `${d.url}/v2/library/big/blobs/${digest}`
  const pool = d.buffers

  const before = liveBufferBytes()
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => stalledGet(url)))
  const grown = liveBufferBytes() - before
  t.ok(pool.size <= pool.maxBuffers, `pool within its cap (${pool.size} of ${pool.maxBuffers})`)
  // Before the pool every response held 4 MiB of its own: 128 MiB for 32 clients.
  t.ok(grown < 48 * 1024 * 1024, `buffers grew by ${(grown / 2 ** 20).toFixed(1)} MiB for ${CLIENTS} stalled clients`)

  const closed = clients.map(({ req }) => new Promise((resolve) => req.once('close', resolve)))
  for (const { req } of clients) req.destroy()
  await Promise.all(closed)
  for (let i = 0; i < 500 && pool.outstanding > 0; i++) await sleep(10)
  t.equal(pool.outstanding, 0, 'every buffer came back once the clients were gone')
})

// Last: tuneHeap() changes this process's heap settings for good.
t.test('in a tuned daemon the dropped buffers are freed when the pool goes idle, with no other allocation', async (t) => {
  tuneHeap()
  const MiB = 2 ** 20
  const base = liveBufferBytes()
  const pool = new SendBuffers({ chunkSize: MiB, maxBuffers: 16, idleMs: 1 })
  const out = Array.from({ length: 16 }, () => pool.acquire())
  const refs = out.map((b) => new WeakRef(b))
  for (const b of out) pool.release(b)
  out.length = 0
  // By reference, not by the process's byte count: another test's daemon may free its own meanwhile.
  gc()
  t.ok(
    refs.every((r) => r.deref() !== undefined),
    'the pool holds its buffers while it may be used',
  )
  for (let i = 0; i < 200 && pool.size > 0; i++) await sleep(10)
  t.equal(pool.size, 0)
  t.ok(process.memoryUsage().arrayBuffers - base < MiB, 'their memory was freed, not left for a collection that may not come')
})
