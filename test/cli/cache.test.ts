// `dproxy cache ls|clear|prune`: the command in-process (output, exit codes,
// confirmation) and the built binary as a user runs it, with the daemon down
// (working on the directory) and up (through its admin endpoint), including
// clearing one image while another is being pulled.

import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { ago, formatListing, listCache, shortDigest } from '../../src/cli/cache.js'
import type { EvictionSummary } from '../../src/store/evict.js'
import { Layout } from '../../src/store/layout.js'
import { Store } from '../../src/store/store.js'
import { run } from '../fixtures/clients.js'
import { runInProcess } from '../helpers/cli.js'
import { startUpstream } from '../fixtures/upstream.js'
import { hasManifest, link, putImage, tag } from '../helpers/cache.js'
import { pull, settled, startDaemon } from '../helpers/daemon.js'
import { parseDigest } from '../../src/oci/digest.js'

const bin = fileURLToPath(new URL('../../bin/dproxy.js', import.meta.url))

/**
 * A cache dir and an environment that touches nothing of the user's. Call it once per test,
 * first: every t.testdir() call recreates the same directory.
 */
function isolated(t: Test): { dir: string; env: Record<string, string> } {
  const root = t.testdir({ home: {}, config: {}, state: {}, cache: {} })
  const dir = join(root, 'cache')
  return {
    dir,
    env: { HOME: join(root, 'home'), DPROXY_CONFIG_DIR: join(root, 'config'), DPROXY_STATE_DIR: join(root, 'state'), DPROXY_CACHE_DIR: dir },
  }
}

/** The CLI in-process, with this file's argument order. */
const cli = (env: Record<string, string>, args: string[], opts: { tty?: boolean; answer?: string } = {}) => runInProcess(args, env, opts)

/** Three small images: alpine (two tags), redis sharing nothing, and a digest-only manifest. */
async function smallCache(dir: string) {
  const store = await Store.open(dir)
  const alpine = await putImage(store, 'alpine', [20_000])
  const redis = await putImage(store, 'redis', [30_000])
  const pinned = await putImage(store, 'pinned', [1_000])
  await tag(store, 'docker.io', 'library/alpine', 'latest', alpine.manifest)
  await tag(store, 'docker.io', 'library/alpine', '3', alpine.manifest)
  await tag(store, 'docker.io', 'bitnami/redis', '7.2', redis.manifest)
  await link(store, 'ghcr.io', 'owner/pinned', pinned.manifest)
  return { store, alpine, redis, pinned }
}

t.test('ls: a table, or JSON; an empty or missing cache says so', async (t) => {
  const { dir, env } = isolated(t)
  const none = await cli(env, ['cache', 'ls'])
  t.equal(none.code, 0)
  t.equal(none.out, `no cached images in ${dir}\n`)
  t.strictSame(JSON.parse((await cli(env, ['cache', 'ls', '--json'])).out).images, [])
  t.strictSame(await fs.readdir(dir), [], 'listing created nothing')
  t.strictSame((await listCache(join(dir, 'missing'))).images, [])

  const { alpine, pinned } = await smallCache(dir)
  const table = await cli(env, ['cache', 'ls'])
  t.equal(table.code, 0)
  const lines = table.out.split('\n')
  t.match(lines[0], /^REGISTRY\s+REPOSITORY\s+TAG\s+DIGEST\s+SIZE\s+LAST USED$/)
  t.match(table.out, new RegExp(`docker\\.io\\s+library/alpine\\s+3\\s+${shortDigest(alpine.manifest.digest)}\\s+\\d+(\\.\\d+)?kB\\s+\\d+s ago`))
  t.match(table.out, new RegExp(`ghcr\\.io\\s+owner/pinned\\s+<none>\\s+${shortDigest(pinned.manifest.digest)}`))
  t.match(table.out, /\n4 images, \d+(\.\d+)?kB in /)

  const json = JSON.parse((await cli(env, ['cache', 'ls', '--json'])).out) as Awaited<ReturnType<typeof listCache>>
  t.equal(json.cacheDir, dir)
  t.strictSame(
    json.images.map((i) => `${i.registry}/${i.repository}:${i.tag}`),
    ['docker.io/bitnami/redis:7.2', 'docker.io/library/alpine:3', 'docker.io/library/alpine:latest', 'ghcr.io/owner/pinned:null'],
  )
  t.equal(json.totalBytes, (await (await Store.open(dir)).stats()).bytes)
})

t.test('rendering helpers', async (t) => {
  t.equal(shortDigest(`sha256:${'ab'.repeat(32)}`), 'abababababab')
  t.equal(shortDigest(`sha512:${'cd'.repeat(64)}`), 'sha512:cdcdcdcdcdcd')
  t.equal(ago(5_000), '5s ago')
  t.equal(ago(5 * 60_000), '5m ago')
  t.equal(ago(5 * 3_600_000), '5h ago')
  t.equal(ago(50 * 86_400_000), '50d ago')
  t.equal(ago(-1), 'just now')
  const now = Date.parse('2026-01-02T00:00:00Z')
  const text = formatListing(
    {
      cacheDir: '/c',
      totalBytes: 3000,
      orphans: { manifests: 0, blobs: 1, bytes: 1000 },
      images: [
        {
          registry: 'docker.io',
          repository: 'library/a',
          tag: null,
          digest: `sha256:${'0'.repeat(64)}`,
          mediaType: 'x',
          size: 2000,
          uniqueBytes: 2000,
          manifests: 1,
          blobs: 1,
          complete: false,
          storedAt: '2026-01-01T00:00:00.000Z',
          lastUsed: '2026-01-01T00:00:00.000Z',
        },
      ],
    },
    now,
  )
  t.match(text, /<none>\s+000000000000\s+2kB\*\s+1d ago/)
  t.match(text, /1 image, 3kB in \/c \(1kB in files no image references\)/)
  t.match(text, /\* partly cached/)
})

t.test('clear --image: one image, its tags and its content; a dry run first', async (t) => {
  const { dir, env } = isolated(t)
  const { store, alpine, redis } = await smallCache(dir)
  const before = await store.stats()

  const dry = await cli(env, ['cache', 'clear', '--image', 'alpine', '--dry-run'])
  t.equal(dry.code, 0)
  t.match(dry.out, /^would free \d+(\.\d+)?kB: 2 images, 1 manifest, 2 blobs\n  docker\.io\/library\/alpine:3\n  docker\.io\/library\/alpine:latest\ndry run: nothing was removed\n$/)
  t.strictSame(await store.stats(), before)

  const real = await cli(env, ['cache', 'clear', '--image', 'docker.io/library/alpine', '--json'])
  t.equal(real.code, 0, real.err)
  const summary = JSON.parse(real.out) as EvictionSummary & { via: string }
  t.match(summary, { via: 'direct', dryRun: false, tags: 2, manifests: 1, blobs: 2 })
  t.notOk(await hasManifest(store, alpine.manifest))
  t.ok(await hasManifest(store, redis.manifest))
  await t.rejects(fs.stat(new Layout(dir).cacheLock), { code: 'ENOENT' }, 'lock released')

  const nothing = await cli(env, ['cache', 'clear', '--image', 'alpine'])
  t.equal(nothing.out, 'nothing cached for docker.io/library/alpine\n')
})

t.test('clear with no filter: asks on a terminal, refuses without one unless --yes', async (t) => {
  const { dir, env } = isolated(t)
  const { store } = await smallCache(dir)
  const before = await store.stats()

  const refused = await cli(env, ['cache', 'clear'])
  t.equal(refused.code, 2)
  t.match(refused.err, /refusing to clear the whole cache without confirmation: pass --yes/)
  t.strictSame(await store.stats(), before)

  const declined = await cli(env, ['cache', 'clear'], { tty: true, answer: 'n\n' })
  t.equal(declined.code, 0)
  t.match(declined.err, new RegExp(`Remove everything cached in ${dir}\\? \\[y/N\\] nothing removed`))
  t.strictSame(await store.stats(), before)

  const dry = await cli(env, ['cache', 'clear', '--dry-run'])
  t.equal(dry.code, 0, 'a dry run needs no confirmation')
  t.match(dry.out, /^would free .*: 4 images, 3 manifests, 6 blobs/)

  const accepted = await cli(env, ['cache', 'clear'], { tty: true, answer: 'yes\n' })
  t.equal(accepted.code, 0)
  t.match(accepted.out, /^freed .*: 4 images, 3 manifests, 6 blobs\n(  .*\n){4}cache now 0B\n$/)
  t.strictSame(await store.stats(), { bytes: 0, blobs: 0, manifests: 0, tags: 0, tempFiles: 0, tempBytes: 0 })

  await smallCache(dir)
  const yes = await cli(env, ['cache', 'clear', '--yes', '--json'])
  t.equal(yes.code, 0)
  t.equal((JSON.parse(yes.out) as EvictionSummary).images.length, 4)
})

t.test('usage errors exit 2 and change nothing; a held lock exits 1', async (t) => {
  const { dir, env } = isolated(t)
  const { store } = await smallCache(dir)
  const before = await store.stats()
  for (const args of [
    ['cache', 'clear', '--image', 'Not/Valid'],
    ['cache', 'clear', '--image', 'alpine@sha256:nope'],
    ['cache', 'clear', '--older-than', 'soon'],
    ['cache', 'clear', '--unused-for', '3 months'],
    ['cache', 'prune'],
    ['cache', 'prune', '--max-size', 'big'],
    ['cache', 'prune', '--max-size', '0', '--ttl', '0'],
    ['cache', 'nope'],
  ]) {
    const r = await cli(env, args)
    t.equal(r.code, 2, args.join(' '))
    t.not(r.err, '', `${args.join(' ')}: says why`)
  }
  t.strictSame(await store.stats(), before)

  // Another command (pid 1 stands in: always alive) holds the lock.
  await fs.writeFile(new Layout(dir).cacheLock, JSON.stringify({ pid: 1 }))
  const locked = await cli(env, ['cache', 'clear', '--image', 'alpine'])
  t.equal(locked.code, 1)
  t.match(locked.err, /another dproxy command \(pid 1\) is changing the cache/)
  t.equal((await cli(env, ['cache', 'clear', '--image', 'alpine', '--dry-run'])).code, 0, 'a dry run takes no lock')
  t.strictSame(await store.stats(), before)
})

t.test('a daemon that holds the cache but does not answer: clear and prune change nothing', async (t) => {
  const { dir, env } = isolated(t)
  const { store } = await smallCache(dir)
  const before = await store.stats()
  // A live pid (this process) whose address answers nothing: busy, starting or stopping.
  const info = { pid: process.pid, startedAt: new Date().toISOString(), listen: ['127.0.0.1:1'], url: 'http://127.0.0.1:1', version: 'test' }
  await fs.writeFile(new Layout(dir).daemonFile, JSON.stringify(info))
  for (const args of [['cache', 'clear', '--image', 'alpine'], ['cache', 'prune', '--max-size', '1']]) {
    const r = await cli(env, args)
    t.equal(r.code, 1, args.join(' '))
    t.match(r.err, `a dproxy daemon (pid ${process.pid}) serves`)
  }
  t.strictSame(await store.stats(), before, 'nothing removed under the daemon')
})

t.test('prune --max-size: least recently used first; the configured limits by default', async (t) => {
  const { dir, env } = isolated(t)
  const { store, alpine, redis } = await smallCache(dir)
  const day = 86_400_000
  await fs.utimes(store.layout.manifest(parseDigest(alpine.manifest.digest)), new Date(Date.now() - 3 * day), new Date(Date.now() - 3 * day))
  const total = (await store.stats()).bytes

  const r = await cli(env, ['cache', 'prune', '--max-size', String(total - 1), '--json'])
  t.equal(r.code, 0, r.err)
  const summary = JSON.parse(r.out) as EvictionSummary & { fits: boolean; via: string }
  t.match(summary, { via: 'direct', fits: true, maxSizeBytes: total - 1, ttlMs: null })
  t.strictSame(summary.images.map((i) => i.tag).sort(), ['3', 'latest'])
  t.notOk(await hasManifest(store, alpine.manifest))
  t.ok(await hasManifest(store, redis.manifest))

  await cli(env, ['config', 'set', 'ttl', '1d'])
  const viaSettings = await cli(env, ['cache', 'prune', '--dry-run'])
  t.equal(viaSettings.code, 0, viaSettings.err)
  t.match(viaSettings.out, /^nothing to remove\n$/, 'the configured ttl: nothing unused for a day')
  t.match((await cli(env, ['cache', 'prune', '--max-size', '1', '--dry-run'])).out, /^would free [^]*\ndry run: nothing was removed\n$/)
})

// ---- the built binary

t.test('binary, daemon down: cache ls --json and cache clear --image alpine --yes', async (t) => {
  const { dir, env } = isolated(t)
  const { store, alpine, redis } = await smallCache(dir)
  const ls = await run(process.execPath, [bin, 'cache', 'ls', '--json'], { env, timeoutMs: 30_000 })
  t.equal(ls.code, 0, ls.stderr)
  t.equal((JSON.parse(ls.stdout) as { images: unknown[] }).images.length, 4)

  const clear = await run(process.execPath, [bin, 'cache', 'clear', '--image', 'alpine', '--yes'], { env, timeoutMs: 30_000 })
  t.equal(clear.code, 0, clear.stderr)
  t.match(clear.stdout, /^freed \d+(\.\d+)?kB: 2 images, 1 manifest, 2 blobs\n/)
  t.notOk(await hasManifest(store, alpine.manifest))
  t.ok(await hasManifest(store, redis.manifest))
  t.strictSame((await fs.readdir(dir)).filter((f) => f.includes('lock')), [], 'no lock file left')

  const help = await run(process.execPath, [bin, 'cache', 'clear', '--help'], { env, timeoutMs: 30_000 })
  t.equal(help.code, 0)
  t.match(help.stdout, /--older-than <duration>/)
})

t.test('binary, daemon up: clearing image A through the daemon while image B (100 MiB) is being pulled', async (t) => {
  const { dir, env } = isolated(t)
  const up = await startUpstream({ big: true })
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up, {
    cacheDir: dir,
    // As `dproxy serve` keeps it: the CLI reads it from the same state dir to clear through the daemon.
    adminTokenFile: join(env.DPROXY_STATE_DIR!, 'admin-token'),
    timeouts: { connectMs: 2000, headersMs: 20_000, bodyMs: 30_000 },
  })
  const big = up.images.big!
  const layer = big.blobs.find((b) => b.kind === 'layer')!
  await pull(d.url, 'alpine', 'latest')
  await settled(d)

  // B's big layer is held back upstream, so its pull is in flight for the whole clear.
  up.hub.inject({ kind: 'slow', digest: layer.digest, at: 'cdn', delayMs: 3000 })
  const pulling = pull(d.url, 'library/big', '1')
  for (let i = 0; i < 500 && d.blobs.inflight === 0; i++) await new Promise((r) => setTimeout(r, 10))
  t.equal(d.blobs.inflight, 1, 'the big layer is downloading')

  const clear = await run(process.execPath, [bin, 'cache', 'clear', '--image', 'alpine', '--json'], { env, timeoutMs: 30_000 })
  t.equal(clear.code, 0, clear.stderr)
  const summary = JSON.parse(clear.stdout) as EvictionSummary & { via: string }
  t.equal(summary.via, 'daemon', 'went through the running daemon')
  t.strictSame(summary.images.map((i) => `${i.repository}:${i.tag}`), ['library/alpine:latest'])
  t.equal(d.blobs.inflight, 1, 'B was still being pulled when the clear finished')

  const done = await pulling
  t.strictSame(done.digests.sort(), big.blobs.map((b) => b.digest).sort(), 'B pulled completely, every digest verified')
  await settled(d)
  t.ok(await d.store.getTag('docker.io', 'library/big', '1'), 'B is cached: its tag')
  t.ok(await d.store.hasManifest(parseDigest(big.digest)), 'its manifest')
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), layer.size, 'its 100 MiB layer')
  t.equal(await d.store.getTag('docker.io', 'library/alpine', 'latest'), undefined, 'A is gone')
  for (const b of up.images.alpine.blobs) t.equal(await d.store.statBlob(parseDigest(b.digest)), undefined)
})
