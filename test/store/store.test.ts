import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { Store } from '../../src/store/store.js'
import { parseDigest } from '../../src/oci/digest.js'

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
  const buf = Buffer.alloc(data.length)
  t.equal(await h!.read(buf, 0, buf.length, 0), data.length)
  t.equal(buf.toString(), 'hello blob')
  await h!.close()
  t.strictSame(await fs.readdir(store.layout.tmpDir), [], 'no temp files left')
  t.strictSame(JSON.parse(await fs.readFile(join(dir, 'layout.json'), 'utf8')), { version: 2 })
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
  t.equal(await h!.read(Buffer.alloc(data.length), 0, data.length, 0), data.length, 'open handle still reads everything')
  await h!.close()
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

  t.strictSame(await store.stats(), {
    bytes: bytes.length + m!.mediaType.length + 1,
    blobs: 0,
    manifests: 1,
    tags: 2,
    tempFiles: 0,
    tempBytes: 0,
  })
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

t.test('temp files carry their writer pid; only those of gone writers are orphans', async (t) => {
  const dead = 999_999_999
  const parent = process.ppid
  const dir = t.testdir({
    tmp: { [`${dead}-0a1b`]: 'x'.repeat(100), [`${parent}-2c3d`]: 'y'.repeat(10), [`${process.pid}-4e5f`]: 'z', legacy: 'old' },
  })
  const store = await Store.open(dir)
  const names = async () => (await fs.readdir(store.layout.tmpDir)).sort()
  const all = await names()
  t.equal(all.length, 4, 'opening removes nothing')
  t.match(await store.stats(), { tempFiles: 4, tempBytes: 114 }, 'status counts temp bytes')

  const w = await store.createBlobWriter(sha('abc'))
  t.match(w.tempPath, new RegExp(`/tmp/${process.pid}-[0-9a-f]{16}-[0-9a-f]+$`), 'a download names its file by pid')
  await w.abort()

  t.strictSame(await store.removeOrphanTemps({ dryRun: true }), { files: 2, bytes: 103 })
  t.strictSame(await names(), all, 'a dry run removes nothing')
  t.strictSame(await store.removeOrphanTemps(), { files: 2, bytes: 103 })
  t.strictSame(await names(), [`${parent}-2c3d`, `${process.pid}-4e5f`].sort(), 'live writers keep their files')
  t.strictSame(await store.removeOrphanTemps({ ownPidIsDead: true }), { files: 1, bytes: 1 })
  t.strictSame(await names(), [`${parent}-2c3d`])
})

t.test('a foreign layout version is refused', async (t) => {
  const future = t.testdir({ 'layout.json': '{"version": 99}' })
  await t.rejects(Store.open(future), { code: 'CONFIG_INVALID' })
})

const rec = (digest: string) => ({ digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1, checkedAt: 0 })

t.test('tags that differ only in case are two tags, in two files whatever the file system folds', async (t) => {
  const store = await Store.open(t.testdir())
  const upper = sha('upper').value
  const lower = sha('lower').value
  await store.putTag('docker.io', 'library/app', 'V1', rec(upper))
  await store.putTag('docker.io', 'library/app', 'v1', rec(lower))
  await store.putTag('docker.io', 'library/app', 'Release_2.X-rc', rec(upper))
  t.equal((await store.getTag('docker.io', 'library/app', 'V1'))?.digest, upper)
  t.equal((await store.getTag('docker.io', 'library/app', 'v1'))?.digest, lower)
  t.strictSame(await store.listTags('docker.io', 'library/app'), ['Release_2.X-rc', 'V1', 'v1'])
  const files = await fs.readdir(store.layout.tagsDir('docker.io', 'library/app'))
  t.equal(new Set(files.map((f) => f.toLowerCase())).size, 3, `file names stay distinct when case is folded: ${files}`)
  t.equal(files.filter((f) => f !== f.toLowerCase()).length, 0, 'no upper-case letter on disk')
})

t.test('a layout 1 cache is read as it is, and migrated only when asked (by the daemon)', async (t) => {
  const upper = sha('upper').value
  const lower = sha('lower').value
  const dir = t.testdir({
    'layout.json': '{"version": 1}\n',
    repositories: { 'docker.io': { library: { app: { _tags: { V1: JSON.stringify(rec(upper)), latest: JSON.stringify(rec(lower)) } } } } },
  })
  const version = async () => JSON.parse(await fs.readFile(join(dir, 'layout.json'), 'utf8')).version
  const reader = await Store.open(dir)
  t.equal(await version(), 1, 'a reader leaves the layout alone')
  t.equal((await reader.getTag('docker.io', 'library/app', 'V1'))?.digest, upper)
  t.strictSame(await reader.listTags('docker.io', 'library/app'), ['V1', 'latest'])

  const owner = await Store.open(dir, { migrate: true })
  t.equal(await version(), 2)
  t.strictSame((await fs.readdir(owner.layout.tagsDir('docker.io', 'library/app'))).sort(), ['!v1', 'latest'])
  t.equal((await owner.getTag('docker.io', 'library/app', 'V1'))?.digest, upper, 'V1 survives the migration')
  t.equal((await owner.getTag('docker.io', 'library/app', 'latest'))?.digest, lower)
  t.equal(await owner.getTag('docker.io', 'library/app', 'v1'), undefined, 'v1 is not V1')
  t.strictSame(await owner.listTags('docker.io', 'library/app'), ['V1', 'latest'])
  t.equal((await Store.open(dir, { migrate: true })).layout.version, 2, 'opening again changes nothing')
})
