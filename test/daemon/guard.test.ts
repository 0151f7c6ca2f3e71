// Web pages against the daemon: a cross-site POST (CSRF), DNS rebinding (a
// foreign Host on a loopback connection), and mutating admin requests without
// the admin token, on a real daemon; then the real CLI clearing and pruning
// through a real `dproxy serve`, which keeps its token in a 0600 file.

import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { request } from 'undici'
import {
  ADMIN_TOKEN_HEADER,
  ensureAdminToken,
  hostName,
  isTrustedHost,
  readAdminToken,
  sameSecret,
} from '../../src/daemon/guard.js'
import { putImage, tag } from '../helpers/cache.js'
import { isolatedEnv, runDproxy, spawnServe } from '../helpers/cli.js'
import { startDaemon } from '../helpers/daemon.js'

type ErrorBody = { errors: Array<{ code: string; message: string }> }

async function call(url: string, method: string, headers: Record<string, string> = {}) {
  const res = await request(url, { method: method as 'GET', headers })
  const text = await res.body.text()
  return { status: res.statusCode, body: text === '' ? undefined : (JSON.parse(text) as ErrorBody) }
}

t.test('Host names that cannot be rebound pass; any other name is refused', async (t) => {
  const policy = { listenHosts: ['127.0.0.1', '::1', 'dproxy.lan'] }
  for (const host of [
    'localhost:5000',
    'LOCALHOST',
    '127.0.0.1:15420',
    '127.1.2.3',
    '[::1]:5000',
    'ci.localhost:5000',
    'host.docker.internal:5000',
    'dproxy.lan:5000',
    undefined,
  ]) {
    t.ok(isTrustedHost(host, policy), `${host} passes`)
  }
  for (const host of ['evil.example:5000', 'evil.example', 'localhost.evil.example', '10.0.0.5:5000', '', 'a b', '[::1', '0.0.0.0:5000']) {
    t.notOk(isTrustedHost(host, policy), `${host} is refused`)
  }
  t.notOk(isTrustedHost('0.0.0.0:5000', { listenHosts: ['0.0.0.0'] }), 'a wildcard listen address is no name')
  t.equal(hostName('[::1]:5000'), '::1')
  t.equal(hostName('Example.LAN.:80'), 'example.lan')
  t.ok(sameSecret('a'.repeat(43), 'a'.repeat(43)))
  t.notOk(sameSecret('a'.repeat(43), 'a'.repeat(42)))
})

t.test('a cross-site POST prune (Origin of another site) is refused and evicts nothing', async (t) => {
  const d = await startDaemon(t, undefined)
  const stored = await putImage(d.store, 'x', [1000])
  await tag(d.store, 'docker.io', 'library/x', '1', stored.manifest)
  const before = await d.store.stats()
  const url = `${d.url}/_dproxy/cache/prune?maxSize=1`
  // Even with the token (which a page cannot have), an Origin from elsewhere is refused.
  for (const origin of ['http://evil.example', 'null', `http://localhost:${d.port}`, 'https://127.0.0.1:1']) {
    const res = await call(url, 'POST', { origin, [ADMIN_TOKEN_HEADER]: d.adminToken })
    t.equal(res.status, 403, origin)
    t.equal(res.body?.errors[0]?.code, 'DENIED', origin)
  }
  const status = await call(`${d.url}/_dproxy/status`, 'GET', { origin: 'http://evil.example' })
  t.equal(status.status, 403, 'reading the status from a page is refused too')
  t.strictSame(await d.store.stats(), before, 'nothing was evicted')
  const own = await call(`${d.url}/_dproxy/cache/prune?maxSize=1&dryRun=1`, 'POST', {
    origin: d.url,
    [ADMIN_TOKEN_HEADER]: d.adminToken,
  })
  t.equal(own.status, 200, 'the daemon as its own origin is accepted')
})

t.test('DNS rebinding: a foreign Host is refused on the admin endpoints and the registry API', async (t) => {
  const d = await startDaemon(t, undefined)
  for (const path of ['/_dproxy/status', '/v2/', '/v2/library/alpine/manifests/latest']) {
    const res = await call(`${d.url}${path}`, 'GET', { host: 'evil.example:5000' })
    t.equal(res.status, 421, path)
    t.equal(res.body?.errors[0]?.code, 'DENIED', path)
    t.match(res.body?.errors[0]?.message, /does not answer to Host 'evil\.example:5000'/, path)
  }
  for (const host of [`localhost:${d.port}`, `127.0.0.1:${d.port}`, `[::1]:${d.port}`]) {
    t.equal((await call(`${d.url}/v2/`, 'GET', { host })).status, 200, `${host}: the registry API`)
    t.equal((await call(`${d.url}/_dproxy/status`, 'GET', { host })).status, 200, `${host}: the status`)
  }
})

t.test('mutating admin endpoints need the admin token; reading ones do not', async (t) => {
  const d = await startDaemon(t, undefined)
  const stored = await putImage(d.store, 'x', [1000])
  await tag(d.store, 'docker.io', 'library/x', '1', stored.manifest)
  const before = await d.store.stats()
  for (const [method, path] of [
    ['DELETE', '/_dproxy/cache'],
    ['POST', '/_dproxy/cache/prune?maxSize=1'],
  ] as const) {
    for (const headers of [{}, { [ADMIN_TOKEN_HEADER]: 'x'.repeat(43) }, { [ADMIN_TOKEN_HEADER]: '' }] as Array<Record<string, string>>) {
      const res = await call(`${d.url}${path}`, method, headers)
      t.equal(res.status, 403, `${method} ${path} ${JSON.stringify(headers)}`)
      t.match(res.body?.errors[0], { code: 'DENIED', message: /needs the admin token/ })
    }
  }
  t.strictSame(await d.store.stats(), before, 'nothing was removed')
  t.equal((await call(`${d.url}/_dproxy/cache/images`, 'GET')).status, 200)
  t.equal((await call(`${d.url}/_dproxy/status`, 'GET')).status, 200)
  const cleared = await call(`${d.url}/_dproxy/cache`, 'DELETE', { [ADMIN_TOKEN_HEADER]: d.adminToken })
  t.equal(cleared.status, 200, 'with the token it works')
})

t.test('the token file: created 0600 in a 0700 dir, kept across starts, tightened, a foreign file refused', async (t) => {
  const root = t.testdir({ junk: 'not a token\n', dir: {} })
  const file = path.join(root, 'state', 'admin-token')
  const token = await ensureAdminToken(file)
  t.match(token, /^[A-Za-z0-9_-]{43}$/)
  t.equal(fs.statSync(file).mode & 0o777, 0o600)
  t.equal(fs.statSync(path.dirname(file)).mode & 0o777, 0o700)
  t.equal(await ensureAdminToken(file), token, 'the same token on the next start')
  t.equal(await readAdminToken(file), token)
  fs.chmodSync(file, 0o644)
  await ensureAdminToken(file)
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'a loosened file is tightened')
  await t.rejects(ensureAdminToken(path.join(root, 'junk')), { code: 'CONFIG_INVALID', message: /does not hold a dproxy admin token/ })
  await t.rejects(ensureAdminToken(path.join(root, 'dir')), { code: 'CONFIG_INVALID' })
  t.equal(await readAdminToken(path.join(root, 'none')), undefined)

  const d = await startDaemon(t, undefined, { cacheDir: path.join(root, 'cache'), adminTokenFile: file })
  t.equal(d.adminToken, token, 'the daemon uses the file')
})

t.test('binary: cache prune and clear through a running dproxy serve still work', async (t) => {
  const env = isolatedEnv(t)
  const serve = await spawnServe(t, ['--host', '127.0.0.1', '--port', '0'], env)
  const tokenFile = path.join(env.DPROXY_STATE_DIR!, 'admin-token')
  t.equal(fs.statSync(tokenFile).mode & 0o777, 0o600, 'serve created the token file 0600')
  const prune = await runDproxy(['cache', 'prune', '--max-size', '1GB', '--json'], env)
  t.equal(prune.code, 0, prune.err)
  t.match(JSON.parse(prune.out), { via: 'daemon', fits: true })
  const clear = await runDproxy(['cache', 'clear', '--yes', '--json'], env)
  t.equal(clear.code, 0, clear.err)
  t.match(JSON.parse(clear.out), { via: 'daemon', dryRun: false })
  // Without the file, the CLI cannot: the daemon says why.
  fs.rmSync(tokenFile)
  const refused = await runDproxy(['cache', 'clear', '--yes'], env)
  t.equal(refused.code, 1)
  t.match(refused.err, /needs the admin token/)
  serve.child.kill('SIGTERM')
})
