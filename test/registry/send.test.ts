// The send loop's own costs, on a real blob source (the blob proxy over a
// memory store) and a client that reads slowly: every write fills its buffer,
// so the loop waits for one of its buffers to come back after each chunk,
// which is what a daemon does all the time when many clients share a link. A
// wait must leave nothing behind once it is over, or a long response keeps one
// leftover per chunk alive until it ends. And how large a read is: what the
// pool spares the response for a stored blob, one chunk for a download.

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
  await sendBlob(source, out, 0, bytes.length - 1, new SendBuffers({ chunkSize: chunk, maxBuffers: 2, largeChunks: 1 }))

  t.equal(received, bytes.length, 'every byte sent')
  t.equal(writes, chunks, 'one write per chunk, each followed by a wait for a buffer')
  // The first three samples against the last three: one leftover of a few
  // hundred bytes per wait is megabytes apart; a collection's noise is not.
  const waits = (heap.length - 3) * every
  const grown = median(heap.slice(-3)) - median(heap.slice(0, 3))
  t.ok(grown < 1_000_000, `live objects grew by ${grown} bytes over ${waits} waits (${Math.max(0, Math.round(grown / waits))} bytes a wait)`)
})

t.test('a read is as large as the pool spares the response: 4 chunks alone, 1 in a crowd or over TLS', async (t) => {
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
  const send = async (pool: SendBuffers, start: number, end: number, tls = false) => {
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
    // As a response on a TLS connection shows it.
    if (tls) Object.assign(out, { socket: { encrypted: true } })
    const source = await proxy.open(resolveImageName('library/alpine'), digest)
    await sendBlob(source, out, start, end, pool)
    return { writes, received: Buffer.concat(received), most }
  }

  const alone = new SendBuffers({ chunkSize: chunk, maxBuffers: 16 })
  const whole = await send(alone, 0, bytes.length - 1)
  t.same(whole.received, bytes, 'the bytes, in order')
  t.same(whole.writes.slice(0, 10), Array(10).fill(4 * chunk), 'reads and writes of 4 chunks')
  t.equal(whole.most, 4, 'one read of 4 chunks out at a time')
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

  const overTls = await send(new SendBuffers({ chunkSize: chunk, maxBuffers: 16 }), 0, bytes.length - 1, true)
  t.same(overTls.received, bytes)
  t.ok(
    overTls.writes.every((n) => n <= chunk),
    'over TLS one chunk a read, alone too',
  )
})

t.test('a download being followed goes out one chunk a read, whatever the pool spares', async (t) => {
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
