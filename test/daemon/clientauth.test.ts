// Client auth: the token format (HMAC over expiry and password digest), the
// password's life in the credential store, and the HTTP contract through a
// real Daemon: challenges, the token endpoint, every accepted way of sending
// credentials, rotation, and the token endpoint being the only admin endpoint
// a non-loopback client may reach.

import os from 'node:os'
import t from 'tap'
import { request } from 'undici'
import { FileCredentialStore } from '../../src/credentials/file.js'
import {
  ClientAuth,
  CLIENT_USERNAME,
  clientSecretReader,
  ensureClientSecret,
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
