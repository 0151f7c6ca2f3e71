// Keep serving when the disk fails. A full disk, a read-only cache or lost
// permissions must not turn cached pulls into 500s: what is cached is served,
// new content streams past the cache (verified), the cause is logged once and
// shown by `status`, and the error is a disk error, never an upstream one.
// Failures are injected into node:fs with t.mockImport (every write the store
// makes: records, blob temp files, renames) and, for real, with a small tmpfs
// filled up while the daemon runs.

import { promises as fs } from 'node:fs'
import type * as FsModule from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { formatStatusText } from '../../src/cli/status.js'
import type { Daemon } from '../../src/daemon/daemon.js'
import { collectStatus } from '../../src/control/status.js'
import { isDproxyError } from '../../src/errors.js'
import type { Logger } from '../../src/log.js'
import { toWire } from '../../src/registry/errors.js'
import { Store } from '../../src/store/store.js'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import { blobDigests, pull, settled, startDaemon } from '../helpers/daemon.js'
import { mountTmpfs, TMPFS_NEEDS } from '../helpers/tmpfs.js'
import { parseDigest } from '../../src/oci/digest.js'

type Op = 'record' | 'blob' | 'rename'

function collectingLogger(): Logger & { lines: string[] } {
  const lines: string[] = []
  return { lines, info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`), error: (m) => lines.push(`error ${m}`) }
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected`), { code })
}

interface Faults {
  ops: Set<Op>
  code: string
}

/** node:fs whose writes into a cache fail with `faults.code`, for each kind of write in `faults.ops`. */
async function faultyFs(fault: Faults): Promise<typeof FsModule> {
  const real = await import('node:fs')
  const p = real.promises
  return {
    ...real,
    promises: {
      ...p,
      // Tag records and manifests: a small temp file, then a rename.
      writeFile: async (...args: Parameters<typeof p.writeFile>) => {
        if (fault.ops.has('record') && /[/\\]tmp[/\\]\d+-w-/.test(String(args[0]))) throw errno(fault.code)
        return p.writeFile(...args)
      },
      // Blobs: the temp file opens, the bytes do not fit.
      open: async (...args: Parameters<typeof p.open>) => {
        const fh = await p.open(...args)
        if (fault.ops.has('blob') && args[1] === 'wx') {
          fh.writev = async () => {
            throw errno(fault.code)
          }
        }
        return fh
      },
      rename: async (...args: Parameters<typeof p.rename>) => {
        if (fault.ops.has('rename')) throw errno(fault.code)
        return p.rename(...args)
      },
    },
  } as typeof FsModule
}

/** store.js with the faulty node:fs, in it and in its verifying writer (tap's mocks reach direct imports only). */
async function faultyStore(t: Test, fault: Faults): Promise<typeof import('../../src/store/store.js')> {
  const fs = await faultyFs(fault)
  return t.mockImport<typeof import('../../src/store/store.js')>('../../src/store/store.js', {
    'node:fs': fs,
    '../../src/store/writer.js': await t.mockImport('../../src/store/writer.js', { 'node:fs': fs }),
  })
}

t.test('the store turns disk conditions into CACHE_UNAVAILABLE, logged once per cause', async (t) => {
  const fault: Faults = { ops: new Set(), code: 'ENOSPC' }
  const { Store: Faulty } = await faultyStore(t, fault)
  const log = collectingLogger()
  const store = await Faulty.open(t.testdir(), { log })
  const rec = { digest: `sha256:${'a'.repeat(64)}`, mediaType: 'application/json', size: 1, checkedAt: 0 }
  fault.ops.add('record')
  for (let i = 0; i < 3; i++) {
    const err = await store.putTag('docker.io', 'library/a', 'v1', rec).catch((e: unknown) => e)
    t.ok(isDproxyError(err, 'CACHE_UNAVAILABLE'), 'a disk error')
    t.equal((err as Error).message, 'cache disk full (ENOSPC): cannot store tag library/a:v1')
    t.strictSame(toWire(err), { status: 503, code: 'UNAVAILABLE', message: 'cache disk full (ENOSPC): cannot store tag library/a:v1' })
  }
  t.equal(log.lines.filter((l) => l.startsWith('warn')).length, 1, 'logged once for three failures')
  t.match(log.lines.find((l) => l.startsWith('warn')), /^warn cache not writable: disk full \(ENOSPC\) at .*_tags.v1;/)
  t.equal(store.health.failure?.reason, 'disk full (ENOSPC)')

  fault.code = 'EROFS'
  await t.rejects(store.putTag('docker.io', 'library/a', 'v1', rec), { code: 'CACHE_UNAVAILABLE' })
  t.equal(log.lines.filter((l) => l.startsWith('warn')).length, 2, 'a new cause is logged')
  t.equal(store.health.failure?.reason, 'disk full (ENOSPC)', 'status keeps the first cause until the cache recovers')

  fault.ops.clear()
  await store.putTag('docker.io', 'library/a', 'v1', rec)
  t.equal(store.health.failure, undefined, 'writable again')
  t.match(log.lines.at(-1), /^info cache writable again/)

  // Not a disk condition: passed on unchanged.
  fault.ops.add('record')
  fault.code = 'EINVAL'
  await t.rejects(store.putTag('docker.io', 'library/a', 'v1', rec), { code: 'EINVAL' })
  t.equal(store.health.failure, undefined)
})

for (const code of ['ENOSPC', 'EROFS', 'EACCES']) {
  t.test(`${code}: cached pulls keep working, new blobs stream past the cache, status says why`, async (t) => {
    const up = await startUpstream()
    t.teardown(() => up.stop())
    // Added one after the other, as a disk filling up refuses more and more.
    const fault: Faults = { ops: new Set(), code }
    // tap's mocks reach the modules daemon.js imports itself, so the store comes in already mocked.
    const { Daemon: Faulty } = await t.mockImport<typeof import('../../src/daemon/daemon.js')>('../../src/daemon/daemon.js', {
      '../../src/store/store.js': await faultyStore(t, fault),
    })
    const log = collectingLogger()
    const cacheDir = t.testdir()
    const d = await Faulty.start({
      hosts: ['127.0.0.1'],
      port: 0,
      cacheDir,
      upstreams: { 'docker.io': up.hubUrl },
      timeouts: { connectMs: 2000, headersMs: 5000, bodyMs: 5000 },
      log,
    })
    t.teardown(() => d.stop(0))
    const { alpine, redis, layers } = up.images
    await pull(d.url, 'alpine', 'latest')
    await settled(d)

    // The tag record rewrite fails: the cached tag is served anyway.
    fault.ops.add('record')
    for (let i = 0; i < 3; i++) {
      const again = await pull(d.url, 'alpine', 'latest')
      t.equal(again.manifest.headers['docker-content-digest'], alpine.digest, `tag pull ${i + 1} served`)
    }
    // A new image: its manifest cannot be stored, its blobs cannot be written; all served, verified by pull().
    fault.ops.add('blob')
    up.hub.resetCounts()
    const fresh = await pull(d.url, redis.repository, redis.tag)
    t.ok(fresh.manifest.body.equals(redis.manifest))
    await settled(d)
    for (const digest of blobDigests(redis)) {
      t.equal(await d.store.statBlob(parseDigest(digest)), undefined, `blob ${digest.slice(7, 19)} not cached`)
    }
    // Renames fail: the bytes verified, the client has them, the cache does not.
    fault.ops.add('rename')
    await pull(d.url, layers.repository, layers.tag)
    await settled(d)
    t.equal(await d.store.statBlob(parseDigest(layers.blobs[0]!.digest)), undefined, 'not renamed into the cache')
    t.strictSame((await fs.readdir(d.store.layout.tmpDir)), [], 'no temp file left')

    const warnings = log.lines.filter((l) => l.startsWith('warn') || l.startsWith('error'))
    t.equal(warnings.length, 1, `one line for the cause, not one per request: ${warnings.join(' | ')}`)
    t.notMatch(log.lines.join('\n'), /upstream unavailable|UPSTREAM/i, 'never blamed on upstream')
    const status = await d.status()
    t.match(status.cacheNotWritable, { reason: new RegExp(`\\(${code}\\)$`), since: String })

    // The disk is back: the next pull fills the cache and status clears.
    fault.ops.clear()
    await pull(d.url, redis.repository, redis.tag)
    await settled(d)
    for (const digest of blobDigests(redis)) t.ok(await d.store.statBlob(parseDigest(digest)), `blob ${digest.slice(7, 19)} cached now`)
    t.equal((await d.status()).cacheNotWritable, undefined)
  })
}

t.test('a real full disk: tmpfs filled up while the daemon runs', async (t) => {
  let d: Daemon | undefined
  let up: Upstream | undefined
  // Nothing may hold a file on the mount when it goes.
  const dir = await mountTmpfs(t, '8m', async () => {
    await d?.stop(0)
    await up?.stop()
  })
  if (dir === undefined) {
    t.plan(0, TMPFS_NEEDS)
    return
  }
  up = await startUpstream()
  const log = collectingLogger()
  d = await startDaemon(t, up, { cacheDir: join(dir, 'cache'), log })
  const { alpine, redis } = up.images
  await pull(d.url, 'alpine', 'latest')
  await settled(d)

  // Fill the file system to the last byte.
  const filler = join(dir, 'filler')
  const fh = await fs.open(filler, 'w')
  const block = Buffer.alloc(64 * 1024, 1)
  try {
    for (let i = 0; i < 1024; i++) await fh.write(block)
    t.fail('the tmpfs never filled up')
  } catch (err) {
    t.equal((err as NodeJS.ErrnoException).code, 'ENOSPC', 'disk full')
  } finally {
    await fh.close()
  }

  for (let i = 0; i < 2; i++) {
    const again = await pull(d.url, 'alpine', 'latest')
    t.equal(again.manifest.headers['docker-content-digest'], alpine.digest, 'cached tag served')
  }
  const fresh = await pull(d.url, redis.repository, redis.tag)
  t.ok(fresh.manifest.body.equals(redis.manifest), 'a new image is served past the cache')
  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(redis.blobs[1]!.digest)), undefined, 'and not cached')

  const snapshot = await collectStatus({ cacheDir: d.store.root, probe: false })
  t.equal(snapshot.cache.notWritable, 'disk full (ENOSPC)')
  t.match(formatStatusText(snapshot), /cache not writable: disk full \(ENOSPC\)/, 'dproxy status says so')
  t.equal(log.lines.filter((l) => /cache not writable/.test(l)).length, 1, 'logged once')

  await fs.rm(filler)
  await pull(d.url, redis.repository, redis.tag)
  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(redis.blobs[1]!.digest)), redis.blobs[1]!.size, 'cached once there is room')
  t.equal((await collectStatus({ cacheDir: d.store.root, probe: false })).cache.notWritable, undefined)
})

t.test('what the store creates is private to the user; a looser cache dir is tightened with a notice', async (t) => {
  if (process.platform === 'win32') {
    t.plan(0, 'POSIX modes only')
    return
  }
  const root = t.testdir()
  await fs.chmod(root, 0o755)
  const log = collectingLogger()
  const store = await Store.open(root, { log })
  t.equal((await fs.stat(root)).mode & 0o777, 0o700, 'cache dir 0700')
  t.strictSame(log.lines.filter((l) => /was open to other users \(mode 0755\); now 0700/.test(l)).length, 1, 'one notice')

  const d = parseDigest(`sha256:${'b'.repeat(64)}`)
  await store.putManifest(d, Buffer.from('{}'), 'application/json')
  await store.putTag('docker.io', 'library/a', 'v1', { digest: d.value, mediaType: 'application/json', size: 2, checkedAt: 0 })
  await store.linkManifest('docker.io', 'library/a', d)
  const blob = Buffer.from('hello')
  const bd = parseDigest('sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824')
  const w = await store.createBlobWriter(bd, blob.length)
  await w.write(blob)
  await w.commit()

  const modes: string[] = []
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fs.readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name)
      const mode = (await fs.stat(p)).mode & 0o777
      if (e.isDirectory()) {
        if (mode !== 0o700) modes.push(`${p} ${mode.toString(8)}`)
        await walk(p)
      } else if (mode !== 0o600) modes.push(`${p} ${mode.toString(8)}`)
    }
  }
  await walk(root)
  t.strictSame(modes, [], 'every dir 0700, every file 0600')

  const quiet = collectingLogger()
  await Store.open(root, { log: quiet })
  t.strictSame(quiet.lines, [], 'no notice once it is private')
})

t.test('the last-used memory is bounded: the least recently touched are forgotten', async (t) => {
  let now = 1_000_000
  const store = await Store.open(t.testdir(), { clock: { now: () => now }, touchIntervalMs: 60_000, touchMemory: 2 })
  const digests = ['1', '2', '3'].map((c) => parseDigest(`sha256:${c.repeat(64)}`))
  for (const d of digests) {
    await fs.mkdir(join(store.blobPath(d), '..'), { recursive: true })
    await fs.writeFile(store.blobPath(d), 'x')
  }
  const atime = async (i: number) => (await fs.stat(store.blobPath(digests[i]!))).atimeMs
  for (const d of digests) await store.touchBlob(d)
  t.equal(await atime(0), now, 'touched')
  now += 1000
  await store.touchBlob(digests[2]!)
  t.equal(await atime(2), now - 1000, 'remembered: not rewritten within the interval')
  await store.touchBlob(digests[0]!)
  t.equal(await atime(0), now, 'forgotten (bounded at 2): rewritten')
})
