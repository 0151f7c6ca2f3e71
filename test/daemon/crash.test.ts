// The daemon as a process that can die at any moment: `dproxy serve` is
// killed with SIGKILL at several points of a 100 MiB download, then started
// again on the same cache dir. The restart must leave no temp file behind,
// every file in the cache must still hash to its name, and the next pull
// must succeed.

import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { createReadStream, promises as fs } from 'node:fs'
import { basename, join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { startUpstream } from '../fixtures/upstream.js'
import { isolatedEnv, runDproxy, spawnServe, type Serving } from '../helpers/cli.js'
import { get, pull } from '../helpers/daemon.js'
import { walk } from '../../src/store/store.js'

const MiB = 1024 * 1024

async function sha256File(path: string, algorithm: string): Promise<string> {
  const hash = createHash(algorithm)
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** Every blob and manifest file hashes to the digest its path names. */
async function cacheFilesVerify(cacheDir: string): Promise<string[]> {
  const bad: string[] = []
  let files = 0
  for (const dir of ['blobs', 'manifests']) {
    await walk(join(cacheDir, dir), async (path) => {
      if (path.endsWith('.type')) return
      files++
      const algorithm = basename(join(path, '..', '..'))
      if ((await sha256File(path, algorithm)) !== basename(path)) bad.push(path)
    })
  }
  return files === 0 ? ['no cached file at all'] : bad
}

async function kill(s: Serving): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return
  const exited = once(s.child, 'exit')
  s.child.kill('SIGKILL')
  await exited
}

/** Polls (bounded) until tmp/ holds the download of `digest` with at least `size` bytes. */
async function tempReaches(tmpDir: string, digest: string, size: number): Promise<boolean> {
  for (let i = 0; i < 1500; i++) {
    for (const name of await fs.readdir(tmpDir).catch(() => [])) {
      if (!name.includes(digest.slice(7, 23))) continue
      const st = await fs.stat(join(tmpDir, name)).catch(() => undefined)
      if (st && st.size >= size) return true
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  return false
}

t.test('kill -9 during a large download: the restart removes its temp file; the cache stays verified', async (t) => {
  const up = await startUpstream({ big: true, hub: { unlimited: true } })
  t.teardown(() => up.stop())
  const env = isolatedEnv(t)
  const cacheDir = env.DPROXY_CACHE_DIR!
  const tmpDir = join(cacheDir, 'tmp')
  const args = ['--host', '127.0.0.1', '--port', '0', '--upstream', `docker.io=${up.hubUrl}`]
  const big = up.images.big!
  const layer = big.blobs.find((b) => b.kind === 'layer')!
  const config = big.blobs.find((b) => b.kind === 'config')!

  for (const at of [0, 1 * MiB, 60 * MiB, layer.size - 1]) {
    up.hub.inject({ kind: 'stall', digest: layer.digest, at: 'cdn', stallAt: at })
    const s = await spawnServe(t, args, env)
    t.equal((await get(`${s.base}/v2/library/big/manifests/1`, { accept: big.mediaType })).status, 200)
    t.equal((await get(`${s.base}/v2/library/big/blobs/${config.digest}`)).status, 200)
    const downloading = request(`${s.base}/v2/library/big/blobs/${layer.digest}`)
      .then((res) => res.body.dump())
      .catch(() => {})
    t.ok(await tempReaches(tmpDir, layer.digest, at), `${at} bytes: the download is under way`)
    await kill(s)
    await downloading
    const left = await fs.readdir(tmpDir)
    t.ok(left.some((name) => name.includes(layer.digest.slice(7, 23))), `${at} bytes: the killed daemon left its temp file`)
    if (at === 1 * MiB) {
      const status = await runDproxy(['status', '--json'], env)
      t.ok(JSON.parse(status.out).cache.tempBytes >= at, 'status counts the temp bytes')
    }

    const again = await spawnServe(t, args, env)
    t.strictSame(await fs.readdir(tmpDir), [], `${at} bytes: no temp file after the restart`)
    t.strictSame(await cacheFilesVerify(cacheDir), [], `${at} bytes: every cached file hashes to its name`)
    await kill(again)
  }

  up.hub.clearFaults()
  const last = await spawnServe(t, args, env)
  const { digests } = await pull(last.base, 'library/big', '1')
  t.ok(digests.includes(layer.digest), 'the next pull succeeds, verified')
  t.strictSame(await cacheFilesVerify(cacheDir), [])
  last.child.kill('SIGTERM')
  t.equal((await once(last.child, 'exit'))[0], 0)
  t.strictSame(await fs.readdir(tmpDir), [])
})
