// `dproxy cache export` / `import` end to end, with the real registry fixture
// and skopeo: a cache filled by pulling through a daemon is exported; an
// empty cache whose upstream is down imports it, and skopeo then pulls every
// image (--all) through a daemon on it without the upstream; skopeo reads the
// exported archive; an archive skopeo made from the registry imports; a
// corrupted or cut archive is refused with nothing recorded; with a daemon
// serving the cache, the import goes through it (file or stdin), and so do
// the refusals.

import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { freePort, makeTempDir, skopeoCopy, skopeoCopyAll } from '../fixtures/clients.js'
import { catalogueImages } from '../fixtures/images.js'
import { startUpstream } from '../fixtures/upstream.js'
import { isolatedEnv, runInProcess } from '../helpers/cli.js'
import { pull, settled, startDaemon } from '../helpers/daemon.js'
import type { Daemon } from '../../src/daemon/daemon.js'
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

/** A daemon on `cacheDir` whose upstream is down, holding its admin token where the CLI looks for it. */
async function offlineDaemon(t: Test, env: Record<string, string>, cacheDir: string) {
  const dead = `http://127.0.0.1:${await freePort()}`
  return startDaemon(t, undefined, { cacheDir, upstreams: { 'docker.io': dead }, adminTokenFile: join(env.DPROXY_STATE_DIR!, 'admin-token') })
}

/** skopeo pulls every fixture image (--all) through `daemon`, byte-identical, and the upstream sees nothing. */
async function pullsEverything(t: Test, daemon: Daemon) {
  const before = JSON.stringify(up.hub.counts)
  const host = new URL(daemon.url).host
  for (const image of images) {
    const dest = makeTempDir('dproxy-import-', t)
    await skopeoCopyAll(`${host}/${image.ref}`, dest, { timeoutMs: 120_000 })
    const copied = await fs.readFile(join(dest, 'manifest.json'))
    t.ok(copied.equals(image.manifest), `${image.ref}: pulled from the imported cache, byte-identical`)
    for (const blob of image.blobs) t.ok((await fs.stat(join(dest, blob.digest.slice(7)))).size === blob.size, `${image.ref}: ${blob.digest}`)
  }
  t.equal(JSON.stringify(up.hub.counts), before, 'the upstream saw no request')
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

  await pullsEverything(t, await offlineDaemon(t, env, target))

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

/** An archive of alpine with one byte of a layer flipped, and one cut inside that layer; and the entry's name. */
async function badArchives(t: Test, env: Record<string, string>) {
  const root = join(env.DPROXY_CACHE_DIR!, '..')
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
  return { name, bad: [[join(root, 'out', 'flipped.tar'), /content has digest/], [join(root, 'out', 'cut.tar'), /truncated/]] as const }
}

/** `said`: what the message must also say (who refused it). */
async function refusesBadArchives(t: Test, env: Record<string, string>, target: string, said?: RegExp) {
  const { name, bad } = await badArchives(t, env)
  for (const [file, why] of bad) {
    const ran = await runInProcess(['cache', 'import', file, '--cache-dir', target], env)
    t.equal(ran.code, 1, file)
    t.match(ran.err, name, `${file}: names the entry`)
    t.match(ran.err, why, file)
    if (said) t.match(ran.err, said, file)
    t.strictSame(await filesUnder(join(target, 'repositories')), [], `${file}: no tag recorded`)
  }
}

t.test('a corrupted or cut archive is refused naming the entry; nothing is recorded', async (t) => {
  const env = isolatedEnv(t, {}, { out: {}, b: {} })
  await refusesBadArchives(t, env, join(env.DPROXY_CACHE_DIR, '..', 'b'))
})

t.test('with a daemon serving the cache, import goes through it: from stdin, then every image pulls with the upstream down', async (t) => {
  const env = isolatedEnv(t, {}, { out: {}, b: {} })
  const root = join(env.DPROXY_CACHE_DIR, '..')
  const file = join(root, 'out', 'cache.tar')
  await exportedCache(t, env, file)
  const target = join(root, 'b')
  const b = await offlineDaemon(t, env, target)
  const imported = await runInProcess(['cache', 'import', '-', '--cache-dir', target, '--json'], env, { input: await fs.readFile(file) })
  t.equal(imported.code, 0, imported.err)
  const summary = JSON.parse(imported.out) as { images: string[]; skipped: unknown[] }
  t.strictSame(summary.images.sort(), images.map((i) => `docker.io/${i.ref}`).sort())
  t.strictSame(summary.skipped, [])
  await pullsEverything(t, b)
})

t.test('through a daemon, a corrupted or cut archive is refused naming the entry; nothing is recorded', async (t) => {
  const env = isolatedEnv(t, {}, { out: {}, b: {} })
  const target = join(env.DPROXY_CACHE_DIR, '..', 'b')
  const b = await offlineDaemon(t, env, target)
  await refusesBadArchives(t, env, target, /the daemon refused/)
  t.equal((await b.store.stats()).tags, 0, 'the daemon recorded no tag')
})
