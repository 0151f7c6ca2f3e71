// The memory store against the store contract, and what only it has: a cap
// that refuses blobs the way a full disk does.

import t from 'tap'
import { MemoryStore } from '../../src/store/memory.js'
import { digestOf, parseDigest } from '../../src/oci/digest.js'
import { storeContract } from './contract.js'

storeContract(t, async () => new MemoryStore())

t.test('past maxBytes a write is refused as CACHE_UNAVAILABLE, and what it held is given back', async (t) => {
  const store = new MemoryStore({ maxBytes: 10 })
  const data = Buffer.from('twelve bytes')
  const d = parseDigest(digestOf(data))
  const w = await store.createBlobWriter(d, data.length)
  await w.write(data.subarray(0, 6))
  t.equal(store.bytes, 6)
  await t.rejects(w.write(data.subarray(6)), { code: 'CACHE_UNAVAILABLE' })
  await w.abort()
  t.equal(store.bytes, 0)
  t.equal(await store.statBlob(d), undefined)
  t.throws(() => new MemoryStore({ maxBytes: Number.NaN }), /expected maxBytes to be a byte count, got NaN/)
})

t.test('touch records when a stored blob or manifest was last used', async (t) => {
  let now = 1000
  const store = new MemoryStore({ clock: { now: () => now } })
  const d = parseDigest(digestOf(Buffer.from('x')))
  await store.touchBlob(d)
  t.equal(store.lastUsed.get(d.value), undefined, 'nothing to touch')
  const w = await store.createBlobWriter(d)
  await w.write(Buffer.from('x'))
  await w.commit()
  now = 2000
  await store.touchBlob(d)
  t.equal(store.lastUsed.get(d.value), 2000)
})
