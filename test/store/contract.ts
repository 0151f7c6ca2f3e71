// The behaviour every cache store owes the proxy (src/store/api.ts), as one
// suite that file.test.ts runs against the file store and memory.test.ts
// against the memory store. What only one of them does (layout, modes,
// temp-file names, disk failures) is tested in that store's own file.

import type { Test } from 'tap'
import type { BlobReader, CacheStore } from '../../src/store/api.js'
import { type Digest, digestOf, parseDigest } from '../../src/oci/digest.js'

const dg = (bytes: Buffer | string): Digest => parseDigest(digestOf(Buffer.from(bytes)))

export type MakeStore = (t: Test) => Promise<CacheStore>

async function readAll(r: BlobReader, from: number, to: number): Promise<Buffer> {
  const out = Buffer.alloc(to - from)
  let at = 0
  while (at < out.length) {
    const n = await r.read(out, at, out.length - at, from + at)
    if (n === 0) break
    at += n
  }
  return out.subarray(0, at)
}

export function storeContract(t: Test, make: MakeStore): void {
  t.test('a committed blob is stat-able and readable at any range', async (t) => {
    const store = await make(t)
    const data = Buffer.from('0123456789abcdef')
    const d = dg(data)
    t.equal(await store.statBlob(d), undefined)
    t.equal(await store.openBlob(d), undefined)
    const w = await store.createBlobWriter(d, data.length)
    await w.write(data.subarray(0, 5))
    await w.writev([data.subarray(5, 9), data.subarray(9)])
    t.equal(w.written, data.length)
    t.equal(await store.statBlob(d), undefined, 'not visible before commit')
    await w.commit()
    t.equal(await store.statBlob(d), data.length)
    const r = await store.openBlob(d)
    t.equal(r?.size, data.length)
    t.equal((await readAll(r!, 0, 16)).toString(), '0123456789abcdef')
    t.equal((await readAll(r!, 3, 7)).toString(), '3456', 'a range')
    t.equal(await r!.read(Buffer.alloc(4), 0, 4, 16), 0, 'nothing past the end')
    await r!.close()
    await store.touchBlob(d)
    t.equal(await store.deleteBlob(d), true)
    t.equal(await store.deleteBlob(d), false)
    t.equal(await store.statBlob(d), undefined)
  })

  t.test('wrong, short and long bodies and aborted writes are never committed', async (t) => {
    const store = await make(t)
    const data = Buffer.from('the right content')
    const d = dg(data)
    const wrong = await store.createBlobWriter(d, data.length)
    await wrong.write(Buffer.from('the wrong content'))
    await t.rejects(wrong.verify(), { code: 'DIGEST_INVALID' })
    const short = await store.createBlobWriter(d, data.length)
    await short.write(data.subarray(0, 4))
    await t.rejects(short.commit(), { code: 'SIZE_INVALID' })
    const long = await store.createBlobWriter(d, 3)
    await t.rejects(long.write(data), { code: 'SIZE_INVALID' })
    await long.abort()
    const aborted = await store.createBlobWriter(d)
    await aborted.write(data)
    await aborted.abort()
    await aborted.abort()
    t.equal(await store.statBlob(d), undefined)
    const unknownSize = await store.createBlobWriter(d)
    await unknownSize.write(data)
    await unknownSize.commit()
    t.equal(await store.statBlob(d), data.length, 'a right body of unsaid size commits')
  })

  t.test('a follower reads the bytes as they are written and keeps them after the commit', async (t) => {
    const store = await make(t)
    const data = Buffer.from('abcdefghijklmnopqrstuvwxyz')
    const d = dg(data)
    const w = await store.createBlobWriter(d, data.length)
    const early = await w.follow()
    await w.write(data.subarray(0, 10))
    t.equal((await readAll(early, 0, w.written)).toString(), 'abcdefghij', 'what is there')
    t.equal(await early.read(Buffer.alloc(4), 0, 4, 10), 0, 'nothing beyond it yet')
    await w.write(data.subarray(10))
    t.equal((await readAll(early, 10, 26)).toString(), 'klmnopqrstuvwxyz', 'later bytes')
    await w.verify()
    await w.commit()
    const late = await w.follow()
    t.equal((await readAll(late, 0, 26)).toString(), data.toString(), 'a follower opened after the commit')
    await store.deleteBlob(d)
    t.equal((await readAll(early, 20, 26)).toString(), 'uvwxyz', 'a reader keeps its bytes when the blob is deleted')
    await early.close()
    await late.close()
  })

  t.test('a follower of an abandoned write fails to open; one opened before keeps what it read', async (t) => {
    const store = await make(t)
    const data = Buffer.from('never to be')
    const d = dg(data)
    const w = await store.createBlobWriter(d, data.length)
    await w.write(data.subarray(0, 5))
    const r = await w.follow()
    await w.abort()
    await t.rejects(w.follow())
    t.equal((await readAll(r, 0, 5)).toString(), 'never')
    await r.close()
    t.equal(await store.statBlob(d), undefined)
  })

  t.test('manifests keep bytes and media type exactly', async (t) => {
    const store = await make(t)
    const bytes = Buffer.from('{ "schemaVersion":2,  "odd":"spacing" }\n')
    const d = dg(bytes)
    const type = 'application/vnd.oci.image.index.v1+json'
    t.equal(await store.getManifest(d), undefined)
    t.equal(await store.hasManifest(d), false)
    await store.putManifest(d, bytes, type)
    t.equal(await store.hasManifest(d), true)
    const m = await store.getManifest(d)
    t.equal(m?.digest, d.value)
    t.equal(m?.mediaType, type)
    t.ok(m?.bytes.equals(bytes), 'byte for byte')
    await store.touchManifest(d)
    await store.linkManifest('docker.io', 'library/alpine', d)
    await store.linkManifest('docker.io', 'library/alpine', d)
    t.equal(await store.deleteManifest(d), true)
    t.equal(await store.deleteManifest(d), false)
    t.equal(await store.getManifest(d), undefined)
  })

  t.test('tags: per registry and repository, case-sensitive, listed sorted', async (t) => {
    const store = await make(t)
    const rec = (digest: string) => ({ digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 3, checkedAt: 1000 })
    const a = dg('a').value
    const b = dg('b').value
    t.strictSame(await store.listTags('docker.io', 'library/alpine'), [])
    t.equal(await store.getTag('docker.io', 'library/alpine', 'v1'), undefined)
    await store.putTag('docker.io', 'library/alpine', 'v1', rec(a))
    await store.putTag('docker.io', 'library/alpine', 'V1', rec(b))
    await store.putTag('docker.io', 'library/alpine', 'latest', rec(a))
    await store.putTag('docker.io', 'library/alpine-extra', 'only', rec(a))
    await store.putTag('ghcr.io', 'library/alpine', 'elsewhere', rec(a))
    t.strictSame(await store.getTag('docker.io', 'library/alpine', 'v1'), rec(a))
    t.strictSame(await store.getTag('docker.io', 'library/alpine', 'V1'), rec(b), 'V1 and v1 are two tags')
    t.strictSame(await store.listTags('docker.io', 'library/alpine'), ['V1', 'latest', 'v1'])
    await store.putTag('docker.io', 'library/alpine', 'v1', { ...rec(b), checkedAt: 2000 })
    t.strictSame(await store.getTag('docker.io', 'library/alpine', 'v1'), { ...rec(b), checkedAt: 2000 }, 'a tag moves')
  })

  t.test('links: a repository has what its linked manifests name, an index its children and theirs, and what upstream confirmed', async (t) => {
    const store = await make(t)
    const desc = (d: Digest, size = 1) => ({ mediaType: 'application/octet-stream', digest: d.value, size })
    const image = async (seed: string) => {
      const config = dg(`config ${seed}`)
      const layer = dg(`layer ${seed}`)
      const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, config: desc(config), layers: [desc(layer)] }))
      return { config, layer, bytes, d: dg(bytes) }
    }
    const MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
    const has = (repository: string, d: Digest) => store.isLinked('docker.io', repository, d)

    const a = await image('a')
    t.equal(await has('library/alpine', a.layer), false, 'nothing before a link')
    await store.putManifest(a.d, a.bytes, MANIFEST)
    await store.linkManifest('docker.io', 'library/alpine', a.d)
    t.equal(await has('library/alpine', a.layer), true, 'a layer of a linked manifest')
    t.equal(await has('library/alpine', a.config), true, 'its config')
    t.equal(await has('library/alpine', a.d), true, 'the manifest itself')
    t.equal(await has('private/secret', a.layer), false, 'not under another repository')
    t.equal(await store.isLinked('ghcr.io', 'library/alpine', a.layer), false, 'nor under the same name at another registry')

    // An index whose second child is not cached yet when it is linked.
    const [amd, arm] = [await image('amd64'), await image('arm64')]
    await store.putManifest(amd.d, amd.bytes, MANIFEST)
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [desc(amd.d), desc(arm.d)] }))
    await store.putManifest(dg(index), index, 'application/vnd.oci.image.index.v1+json')
    await store.linkManifest('docker.io', 'library/multi', dg(index))
    t.equal(await has('library/multi', amd.layer), true, "a cached child's layer")
    t.equal(await has('library/multi', arm.d), true, 'an uncached child, by digest')
    t.equal(await has('library/multi', arm.layer), false, "nothing of an uncached child's content yet")
    await store.putManifest(arm.d, arm.bytes, MANIFEST)
    t.equal(await has('library/multi', arm.layer), true, 'once that child is cached, its layers too')
    t.equal(await has('library/alpine', amd.layer), false, 'still nothing elsewhere')

    const confirmed = dg('a blob upstream confirmed')
    t.equal(await has('library/alpine', confirmed), false)
    await store.linkBlob('docker.io', 'library/alpine', confirmed)
    await store.linkBlob('docker.io', 'library/alpine', confirmed)
    t.equal(await has('library/alpine', confirmed), true, 'upstream confirmed it')
    t.equal(await has('library/multi', confirmed), false, 'for that repository only')
  })
}
