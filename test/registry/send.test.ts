// The send loop's own costs, on a real blob source (the blob proxy over a
// memory store) and a client that reads slowly: every write fills its buffer,
// so the loop waits for a drain after each chunk, which is what a daemon does
// all the time when many clients share a link. A wait must leave nothing
// behind once it is over, or a long response keeps one leftover per chunk
// alive until it ends.

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
  await sendBlob(source, out, 0, bytes.length - 1, new SendBuffers({ chunkSize: chunk, maxBuffers: 4 }))

  t.equal(received, bytes.length, 'every byte sent')
  t.equal(writes, chunks, 'one write per chunk, each followed by a wait for the drain')
  // The first three samples against the last three: one leftover of a few
  // hundred bytes per wait is megabytes apart; a collection's noise is not.
  const waits = (heap.length - 3) * every
  const grown = median(heap.slice(-3)) - median(heap.slice(0, 3))
  t.ok(grown < 1_000_000, `live objects grew by ${grown} bytes over ${waits} waits (${Math.max(0, Math.round(grown / waits))} bytes a wait)`)
})
