// The live view's numbers, folded from events without a terminal: a
// download's rate from two successive snapshots, the last N registry requests
// latest first (admin calls left out), the hit ratio, rate-limit rows aged at
// the snapshot's time, and malformed events skipped.

import t from 'tap'
import type { StreamEvent } from '../../src/control/events.js'
import { foldEvent, hitRatio, initialWatchState, RECENT_REQUESTS, type WatchState } from '../../src/control/watch-state.js'
import type { Snapshot } from '../../src/daemon/event-stream.js'
import type { RequestRecord } from '../../src/daemon/events.js'

const digest = `sha256:${'ab'.repeat(32)}`
const counters: Snapshot['counters'] = {
  requests: 4,
  cacheHits: 3,
  cacheMisses: 1,
  bytesFromCache: 3_000_000,
  bytesFromUpstream: 1_000_000,
  manifestGetsAvoided: 1,
  staleServed: 0,
  upstreamManifestGets: 1,
  upstreamBlobGets: 1,
}

const snapshot = (at: string, written: number, more: Partial<Snapshot> = {}): StreamEvent => ({
  event: 'snapshot',
  data: {
    at,
    downloads: [{ image: 'docker.io/library/alpine', digest, written, size: 4_000_000, clients: 2 }],
    counters,
    rateLimit: [],
    recentFailures: [],
    ...more,
  } satisfies Snapshot,
})

const request = (path: string, more: Partial<RequestRecord> = {}): StreamEvent => ({
  event: 'request',
  data: { time: 0, client: '127.0.0.1', method: 'GET', path, route: 'blob', status: 200, bytes: 10, durationMs: 1, complete: true, cache: 'hit', ...more } satisfies RequestRecord,
})

const fold = (events: StreamEvent[], from: WatchState = initialWatchState()) => events.reduce((s, e) => foldEvent(s, e), from)

t.test('a download has no rate on first sight, then bytes over the time between snapshots', async (t) => {
  const first = fold([snapshot('2026-01-01T00:00:00.000Z', 1_000_000)])
  t.equal(first.downloads.length, 1)
  t.equal(first.downloads[0]!.rate, undefined)
  t.equal(first.at, Date.parse('2026-01-01T00:00:00.000Z'))

  const second = fold([snapshot('2026-01-01T00:00:02.000Z', 3_000_000)], first)
  t.equal(second.downloads[0]!.rate, 1_000_000, '2MB in 2s')
  t.equal(second.downloads[0]!.clients, 2)

  const held = fold([snapshot('2026-01-01T00:00:03.000Z', 3_000_000)], second)
  t.equal(held.downloads[0]!.rate, 0, 'a download that does not move reads 0/s')

  const sameTime = fold([snapshot('2026-01-01T00:00:02.000Z', 3_500_000)], second)
  t.equal(sameTime.downloads[0]!.rate, 1_000_000, 'no time between two snapshots: the last rate stays')

  const finished = fold([snapshot('2026-01-01T00:00:04.000Z', 0, { downloads: [] })], held)
  t.same(finished.downloads, [], 'a finished download leaves the list')
  const again = fold([snapshot('2026-01-01T00:00:05.000Z', 10)], finished)
  t.equal(again.downloads[0]!.rate, undefined, 'a digest downloaded again starts without a rate')
})

t.test('the last N registry requests, latest first; admin calls are not shown', async (t) => {
  const paths = Array.from({ length: RECENT_REQUESTS + 3 }, (_, i) => `/v2/library/alpine/blobs/${i}`)
  const s = fold([...paths.map((p) => request(p)), request('/_dproxy/status', { route: 'admin' })])
  t.equal(s.requests.length, RECENT_REQUESTS)
  t.equal(s.requests[0]!.path, paths.at(-1))
  t.equal(s.requests.at(-1)!.path, paths[3])
  t.notOk(s.requests.some((r) => r.route === 'admin'))
  t.equal(foldEvent(s, request('/v2/x/manifests/1'), 2).requests.length, 2, 'keep is a parameter')
})

t.test('hit ratio, and the snapshot counters and failures as they came', async (t) => {
  t.equal(hitRatio({ cacheHits: 0, cacheMisses: 0 }), null, 'nothing asked yet')
  t.equal(hitRatio({ cacheHits: 3, cacheMisses: 1 }), 0.75)
  const failures = [{ image: 'docker.io/library/nope', count: 2, failures: [] }]
  const s = fold([snapshot('2026-01-01T00:00:00.000Z', 0, { recentFailures: failures })])
  t.same(s.counters, counters)
  t.same(s.recentFailures, failures)
})

t.test('rate-limit readings become rows aged at the snapshot time', async (t) => {
  const reading = { registry: 'docker.io', limit: 100, remaining: 40, windowSeconds: 21600, unlimited: false, checkedAt: Date.parse('2026-01-01T00:00:00.000Z') }
  const s = fold([snapshot('2026-01-01T00:01:30.000Z', 0, { rateLimit: [reading] })])
  t.match(s.rateLimit, [{ registry: 'docker.io', limit: 100, remaining: 40, windowSeconds: 21600, ageSeconds: 90, from: 'daemon', source: null }])
})

t.test("the endpoints' health as the latest snapshot had it; a daemon that sends none leaves the list empty", async (t) => {
  const endpoints = [
    { registry: 'docker.io', endpoint: 'http://team:5000', kind: 'mirror' as const, position: 0, last: false, requests: 1, up: false, downSince: '2026-01-01T00:00:00.000Z', lastError: 'ECONNREFUSED' },
    { registry: 'docker.io', endpoint: 'https://registry-1.docker.io', kind: 'origin' as const, position: 1, last: true, requests: 4, up: true, lastServedAt: '2026-01-01T00:00:01.000Z' },
  ]
  const s = fold([snapshot('2026-01-01T00:00:00.000Z', 0, { endpoints })])
  t.same(s.endpoints, endpoints)
  t.strictSame(fold([snapshot('2026-01-01T00:00:02.000Z', 0)], s).endpoints, [], 'the next snapshot without them: none')
})

t.test('malformed and unknown events change nothing', async (t) => {
  const start = fold([snapshot('2026-01-01T00:00:00.000Z', 5)])
  for (const e of [
    { event: 'snapshot', data: null },
    { event: 'snapshot', data: { at: 'yesterday', downloads: [], counters: {}, rateLimit: [], recentFailures: [] } },
    { event: 'snapshot', data: { at: '2026-01-01T00:00:01.000Z', downloads: 'many' } },
    { event: 'request', data: { path: 7 } },
    { event: 'upstream', data: { registry: 'docker.io' } },
  ]) {
    t.equal(foldEvent(start, e), start, JSON.stringify(e))
  }
})
