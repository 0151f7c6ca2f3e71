import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parseDigest } from '../../src/registry/names.js'
import { Store } from '../../src/store/store.js'

const sha = (b: Buffer | string) => parseDigest(`sha256:${createHash('sha256').update(b).digest('hex')}`)

t.test('a verified blob is renamed into place and readable', async (t) => {
  const dir = t.testdir()
  const store = await Store.open(dir)
  const data = Buffer.from('hello blob')
  const d = sha(data)
  t.equal(await store.statBlob(d), undefined)
  const w = await store.createBlobWriter(d, data.length)
  await w.write(data.subarray(0, 5))
  await w.write(data.subarray(5))
  t.equal(await store.statBlob(d), undefined, 'not visible before commit')
  await w.commit()
  t.equal(await store.statBlob(d), data.length)
  const h = await store.openBlob(d)
  t.ok(h)
  t.equal((await h!.fh.readFile()).toString(), 'hello blob')
  await h!.fh.close()
  t.strictSame(await fs.readdir(store.layout.tmpDir), [], 'no temp files left')
  t.strictSame(JSON.parse(await fs.readFile(join(dir, 'layout.json'), 'utf8')), { version: 1 })
})

t.test('wrong bytes, short and long bodies are never cached', async (t) => {
  const store = await Store.open(t.testdir())
  const data = Buffer.from('the right content')
  const d = sha(data)

  const wrong = await store.createBlobWriter(d, data.length)
  await wrong.write(Buffer.from('the wrong content'))
  await t.rejects(wrong.commit(), { code: 'DIGEST_INVALID' })

  const short = await store.createBlobWriter(d, data.length)
  await short.write(data.subarray(0, 4))
  await t.rejects(short.commit(), { code: 'SIZE_INVALID' })

  const long = await store.createBlobWriter(d, 3)
  await t.rejects(long.write(data), { code: 'SIZE_INVALID' })
  await long.abort()

  const aborted = await store.createBlobWriter(d)
  await aborted.write(data)
  await aborted.abort()

  t.equal(await store.statBlob(d), undefined)
  t.strictSame(await fs.readdir(store.layout.tmpDir), [], 'every temp file removed')
})

t.test('a reader keeps its bytes when another process deletes the blob', async (t) => {
  const store = await Store.open(t.testdir())
  const data = Buffer.alloc(256 * 1024, 7)
  const d = sha(data)
  const w = await store.createBlobWriter(d, data.length)
  await w.write(data)
  await w.commit()
  const h = await store.openBlob(d)
  const other = await Store.open(store.root)
  t.equal(await other.deleteBlob(d), true)
  t.equal(await store.statBlob(d), undefined)
  t.equal((await h!.fh.readFile()).length, data.length, 'open handle still reads everything')
  await h!.fh.close()
})

t.test('manifests keep bytes and media type exactly; tags and links', async (t) => {
  const store = await Store.open(t.testdir())
  const bytes = Buffer.from('{"schemaVersion": 2,   "odd":"spacing"}\n')
  const d = sha(bytes)
  await store.putManifest(d, bytes, 'application/vnd.oci.image.index.v1+json')
  const m = await store.getManifest(d)
  t.ok(m?.bytes.equals(bytes), 'byte for byte')
  t.equal(m?.mediaType, 'application/vnd.oci.image.index.v1+json')
  t.equal(m?.digest, d.value)

  await store.putTag('docker.io', 'library/alpine', 'latest', { digest: d.value, mediaType: m!.mediaType, size: bytes.length, checkedAt: 42 })
  await store.putTag('localhost:5001', 'a/b', 'v1', { digest: d.value, mediaType: m!.mediaType, size: bytes.length, checkedAt: 43 })
  t.equal((await store.getTag('docker.io', 'library/alpine', 'latest'))?.checkedAt, 42)
  t.equal(await store.getTag('docker.io', 'library/alpine', 'other'), undefined)
  t.strictSame(await store.listTags('docker.io', 'library/alpine'), ['latest'])
  t.strictSame(await store.listTags('docker.io', 'library/none'), [])
  await store.linkManifest('docker.io', 'library/alpine', d)
  await store.linkManifest('docker.io', 'library/alpine', d)
  t.ok(await fs.stat(store.layout.manifestLink('docker.io', 'library/alpine', d)))
  t.ok(store.layout.repository('localhost:5001', 'a/b').includes('localhost%3A5001'), 'registry host encoded')

  t.strictSame(await store.stats(), { bytes: bytes.length + m!.mediaType.length + 1, blobs: 0, manifests: 1, tags: 2 })
})

t.test('last access is recorded, at most once per interval', async (t) => {
  let now = Date.parse('2026-01-01T00:00:00Z')
  const store = await Store.open(t.testdir(), { clock: { now: () => now }, touchIntervalMs: 60_000 })
  const data = Buffer.from('x')
  const d = sha(data)
  const w = await store.createBlobWriter(d)
  await w.write(data)
  await w.commit()
  await store.touchBlob(d)
  t.equal((await fs.stat(store.blobPath(d))).atimeMs, now)
  const first = now
  now += 30_000
  await store.touchBlob(d)
  t.equal((await fs.stat(store.blobPath(d))).atimeMs, first, 'throttled')
  now += 60_000
  await store.touchBlob(d)
  t.equal((await fs.stat(store.blobPath(d))).atimeMs, now)
})

t.test('stale temp files are removed at open; a foreign layout version is refused', async (t) => {
  const dir = t.testdir({ tmp: { 'old-download': 'partial', 'fresh-download': 'partial' } })
  const old = new Date(Date.now() - 3600_000)
  await fs.utimes(join(dir, 'tmp', 'old-download'), old, old)
  await Store.open(dir)
  t.strictSame(await fs.readdir(join(dir, 'tmp')), ['fresh-download'])

  const future = t.testdir({ 'layout.json': '{"version": 99}' })
  await t.rejects(Store.open(future), { code: 'CONFIG_INVALID' })
})
