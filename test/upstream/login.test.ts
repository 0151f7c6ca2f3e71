// dproxy login's core against real token services: the Hub shim (Bearer
// realm, Basic on the token endpoint), a registry that answers Basic
// challenges itself, a registry that asks for nothing, and challenges whose
// realm must not receive credentials. The store is the real file store.

import { once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { FileCredentialStore } from '../../src/credentials/file.js'
import { type Credential, CLIENT_SECRET_KEY } from '../../src/credentials/credential.js'
import { DproxyError } from '../../src/errors.js'
import {
  DOCKER_HUB_LOGIN_SCOPE,
  login,
  loginRegistry,
  logout,
  storedCredentials,
} from '../../src/upstream/login.js'
import { startUpstream } from '../fixtures/upstream.js'

const password = 's3cret-Pa55'

/** Every message and cause message of an error, for "the secret is in none of them". */
function messages(err: unknown): string {
  const out: string[] = []
  for (let e = err; e instanceof Error; e = e.cause) out.push(e.message, e.stack ?? '')
  return out.join('\n')
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection')
}

/** A tiny server for challenge shapes the Hub shim does not have; records every request. */
async function serve(t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const seen: Array<{ url: string; authorization: string | undefined }> = []
  const server = createServer((req, res) => {
    seen.push({ url: req.url ?? '', authorization: req.headers.authorization })
    handler(req, res)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

t.test('loginRegistry: Docker Hub by default, aliases folded, docker URL forms reduced to the host', async (t) => {
  t.equal(loginRegistry(undefined), 'docker.io')
  t.equal(loginRegistry(''), 'docker.io')
  t.equal(loginRegistry('index.docker.io'), 'docker.io')
  t.equal(loginRegistry('https://index.docker.io/v1/'), 'docker.io')
  t.equal(loginRegistry('GHCR.io'), 'ghcr.io')
  t.equal(loginRegistry('http://localhost:5000'), 'localhost:5000')
  t.throws(() => loginRegistry('not a host'), { code: 'CONFIG_INVALID' })
  t.throws(() => loginRegistry(CLIENT_SECRET_KEY), { code: 'USAGE', message: /reserved/ })
})

t.test('login against the Hub shim', async (t) => {
  const up = await startUpstream({ hub: { users: { alice: password } } })
  t.teardown(() => up.stop())
  const upstreams = { 'docker.io': up.hubUrl }

  t.test('good credentials: a token is fetched with them, then they are stored', async (t) => {
    const store = new FileCredentialStore(t.testdir())
    up.hub.resetCounts()
    const result = await login({ registry: 'docker.io', credential: { username: 'alice', secret: password }, store, upstreams })
    t.strictSame(result, { registry: 'docker.io', username: 'alice', upstream: up.hubUrl, scheme: 'bearer', store: 'file' })
    t.strictSame(await store.get('docker.io'), { username: 'alice', secret: password })
    t.equal(up.hub.counts.tokenRequests, 1)
    const token = up.hub.counts.requests.find((r) => r.path.startsWith('/token'))
    t.equal(new URL(token!.path, up.hubUrl).searchParams.get('scope'), DOCKER_HUB_LOGIN_SCOPE)
    t.equal(token!.status, 200)
  })

  t.test('a wrong password: "incorrect username or password", nothing stored, secret in no message', async (t) => {
    const store = new FileCredentialStore(t.testdir())
    const wrong = 'wrong-Pa55word'
    const err = await rejection(login({ registry: 'docker.io', credential: { username: 'alice', secret: wrong }, store, upstreams }))
    t.ok(err instanceof DproxyError)
    t.match(err, { code: 'UNAUTHORIZED', message: 'login failed: incorrect username or password' })
    t.strictSame(await store.list(), [])
    t.notMatch(messages(err), wrong)
    const unknown = await rejection(login({ registry: 'docker.io', credential: { username: 'mallory', secret: password }, store, upstreams }))
    t.match(unknown, { code: 'UNAUTHORIZED' })
    t.strictSame(await store.list(), [])
  })

  t.test('an upstream that asks for nothing: refused, since the login would never be used', async (t) => {
    const store = new FileCredentialStore(t.testdir())
    const err = await rejection(
      login({ registry: 'registry.test:5000', credential: { username: 'alice', secret: password }, store, upstreams: { 'registry.test:5000': up.registryUrl } }),
    )
    t.match(err, { code: 'UNSUPPORTED', message: /did not answer GET \/v2\/ with an authentication challenge/ })
    t.strictSame(await store.list(), [])
  })
})

t.test('a registry answering Basic challenges: checked with a Basic-authenticated GET /v2/', async (t) => {
  const good = `Basic ${Buffer.from(`bob:${password}`).toString('base64')}`
  const reg = await serve(t, (req, res) => {
    if (req.headers.authorization === good) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      return
    }
    res.writeHead(401, { 'www-authenticate': 'Basic realm="test"', 'content-type': 'application/json' }).end('{"errors":[]}')
  })
  const upstreams = { 'basic.test': reg.url }
  const store = new FileCredentialStore(t.testdir())
  const bad = await rejection(login({ registry: 'basic.test', credential: { username: 'bob', secret: 'nope-nope' }, store, upstreams }))
  t.match(bad, { code: 'UNAUTHORIZED', message: 'login failed: incorrect username or password' })
  t.strictSame(await store.list(), [])
  const result = await login({ registry: 'basic.test', credential: { username: 'bob', secret: password }, store, upstreams })
  t.equal(result.scheme, 'basic')
  t.strictSame(await store.get('basic.test'), { username: 'bob', secret: password })
  t.strictSame(
    reg.seen.map((r) => r.url),
    ['/v2/', '/v2/', '/v2/', '/v2/'],
    'a ping and a checked GET per login, nothing else',
  )
})

t.test('a chain endpoint is logged in to by its host, at that endpoint (plain http on the LAN included)', async (t) => {
  const good = `Basic ${Buffer.from(`team:${password}`).toString('base64')}`
  const reg = await serve(t, (req, res) => {
    if (req.headers.authorization === good) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      return
    }
    res.writeHead(401, { 'www-authenticate': 'Basic realm="team"', 'content-type': 'application/json' }).end('{"errors":[]}')
  })
  const host = new URL(reg.url).host
  const store = new FileCredentialStore(t.testdir())
  const result = await login({ registry: host, credential: { username: 'team', secret: password }, store, upstreams: { 'docker.io': [reg.url, 'origin'] } })
  t.equal(result.upstream, reg.url, 'checked at the endpoint itself, not at https://<host>')
  t.equal(result.scheme, 'basic')
  t.strictSame(await store.get(host), { username: 'team', secret: password })
})

t.test('credentials never go to a realm that may not receive them', async (t) => {
  const realmServer = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"x"}')
  })
  for (const [what, realm, code] of [
    // Not private, but another site than 127.0.0.1: checkRealm says "no credentials" (nothing is resolved or called).
    ['another site', 'http://auth.other.test/token', 'DENIED'],
    // Another private address than the configured (so trusted) upstream: another site, so no credentials either.
    ['another private address', `${realmServer.url.replace('127.0.0.1', '127.0.0.2')}/token`, 'DENIED'],
  ] as const) {
    const reg = await serve(t, (_req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="x"` }).end()
    })
    const store = new FileCredentialStore(t.testdir())
    const err = await rejection(
      login({ registry: 'evil.test', credential: { username: 'bob', secret: password }, store, upstreams: { 'evil.test': reg.url } }),
    )
    t.match(err, { code }, what)
    t.notMatch(messages(err), password, what)
    t.strictSame(await store.list(), [], what)
    t.ok(reg.seen.every((r) => r.authorization === undefined), `${what}: the registry saw no credentials`)
  }
  t.strictSame(realmServer.seen, [], 'the realm was never called')
})

t.test('logout removes from every store given and says where', async (t) => {
  const a = new FileCredentialStore(t.testdir())
  const b = new FileCredentialStore(t.testdir())
  await b.set('ghcr.io', { username: 'bob', secret: password })
  t.strictSame(await logout('ghcr.io', [a, b]), ['file'])
  t.strictSame(await logout('ghcr.io', [a, b]), [])
  t.equal(await b.get('ghcr.io'), undefined)
})

t.test('storedCredentials: re-reads the store at most once per TTL, per registry', async (t) => {
  let now = 1_000_000
  const clock = { now: () => now }
  const stored = new Map<string, Credential>()
  const lookups: string[] = []
  const source = storedCredentials(
    async (registry) => {
      lookups.push(registry)
      return stored.get(registry)
    },
    { ttlMs: 5000, clock },
  )
  t.equal(await source('docker.io'), undefined)
  stored.set('docker.io', { username: 'alice', secret: password })
  now += 4999
  t.equal(await source('docker.io'), undefined, 'still cached')
  now += 1
  t.strictSame(await source('docker.io'), { username: 'alice', secret: password }, 'a login shows within the TTL')
  stored.delete('docker.io')
  now += 5000
  t.equal(await source('docker.io'), undefined, 'so does a logout')
  t.strictSame(lookups, ['docker.io', 'docker.io', 'docker.io'])
  await Promise.all([source('ghcr.io'), source('ghcr.io'), source('ghcr.io')])
  t.equal(lookups.filter((r) => r === 'ghcr.io').length, 1, 'concurrent first reads share one lookup')
  stored.set(CLIENT_SECRET_KEY, { username: 'dproxy', secret: password })
  t.equal(await source(CLIENT_SECRET_KEY), undefined, 'the client password is never an upstream credential')
  t.notOk(lookups.includes(CLIENT_SECRET_KEY))
})

t.test('storedCredentials: a failing store means anonymous, logged without the secret', async (t) => {
  const warnings: string[] = []
  const log = { info() {}, warn: (m: string) => warnings.push(m), error() {} }
  const source = storedCredentials(
    async () => {
      throw new DproxyError('INTERNAL', 'the keychain went away')
    },
    { log },
  )
  t.equal(await source('docker.io'), undefined)
  t.match(warnings, [/cannot read the login for docker\.io \(the keychain went away\); pulling anonymously/])
})
