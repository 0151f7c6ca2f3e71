// Client auth: the token format (HMAC over expiry and password digest), the
// password's life in the credential store, and the HTTP contract through a
// real Daemon: challenges, the token endpoint, every accepted way of sending
// credentials, rotation, and the token endpoint being the only admin endpoint
// a non-loopback client may reach.

import { randomBytes } from 'node:crypto'
import { get as httpGet } from 'node:http'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { TokenBook, TokenFile } from '../../src/credentials/tokens.js'
import { FileCredentialStore } from '../../src/credentials/file.js'
import {
  ClientAuth,
  CLIENT_USERNAME,
  clientSecretReader,
  ensureClientSecret,
  failureKey,
  MAX_FAILURES,
  TOKEN_PATH,
} from '../../src/daemon/clientauth.js'
import { Daemon } from '../../src/daemon/daemon.js'
import { DproxyError } from '../../src/errors.js'
import { ACCEPT_ALL_MANIFESTS } from '../fixtures/images.js'
import { startUpstream } from '../fixtures/upstream.js'
import { get, startDaemon } from '../helpers/daemon.js'
import { CLIENT_SECRET_KEY } from '../../src/credentials/credential.js'

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

t.test('ensureClientSecret: created once, kept, replaced by rotate', async (t) => {
  const store = new FileCredentialStore(t.testdir())
  const first = await ensureClientSecret(store)
  t.equal(first.created, true)
  t.equal(first.username, CLIENT_USERNAME)
  t.match(first.secret, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url')
  t.strictSame(await store.get(CLIENT_SECRET_KEY), { username: CLIENT_USERNAME, secret: first.secret })
  const again = await ensureClientSecret(store)
  t.strictSame(again, { ...first, created: false })
  const rotated = await ensureClientSecret(store, { rotate: true })
  t.equal(rotated.created, true)
  t.not(rotated.secret, first.secret)
  t.equal((await store.get(CLIENT_SECRET_KEY))?.secret, rotated.secret)
})

t.test('clientSecretReader: one store read per TTL; a failing store keeps the last password', async (t) => {
  let now = 0
  let reads = 0
  let fail = false
  let secret: string | undefined = 'one'
  const warnings: string[] = []
  const read = clientSecretReader(
    {
      get: async () => {
        reads++
        if (fail) throw new DproxyError('INTERNAL', 'keychain locked')
        return secret === undefined ? undefined : { username: CLIENT_USERNAME, secret }
      },
    },
    { ttlMs: 5000, clock: { now: () => now }, log: { info() {}, warn: (m) => warnings.push(m), error() {} } },
  )
  t.equal(await read(), 'one')
  secret = 'two'
  now = 4999
  t.equal(await read(), 'one')
  now = 5000
  t.equal(await read(), 'two')
  fail = true
  now = 10_000
  t.equal(await read(), 'two', 'kept')
  t.match(warnings, [/cannot read the client password \(keychain locked\)/])
  t.notMatch(warnings.join('\n'), /two/)
  t.equal(reads, 3)
})

t.test('tokens: valid until expiry, bound to this daemon and to the current password', async (t) => {
  let now = Date.parse('2030-01-01T00:00:00Z')
  let secret: string | undefined = 'pw-1'
  const clock = { now: () => now }
  const auth = new ClientAuth({ secret: async () => secret, clock, tokenTtlSeconds: 60 })
  const issued = await auth.issue()
  t.equal(issued.token, issued.access_token)
  t.equal(issued.expires_in, 60)
  t.equal(issued.issued_at, '2030-01-01T00:00:00.000Z')
  t.match(issued.token, /^dp1\.\d+\.[A-Za-z0-9_-]{43}$/)
  t.notMatch(issued.token, /pw-1/)
  t.equal(await auth.verifyToken(issued.token), true)
  const [, expiry, mac] = issued.token.split('.')
  t.equal(await auth.verifyToken(`dp1.${Number(expiry) + 3600}.${mac}`), false, 'a longer expiry breaks the MAC')
  t.equal(await auth.verifyToken(`dp1.${expiry}.${mac!.slice(0, -1)}${mac!.endsWith('A') ? 'B' : 'A'}`), false, 'tampered MAC')
  t.equal(await auth.verifyToken('garbage'), false)
  t.equal(await auth.verifyToken(`dp1.0${expiry}.${mac}`), false, 'one spelling only: a leading zero on the expiry is refused')
  t.equal(await auth.verifyToken(`dp1.+${expiry}.${mac}`), false, 'and a sign')
  const other = new ClientAuth({ secret: async () => secret, clock })
  t.equal(await other.verifyToken(issued.token), false, 'another daemon (another key) does not accept it')
  now += 59_999
  t.equal(await auth.verifyToken(issued.token), true)
  now += 1
  t.equal(await auth.verifyToken(issued.token), false, 'expired')
  const fresh = await auth.issue()
  secret = 'pw-2'
  t.equal(await auth.verifyToken(fresh.token), false, 'a new password revokes tokens issued under the old one')
  t.equal(await auth.checkPassword(CLIENT_USERNAME, 'pw-1'), false)
  t.equal(await auth.checkPassword(CLIENT_USERNAME, 'pw-2'), true)
  t.equal(await auth.checkPassword('someone', 'pw-2'), false)
  secret = undefined
  t.equal(await auth.checkPassword(CLIENT_USERNAME, ''), false, 'no password yet: nobody gets in')
  await t.rejects(auth.issue(), { code: 'UNAUTHORIZED' })
  t.throws(() => new ClientAuth({ secret: async () => 'x', tokenTtlSeconds: 0 }), { code: 'CONFIG_INVALID' })
})

t.test('over HTTP, through a real daemon', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  let secret = 'client-pass-1'
  const daemon = await startDaemon(t, up, { clientAuth: { secret: async () => secret } })
  const base = daemon.url
  const port = daemon.port
  const manifestUrl = `${base}/v2/alpine/manifests/latest`

  t.test('no credentials: 401 with a Bearer challenge at the host the client used, OCI body, nothing upstream', async (t) => {
    up.hub.resetCounts()
    const res = await get(`${base}/v2/`)
    t.equal(res.status, 401)
    t.equal(res.headers['www-authenticate'], `Bearer realm="http://127.0.0.1:${port}${TOKEN_PATH}",service="dproxy"`)
    t.equal(res.headers['docker-distribution-api-version'], 'registry/2.0')
    t.match(JSON.parse(res.body.toString()), { errors: [{ code: 'UNAUTHORIZED', message: /authentication required/ }] })
    const named = await get(`${base}/v2/`, { host: `localhost:${port}` })
    t.equal(named.headers['www-authenticate'], `Bearer realm="http://localhost:${port}${TOKEN_PATH}",service="dproxy"`)
    const hostile = await get(`${base}/v2/`, { host: 'evil",x="y' })
    // On a loopback listener a Host that is not this machine's is refused before auth (guard.ts): never echoed.
    t.equal(hostile.status, 421, 'a malformed Host is refused')
    t.equal(hostile.headers['www-authenticate'], undefined, 'and not echoed into a challenge')
    const head = await get(manifestUrl, { accept: ACCEPT_ALL_MANIFESTS }, 'HEAD')
    t.equal(head.status, 401)
    t.equal(head.body.length, 0)
    for (const path of ['/v2/alpine/manifests/latest', `/v2/alpine/blobs/${up.images.alpine.digest}`, '/v2/alpine/tags/list', '/elsewhere']) {
      t.equal((await get(`${base}${path}`)).status, 401, path)
    }
    t.equal(up.hub.counts.requests.length, 0, 'the upstream saw nothing')
  })

  t.test('the token endpoint: Basic with the password, or the OAuth2 password grant', async (t) => {
    const none = await get(`${base}${TOKEN_PATH}?service=dproxy&scope=repository:alpine:pull`)
    t.equal(none.status, 401)
    t.equal(none.headers['www-authenticate'], 'Basic realm="dproxy"')
    t.match(JSON.parse(none.body.toString()), { errors: [{ code: 'UNAUTHORIZED' }] })
    for (const [user, pw] of [
      [CLIENT_USERNAME, 'wrong'],
      ['someone', secret],
      [CLIENT_USERNAME, ''],
    ] as const) {
      const res = await get(`${base}${TOKEN_PATH}?service=dproxy`, { authorization: basic(user, pw) })
      t.equal(res.status, 401, `${user}:${pw.length} chars`)
      t.notMatch(res.body.toString(), secret)
    }
    const ok = await get(`${base}${TOKEN_PATH}?service=dproxy&scope=repository:alpine:pull`, {
      authorization: basic(CLIENT_USERNAME, secret),
    })
    t.equal(ok.status, 200)
    t.equal(ok.headers['cache-control'], 'no-store')
    const body = JSON.parse(ok.body.toString()) as Record<string, unknown>
    t.strictSame(Object.keys(body).sort(), ['access_token', 'expires_in', 'issued_at', 'token'])
    t.equal(body.token, body.access_token)
    t.equal(body.expires_in, 900)
    t.notMatch(ok.body.toString(), secret)

    const post = async (form: Record<string, string>) => {
      const res = await request(`${base}${TOKEN_PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form).toString(),
      })
      return { status: res.statusCode, body: await res.body.text() }
    }
    const grant = await post({ grant_type: 'password', username: CLIENT_USERNAME, password: secret, service: 'dproxy', client_id: 'containerd-client' })
    t.equal(grant.status, 200)
    t.match(JSON.parse(grant.body), { access_token: /^dp1\./ })
    t.equal((await post({ grant_type: 'password', username: CLIENT_USERNAME, password: 'nope' })).status, 401)
    t.equal((await post({ grant_type: 'refresh_token', refresh_token: 'x' })).status, 400, 'containerd then falls back to GET')
    const del = await request(`${base}${TOKEN_PATH}`, { method: 'DELETE' })
    await del.body.dump()
    t.equal(del.statusCode, 405)
  })

  t.test('a token, the password, or a token as Basic password open /v2/; rotation closes them', async (t) => {
    const tokenRes = await get(`${base}${TOKEN_PATH}`, { authorization: basic(CLIENT_USERNAME, secret) })
    const token = (JSON.parse(tokenRes.body.toString()) as { token: string }).token
    const manifest = await get(manifestUrl, { accept: ACCEPT_ALL_MANIFESTS, authorization: `Bearer ${token}` })
    t.equal(manifest.status, 200)
    t.equal(manifest.headers['docker-content-digest'], up.images.alpine.digest)
    t.equal((await get(`${base}/v2/`, { authorization: `Bearer ${token}` })).status, 200)
    t.equal((await get(`${base}/v2/`, { authorization: basic(CLIENT_USERNAME, secret) })).status, 200, 'Basic with the password')
    t.equal((await get(`${base}/v2/`, { authorization: basic(CLIENT_USERNAME, token) })).status, 200, 'Basic with a token')
    t.equal((await get(`${base}/v2/`, { authorization: basic('other', token) })).status, 401)
    t.equal((await get(`${base}/v2/`, { authorization: `Bearer ${token}x` })).status, 401)

    const old = secret
    secret = 'client-pass-2'
    t.equal((await get(`${base}/v2/`, { authorization: `Bearer ${token}` })).status, 401, 'old token revoked')
    t.equal((await get(`${base}/v2/`, { authorization: basic(CLIENT_USERNAME, old) })).status, 401, 'old password refused')
    t.equal((await get(`${base}${TOKEN_PATH}`, { authorization: basic(CLIENT_USERNAME, old) })).status, 401)
    t.equal((await get(`${base}/v2/`, { authorization: basic(CLIENT_USERNAME, secret) })).status, 200, 'new password works')
  })
})

t.test('without client auth there is no token endpoint', async (t) => {
  const daemon = await startDaemon(t, undefined)
  const res = await get(`${daemon.url}${TOKEN_PATH}`, { authorization: basic(CLIENT_USERNAME, 'x') })
  t.equal(res.status, 404)
  t.equal((await get(`${daemon.url}/v2/`)).status, 200)
})

const external = Object.values(os.networkInterfaces())
  .flat()
  .find((i) => i !== undefined && !i.internal && i.family === 'IPv4')?.address

t.test(
  'beyond loopback: client auth is mandatory, and only the token endpoint answers remote clients',
  { skip: external === undefined && 'this machine has no non-loopback IPv4 address' },
  async (t) => {
    const cacheDir = t.testdir()
    await t.rejects(Daemon.start({ hosts: [external!], port: 0, cacheDir }), {
      code: 'USAGE',
      message: new RegExp(`listening on ${external!.replace(/\./g, '\\.')} .*pass --auth`),
    })
    await t.rejects(Daemon.start({ hosts: ['127.0.0.1', '0.0.0.0'], port: 0, cacheDir }), { code: 'USAGE', message: /0\.0\.0\.0/ })
    const secret = 'remote-pass'
    await t.rejects(startDaemon(t, undefined, { hosts: [external!], clientAuth: { secret: async () => secret } }), {
      code: 'USAGE',
      message: /must speak TLS: pass --tls auto/,
    })
    // Plain HTTP beyond loopback only with --insecure-lan (the TLS side: test/daemon/tls.test.ts).
    const daemon = await startDaemon(t, undefined, { hosts: [external!], clientAuth: { secret: async () => secret }, insecureLan: true })
    t.match(daemon.insecureLanWarning, /^INSECURE: listening on .* without TLS/)
    const base = `http://${external}:${daemon.port}`
    // Connecting to a non-loopback address of this machine makes that the client's address too.
    const token = await get(`${base}${TOKEN_PATH}`, { authorization: basic(CLIENT_USERNAME, secret) })
    t.equal(token.status, 200, 'the token endpoint answers a non-loopback client')
    const status = await get(`${base}/_dproxy/status`, { authorization: basic(CLIENT_USERNAME, secret) })
    t.equal(status.status, 403, 'the other admin endpoints do not')
    const challenge = await get(`${base}/v2/`)
    t.equal(challenge.headers['www-authenticate'], `Bearer realm="${base}${TOKEN_PATH}",service="dproxy"`)
  },
)

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls `probe` until it answers `want` (at most `tries` times, `everyMs` apart); returns the last answer. */
async function pollUntil(probe: () => Promise<number>, want: number, tries = 60, everyMs = 250): Promise<number> {
  let last = await probe()
  for (let i = 0; i < tries && last !== want; i++) {
    await sleep(everyMs)
    last = await probe()
  }
  return last
}

t.test('named tokens (dproxy token create): Basic, the token dance, --repos, expiry, revocation, who is logged', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const dir = t.testdir()
  const stateDir = path.join(dir, 'state')
  const key = randomBytes(32)
  const file = new TokenFile(stateDir)
  const ci = await file.create(key, 'ci_runner-1')
  const lib = await file.create(key, 'lib', { repos: 'docker.io/library/*' })
  const hourAgo = Date.now() - 7_200_000
  const old = await new TokenFile(stateDir, { clock: { now: () => hourAgo } }).create(key, 'old', { expiresMs: 3_600_000 })
  const lines: string[] = []
  const capture = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), error: (m: string) => lines.push(m), debug: (m: string) => lines.push(m) }
  const tokens = new TokenBook({ stateDir, key: async () => key })
  const daemon = await startDaemon(t, up, { cacheDir: path.join(dir, 'cache'), clientAuth: { secret: async () => 'builtin-pass', tokens }, log: capture, accessLog: true })
  const base = daemon.url
  const manifestUrl = `${base}/v2/alpine/manifests/latest`
  const accept = { accept: ACCEPT_ALL_MANIFESTS }

  t.equal((await get(manifestUrl, { ...accept, authorization: basic('ci_runner-1', ci.token) })).status, 200, 'Basic NAME:TOKEN')
  t.equal((await get(`${base}/v2/`, { authorization: basic('lib', ci.token) })).status, 401, "another name with ci's token")
  t.equal((await get(`${base}/v2/`, { authorization: basic(CLIENT_USERNAME, ci.token) })).status, 401, 'the built-in user with a token')
  t.equal((await get(`${base}/v2/`, { authorization: basic(CLIENT_USERNAME, 'builtin-pass') })).status, 200, 'the built-in user still logs in')
  t.equal((await get(`${base}/v2/`, { authorization: basic('old', old.token) })).status, 401, 'an expired token is refused')
  t.equal((await get(`${base}${TOKEN_PATH}`, { authorization: basic('old', old.token) })).status, 401, 'also at the token endpoint')

  const issued = await get(`${base}${TOKEN_PATH}?service=dproxy&scope=repository:alpine:pull`, { authorization: basic('ci_runner-1', ci.token) })
  t.equal(issued.status, 200)
  const bearer = (JSON.parse(issued.body.toString()) as { token: string }).token
  t.match(bearer, /^dp2\.ci_runner-1\.\d+\.[A-Za-z0-9_-]{43}$/, 'the bearer names its token')
  t.equal((await get(manifestUrl, { ...accept, authorization: `Bearer ${bearer}` })).status, 200)
  t.equal((await get(`${base}/v2/`, { authorization: basic('ci_runner-1', bearer) })).status, 200, 'the bearer as Basic password')
  t.equal((await get(`${base}/v2/`, { authorization: basic('lib', bearer) })).status, 401, 'under its own name only')
  const forged = bearer.replace('dp2.ci_runner-1.', 'dp2.lib.')
  t.equal((await get(`${base}/v2/`, { authorization: `Bearer ${forged}` })).status, 401, 'another name breaks the MAC')
  const grant = await request(`${base}${TOKEN_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: 'lib', password: lib.token }).toString(),
  })
  t.equal(grant.statusCode, 200, 'the OAuth2 password grant')
  const libBearer = ((await grant.body.json()) as { token: string }).token

  t.test('--repos: other repositories get 403 DENIED for manifests, blobs and tag lists', async (t) => {
    up.hub.resetCounts()
    const libAuth = { authorization: `Bearer ${libBearer}` }
    t.equal((await get(manifestUrl, { ...accept, ...libAuth })).status, 200, 'docker.io/library/alpine matches')
    t.equal((await get(`${base}/v2/alpine/blobs/${up.images.alpine.digest}`, libAuth)).status !== 403, true)
    for (const path of [
      '/v2/someone/alpine/manifests/latest',
      `/v2/someone/alpine/blobs/${up.images.alpine.digest}`,
      '/v2/someone/alpine/tags/list',
      '/v2/registry.test:5000/library/alpine/manifests/latest',
    ]) {
      const res = await get(`${base}${path}`, { ...accept, ...libAuth })
      t.equal(res.status, 403, path)
      t.match(JSON.parse(res.body.toString()), { errors: [{ code: 'DENIED', message: /token lib may pull only docker\.io\/library\/\*/ }] })
    }
    t.equal((await get(`${base}/v2/someone/alpine/manifests/latest`, { ...accept, authorization: basic('lib', lib.token) })).status, 403, 'Basic too')
    t.equal(up.hub.counts.requests.filter((r) => r.path.includes('someone')).length, 0, 'nothing of a denied repository went upstream')
  })

  t.test('the access log, metrics and status name the token, never the secret', async (t) => {
    const manifestLines = lines.filter((l) => l.includes('/v2/alpine/manifests/latest') && l.includes(' 200 '))
    t.ok(manifestLines.some((l) => l.includes('user=ci_runner-1')), 'access log: user=NAME')
    t.ok(manifestLines.some((l) => l.includes('user=lib')))
    const metrics = await get(`${base}/metrics`)
    t.match(metrics.body.toString(), /dproxy_client_requests_total\{user="ci_runner-1",route="manifest",status="200"\} \d+/)
    const status = await daemon.status()
    const names = status.clients?.map((c) => c.name)
    t.strictSame(names, [CLIENT_USERNAME, 'ci_runner-1', 'lib', 'old'])
    t.ok(status.clients?.find((c) => c.name === 'ci_runner-1')?.lastUsed, 'last use of ci_runner-1')
    t.equal(status.clients?.find((c) => c.name === 'old')?.lastUsed, null, 'never used')
    const everything = lines.join('\n') + metrics.body.toString() + JSON.stringify(status)
    for (const secret of [ci.token, lib.token, old.token, bearer, libBearer, 'builtin-pass']) {
      t.notMatch(everything, secret, 'no secret in logs, metrics or status')
      t.notMatch(everything, secret.slice(-43))
    }
  })

  t.test('a revocation stops the token and its bearer tokens within seconds', async (t) => {
    await file.revoke('ci_runner-1')
    const viaBearer = await pollUntil(async () => (await get(`${base}/v2/`, { authorization: `Bearer ${bearer}` })).status, 401)
    t.equal(viaBearer, 401, 'the bearer token is refused (polled for at most 15 s)')
    t.equal((await get(`${base}/v2/`, { authorization: basic('ci_runner-1', ci.token) })).status, 401, 'and Basic with the token')
    t.equal((await get(`${base}${TOKEN_PATH}`, { authorization: basic('ci_runner-1', ci.token) })).status, 401, 'and the token endpoint')
    t.equal((await get(`${base}/v2/`, { authorization: `Bearer ${libBearer}` })).status, 200, 'other tokens keep working')
    const rotated = await file.rotate(key, 'lib')
    t.equal(await pollUntil(async () => (await get(`${base}/v2/`, { authorization: `Bearer ${libBearer}` })).status, 401), 401, 'a rotation ends bearers of the old secret')
    t.equal((await get(`${base}/v2/`, { authorization: basic('lib', rotated.token) })).status, 200, 'the new secret works')
  })
})

t.test('failed logins: 10 per address per minute, then 429 with Retry-After for that address only', async (t) => {
  let offset = 0
  const clock = { now: () => Date.now() + offset }
  const dir = t.testdir()
  const stateDir = path.join(dir, 'state')
  const key = randomBytes(32)
  const good = await new TokenFile(stateDir).create(key, 'ci')
  const daemon = await startDaemon(t, undefined, {
    cacheDir: path.join(dir, 'cache'),
    clock,
    clientAuth: { secret: async () => 'builtin-pass', tokens: new TokenBook({ stateDir, key: async () => key, clock }) },
  })
  const base = daemon.url
  // Another source address on loopback: 127.0.0.2.
  const fromOther = (authorization: string) =>
    new Promise<number>((resolve, reject) => {
      const req = httpGet(`${base}/v2/`, { headers: { authorization }, localAddress: '127.0.0.2', agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', reject)
    })
  const wrong = good.token.slice(0, -1) + (good.token.endsWith('A') ? 'B' : 'A')
  for (let i = 0; i < MAX_FAILURES; i++) {
    const target = i % 2 === 0 ? `${base}/v2/` : `${base}${TOKEN_PATH}`
    t.equal((await get(target, { authorization: basic('ci', wrong) })).status, 401, `failure ${i + 1}`)
  }
  const blocked = await get(`${base}/v2/`, { authorization: basic('ci', good.token) })
  t.equal(blocked.status, 429, 'the address is blocked, even with the right token')
  t.match(Number(blocked.headers['retry-after']), /^\d+$/)
  t.ok(Number(blocked.headers['retry-after']) > 0 && Number(blocked.headers['retry-after']) <= 60)
  t.match(JSON.parse(blocked.body.toString()), { errors: [{ code: 'TOOMANYREQUESTS', message: /too many failed logins/ }] })
  t.notMatch(blocked.body.toString(), good.token.slice(-43))
  t.equal((await get(`${base}${TOKEN_PATH}`, { authorization: basic('ci', good.token) })).status, 429, 'the token endpoint too')
  t.equal((await get(`${base}/v2/`)).status, 401, 'a request without credentials still gets the challenge')
  t.equal(await fromOther(basic('ci', good.token)), 200, 'another address is not blocked')
  offset += 60_000
  t.equal((await get(`${base}/v2/`, { authorization: basic('ci', good.token) })).status, 200, 'after the window, the address may log in again')
})

t.test('failed logins are counted per IPv4 address and per IPv6 /64', async (t) => {
  t.equal(failureKey('10.0.0.5'), '10.0.0.5')
  t.equal(failureKey('::ffff:10.0.0.5'), '10.0.0.5')
  t.equal(failureKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64')
  t.equal(failureKey('2001:0DB8:0001:0002:ffff:1:2:3'), '2001:db8:1:2::/64', 'the same /64, spelled otherwise')
  t.equal(failureKey('2001:db8::1'), '2001:db8:0:0::/64')
  t.equal(failureKey('::1'), '0:0:0:0::/64')
  t.equal(failureKey('fe80::1%eth0'), 'fe80:0:0:0::/64')
  t.not(failureKey('2001:db8:1:3::1'), failureKey('2001:db8:1:2::1'), 'another /64')
})
