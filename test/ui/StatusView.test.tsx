// The ink view of `dproxy status`, rendered with ink-testing-library: the
// numbers are on screen, the headroom bar is filled in proportion and coloured
// by level, and a stopped daemon shows "unknown" traffic instead of zeros.

import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { render } from 'ink-testing-library'
import t from 'tap'
import type { RateLimitRow, StatusSnapshot } from '../../src/control/status.js'
import { BAR_WIDTH, EndpointLines, HeadroomBar, StatusView } from '../../src/ui/StatusView.js'

const hub: RateLimitRow = {
  registry: 'docker.io',
  limit: 100,
  remaining: 25,
  windowSeconds: 21600,
  source: '203.0.113.9',
  unlimited: false,
  checkedAt: '2026-01-01T00:00:00.000Z',
  ageSeconds: 0,
  from: 'probe',
}

const running: StatusSnapshot = {
  checkedAt: '2026-01-01T00:00:00.000Z',
  cacheDir: '/var/cache/dproxy',
  daemon: {
    running: true,
    pid: 4242,
    version: '0.1.0',
    startedAt: '2026-01-01T00:00:00.000Z',
    uptimeSeconds: 7500,
    listen: ['127.0.0.1:5000', '[::1]:5000'],
    url: 'http://127.0.0.1:5000',
    logFile: '/home/ann/.local/state/dproxy/dproxy.log',
  },
  cache: {
    bytes: 1_234_000_000,
    blobs: 34,
    manifests: 12,
    tags: 5,
    tempFiles: 0,
    tempBytes: 0,
    hitRatio: 0.875,
    cacheHits: 70,
    cacheMisses: 10,
    bytesFromCache: 1_000_000_000,
    bytesFromUpstream: 200_000_000,
    upstreamManifestGets: 4,
    upstreamManifestHeads: 66,
    manifestGetsAvoided: 60,
  },
  rateLimit: [hub, { ...hub, registry: 'ghcr.io', limit: null, remaining: null, windowSeconds: null, source: null, unlimited: true, from: 'daemon', ageSeconds: 300 }],
  recentFailures: [],
}

// eslint-disable-next-line no-control-regex
const plain = (s: string | undefined) => (s ?? '').replace(/\u001b\[[0-9;]*m/g, '')

t.test('running daemon: addresses, cache table, counters, rate limits', async (t) => {
  const { lastFrame, unmount } = render(<StatusView snapshot={running} />)
  const frame = plain(lastFrame())
  unmount()
  for (const text of [
    'running',
    'pid 4242',
    'version 0.1.0',
    'up 2h5m',
    'http://127.0.0.1:5000, http://[::1]:5000',
    '/var/cache/dproxy',
    '/home/ann/.local/state/dproxy/dproxy.log',
    '1.23GB',
    '34 blobs',
    '12 manifests',
    '5 tags',
    '88%',
    '70 hits, 10 misses',
    '1GB from cache, 200MB from upstream',
    '4 upstream GETs, 66 HEADs',
    '60 GETs avoided',
    '25/100 left per 6h',
    'source 203.0.113.9; checked 0s ago',
    'ghcr.io',
    'unlimited',
    "daemon's last reading, 5m old",
  ]) {
    t.match(frame, text, text)
  }
  t.notMatch(frame, 'not running')
})

t.test('stopped daemon: no addresses, traffic unknown rather than zero, probe failure said', async (t) => {
  const stopped: StatusSnapshot = {
    ...running,
    daemon: { running: false, pid: null, version: null, startedAt: null, uptimeSeconds: null, listen: [], url: null, logFile: null },
    cache: { ...running.cache, hitRatio: null, cacheHits: null, cacheMisses: null, bytesFromCache: null, bytesFromUpstream: null, upstreamManifestGets: null, upstreamManifestHeads: null, manifestGetsAvoided: null },
    rateLimit: [{ ...hub, limit: null, remaining: null, windowSeconds: null, source: null, checkedAt: null, ageSeconds: null, from: 'none', probeError: 'GET https://registry-1.docker.io/v2/: ENOTFOUND' }],
  }
  const { lastFrame, unmount } = render(<StatusView snapshot={stopped} />)
  const frame = plain(lastFrame())
  unmount()
  t.match(frame, 'not running')
  t.match(frame, 'unknown (counted by the running daemon)')
  t.match(frame, '34 blobs')
  t.match(frame, 'docker.io')
  t.match(frame, 'probe failed: GET https://registry-1.docker.io/v2/: ENOTFOUND')
  t.notMatch(frame, 'listening')
  t.notMatch(frame, 'hits')
  t.notMatch(frame, '█')
  t.notMatch(frame, '░', 'no bar for an unknown limit')
})

t.test('chained registries: each endpoint in order, up or down since, next probe, last error, served last', async (t) => {
  const chained: StatusSnapshot = {
    ...running,
    endpoints: [
      { registry: 'docker.io', endpoint: 'http://team:5000', kind: 'mirror', position: 0, last: false, requests: 3, up: false, downSince: '2026-01-01T00:00:00.000Z', nextProbeAt: '2026-01-01T00:00:02.000Z', lastError: 'ECONNREFUSED' },
      { registry: 'docker.io', endpoint: 'https://registry-1.docker.io', kind: 'origin', position: 1, last: true, requests: 9, up: true, lastServedAt: '2026-01-01T00:00:01.000Z' },
      { registry: 'ghcr.io', endpoint: 'https://ghcr.io', kind: 'origin', position: 0, last: true, requests: 0, up: true },
    ],
  }
  const { lastFrame, unmount } = render(<StatusView snapshot={chained} />)
  const frame = plain(lastFrame())
  unmount()
  // The view wraps long lines at the test terminal's width: compare the words.
  const flat = frame.replace(/\s+/g, ' ')
  t.match(
    flat,
    'upstream endpoints (asked in this order) docker.io ' +
      '○ 1. http://team:5000 (mirror): down since 2026-01-01T00:00:00.000Z, next probe at 2026-01-01T00:00:02.000Z, 3 requests; last error: ECONNREFUSED ' +
      '● 2. https://registry-1.docker.io (origin, last): up, 9 requests, last answered 2026-01-01T00:00:01.000Z [served last]',
  )
  t.notMatch(flat.slice(flat.indexOf('upstream endpoints')), 'ghcr.io', 'a registry with one endpoint is not listed under the endpoints')

  // Colours on, as in the HeadroomBar test below.
  const inkChalk = createRequire(import.meta.resolve('ink')).resolve('chalk')
  const chalk = ((await import(pathToFileURL(inkChalk).href)) as { default: { level: number } }).default
  const level = chalk.level
  chalk.level = 1
  t.teardown(() => {
    chalk.level = level
  })
  const coloured = render(<EndpointLines endpoints={chained.endpoints!} />)
  const raw = coloured.lastFrame() ?? ''
  coloured.unmount()
  t.match(raw, /\u001b\[31m[^\n]*○ 1\. http:\/\/team/, 'a down endpoint is red')
  t.match(raw, /\u001b\[32m●/, 'an up one green')

  const plainOnly = render(<StatusView snapshot={running} />)
  t.notMatch(plain(plainOnly.lastFrame()), 'upstream endpoints', 'no chain: no section')
  plainOnly.unmount()
})

t.test('HeadroomBar: filled in proportion to what is left', async (t) => {
  for (const [remaining, filled] of [
    [100, BAR_WIDTH],
    [50, BAR_WIDTH / 2],
    [25, BAR_WIDTH / 4],
    [0, 0],
  ] as const) {
    const { lastFrame, unmount } = render(<HeadroomBar row={{ limit: 100, remaining, unlimited: false }} />)
    const frame = plain(lastFrame())
    unmount()
    t.equal(frame, `[${'█'.repeat(filled)}${'░'.repeat(BAR_WIDTH - filled)}]`, `${remaining}/100`)
  }
})

t.test('HeadroomBar colours: green, yellow, red by what is left', async (t) => {
  // ink-testing-library's stdout is no terminal, so ink's colours are off: switch on
  // the chalk instance ink itself uses (resolved from ink, not from this package).
  const inkChalk = createRequire(import.meta.resolve('ink')).resolve('chalk')
  const chalk = ((await import(pathToFileURL(inkChalk).href)) as { default: { level: number } }).default
  const level = chalk.level
  chalk.level = 1
  t.teardown(() => {
    chalk.level = level
  })
  const colourOf = (remaining: number) => {
    const { lastFrame, unmount } = render(<HeadroomBar row={{ limit: 100, remaining, unlimited: false }} />)
    const frame = lastFrame() ?? ''
    unmount()
    return /\u001b\[(3[0-9])m█/.exec(frame)?.[1]
  }
  t.equal(colourOf(90), '32', 'green')
  t.equal(colourOf(40), '33', 'yellow')
  t.equal(colourOf(10), '31', 'red')
})
