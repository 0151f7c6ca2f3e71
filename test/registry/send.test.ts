// The send loop's own costs, on a real blob source (the blob proxy over a
// memory store) and a client that reads slowly: every write fills its buffer,
// so the loop waits for one of its buffers to come back after each chunk,
// which is what a daemon does all the time when many clients share a link. A
// wait must leave nothing behind once it is over, or a long response keeps one
// leftover per chunk alive until it ends. And the loop reads ahead: the next
// chunk is read while the socket writes the previous one.

import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { silentLogger } from '../../src/log.js'
import { digestOf, parseDigest } from '../../src/oci/digest.js'
import { resolveImageName } from '../../src/oci/reference.js'
import { BlobProxy } from '../../src/proxy/blobs.js'
import { newCounters } from '../../src/proxy/counters.js'
import { SendBuffers } from '../../src/registry/buffers.js'
import { sendBlob } from '../../src/registry/send.js'
import { MemoryStore } from '../../src/store/memory.js'
import { Store } from '../../src/store/store.js'
import { CountingUpstream } from '../helpers/upstream-double.js'

// Live objects only: old and new space after a full collection. Compiled code
// and large buffers (tap's own output among them) come and go by hundreds of
// kilobytes whatever the loop does, so they are left out of the count.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void
const liveObjects = () => {
  gc()
  let used = 0
  for (const space of getHeapSpaceStatistics()) if (space.space_name === 'old_space' || space.space_name === 'new_space') used += space.space_used_size
  return used
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

t.test('waiting for a buffer after every chunk keeps nothing alive per chunk while the response runs', async (t) => {
  const chunk = 64
  const chunks = 20_000
  const bytes = randomBytes(chunk * chunks)
  const store = new MemoryStore()
  const writer = await store.createBlobWriter(parseDigest(digestOf(bytes)), bytes.length)
  await writer.write(bytes)
  await writer.commit()
  await store.linkBlob('docker.io', 'library/alpine', parseDigest(digestOf(bytes)))
  const proxy = new BlobProxy({ store, upstreams: new CountingUpstream(), counters: newCounters(), log: silentLogger })
  const source = await proxy.open(resolveImageName('library/alpine'), parseDigest(digestOf(bytes)))

  // Live objects every tenth of the response, each after a full collection.
  const every = chunks / 10
  const heap: number[] = []
  let writes = 0
  let received = 0
  const out = new Writable({
    highWaterMark: 1,
    write(data: Buffer, _encoding, callback) {
      received += data.length
      writes++
      if (writes % every === 0) heap.push(liveObjects())
      setImmediate(callback)
    },
  })
  await sendBlob(source, out, 0, bytes.length - 1, new SendBuffers({ chunkSize: chunk, maxBuffers: 2 }))

  t.equal(received, bytes.length, 'every byte sent')
  t.equal(writes, chunks, 'one write per chunk, each followed by a wait for a buffer')
  // The first three samples against the last three: one leftover of a few
  // hundred bytes per wait is megabytes apart; a collection's noise is not.
  const waits = (heap.length - 3) * every
  const grown = median(heap.slice(-3)) - median(heap.slice(0, 3))
  t.ok(grown < 1_000_000, `live objects grew by ${grown} bytes over ${waits} waits (${Math.max(0, Math.round(grown / waits))} bytes a wait)`)
})

t.test('the next chunk is read while the previous one is being written, with no more buffers out than the response may hold', async (t) => {
  const chunk = 64
  const bytes = randomBytes(chunk * 8)
  const store = new MemoryStore()
  const digest = parseDigest(digestOf(bytes))
  const writer = await store.createBlobWriter(digest, bytes.length)
  await writer.write(bytes)
  await writer.commit()
  await store.linkBlob('docker.io', 'library/alpine', digest)
  const proxy = new BlobProxy({ store, upstreams: new CountingUpstream(), counters: newCounters(), log: silentLogger })
  const source = await proxy.open(resolveImageName('library/alpine'), digest)

  // A socket that has not finished its first write: every write says "full" and completes only when told.
  const pending: Array<() => void> = []
  const received: Buffer[] = []
  const out = new Writable({
    highWaterMark: 1,
    write(data: Buffer, _encoding, callback) {
      received.push(Buffer.from(data))
      pending.push(callback)
    },
  })
  const pool = new SendBuffers({ chunkSize: chunk, maxBuffers: 4, largeChunks: 2 })
  let done = false
  const sending = sendBlob(source, out, 0, bytes.length - 1, pool).then(() => (done = true))
  // Bounded in turns of the event loop, not in time: the reads come from memory.
  for (let turn = 0; turn < 1000 && pool.outstanding < 2; turn++) await new Promise((r) => setImmediate(r))
  t.equal(pool.outstanding, 2, 'a second chunk was read while the first write is still running')
  t.equal(pending.length, 1, 'the socket has the first')
  let most = 0
  for (let turn = 0; turn < 10_000 && !done; turn++) {
    most = Math.max(most, pool.outstanding)
    pending.shift()?.()
    await new Promise((r) => setImmediate(r))
  }
  await sending
  t.ok(most <= 2, `at most two buffers out at once (${most})`)
  t.equal(pool.outstanding, 0, 'every buffer back in the pool')
  t.same(Buffer.concat(received), bytes, 'the bytes, in order')
})

t.test('a read is as large as the pool spares the response: 4 chunks alone, 1 in a crowd', async (t) => {
  const chunk = 1024
  const bytes = randomBytes(chunk * 40 + 123)
  const store = await Store.open(t.testdir())
  const digest = parseDigest(digestOf(bytes))
  const writer = await store.createBlobWriter(digest, bytes.length)
  await writer.write(bytes)
  await writer.commit()
  await store.linkBlob('docker.io', 'library/alpine', digest)
  const proxy = new BlobProxy({ store, upstreams: new CountingUpstream(), counters: newCounters(), log: silentLogger })

  /** Sends [start, end]; the size of each write, and the most chunks out at once. */
  const send = async (pool: SendBuffers, start: number, end: number) => {
    const writes: number[] = []
    const received: Buffer[] = []
    let most = 0
    const out = new Writable({
      highWaterMark: 1,
      write(data: Buffer, _encoding, callback) {
        most = Math.max(most, pool.outstanding)
        writes.push(data.length)
        received.push(Buffer.from(data))
        setImmediate(callback)
      },
    })
    const source = await proxy.open(resolveImageName('library/alpine'), digest)
    await sendBlob(source, out, start, end, pool)
    return { writes, received: Buffer.concat(received), most }
  }

  const alone = new SendBuffers({ chunkSize: chunk, maxBuffers: 16 })
  const whole = await send(alone, 0, bytes.length - 1)
  t.same(whole.received, bytes, 'the bytes, in order')
  t.same(whole.writes.slice(0, 10), Array(10).fill(4 * chunk), 'reads and writes of 4 chunks')
  t.ok(whole.most <= 8, `two reads of 4 chunks out at most (${whole.most})`)
  t.equal(alone.outstanding, 0, 'every buffer back')

  const range = await send(alone, 1000, 5000)
  t.same(range.received, bytes.subarray(1000, 5001), 'a range: from its first byte to its last')

  // Seven other responses sending: 16 chunks / (8 x 2 reads) = 1 a read.
  const crowded = new SendBuffers({ chunkSize: chunk, maxBuffers: 16 })
  for (let i = 0; i < 7; i++) crowded.enter()
  const shared = await send(crowded, 0, bytes.length - 1)
  t.same(shared.received, bytes)
  t.ok(
    shared.writes.every((n) => n <= chunk),
    'one chunk a read',
  )
  t.equal(crowded.overflows, 0)
})

t.test('with the pool at its cap, a response reads no further ahead than its one small buffer', async (t) => {
  const chunk = 64
  const bytes = randomBytes(chunk * 20)
  const store = new MemoryStore()
  const digest = parseDigest(digestOf(bytes))
  const writer = await store.createBlobWriter(digest, bytes.length)
  await writer.write(bytes)
  await writer.commit()
  await store.linkBlob('docker.io', 'library/alpine', digest)
  const proxy = new BlobProxy({ store, upstreams: new CountingUpstream(), counters: newCounters(), log: silentLogger })
  const source = await proxy.open(resolveImageName('library/alpine'), digest)

  const pool = new SendBuffers({ chunkSize: chunk, maxBuffers: 2, overflowSize: 16 })
  const others = [pool.acquire(), pool.acquire()]
  let pending = 0
  let most = 0
  const received: Buffer[] = []
  const out = new Writable({
    highWaterMark: 1,
    write(data: Buffer, _encoding, callback) {
      received.push(Buffer.from(data))
      setImmediate(() => {
        pending--
        callback()
      })
    },
  })
  const write = out.write.bind(out)
  out.write = ((...args: Parameters<typeof write>) => {
    most = Math.max(most, ++pending)
    return write(...args)
  }) as typeof out.write
  await sendBlob(source, out, 0, bytes.length - 1, pool)
  t.same(Buffer.concat(received), bytes)
  t.equal(most, 1, 'one write out at a time')
  t.equal(pool.overflows, bytes.length / 16, 'each read a small one of its own')
  for (const b of others) pool.release(b)
})

t.test('a download being followed goes out one chunk at a time, without a read ahead', async (t) => {
  const chunk = 64
  const bytes = randomBytes(chunk * 20)
  const upstreams = new CountingUpstream()
  upstreams.hold = true
  const digest = parseDigest(upstreams.addBlob(bytes))
  const proxy = new BlobProxy({ store: new MemoryStore(), upstreams, counters: newCounters(), log: silentLogger })
  const opening = proxy.open(resolveImageName('library/alpine'), digest)
  for (let turn = 0; turn < 1000 && upstreams.held.length === 0; turn++) await new Promise((r) => setImmediate(r))
  upstreams.held[0]!.push(bytes.subarray(0, chunk))
  const source = await opening
  t.match(source, { kind: 'follow', cached: false }, 'a client of the download')

  const pool = new SendBuffers({ chunkSize: chunk, maxBuffers: 16 })
  let pending = 0
  let most = 0
  const writes: number[] = []
  const received: Buffer[] = []
  const out = new Writable({
    highWaterMark: 1,
    write(data: Buffer, _encoding, callback) {
      writes.push(data.length)
      received.push(Buffer.from(data))
      setImmediate(() => {
        pending--
        callback()
      })
    },
  })
  const write = out.write.bind(out)
  out.write = ((...args: Parameters<typeof write>) => {
    most = Math.max(most, ++pending)
    return write(...args)
  }) as typeof out.write
  const sending = sendBlob(source, out, 0, bytes.length - 1, pool)
  upstreams.held[0]!.push(bytes.subarray(chunk))
  upstreams.held[0]!.end()
  await sending
  t.same(Buffer.concat(received), bytes)
  t.ok(
    writes.every((n) => n <= chunk),
    'one chunk a read',
  )
  t.equal(most, 1, 'one write out at a time')
})
