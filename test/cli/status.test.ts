// `dproxy status` through the built binary: JSON whose rate-limit numbers are
// the fixture hub's own counter, with the daemon running and stopped; plain
// text when piped; the ink view only on a terminal; proof that --json and
// the plain path never load ink or react; and `dproxy top`'s live view on a
// real terminal (script(1)), quit with q.

import { spawn, spawnSync } from 'node:child_process'
import path from 'node:path'
import t, { type Test } from 'tap'
import { formatStatusText, wantsInteractive } from '../../src/cli/status.js'
import { statePaths } from '../../src/control/lifecycle.js'
import { isProcessAlive } from '../../src/process.js'
import { RATE_LIMIT_PROBE, type StatusSnapshot } from '../../src/control/status.js'
import { freePort } from '../fixtures/clients.js'
import { startUpstream } from '../fixtures/upstream.js'
import { pull, startDaemon } from '../helpers/daemon.js'
import { until } from '../helpers/process.js'
import { bin, forbidUi, isolatedEnv, runDproxy, type Ran } from '../helpers/cli.js'

type Run = Ran

function world(t: Test, extra: Record<string, string> = {}) {
  const env = isolatedEnv(t, extra)
  const run = async (args: string[], opts: { nodeArgs?: string[]; env?: Record<string, string> } = {}): Promise<Run> =>
    runDproxy(args, { ...env, ...opts.env }, opts.nodeArgs ? { nodeArgs: opts.nodeArgs } : {})
  return { env, root: path.dirname(env.HOME!), cacheDir: env.DPROXY_CACHE_DIR!, run }
}

t.test('status --json with the daemon running, then stopped: remaining is the hub counter', async (t) => {
  const up = await startUpstream({ hub: { limit: 40 } })
  t.teardown(() => up.stop())
  await up.retag(RATE_LIMIT_PROBE.repository, RATE_LIMIT_PROBE.tag, up.images.alpine)
  const w = world(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  const started = await w.run(['start', '--host', '127.0.0.1', '--port', '0', '--json'])
  t.equal(started.code, 0, started.err)
  const daemon = JSON.parse(started.out) as { pid: number; url: string }
  t.teardown(() => {
    if (isProcessAlive(daemon.pid)) process.kill(daemon.pid, 'SIGKILL')
  })
  await pull(daemon.url, 'alpine', 'latest')
  await pull(daemon.url, 'alpine', 'latest')
  await pull(daemon.url, 'bitnami/redis', up.images.redis.ref.split(':').pop()!)

  const r = await w.run(['status', '--json'])
  t.equal(r.code, 0, r.err)
  const s = JSON.parse(r.out) as StatusSnapshot
  t.match(s.daemon, { running: true, pid: daemon.pid, url: daemon.url, logFile: statePaths(path.join(w.root, 'state'), w.cacheDir).logFile })
  t.ok(s.cache.bytes > 0)
  t.ok(s.cache.blobs >= up.images.alpine.blobs.length)
  t.equal(s.cache.manifestGetsAvoided, 1)
  t.ok((s.cache.upstreamManifestGets ?? 0) >= 2)
  t.ok(up.hub.remaining() < 40)
  t.match(s.rateLimit[0], {
    registry: 'docker.io',
    limit: 40,
    remaining: up.hub.remaining(),
    windowSeconds: 21600,
    source: up.hub.sourceFor(),
    from: 'probe',
    checkedAt: String,
  })
  const blobs = s.cache.blobs

  const text = await w.run(['status'])
  t.equal(text.code, 0)
  t.notMatch(text.out, '\u001b', 'piped: no escape codes')
  t.match(text.out, new RegExp(`dproxy\\s+running \\(pid ${daemon.pid}`))
  t.match(text.out, `docker.io  ${up.hub.remaining()}/40 left per 6h`)
  t.match(text.out, /1 GETs avoided/)

  t.equal((await w.run(['stop'])).code, 0)
  const down = await w.run(['status', '--json'])
  t.equal(down.code, 0, 'exit 0 with the daemon down too')
  const d = JSON.parse(down.out) as StatusSnapshot
  t.match(d.daemon, { running: false, pid: null })
  t.equal(d.cache.blobs, blobs, 'cache read from disk')
  t.equal(d.cache.cacheHits, null)
  t.match(d.rateLimit[0], { from: 'probe', remaining: up.hub.remaining(), limit: 40 })

  const plain = await w.run(['status', '--no-probe'])
  t.match(plain.out, /dproxy\s+not running/)
  t.match(plain.out, 'traffic     unknown')
  t.match(plain.out, /docker\.io\s+unknown/)
})

t.test('status --json and plain text never load ink or react', async (t) => {
  const w = world(t, { DPROXY_UPSTREAMS: 'docker.io=http://127.0.0.1:9' })
  // The control: the loader does catch ink.
  const control = spawnSync(process.execPath, [forbidUi, '--input-type=module', '-e', "await import('ink')"], { env: w.env })
  t.not(control.status, 0)
  t.match(control.stderr.toString(), 'FORBIDDEN import of ink')

  for (const args of [['status', '--json'], ['status']]) {
    const r = await w.run(args, { nodeArgs: [forbidUi] })
    t.equal(r.code, 0, `${args.join(' ')}: ${r.err}`)
    t.notMatch(r.err, 'FORBIDDEN')
  }
})

const hasScript = spawnSync('script', ['--version']).status === 0

t.test('on a terminal the ink view is drawn; with CI set, plain text', { skip: !hasScript && 'needs script(1)' }, async (t) => {
  const w = world(t, { DPROXY_UPSTREAMS: 'docker.io=http://127.0.0.1:9' })
  const onTty = (extra: Record<string, string>) => {
    const cmd = `stty cols 120 rows 50; ${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} status --no-probe`
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { env: { ...w.env, ...extra }, timeout: 30_000 })
    return r.stdout.toString()
  }
  const tty = onTty({})
  t.match(tty, '\u001b[', 'escape codes on a terminal')
  t.match(tty, 'not running')
  t.match(tty, 'docker.io')
  const ci = onTty({ CI: 'true' })
  t.notMatch(ci, '\u001b[', 'no escape codes under CI')
  t.match(ci, /dproxy\s+not running/)
})

t.test('dproxy top on a real terminal: the live view of a running daemon, q quits with 0', { skip: !hasScript && 'needs script(1)' }, async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const env = isolatedEnv(t)
  const d = await startDaemon(t, up, { cacheDir: env.DPROXY_CACHE_DIR! })
  const cmd = `stty cols 120 rows 50; ${JSON.stringify(process.execPath)} ${JSON.stringify(bin)} top`
  const child = spawn('script', ['-qfec', cmd, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL')
  })
  let out = ''
  child.stdout.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr.on('data', (c: Buffer) => (out += c.toString()))
  const exited = new Promise<number | null>((r) => child.once('exit', r))
  const text = () => out.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
  // A frame drawn from the daemon's first snapshot: the stream is subscribed, so no request is missed.
  await until(() => /dproxy top http:\/\/\S+ · q quits[\s\S]*none in progress/.test(text()), () => `the first frame:\n${out}`)

  await pull(d.url, 'alpine', 'latest')
  await until(() => /\d+ hits, [1-9]\d* misses/.test(text()) && text().includes('miss  200 GET /v2/alpine/manifests/latest'), () => `the pull drawn:\n${text()}`)
  child.stdin.write('q')
  t.equal(await exited, 0, 'q quits with exit 0')
  t.match(out, 'dproxy top')
  t.match(out, d.url)
  t.match(out, /\x1b\[\d*A/, "ink's cursor movement: it redraws in place")
  t.notMatch(text(), 'dproxy:', 'no error printed')
})

t.test('wantsInteractive: a sized terminal and no CI', async (t) => {
  const out = (isTTY: boolean, columns?: number) => ({ isTTY, columns }) as unknown as NodeJS.WritableStream
  t.equal(wantsInteractive(out(true, 80), {}), true)
  t.equal(wantsInteractive(out(true, 80), { CI: 'true' }), false)
  t.equal(wantsInteractive(out(true, 80), { CI: '1' }), false)
  t.equal(wantsInteractive(out(true, 80), { CI: 'false' }), true)
  t.equal(wantsInteractive(out(true, 80), { CI: '' }), true)
  t.equal(wantsInteractive(out(false, 80), {}), false)
  t.equal(wantsInteractive(out(true, 0), {}), false, 'a pty without a size')
})

t.test('formatStatusText aligns labels and never writes escape codes', async (t) => {
  const s: StatusSnapshot = {
    checkedAt: '2026-01-01T00:00:00.000Z',
    cacheDir: '/c',
    daemon: { running: true, pid: 7, version: '0.1.0', startedAt: '', uptimeSeconds: 65, listen: ['127.0.0.1:5000'], url: 'http://127.0.0.1:5000', logFile: null },
    cache: { bytes: 2_000_000, blobs: 3, manifests: 2, tags: 1, tempFiles: 0, tempBytes: 0, hitRatio: 0.5, cacheHits: 1, cacheMisses: 1, bytesFromCache: 0, bytesFromUpstream: 2_000_000, upstreamManifestGets: 1, upstreamManifestHeads: 2, manifestGetsAvoided: 1 },
    rateLimit: [
      { registry: 'docker.io', limit: 100, remaining: 99, windowSeconds: 21600, source: null, unlimited: false, checkedAt: '', ageSeconds: 2, from: 'probe' },
      { registry: 'registry.example:5000', limit: null, remaining: null, windowSeconds: null, source: null, unlimited: true, checkedAt: '', ageSeconds: 60, from: 'daemon' },
    ],
    recentFailures: [],
  }
  t.equal(
    formatStatusText(s),
    [
      'dproxy      running (pid 7, version 0.1.0, up 1m)',
      'listening   http://127.0.0.1:5000',
      'cache dir   /c',
      '',
      'cache       2MB in 3 blobs, 2 manifests, 1 tags',
      'hit ratio   50% (1 hits, 1 misses)',
      'served      0B from cache, 2MB from upstream',
      'manifests   1 upstream GETs, 2 HEADs, 1 GETs avoided',
      '',
      'rate limits',
      '  docker.io              99/100 left per 6h  (checked 2s ago)',
      "  registry.example:5000  unlimited  (daemon's last reading, 1m old)",
      '',
    ].join('\n'),
  )
})

t.test('formatStatusText lists the endpoints of every registry with a chain, in the order asked', async (t) => {
  const s: StatusSnapshot = {
    checkedAt: '2026-01-01T00:00:00.000Z',
    cacheDir: '/c',
    daemon: { running: true, pid: 7, version: '0.1.0', startedAt: '', uptimeSeconds: 65, listen: ['127.0.0.1:5000'], url: 'http://127.0.0.1:5000', logFile: null },
    cache: { bytes: 0, blobs: 0, manifests: 0, tags: 0, tempFiles: 0, tempBytes: 0, hitRatio: null, cacheHits: 0, cacheMisses: 0, bytesFromCache: 0, bytesFromUpstream: 0, upstreamManifestGets: 0, upstreamManifestHeads: 0, manifestGetsAvoided: 0 },
    rateLimit: [],
    recentFailures: [],
    endpoints: [
      { registry: 'docker.io', endpoint: 'https://cache.team.example', kind: 'mirror', position: 0, last: false, requests: 12, up: false, downSince: '2026-01-01T00:00:00.000Z', nextProbeAt: '2026-01-01T00:00:04.000Z', lastError: 'GET https://cache.team.example/v2/: ECONNREFUSED', lastServedAt: '2025-12-31T23:00:00.000Z' },
      { registry: 'docker.io', endpoint: 'https://registry-1.docker.io', kind: 'origin', position: 1, last: true, requests: 30, up: true, lastServedAt: '2026-01-01T00:00:01.000Z' },
      { registry: 'ghcr.io', endpoint: 'https://ghcr.io', kind: 'origin', position: 0, last: true, requests: 0, up: true },
      { registry: 'quay.io', endpoint: 'https://gitlab.example/acme/dependency_proxy/containers', kind: 'prefix', position: 0, last: false, requests: 2, up: true, failuresInRow: 2, lastError: 'GET https://gitlab.example/v2/: HTTP 502' },
      { registry: 'quay.io', endpoint: 'https://quay.io', kind: 'origin', position: 1, last: true, requests: 2, up: false, downSince: '2026-01-01T00:00:02.000Z', nextProbeAt: '2026-01-01T00:00:03.000Z', lastError: 'HTTP 503' },
    ],
  }
  const text = formatStatusText(s)
  t.match(
    text,
    [
      'upstream endpoints (asked in this order)',
      '  docker.io  1. https://cache.team.example (mirror): down since 2026-01-01T00:00:00.000Z, next probe at 2026-01-01T00:00:04.000Z, 12 requests, last answered 2025-12-31T23:00:00.000Z; last error: GET https://cache.team.example/v2/: ECONNREFUSED',
      '             2. https://registry-1.docker.io (origin, last): up, 30 requests, last answered 2026-01-01T00:00:01.000Z [served last]',
      '  quay.io    1. https://gitlab.example/acme/dependency_proxy/containers (prefix): up (2 failures in a row), 2 requests; last error: GET https://gitlab.example/v2/: HTTP 502',
      '             2. https://quay.io (origin, last): down since 2026-01-01T00:00:02.000Z (still asked: it is the last), 2 requests; last error: HTTP 503',
      '',
    ].join('\n'),
  )
  t.notMatch(text, 'ghcr.io', 'a registry with one endpoint is not listed')
})

t.test('status with a chain whose first endpoint refuses: down since, last error, next probe, and who served last', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const closed = `http://127.0.0.1:${await freePort()}`
  // No origin implied: the chain is the closed port, then the hub fixture (spoken to as a mirror).
  const w = world(t, { DPROXY_UPSTREAMS: `docker.io=${closed},${up.hubUrl}`, DPROXY_NO_ORIGIN: 'docker.io' })
  const started = await w.run(['start', '--host', '127.0.0.1', '--port', '0', '--json'])
  t.equal(started.code, 0, started.err)
  const daemon = JSON.parse(started.out) as { pid: number; url: string }
  t.teardown(() => {
    if (isProcessAlive(daemon.pid)) process.kill(daemon.pid, 'SIGKILL')
  })
  await pull(daemon.url, 'alpine', 'latest')

  const json = await w.run(['status', '--json', '--no-probe'])
  t.equal(json.code, 0, json.err)
  const [first, second] = (JSON.parse(json.out) as StatusSnapshot).endpoints!.filter((e) => e.registry === 'docker.io')
  t.match(first, { endpoint: closed, kind: 'mirror', position: 0, last: false, up: false, downSince: String, nextProbeAt: String, lastError: /ECONNREFUSED/ })
  t.notOk(first!.lastServedAt, 'the refused endpoint never answered')
  t.match(second, { endpoint: up.hubUrl, kind: 'mirror', position: 1, last: true, up: true, lastServedAt: String })
  t.ok(second!.requests > 0)

  const text = await w.run(['status', '--no-probe'])
  t.equal(text.code, 0, text.err)
  const lines = text.out.split('\n')
  const at = lines.indexOf('upstream endpoints (asked in this order)')
  t.ok(at > 0, text.out)
  t.match(lines[at + 1], new RegExp(`^  docker\\.io  1\\. ${closed} \\(mirror\\): down since \\S+, next probe at \\S+, \\d+ requests?; last error: .*ECONNREFUSED`))
  t.match(lines[at + 2], new RegExp(`^ {13}2\\. ${up.hubUrl} \\(mirror, last\\): up, \\d+ requests?, last answered \\S+ \\[served last\\]$`))
  t.equal((await w.run(['stop'])).code, 0)
})
