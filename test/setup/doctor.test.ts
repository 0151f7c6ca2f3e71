import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import fs, { mkdtempSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { formatDoctorText } from '../../src/cli/doctor.js'
import { pointsAt, type DoctorReport } from '../../src/setup/doctor.js'
import { freePort } from '../fixtures/clients.js'
import { isolatedEnv, runInProcess } from '../helpers/cli.js'
import { get, pull, startDaemon } from '../helpers/daemon.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startFront } from '../fixtures/front.js'
import { CACHE_DIR, startRegistry } from '../fixtures/registry.js'
import { RATE_LIMIT_PROBE } from '../../src/upstream/ratelimit.js'

t.test('pointsAt: URLs, host:port and registries.conf locations against the listen addresses', async (t) => {
  const cases: Array<[string, string[], boolean]> = [
    ['http://127.0.0.1:5000', ['127.0.0.1:5000', '[::1]:5000'], true],
    ['http://127.0.0.1:5000/', ['127.0.0.1:5000'], true],
    ['127.0.0.1:5000/ghcr.io', ['127.0.0.1:5000'], true],
    ['http://[::1]:5000', ['127.0.0.1:5000', '[::1]:5000'], true],
    ['localhost:5000', ['127.0.0.1:5000'], true],
    ['127.0.0.1:5000', ['0.0.0.0:5000'], true],
    ['http://127.0.0.1:5000', ['127.0.0.1:5001'], false],
    ['https://mirror.example:5000', ['0.0.0.0:5000'], false],
    ['10.0.0.2:5000', ['127.0.0.1:5000'], false],
  ]
  for (const [value, listen, want] of cases) t.equal(pointsAt(value, listen), want, `${value} vs ${listen.join(',')}`)
})

t.test('clients told an address dproxy no longer listens on (dproxy start --port): the address check fails, exit 1', async (t) => {
  const closed = `http://127.0.0.1:${await freePort()}`
  const env = isolatedEnv(t, { PATH: '', DPROXY_UPSTREAMS: `docker.io=${closed}`, DPROXY_PORT: '1' })
  // setup with no daemon running points clients at the configured port.
  const setup = await runInProcess(['setup', 'podman', '--user', '--registries', 'docker.io', '--yes'], env)
  t.equal(setup.code, 0, setup.err)
  const d = await startDaemon(t, undefined, { cacheDir: env.DPROXY_CACHE_DIR, upstreams: { 'docker.io': closed } })
  const res = await runInProcess(['doctor', '--json'], env)
  t.equal(res.code, 1, res.err)
  const report = JSON.parse(res.out) as DoctorReport
  t.match(report.checks.find((c) => c.name === 'address'), {
    level: 'fail',
    detail: `clients were told 127.0.0.1:1 (dproxy setup), but dproxy listens on 127.0.0.1:${d.port}`,
    fix: /dproxy setup/,
  })
  t.match(report.checks.find((c) => c.name === 'docker.io'), { level: 'warn', detail: /unreachable.*served from the cache only/ })
  t.same(
    report.clients.map((c) => [c.client, c.state]),
    ['docker', 'ctr', 'podman', 'buildkit', 'k3s'].map((c) => [c, 'skipped']),
    'clients that are not installed are skipped, not failed',
  )
})

t.test("the upstreams checked are the running daemon's (serve --upstream), the configured ones only when none runs", async (t) => {
  // A registry root that answers as Docker Hub's does: 401 with a Date.
  const fixture = createServer((req, res) => {
    res.statusCode = req.url === '/v2/' ? 401 : 404
    res.end()
  })
  fixture.listen(0, '127.0.0.1')
  await once(fixture, 'listening')
  t.teardown(() => new Promise<void>((resolve) => fixture.close(() => resolve())))
  const running = `http://127.0.0.1:${(fixture.address() as AddressInfo).port}`
  const configured = `http://127.0.0.1:${await freePort()}`
  const env = isolatedEnv(t, { PATH: '', DPROXY_UPSTREAMS: `docker.io=${configured}` })
  const d = await startDaemon(t, undefined, { cacheDir: env.DPROXY_CACHE_DIR, upstreams: { 'docker.io': running } })

  const res = await runInProcess(['doctor', '--json'], env)
  const hub = (JSON.parse(res.out) as DoctorReport).checks.filter((c) => c.name === 'docker.io')
  t.equal(hub.length, 1, res.err)
  t.match(hub[0], { level: 'ok', detail: `${running} answers (HTTP 401)` }, 'the endpoint the daemon pulls from, which answers')
  t.notMatch(hub[0]?.detail, configured, 'not the configured one')

  await d.stop(0)
  const alone = await runInProcess(['doctor', '--json'], env)
  t.match((JSON.parse(alone.out) as DoctorReport).checks.find((c) => c.name === 'docker.io'), {
    level: 'warn',
    detail: new RegExp(`^${configured} is unreachable`),
  }, 'with no daemon running, the configured endpoint')
})

t.test('the text report: plain words when piped, marks and colour on a terminal, failures listed', async (t) => {
  const report: DoctorReport = {
    ok: false,
    address: '127.0.0.1:5000',
    listen: ['127.0.0.1:5000'],
    checks: [{ name: 'dproxy', level: 'ok', detail: 'running' }],
    clients: [
      { client: 'docker', state: 'ok', configured: true, verified: true, reason: 'a pull reached dproxy' },
      { client: 'podman', state: 'broken', configured: false, verified: false, reason: 'podman does not go through dproxy: ...', fix: 'dproxy setup podman' },
      { client: 'k3s', state: 'skipped', configured: false, verified: false, reason: 'k3s is not installed' },
    ],
    recentFailures: [{ image: 'docker.io/library/nope', count: 1, failures: [{ at: 'T', request: 'GET /v2/library/nope/manifests/1', status: 404, code: 'MANIFEST_UNKNOWN', message: 'unknown' }] }],
  }
  const plain = formatDoctorText(report, false)
  t.match(plain, /^docker {4}yes {9}yes\n {2}a pull reached dproxy$/m)
  t.match(plain, /^podman {4}no {10}no {8}dproxy setup podman$/m)
  t.match(plain, /^k3s {7}- {11}- {9}\(skipped\)$/m)
  t.match(plain, 'docker.io/library/nope: 1 failed request\n    T  GET /v2/library/nope/manifests/1 -> 404 MANIFEST_UNKNOWN: unknown')
  t.notMatch(plain, '\u001b[')
  const tty = formatDoctorText(report, true)
  t.match(tty, '\u001b[32m✓')
  t.match(tty, '\u001b[31m✗')
})

t.test("logins: a credential helper docker's config names that is missing or failing is reported with the fix", async (t) => {
  const env = isolatedEnv(t, {}, { bin: {}, docker: {} })
  const root = path.dirname(env.HOME!)
  const bin = path.join(root, 'bin')
  fs.writeFileSync(path.join(bin, 'docker-credential-broken'), '#!/bin/sh\necho "keyring locked" >&2\nexit 4\n', { mode: 0o755 })
  fs.writeFileSync(path.join(root, 'docker', 'config.json'), JSON.stringify({ credsStore: 'gone', credHelpers: { 'ghcr.io': 'broken' } }))
  const doctorEnv = { ...env, PATH: bin, DOCKER_CONFIG: path.join(root, 'docker') }
  const res = await runInProcess(['doctor', '--json'], doctorEnv)
  const report = JSON.parse(res.out) as DoctorReport
  const file = path.join(root, 'docker', 'config.json')
  t.match(
    report.checks.filter((c) => c.name === 'logins'),
    [
      { level: 'warn', detail: `docker credsStore gone in ${file}: docker-credential-gone is not installed (not on PATH)`, fix: /^install docker-credential-gone \(Debian: golang-docker-credential-helpers/ },
      { level: 'warn', detail: `docker credHelpers broken (for ghcr.io) in ${file}: docker-credential-broken list failed (exit status 4)`, fix: /^run 'docker-credential-broken list' to see why/ },
    ],
  )
  const off = JSON.parse((await runInProcess(['doctor', '--json'], { ...doctorEnv, DPROXY_DOCKER_CREDENTIALS: 'false' })).out) as DoctorReport
  t.same(off.checks.filter((c) => c.name === 'logins'), [], 'not checked when the lookup is off')
})

t.test("recent failures: a refused pull in the same words the client got", async (t) => {
  const up = await startUpstream({ hub: { privateRepositories: ['private/secret'] } })
  t.teardown(() => up.stop())
  const env = isolatedEnv(t, { PATH: '' })
  const d = await startDaemon(t, undefined, { cacheDir: env.DPROXY_CACHE_DIR, upstreams: { 'docker.io': up.hubUrl } })
  const res = await get(`${d.url}/v2/private/secret/manifests/latest`)
  const wire = (JSON.parse(res.body.toString()) as { errors: Array<{ message: string }> }).errors[0]!.message
  t.equal(wire, 'docker.io refused private/secret:latest (401): it is private or does not exist (Docker Hub answers both the same way); log in with `dproxy login docker.io`')
  const report = JSON.parse((await runInProcess(['doctor', '--json'], { ...env, DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })).out) as DoctorReport
  t.match(report.recentFailures, [{ image: 'docker.io/private/secret', failures: [{ status: 401, code: 'UNAUTHORIZED', message: wire }] }])
})

t.test('a chain: each endpoint in order, reachable, its own auth (401 with the dproxy login hint), and which one served the daemon', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  await up.retag(RATE_LIMIT_PROBE.repository, RATE_LIMIT_PROBE.tag, up.images.alpine)
  // The team tier: Debian's docker-registry in proxy mode in front of the hub fixture.
  const work = mkdtempSync(path.join(CACHE_DIR, 'doctor-team-'))
  const team = await startRegistry({ storageDir: path.join(work, 'storage'), workDir: work, removeOnStop: true, proxyRemoteUrl: up.hubUrl })
  t.teardown(() => team.stop())
  // A mirror that wants a login this machine lacks, and a dead one (a closed port).
  const locked = await startFront(team.url)
  t.teardown(() => locked.stop())
  locked.set({ kind: 'auth' })
  const closed = `http://127.0.0.1:${await freePort()}`
  const env = isolatedEnv(t, { PATH: '' })
  const d = await startDaemon(t, undefined, {
    cacheDir: env.DPROXY_CACHE_DIR,
    upstreams: { 'docker.io': [closed, locked.url, team.url, 'origin'] },
    upstreamOrigins: { 'docker.io': up.hubUrl },
    chainTimeouts: { connectMs: 1000, firstByteMs: 5000 },
  })
  await pull(d.url, 'alpine', 'latest')

  const res = await runInProcess(['doctor', '--json'], env)
  const report = JSON.parse(res.out) as DoctorReport
  const lockedHost = new URL(locked.url).host
  t.match(report.endpoints, [
    { registry: 'docker.io', endpoint: closed, kind: 'mirror', position: 0, reachable: false, auth: 'unknown', up: false, servedLast: false },
    { endpoint: locked.url, position: 1, reachable: true, reach: 'answers (HTTP 401)', auth: 'refused', authDetail: new RegExp(`refused ratelimitpreview/test:latest \\(401\\).*dproxy login ${lockedHost}`), fix: `dproxy login ${lockedHost}` },
    { endpoint: team.url, kind: 'mirror', position: 2, reachable: true, auth: 'ok', up: true, servedLast: true, lastServedAt: String },
    { endpoint: up.hubUrl, kind: 'origin', position: 3, last: true, reachable: true, auth: 'ok', servedLast: false },
  ], res.err)
  t.equal(report.endpoints?.length, 4)
  const lines = report.checks.filter((c) => c.name === 'docker.io')
  t.match(lines, [
    { level: 'warn', detail: new RegExp(`^1\\. ${closed} \\(mirror\\) is unreachable \\(.*ECONNREFUSED.*\\): pulls fall through to the next endpoint; the daemon has it down`) },
    { level: 'warn', detail: new RegExp(`^2\\. ${locked.url} \\(mirror\\) answers \\(HTTP 401\\); ${lockedHost} refused`), fix: `dproxy login ${lockedHost}` },
    { level: 'ok', detail: new RegExp(`^3\\. ${team.url} \\(mirror\\) answers \\(HTTP 200\\); auth works \\(HEAD ratelimitpreview/test:latest answered\\); it answered the daemon's latest request`) },
    { level: 'ok', detail: new RegExp(`^4\\. ${up.hubUrl} \\(origin, last\\) answers`) },
  ])
  const text = formatDoctorText(report, false)
  t.match(text, `fix: dproxy login ${lockedHost}`, 'the text report names the login that fixes it')

  // No daemon: the configured chain, no origin implied.
  await d.stop(0)
  const alone = JSON.parse(
    (await runInProcess(['doctor', '--json'], { ...env, DPROXY_UPSTREAMS: `docker.io=${closed},${team.url}`, DPROXY_NO_ORIGIN: 'docker.io' })).out,
  ) as DoctorReport
  t.match(alone.endpoints, [
    { endpoint: closed, position: 0, reachable: false, servedLast: false },
    { endpoint: team.url, position: 1, last: true, reachable: true, auth: 'ok' },
  ])
  t.equal(alone.endpoints?.length, 2)
  t.notOk(alone.endpoints?.some((e) => 'up' in e), 'nothing of a daemon when none runs')
})
