// serve --refresh against the real registry behind the Hub shim: a retag is
// picked up within an interval (index, the platforms cached before, layers),
// so it pulls offline afterwards; a registry under the reserve is left alone;
// an upstream that is down leaves the cached version in place.

import t from 'tap'
import { amd64, arm64, buildIndex } from '../fixtures/images.js'
import { startUpstream } from '../fixtures/upstream.js'
import { pull, startDaemon } from '../helpers/daemon.js'
import type { Daemon } from '../../src/daemon/daemon.js'
import { parseDigest } from '../../src/oci/digest.js'

/** Resolves with the next refresh run that starts after now (bounded). */
async function nextRun(d: Daemon) {
  const after = new Date().toISOString()
  const until = Date.now() + 20_000
  for (;;) {
    const run = d.refresher!.status().lastRun
    if (run && run.startedAt > after && run.finishedAt !== null) return run
    if (Date.now() > until) throw new Error('no refresh run finished within 20 s')
    await new Promise((r) => setTimeout(r, 20))
  }
}

t.test('--refresh picks up a retag within an interval, with the platforms cached before', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up, { refresh: { intervalMs: 200, windowMs: 14 * 24 * 3600 * 1000, reserve: 0.2 } })
  await pull(d.url, 'library/multi', 'latest')
  const status = d.refresher!.status()
  t.match(status, { intervalSeconds: 0.2, windowSeconds: 14 * 24 * 3600, reserve: 0.2 })
  t.ok(status.running || status.nextRun !== null, 'a run is going or scheduled')

  const moved = buildIndex({ repository: 'library/multi', tag: 'latest', seed: 'multi-next', platforms: [amd64, arm64], layers: [32 * 1024] })
  await up.retag('library/multi', 'latest', moved)
  await nextRun(d)
  const run = await nextRun(d)
  t.match(run, { failed: 0, paused: 0 })
  t.equal((await d.store.getTag('docker.io', 'library/multi', 'latest'))?.digest, moved.digest, 'the tag follows upstream')
  for (const c of moved.children) t.ok(await d.store.hasManifest(parseDigest(c.digest)), `child ${c.platform.architecture} cached`)
  for (const b of moved.blobs) t.ok((await d.store.statBlob(parseDigest(b.digest))) !== undefined, `blob ${b.kind} cached`)
  t.match((await d.status()).refresh, { lastRun: { checked: 1 } })

  // Offline now: the new version pulls entirely from the cache.
  await up.hub.setMode('refuse')
  const offline = await pull(d.url, 'library/multi', 'latest')
  t.equal(offline.digests.length, moved.blobs.length)
})

t.test('a registry under the reserve is paused; a registry that is down keeps the cached version', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up, { refresh: { intervalMs: 200, windowMs: 14 * 24 * 3600 * 1000, reserve: 0.2 } })
  await pull(d.url, 'library/alpine', 'latest')
  const cached = await d.store.getTag('docker.io', 'library/alpine', 'latest')
  const moved = buildIndex({ repository: 'library/alpine', tag: 'latest', seed: 'alpine-next', platforms: [amd64], layers: [8 * 1024] })
  await up.retag('library/alpine', 'latest', moved)

  // Down: the run fails for the tag, which keeps pointing at the cached version.
  await up.hub.setMode('down-5xx')
  const down = await nextRun(d)
  t.ok(down.failed >= 1, 'the failure is counted')
  t.equal((await d.store.getTag('docker.io', 'library/alpine', 'latest'))?.digest, cached?.digest, 'the cached version stays')

  // Back with 10 of 100 left, under the 20% reserve: the HEAD tells the daemon, and it spends nothing.
  up.hub.setRemaining(10)
  await up.hub.setMode('up')
  up.hub.resetCounts()
  const paused = await nextRun(d)
  t.ok(paused.paused >= 1, 'paused under the reserve')
  t.equal(up.hub.counts.manifestGet, 0, 'no pull spent')
  t.equal((await d.store.getTag('docker.io', 'library/alpine', 'latest'))?.digest, cached?.digest)
})
