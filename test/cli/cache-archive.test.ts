// `dproxy cache export` / `import` end to end, with the real registry fixture
// and skopeo: a cache filled by pulling through a daemon is exported; an
// empty cache whose upstream is down imports it, and skopeo then pulls every
// image (--all) through a daemon on it without the upstream; skopeo reads the
// exported archive; an archive skopeo made from the registry imports; a
// corrupted or cut archive is refused with nothing recorded; the import
// refuses while a daemon serves the cache.

import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { freePort, makeTempDir, skopeoCopy, skopeoCopyAll } from '../fixtures/clients.js'
import { catalogueImages } from '../fixtures/images.js'
import { startUpstream } from '../fixtures/upstream.js'
import { isolatedEnv, runInProcess } from '../helpers/cli.js'
import { pull, settled, startDaemon } from '../helpers/daemon.js'
import { Store, walk } from '../../src/store/store.js'

const up = await startUpstream()
t.teardown(() => up.stop())
const images = catalogueImages(up.images)

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = []
  await walk(dir, async (p) => void out.push(p))
  return out.sort()
}

/** A cache filled by pulling every fixture image through a daemon, and its export. */
async function exportedCache(tt: Test, env: Record<string, string>, file: string, extra: string[] = []) {
  const a = await startDaemon(tt, up, { cacheDir: env.DPROXY_CACHE_DIR })
  for (const image of images) await pull(a.url, image.repository, image.tag)
  await settled(a)
  // Export only reads: it works next to the daemon.
  const ran = await runInProcess(['cache', 'export', file, ...extra, '--json'], env)
  tt.equal(ran.code, 0, ran.err)
  return JSON.parse(ran.out) as { images: string[]; blobs: number; manifests: number; bytes: number; skipped: unknown[] }
}

t.test('export, import into an empty cache with the upstream down, then skopeo pulls everything from it', async (t) => {
  const env = isolatedEnv(t, {}, { out: {}, b: {} })
  const root = join(env.DPROXY_CACHE_DIR, '..')
  const file = join(root, 'out', 'cache.tar')
  const exported = await exportedCache(t, env, file)
  t.strictSame(exported.images.sort(), images.map((i) => `docker.io/${i.ref}`).sort())
  t.strictSame(exported.skipped, [])

  const target = join(root, 'b')
  const imported = await runInProcess(['cache', 'import', file, '--cache-dir', target], env)
  t.equal(imported.code, 0, imported.err)
  t.match(imported.out, new RegExp(`^imported ${images.length} images`))

  const dead = `http://127.0.0.1:${await freePort()}`
  const b = await startDaemon(t, undefined, { cacheDir: target, upstreams: { 'docker.io': dead } })
  const before = JSON.stringify(up.hub.counts)
  const host = new URL(b.url).host
  for (const image of images) {
    const dest = makeTempDir('dproxy-import-', t)
    await skopeoCopyAll(`${host}/${image.ref}`, dest, { timeoutMs: 120_000 })
    const copied = await fs.readFile(join(dest, 'manifest.json'))
    t.ok(copied.equals(image.manifest), `${image.ref}: pulled from the imported cache, byte-identical`)
    for (const blob of image.blobs) t.ok((await fs.stat(join(dest, blob.digest.slice(7)))).size === blob.size, `${image.ref}: ${blob.digest}`)
  }
  t.equal(JSON.stringify(up.hub.counts), before, 'the upstream saw no request')

  // skopeo finds an image by its full reference. It names only OCI-typed manifests in a layout (1.9
  // skips the rest silently), so the fixture's OCI index is what it can read; Docker-typed images are in
  // the archive byte for byte, and dproxy imports them as shown above.
  const oci = up.images.ociindex
  const dest = makeTempDir('dproxy-oci-archive-', t)
  await skopeoCopy(`oci-archive:${file}:docker.io/${oci.ref}`, `dir:${dest}`, { extraArgs: ['--all', '--preserve-digests'] })
  t.ok((await fs.readFile(join(dest, 'manifest.json'))).equals(oci.manifest), 'skopeo reads the exported index')
  for (const blob of oci.blobs) t.equal((await fs.stat(join(dest, blob.digest.slice(7)))).size, blob.size, `skopeo: ${blob.digest}`)
})

t.test('--image exports only that image', async (t) => {
  const env = isolatedEnv(t, {}, { out: {} })
  const file = join(env.DPROXY_CACHE_DIR, '..', 'out', 'redis.tar')
  const exported = await exportedCache(t, env, file, ['--image', 'bitnami/redis:7.2'])
  t.strictSame(exported.images, ['docker.io/bitnami/redis:7.2'])
  t.equal(exported.blobs, up.images.redis.blobs.length)
  t.equal(exported.manifests, 1)
})

t.test('an archive skopeo made imports; a bare name means Docker Hub', async (t) => {
  const env = isolatedEnv(t, {}, { out: {} })
  const file = join(env.DPROXY_CACHE_DIR, '..', 'out', 'skopeo.tar')
  const image = up.images.ociindex
  await skopeoCopy(`docker://${new URL(up.registryUrl).host}/${image.ref}`, `oci-archive:${file}:ociindex:${image.tag}`, {
    extraArgs: ['--all', '--preserve-digests'],
  })
  const ran = await runInProcess(['cache', 'import', file, '--json'], env)
  t.equal(ran.code, 0, ran.err)
  t.strictSame((JSON.parse(ran.out) as { images: string[] }).images, [`docker.io/${image.ref}`])
  const store = await Store.open(env.DPROXY_CACHE_DIR!)
  t.equal((await store.getTag('docker.io', image.repository, image.tag))?.digest, image.digest)
})

t.test('a corrupted or cut archive is refused naming the entry; nothing is recorded', async (t) => {
  const env = isolatedEnv(t, {}, { out: {}, b: {} })
  const root = join(env.DPROXY_CACHE_DIR, '..')
  const file = join(root, 'out', 'cache.tar')
  await exportedCache(t, env, file, ['--image', 'alpine'])
  const tar = await fs.readFile(file)
  const layer = up.images.alpine.blobs.find((b) => b.kind === 'layer')!
  const name = `blobs/sha256/${layer.digest.slice(7)}`
  const at = tar.indexOf(Buffer.from(name))
  const flipped = Buffer.from(tar)
  flipped[at + 512 + 100_000]! ^= 0x01
  await fs.writeFile(join(root, 'out', 'flipped.tar'), flipped)
  await fs.writeFile(join(root, 'out', 'cut.tar'), tar.subarray(0, at + 512 + 100_000))

  const target = join(root, 'b')
  for (const [bad, why] of [['flipped.tar', /content has digest/], ['cut.tar', /truncated/]] as const) {
    const ran = await runInProcess(['cache', 'import', join(root, 'out', bad), '--cache-dir', target], env)
    t.equal(ran.code, 1, bad)
    t.match(ran.err, name, `${bad}: names the entry`)
    t.match(ran.err, why, bad)
    t.strictSame(await filesUnder(join(target, 'repositories')), [], `${bad}: no tag recorded`)
  }
})

t.test('import refuses while a daemon serves the cache', async (t) => {
  const env = isolatedEnv(t, {}, { out: {} })
  const file = join(env.DPROXY_CACHE_DIR, '..', 'out', 'cache.tar')
  await exportedCache(t, env, file, ['--image', 'alpine'])
  const ran = await runInProcess(['cache', 'import', file], env)
  t.equal(ran.code, 1)
  t.match(ran.err, /a dproxy daemon \(pid \d+\) serves .*stop it/)
})
