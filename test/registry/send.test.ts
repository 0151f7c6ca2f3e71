// The send loop's own costs, on a real blob source (the blob proxy over a
// memory store) and a client that reads slowly: every write fills its buffer,
// so the loop waits for a drain after each chunk, which is what a daemon does
// all the time when many clients share a link. A wait must leave nothing
// behind once it is over, or a long response keeps one leftover per chunk
// alive until it ends.

import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import { setFlagsFromString } from 'node:v8'
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
import { CountingUpstream } from '../helpers/upstream-double.js'

// Live heap only, not garbage waiting for a collection.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void
const liveHeap = () => {
  gc()
  return process.memoryUsage().heapUsed
}

t.test('waiting for a drain after every chunk keeps nothing alive per chunk while the response runs', async (t) => {
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

  // Heap in use early in the response and near its end, each after a full collection.
  const early = Math.floor(chunks / 10)
  const late = chunks - early
  const heap: number[] = []
  let writes = 0
  let received = 0
  const out = new Writable({
    highWaterMark: 1,
    write(data: Buffer, _encoding, callback) {
      received += data.length
      writes++
      if (writes === early || writes === late) heap.push(liveHeap())
      setImmediate(callback)
    },
  })
  await sendBlob(source, out, 0, bytes.length - 1, new SendBuffers({ chunkSize: chunk, maxBuffers: 4 }))

  t.equal(received, bytes.length, 'every byte sent')
  t.equal(writes, chunks, 'one write per chunk, each followed by a wait for the drain')
  const grown = heap[1]! - heap[0]!
  t.ok(grown < 1_000_000, `heap grew by ${grown} bytes over ${late - early} waits (${Math.max(0, Math.round(grown / (late - early)))} bytes a wait)`)
})
