// The live view of `dproxy top`, rendered with ink-testing-library and fed by
// a real daemon's event stream while the upstream fixture holds a layer
// half-way: the frame shows the download (image, short digest, a half-filled
// bar, bytes so far, the waiting client), then the finished request as a
// miss; `q` ends the view and the stream. A chain whose mirror refuses shows
// it down with its error and the origin as the one that served last. The
// pure view is also drawn once from a fixed state, to pin down its layout.

import { render } from 'ink-testing-library'
import t from 'tap'
import { formatBytes } from '../../src/config/units.js'
import { AdminClient } from '../../src/control/admin-client.js'
import { daemonEvents } from '../../src/control/events.js'
import { initialWatchState, type WatchState } from '../../src/control/watch-state.js'
import { DOWNLOAD_BAR_WIDTH, WatchApp, WatchView } from '../../src/ui/WatchView.js'
import { startUpstream } from '../fixtures/upstream.js'
import { freePort } from '../fixtures/clients.js'
import { get, pull, startDaemon } from '../helpers/daemon.js'
import { until } from '../helpers/process.js'

const plain = (s: string | undefined) => (s ?? '').replace(/\x1b\[[0-9;]*m/g, '')
const bar = (filled: number) => `[${'█'.repeat(filled)}${'░'.repeat(DOWNLOAD_BAR_WIDTH - filled)}]`

t.test('a held download, then its request as a miss; q ends the view and the stream', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = up.images.alpine.blobs.find((b) => b.size > 1_000_000)!
  let release!: () => void
  up.hub.inject({ kind: 'length', digest: layer.digest, at: 'cdn', hold: new Promise<void>((r) => (release = r)) })
  t.teardown(() => release())

  const controller = new AbortController()
  let streamEnded = false
  async function* events() {
    try {
      yield* daemonEvents(new AdminClient(d.url), controller.signal)
    } finally {
      streamEnded = true
    }
  }
  let quits = 0
  const view = render(<WatchApp events={events()} source={d.url} onQuit={() => (quits++, controller.abort())} />)
  t.teardown(() => view.unmount())
  const frame = () => plain(view.lastFrame())

  await until(() => frame().includes('none in progress') && !frame().includes('connecting'), () => `the first snapshot drawn:\n${frame()}`)
  t.match(frame(), `dproxy top ${d.url}`)

  const pulling = get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  const half = Math.floor(layer.size / 2)
  const soFar = `${formatBytes(half)}/${formatBytes(layer.size)}`
  await until(() => frame().includes(soFar), () => `the held download drawn:\n${frame()}`)
  const line = frame().split('\n').find((l) => l.includes(soFar))!
  t.match(line, 'docker.io/library/alpine')
  t.match(line, layer.digest.slice(7, 19), 'the short digest')
  t.match(line, bar(Math.round((half / layer.size) * DOWNLOAD_BAR_WIDTH)), 'the bar half filled')
  t.match(line, '1 waiting')

  release()
  t.equal((await pulling).status, 200)
  // The line is cut in the middle to the terminal's width; its start names the blob.
  const missed = () => frame().split('\n').some((l) => /^\s+miss\s+200 GET \/v2\/library\/alpine\/blobs\/sha256:/.test(l))
  await until(missed, () => `the request drawn:\n${frame()}`)
  await until(() => !frame().includes(soFar), () => `the finished download gone from the list:\n${frame()}`)
  t.match(frame(), /hit ratio 0% \(0 hits, 1 misses\)/)

  view.stdin.write('q')
  await until(() => streamEnded, 'the stream to end after q')
  t.equal(quits, 1)
  t.ok(controller.signal.aborted)
})

t.test('the view of a fixed state: each section, and failures with their reason', async (t) => {
  const digest = `sha256:${'0123456789ab'.repeat(5)}abcd`
  const state: WatchState = {
    ...initialWatchState(),
    at: 0,
    downloads: [{ image: 'docker.io/library/node', digest, written: 1_000_000, size: 4_000_000, clients: 3, rate: 500_000 }],
    requests: [
      { time: 2, client: '127.0.0.1', method: 'GET', path: '/v2/library/node/manifests/22', route: 'manifest', status: 200, bytes: 1500, durationMs: 12.4, complete: true, cache: 'hit' },
      { time: 1, client: '127.0.0.1', method: 'GET', path: '/v2/library/nope/manifests/1', route: 'manifest', status: 404, bytes: 120, durationMs: 3, complete: true },
    ],
    counters: { requests: 4, cacheHits: 3, cacheMisses: 1, bytesFromCache: 3_000_000, bytesFromUpstream: 1_000_000, manifestGetsAvoided: 1, staleServed: 0, upstreamManifestGets: 1, upstreamBlobGets: 1 },
    rateLimit: [{ registry: 'docker.io', limit: 100, remaining: 25, windowSeconds: 21600, source: null, unlimited: false, checkedAt: null, ageSeconds: 5, from: 'daemon' }],
    recentFailures: [
      { image: 'docker.io/library/nope', count: 2, failures: [{ at: '2026-01-01T00:00:00.000Z', request: 'GET /v2/library/nope/manifests/1', status: 404, code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] },
    ],
    endpoints: [
      { registry: 'docker.io', endpoint: 'http://team:5000', kind: 'mirror', position: 0, last: false, requests: 1, up: false, downSince: '2026-01-01T00:00:00.000Z', lastError: 'ECONNREFUSED' },
      { registry: 'docker.io', endpoint: 'https://hub', kind: 'origin', position: 1, last: true, requests: 4, up: true, lastServedAt: '2026-01-01T00:00:01.000Z' },
    ],
  }
  const { lastFrame, unmount } = render(<WatchView state={state} source="http://127.0.0.1:5000" />)
  const frame = plain(lastFrame())
  unmount()
  const noKeys = render(<WatchView state={state} source="http://127.0.0.1:5000" keys={false} />)
  t.equal(plain(noKeys.lastFrame()).split('\n')[0], 'dproxy top http://127.0.0.1:5000 · Ctrl-C quits', 'stdin not a terminal: q is not read')
  noKeys.unmount()
  t.equal(
    frame,
    [
      'dproxy top http://127.0.0.1:5000 · q quits',
      '',
      'downloads',
      `  docker.io/library/node  0123456789ab ${bar(5)} 1MB/4MB, 500kB/s, 3 waiting`,
      '',
      'requests',
      '  hit   200 GET /v2/library/node/manifests/22 1.5kB 12ms',
      '  -     404 GET /v2/library/nope/manifests/1 120B 3ms',
      '',
      'traffic',
      '  hit ratio 75% (3 hits, 1 misses)',
      '  saved     3MB served from cache, 1MB from upstream',
      '',
      'rate limits',
      '  docker.io   [█████░░░░░░░░░░░░░░░] 25/100 left per 6h',
      '',
      'upstream endpoints',
      '  docker.io',
      '    ○ 1. http://team:5000 (mirror): down since 2026-01-01T00:00:00.000Z, 1 request; last error:',
      'ECONNREFUSED',
      '    ● 2. https://hub (origin, last): up, 4 requests, last answered 2026-01-01T00:00:01.000Z [served',
      'last]',
      '',
      'recent failures',
      '  docker.io/library/nope: 2 failed requests',
      '    2026-01-01T00:00:00.000Z  GET /v2/library/nope/manifests/1 -> 404 MANIFEST_UNKNOWN: manifest',
      'unknown',
    ].join('\n'),
  )
})

t.test('a chain whose mirror refuses: top shows it down with its error, and the origin as the one that served last', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const closed = `http://127.0.0.1:${await freePort()}`
  const d = await startDaemon(t, undefined, { upstreams: { 'docker.io': [closed, 'origin'] }, upstreamOrigins: { 'docker.io': up.hubUrl } })
  const controller = new AbortController()
  t.teardown(() => controller.abort())
  const view = render(<WatchApp events={daemonEvents(new AdminClient(d.url), controller.signal)} source={d.url} onQuit={() => controller.abort()} />)
  t.teardown(() => view.unmount())
  const flat = () => plain(view.lastFrame()).replace(/\s+/g, ' ')
  await until(() => flat().includes('upstream endpoints docker.io'), () => `the endpoints drawn:\n${view.lastFrame()}`)
  t.match(flat(), `● 1. ${closed} (mirror): up, 0 requests`, 'before any pull: up, never asked')

  await pull(d.url, 'alpine', 'latest')
  const down = new RegExp(`○ 1\\. ${closed} \\(mirror\\): down since \\S+, next probe at \\S+, \\d+ requests?; last error: .*ECONNREFUSED`)
  await until(() => down.test(flat()), () => `the mirror drawn down:\n${view.lastFrame()}`)
  t.match(flat(), new RegExp(`● 2\\. ${up.hubUrl} \\(origin, last\\): up, \\d+ requests?, last answered \\S+ \\[served last\\]`))
})

t.test('Ctrl-C quits like q, once', async (t) => {
  const controller = new AbortController()
  async function* silent() {
    await new Promise((r) => controller.signal.addEventListener('abort', r))
  }
  let quits = 0
  const view = render(<WatchApp events={silent()} source="http://127.0.0.1:5000" onQuit={() => (quits++, controller.abort())} />)
  t.teardown(() => view.unmount())
  await until(() => plain(view.lastFrame()).includes('(connecting)'), 'the first frame')
  view.stdin.write('\u0003')
  await until(() => quits > 0, 'Ctrl-C to quit')
  view.stdin.write('q')
  t.equal(quits, 1, 'a key after quitting does not quit again')
})
