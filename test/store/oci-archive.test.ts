// Export and import of OCI image layout archives against real stores (built
// with test/helpers/cache.ts): a round trip keeps every image, shared blobs
// are written once, --image narrows, a bad archive (a flipped byte, a cut, a
// missing blob) records nothing and takes back the blobs it wrote, a cached tag newer than the archive's is
// kept unless forced, and an input that reuses its buffer imports the same. The end-to-end test with real clients is
// test/cli/cache-archive.test.ts.

import { randomBytes } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import t from 'tap'
import { isDproxyError } from '../../src/errors.js'
import { parseImageSelector } from '../../src/store/evict.js'
import { listImages } from '../../src/store/inventory.js'
import { exportArchive } from '../../src/store/archive-export.js'
import { importArchive, readReusing } from '../../src/store/archive-import.js'
import { CHECKED_AT, REF_NAME } from '../../src/store/oci-archive.js'
import { Store, walk } from '../../src/store/store.js'
import { endOfArchive, fileHeader, padding, readTar } from '../../src/store/tar.js'
import { putBlob, putIndex, putImage, putManifest, tag } from '../helpers/cache.js'
import { digestOf, parseDigest } from '../../src/oci/digest.js'

const T0 = Date.parse('2026-01-01T00:00:00Z')

async function exported(store: Store, images?: string[]): Promise<Buffer> {
  const parts: Buffer[] = []
  const sink = new Writable({
    write(chunk: Buffer, _e, done) {
      parts.push(chunk)
      done()
    },
  })
  await exportArchive(store, { stream: sink }, images ? { images: images.map(parseImageSelector) } : {})
  return Buffer.concat(parts)
}

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += 4096) yield b.subarray(i, i + 4096)
}

async function tarEntries(b: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>()
  for await (const e of readTar(once(b))) {
    const parts: Buffer[] = []
    for await (const p of e.body) parts.push(p)
    if (out.has(e.name)) throw new Error(`${e.name} twice`)
    out.set(e.name, Buffer.concat(parts))
  }
  return out
}

/** An archive of `entries`, as tarEntries returned them (edited). */
function rebuild(entries: Map<string, Buffer>): Buffer {
  const parts: Buffer[] = []
  for (const [n, data] of entries) parts.push(fileHeader(n, data.length), data, padding(data.length))
  parts.push(endOfArchive())
  return Buffer.concat(parts)
}

/** alpine:latest and alpine:3 (one image), redis:7 sharing alpine's layer, multi:1 an index of two. */
async function source(dir: string) {
  const store = await Store.open(dir)
  const alpine = await putImage(store, 'alpine', [20_000])
  const redis = await putImage(store, 'redis', [alpine.layers[0]!, 30_000])
  const arm = await putImage(store, 'arm', [5_000])
  const index = await putIndex(store, [alpine.manifest, arm.manifest])
  await tag(store, 'docker.io', 'library/alpine', 'latest', alpine.manifest, T0)
  await tag(store, 'docker.io', 'library/alpine', '3', alpine.manifest, T0)
  await tag(store, 'docker.io', 'bitnami/redis', '7', redis.manifest, T0)
  await tag(store, 'ghcr.io', 'o/multi', '1', index, T0)
  return { store, alpine, redis, arm, index }
}

const summary = (images: Awaited<ReturnType<typeof listImages>>) =>
  images.map((i) => `${i.registry}/${i.repository}:${i.tag}@${i.digest} ${i.manifests}m ${i.blobs}b ${i.complete}`)

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = []
  await walk(dir, async (p) => void out.push(p))
  return out.sort()
}

t.test('a round trip keeps every image; shared blobs once; the tag times travel', async (t) => {
  const dir = t.testdir({ a: {}, b: {} })
  const { store } = await source(join(dir, 'a'))
  const tar = await exported(store)
  const entries = await tarEntries(tar)
  const index = JSON.parse(entries.get('index.json')!.toString()) as { manifests: Array<{ annotations: Record<string, string> }> }
  t.strictSame(
    index.manifests.map((m) => m.annotations[REF_NAME]).sort(),
    ['docker.io/bitnami/redis:7', 'docker.io/library/alpine:3', 'docker.io/library/alpine:latest', 'ghcr.io/o/multi:1'],
  )
  t.ok(index.manifests.every((m) => m.annotations[CHECKED_AT] === new Date(T0).toISOString()))
  t.strictSame(JSON.parse(entries.get('oci-layout')!.toString()), { imageLayoutVersion: '1.0.0' })
  // 4 manifests (alpine, redis, arm, index) + 3 configs + 3 layers, the shared one once.
  t.equal([...entries.keys()].filter((n) => n.startsWith('blobs/')).length, 10)

  const target = await Store.open(join(dir, 'b'))
  const result = await importArchive(target, once(tar))
  t.equal(result.images.length, 4)
  t.strictSame(result.skipped, [])
  t.strictSame(summary(await listImages(target)), summary(await listImages(store)))
  t.equal((await target.getTag('docker.io', 'library/alpine', 'latest'))?.checkedAt, T0)

  const again = await importArchive(target, once(tar))
  t.strictSame(again.images, [], 'importing the same archive again changes nothing')
  t.equal(again.unchanged.length, 4)
  t.equal(again.blobs + again.manifests, 0)
})

/** `b` in chunks of `size` bytes, each copied into the same buffer: good only until the next is asked for. */
async function* reusing(b: Buffer, size: number): AsyncGenerator<Buffer> {
  const buf = Buffer.alloc(size)
  for (let i = 0; i < b.length; i += size) yield buf.subarray(0, b.copy(buf, 0, i, i + size))
}

t.test('an input that reuses its buffer imports the same, and a blob of several write batches lands byte for byte', async (t) => {
  const dir = t.testdir({ a: {}, b: {}, c: {} })
  const { store } = await source(join(dir, 'a'))
  // Random bytes: a write landing out of order would show in the file, not in the hash taken before it.
  const big = await putBlob(store, randomBytes(9 * 1024 * 1024 + 12_345))
  const config = await putBlob(store, JSON.stringify({ architecture: 'amd64', os: 'linux' }))
  await tag(store, 'docker.io', 'library/big', '1', await putManifest(store, config, [big]), T0)
  const tar = await exported(store)
  const file = join(dir, 'cache.tar')
  await fs.writeFile(file, tar)

  // Odd-sized chunks straddle every header and body; readReusing reads the file as the CLI does.
  const fh = await fs.open(file)
  t.teardown(() => fh.close())
  for (const [target, input] of [
    [join(dir, 'b'), reusing(tar, 777)],
    [join(dir, 'c'), readReusing(fh)],
  ] as const) {
    const into = await Store.open(target)
    const result = await importArchive(into, input)
    t.equal(result.images.length, 5, target)
    t.strictSame(summary(await listImages(into)), summary(await listImages(store)), target)
    const copied = await fs.readFile(into.blobPath(parseDigest(big.digest)))
    t.ok(copied.equals(await fs.readFile(store.blobPath(parseDigest(big.digest)))), `${target}: the big blob byte for byte`)
  }
})

// The next chunk is read while the consumer holds this one: into the other buffer, never under its feet.
t.test('readReusing reads ahead without touching the chunk handed out, and lets go when the consumer stops', async (t) => {
  const dir = t.testdir()
  const data = randomBytes(9 * 1024 * 1024 + 3)
  await fs.writeFile(join(dir, 'f'), data)
  const fh = await fs.open(join(dir, 'f'), 'r')
  t.teardown(() => fh.close())
  const seen: Buffer[] = []
  for await (const chunk of readReusing(fh)) {
    const copy = Buffer.from(chunk)
    // Time for the read ahead to land.
    await new Promise((resolve) => setTimeout(resolve, 20))
    t.ok(chunk.equals(copy), `chunk ${seen.length} unchanged while held`)
    seen.push(copy)
  }
  t.ok(Buffer.concat(seen).equals(data), 'every byte, in order')
  t.ok(seen.length >= 3, 'in several chunks')

  const early = await fs.open(join(dir, 'f'), 'r')
  for await (const chunk of readReusing(early)) {
    t.ok(chunk.length > 0)
    break
  }
  await early.close()
  t.pass('closes after a consumer that stopped early')
})

t.test('--image exports only what it names', async (t) => {
  const { store, redis } = await source(t.testdir())
  const entries = await tarEntries(await exported(store, ['bitnami/redis:7']))
  const index = JSON.parse(entries.get('index.json')!.toString()) as { manifests: Array<{ digest: string; annotations: Record<string, string> }> }
  t.strictSame(index.manifests.map((m) => [m.annotations[REF_NAME], m.digest]), [['docker.io/bitnami/redis:7', redis.manifest.digest]])
  const blobs = [...entries.keys()].filter((n) => n.startsWith('blobs/')).map((n) => n.replace('blobs/sha256/', 'sha256:'))
  t.strictSame(blobs.sort(), [redis.manifest, redis.config, ...redis.layers].map((d) => d.digest).sort())
  await t.rejects(exported(store, ['alpine:9']), /nothing cached for docker.io\/library\/alpine:9/)
})

t.test('a bad archive is refused naming the entry, and nothing is recorded', async (t) => {
  const dir = t.testdir({ a: {}, b: {} })
  const { store, redis } = await source(join(dir, 'a'))
  const tar = await exported(store)
  const target = await Store.open(join(dir, 'b'))
  // What the target had before: one tag of its own.
  const own = await putImage(target, 'own', [100])
  await tag(target, 'docker.io', 'library/alpine', 'latest', own.manifest, T0 - 1)
  const before = await filesUnder(target.layout.repositoriesDir)

  const layer = redis.layers[1]!
  const name = `blobs/sha256/${layer.digest.slice(7)}`
  const at = tar.indexOf(Buffer.from(name))
  const flipped = Buffer.from(tar)
  flipped[at + 512 + 1000]! ^= 1
  const cut = tar.subarray(0, at + 512 + 1000)
  for (const [what, bad, message] of [
    ['a flipped byte', flipped, new RegExp(`^${name}: blob ${layer.digest}: content has digest`)],
    ['a truncated archive', cut, new RegExp(`^${name}: the archive ends inside this entry`)],
  ] as const) {
    const err = await importArchive(target, once(bad)).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(isDproxyError(err, 'ARCHIVE_INVALID'), what)
    t.match((err as Error).message, message, what)
    t.strictSame(await filesUnder(target.layout.repositoriesDir), before, `${what}: no tag or link recorded`)
    t.equal((await target.getTag('docker.io', 'library/alpine', 'latest'))?.digest, own.manifest.digest)
  }
})

t.test('a refused archive takes back the blobs it verified before the bad entry; what was cached before stays', async (t) => {
  const dir = t.testdir({ a: {}, b: {} })
  const store = await Store.open(join(dir, 'a'))
  // Three large layers (random bytes: written through the verifying writer, not held as JSON).
  const big = await putImage(store, 'big', [300_000, 400_000, 500_000])
  await tag(store, 'docker.io', 'library/big', '1', big.manifest, T0)
  const tar = await exported(store)
  const target = await Store.open(join(dir, 'b'))
  const own = await putImage(target, 'own', [100])
  await tag(target, 'docker.io', 'library/own', '1', own.manifest, T0)
  // One of the archive's layers is in the target already, referenced by nothing.
  const entries = (await tarEntries(tar)).keys()
  const layerNames = [...entries].filter((n) => big.layers.some((l) => n === `blobs/sha256/${l.digest.slice(7)}`))
  const [firstName, , lastName] = layerNames
  const already = big.layers.find((l) => firstName === `blobs/sha256/${l.digest.slice(7)}`)!
  await putBlob(target, await fs.readFile(store.layout.blob(parseDigest(already.digest))))
  const before = await filesUnder(target.layout.root)

  // A flipped byte in the last layer the archive holds: the other two were verified and written by then.
  const at = tar.indexOf(Buffer.from(lastName!))
  const flipped = Buffer.from(tar)
  flipped[at + 512 + 1000]! ^= 1
  await t.rejects(importArchive(target, once(flipped)), { code: 'ARCHIVE_INVALID' })
  t.strictSame(await filesUnder(target.layout.root), before, 'the cache holds the files it held before, no more, no fewer')
  t.ok(await target.statBlob(parseDigest(already.digest)), 'the blob cached before the import stays')
  t.equal((await listImages(target)).length, 1, 'only its own image')
})

t.test('an image whose blob is missing is refused, naming it', async (t) => {
  const dir = t.testdir({ a: {}, b: {} })
  const { store, redis } = await source(join(dir, 'a'))
  const tar = await exported(store, ['bitnami/redis:7'])
  // Rebuild the archive without one layer entry.
  const entries = await tarEntries(tar)
  const missing = redis.layers[1]!.digest
  entries.delete(`blobs/sha256/${missing.slice(7)}`)
  const target = await Store.open(join(dir, 'b'))
  await t.rejects(importArchive(target, once(rebuild(entries))), new RegExp(`docker.io/bitnami/redis:7: blob ${missing} of manifest`))
  t.strictSame(await filesUnder(target.layout.repositoriesDir), [])
})

t.test('a cached tag newer than the archive is kept unless forced; an older one is replaced', async (t) => {
  const dir = t.testdir({ a: {}, b: {} })
  const { store, alpine } = await source(join(dir, 'a'))
  const tar = await exported(store, ['alpine:latest', 'bitnami/redis:7'])
  const target = await Store.open(join(dir, 'b'))
  const newer = await putImage(target, 'newer', [10])
  const older = await putImage(target, 'older', [10])
  await tag(target, 'docker.io', 'library/alpine', 'latest', newer.manifest, T0 + 1000)
  await tag(target, 'docker.io', 'bitnami/redis', '7', older.manifest, T0 - 1000)

  const first = await importArchive(target, once(tar))
  t.strictSame(first.images, ['docker.io/bitnami/redis:7'])
  t.match(first.skipped, [{ image: 'docker.io/library/alpine:latest', reason: /cached tag is newer/ }])
  t.equal((await target.getTag('docker.io', 'library/alpine', 'latest'))?.digest, newer.manifest.digest)

  const forced = await importArchive(target, once(tar), { force: true })
  t.strictSame(forced.images.sort(), ['docker.io/bitnami/redis:7', 'docker.io/library/alpine:latest'])
  t.equal((await target.getTag('docker.io', 'library/alpine', 'latest'))?.digest, alpine.manifest.digest)
})

t.test('a manifest whose own media type is no media type is recorded with its descriptor\'s', async (t) => {
  // The type becomes a Content-Type header when the manifest is served: a line break in it must not be stored.
  const dir = t.testdir({ a: {}, b: {} })
  const { store } = await source(join(dir, 'a'))
  const entries = await tarEntries(await exported(store, ['bitnami/redis:7']))
  const index = JSON.parse(entries.get('index.json')!.toString()) as { manifests: Array<Record<string, unknown>> }
  const desc = index.manifests[0]!
  const old = parseDigest(desc.digest as string)
  const manifest = JSON.parse(entries.get(`blobs/sha256/${old.hex}`)!.toString()) as Record<string, unknown>
  const bytes = Buffer.from(JSON.stringify({ ...manifest, mediaType: 'text/plain\r\nx-injected: 1' }))
  const digest = digestOf(bytes)
  entries.delete(`blobs/sha256/${old.hex}`)
  entries.set(`blobs/sha256/${digest.slice('sha256:'.length)}`, bytes)
  index.manifests = [{ ...desc, digest, size: bytes.length }]
  entries.set('index.json', Buffer.from(JSON.stringify(index)))
  const target = await Store.open(join(dir, 'b'))
  const result = await importArchive(target, once(rebuild(entries)))
  t.strictSame(result.images, ['docker.io/bitnami/redis:7'])
  t.equal((await target.getTag('docker.io', 'bitnami/redis', '7'))?.mediaType, desc.mediaType)
  t.equal((await target.getManifest(parseDigest(digest)))?.mediaType, desc.mediaType)
})

t.test('an entry without a usable name is reported and skipped', async (t) => {
  const dir = t.testdir({ a: {}, b: {} })
  const { store } = await source(join(dir, 'a'))
  const entries = await tarEntries(await exported(store, ['bitnami/redis:7']))
  const index = JSON.parse(entries.get('index.json')!.toString()) as { manifests: Array<Record<string, unknown>> }
  const m = index.manifests[0]!
  index.manifests = [{ ...m, annotations: { [REF_NAME]: 'latest' } }, { ...m, annotations: {} }]
  entries.set('index.json', Buffer.from(JSON.stringify(index)))
  const target = await Store.open(join(dir, 'b'))
  const result = await importArchive(target, once(rebuild(entries)))
  t.strictSame(result.images, [])
  t.equal(result.skipped.length, 2)
  t.match(result.skipped[0], { image: 'latest', reason: /without an image name/ })
  t.strictSame(await filesUnder(target.layout.repositoriesDir), [])
})

t.test('a manifest as large as a registry may send (over 4 MiB, under the 8 MiB limit) imports as a manifest', async (t) => {
  const dir = t.testdir({ a: {}, b: {} })
  const store = await Store.open(join(dir, 'a'))
  const config = await putBlob(store, JSON.stringify({ architecture: 'amd64', os: 'linux' }))
  const layer = await putBlob(store, Buffer.alloc(1000, 'l'))
  const bytes = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layer],
    annotations: { padding: 'x'.repeat(5 * 1024 * 1024) },
  }))
  const d = parseDigest(digestOf(bytes))
  await store.putManifest(d, bytes, 'application/vnd.oci.image.manifest.v1+json')
  await tag(store, 'docker.io', 'library/big-manifest', '1', { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: d.value, size: bytes.length }, T0)
  const target = await Store.open(join(dir, 'b'))
  const result = await importArchive(target, once(await exported(store)))
  t.strictSame(result.skipped, [])
  t.equal(result.images.length, 1)
  t.equal((await target.getTag('docker.io', 'library/big-manifest', '1'))?.digest, d.value)
})
