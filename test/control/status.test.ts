// collectStatus against a real in-process daemon and the Docker-Hub-like
// fixture: the probe's reading must be the shim's own counter, with the daemon
// up or down, logged in or not, and fall back to the daemon's last reading
// when the probe cannot reach upstream.

import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import {
  collectStatus,
  describeLimit,
  describeReading,
  diskStats,
  formatAge,
  formatWindow,
  headroom,
  probeDockerHub,
  RATE_LIMIT_PROBE,
  type RateLimitRow,
} from '../../src/control/status.js'
import { startUpstream } from '../fixtures/upstream.js'
import { pull, settled, startDaemon } from '../helpers/daemon.js'

t.test('daemon running: daemon, cache and counters from it; the probe reads what the hub counts', async (t) => {
  const up = await startUpstream({ hub: { limit: 50, windowSeconds: 3600 } })
  t.teardown(() => up.stop())
  await up.retag(RATE_LIMIT_PROBE.repository, RATE_LIMIT_PROBE.tag, up.images.alpine)
  const cacheDir = t.testdir()
  const d = await startDaemon(t, up, { cacheDir })
  await pull(d.url, 'alpine', 'latest')
  await pull(d.url, 'alpine', 'latest')
  await pull(d.url, 'bitnami/redis', up.images.redis.ref.split(':').pop()!)
  await settled(d)
  const getsBefore = up.hub.counts.manifestGet

  const headsBefore = d.upstreams.counters.manifestHeads
  const hubHeadsBefore = up.hub.counts.manifestHeadByRepo[RATE_LIMIT_PROBE.repository] ?? 0
  const s = await collectStatus({ cacheDir, upstreams: { 'docker.io': up.hubUrl } })
  t.equal(up.hub.counts.manifestGet, getsBefore, 'the probe made no counted GET')
  t.equal(up.hub.counts.manifestHeadByRepo[RATE_LIMIT_PROBE.repository], hubHeadsBefore + 1, 'the running daemon made the probe, as it pulls')
  t.equal(d.upstreams.counters.manifestHeads, headsBefore, 'but it is not counted as an upstream HEAD of pulls')
  t.equal(s.cache.upstreamManifestHeads, headsBefore, 'nor reported as one')
  t.match(s.daemon, { running: true, pid: process.pid, listen: [`127.0.0.1:${d.port}`], url: d.url, version: String })
  t.equal(s.cacheDir, cacheDir)
  const onDisk = await d.store.stats()
  t.match(s.cache, { bytes: onDisk.bytes, blobs: onDisk.blobs, manifests: onDisk.manifests, tags: 2 })
  t.ok(s.cache.blobs >= up.images.alpine.blobs.length + up.images.redis.blobs.length)
  t.equal(s.cache.upstreamManifestGets, d.upstreams.counters.manifestGets)
  t.equal(s.cache.manifestGetsAvoided, 1, 'the second alpine pull cost a HEAD only')
  t.equal(s.cache.cacheHits, d.counters.cacheHits)
  t.equal(s.cache.hitRatio, d.counters.cacheHits / (d.counters.cacheHits + d.counters.cacheMisses))
  t.ok((s.cache.bytesFromUpstream ?? 0) > 0)

  const hub = s.rateLimit[0]!
  t.match(hub, {
    registry: 'docker.io',
    from: 'probe',
    limit: 50,
    remaining: up.hub.remaining(),
    windowSeconds: 3600,
    source: up.hub.sourceFor(),
    unlimited: false,
    ageSeconds: 0,
  })
  t.ok(up.hub.remaining() < 50, 'the pulls did count')
  t.ok(Math.abs(Date.parse(hub.checkedAt!) - Date.now()) < 10_000)
  t.equal(hub.probeError, undefined)
  t.equal(s.rateLimit.length, 1, 'only Docker Hub was asked')
})

t.test('daemon down: the cache dir is read directly, counters are unknown, the probe still works', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  await up.retag(RATE_LIMIT_PROBE.repository, RATE_LIMIT_PROBE.tag, up.images.alpine)
  const cacheDir = t.testdir()
  const d = await startDaemon(t, up, { cacheDir })
  await pull(d.url, 'alpine', 'latest')
  await settled(d)
  const stats = await d.store.stats()
  await d.stop(0)

  const s = await collectStatus({ cacheDir, upstreams: { 'docker.io': up.hubUrl } })
  t.match(s.daemon, { running: false, pid: null, listen: [], url: null })
  t.match(s.cache, { ...stats, hitRatio: null, cacheHits: null, bytesFromCache: null, upstreamManifestGets: null, manifestGetsAvoided: null })
  t.match(s.rateLimit, [{ registry: 'docker.io', from: 'probe', remaining: up.hub.remaining(), limit: 100 }])
})

t.test('the probe asks as the logged-in account', async (t) => {
  const up = await startUpstream({ hub: { users: { alice: 'pw' } } })
  t.teardown(() => up.stop())
  await up.retag(RATE_LIMIT_PROBE.repository, RATE_LIMIT_PROBE.tag, up.images.alpine)
  const asked: string[] = []
  const r = await probeDockerHub({
    upstreams: { 'docker.io': up.hubUrl },
    credentials: async (registry) => {
      asked.push(registry)
      return registry === 'docker.io' ? { username: 'alice', secret: 'pw' } : undefined
    },
  })
  t.ok('reading' in r)
  if ('reading' in r) t.match(r.reading, { source: up.hub.sourceFor('alice'), remaining: up.hub.remaining(up.hub.sourceFor('alice')) })
  t.ok(asked.includes('docker.io'))
  t.not(up.hub.sourceFor('alice'), up.hub.sourceFor(), 'account and anonymous readings differ')
})

t.test('probe fails: the daemon reading is shown with the reason; with no daemon, nothing but the reason', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const cacheDir = t.testdir()
  const d = await startDaemon(t, up, { cacheDir })
  await pull(d.url, 'alpine', 'latest')
  const remaining = up.hub.remaining()
  await up.hub.setMode('refuse')

  const s = await collectStatus({ cacheDir, upstreams: { 'docker.io': up.hubUrl }, timeoutMs: 2000 })
  t.match(s.rateLimit, [{ registry: 'docker.io', from: 'daemon', remaining, limit: 100, probeError: /ECONNREFUSED|refused|unavailable/i }])

  await d.stop(0)
  const down = await collectStatus({ cacheDir, upstreams: { 'docker.io': up.hubUrl }, timeoutMs: 2000 })
  t.match(down.rateLimit, [{ registry: 'docker.io', from: 'none', remaining: null, limit: null, checkedAt: null, probeError: String }])

  const skipped = await collectStatus({ cacheDir, upstreams: { 'docker.io': up.hubUrl }, probe: false })
  t.match(skipped.rateLimit, [{ registry: 'docker.io', from: 'none' }])
  t.equal(skipped.rateLimit[0]!.probeError, undefined, '--no-probe is not a failure')
})

t.test('a registry without RateLimit headers is unlimited', async (t) => {
  const up = await startUpstream({ hub: { unlimited: true } })
  t.teardown(() => up.stop())
  await up.retag(RATE_LIMIT_PROBE.repository, RATE_LIMIT_PROBE.tag, up.images.alpine)
  const s = await collectStatus({ cacheDir: t.testdir(), upstreams: { 'docker.io': up.hubUrl } })
  t.match(s.rateLimit, [{ registry: 'docker.io', from: 'probe', unlimited: true, limit: null, remaining: null }])
  t.equal(describeLimit(s.rateLimit[0]!), 'unlimited')
})

t.test('diskStats of a cache dir that does not exist: zeros, and nothing is created', async (t) => {
  const missing = path.join(t.testdir(), 'not-yet')
  t.same(await diskStats(missing), { bytes: 0, blobs: 0, manifests: 0, tags: 0, tempFiles: 0, tempBytes: 0 })
  t.notOk(fs.existsSync(missing))
})

t.test('descriptions: windows, ages, headroom levels', async (t) => {
  for (const [s, want] of [
    [21600, '6h'],
    [3600, '1h'],
    [86400, '1d'],
    [90, '90s'],
    [120, '2m'],
    [null, ''],
  ] as const) {
    t.equal(formatWindow(s), want, String(s))
  }
  for (const [s, want] of [
    [0, '0s'],
    [59.6, '1m'],
    [61, '1m'],
    [3600, '1h'],
    [3660, '1h1m'],
    [90_000, '1d1h'],
    [86_400 * 3, '3d'],
  ] as const) {
    t.equal(formatAge(s), want, String(s))
  }
  const r = (limit: number | null, remaining: number | null, unlimited = false) => ({ limit, remaining, unlimited })
  t.same(headroom(r(100, 80)), { fraction: 0.8, level: 'ok' })
  t.same(headroom(r(100, 50)), { fraction: 0.5, level: 'low' })
  t.same(headroom(r(100, 21)), { fraction: 0.21, level: 'low' })
  t.same(headroom(r(100, 20)), { fraction: 0.2, level: 'critical' })
  t.same(headroom(r(100, 0)), { fraction: 0, level: 'critical' })
  t.same(headroom(r(null, null, true)), { fraction: null, level: 'unlimited' })
  t.same(headroom(r(null, null)), { fraction: null, level: 'unknown' })
  t.same(headroom(r(0, 0)), { fraction: null, level: 'unknown' })

  const row: RateLimitRow = {
    registry: 'docker.io',
    limit: 100,
    remaining: 76,
    windowSeconds: 21600,
    source: '1.2.3.4',
    unlimited: false,
    checkedAt: new Date().toISOString(),
    ageSeconds: 300,
    from: 'daemon',
    probeError: 'GET https://registry-1.docker.io/v2/: ENOTFOUND',
  }
  t.equal(describeLimit(row), '76/100 left per 6h')
  t.equal(describeReading(row), "source 1.2.3.4; daemon's last reading, 5m old; probe failed: GET https://registry-1.docker.io/v2/: ENOTFOUND")
  t.equal(describeReading({ ...row, from: 'probe', ageSeconds: 0, probeError: undefined, source: null }), 'checked 0s ago')
})
