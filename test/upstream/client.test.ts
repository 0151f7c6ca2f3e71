// The upstream client against the Docker-Hub-like shim: token flow and
// caching, credentials, redirects, User-Agent, rate-limit readings and error
// classification. Requests are counted by the shim.

import t, { type Test } from 'tap'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { isInternalAddress } from '../../src/net.js'
import { MAX_TOKENS, TokenAuth, anonymous } from '../../src/upstream/auth.js'
import { nextPage, Upstreams } from '../../src/upstream/client.js'
import type { Resolver } from '../../src/upstream/policy.js'
import { startUpstream } from '../fixtures/upstream.js'
import { sha256 } from '../helpers/daemon.js'
import { request, type Dispatcher } from 'undici'

t.test('tokens: one per repository scope, reused until expiry, refreshed after', async (t) => {
  let now = Date.now()
  const up = await startUpstream({ hub: { requireUserAgent: true, tokenTtlSeconds: 300, now: () => now } })
  t.teardown(() => up.stop())
  const u = new Upstreams({ overrides: { 'docker.io': up.hubUrl }, clock: { now: () => now } })
  t.teardown(() => u.close())
  const hub = u.get('docker.io')
  const m = await hub.getManifest('library/alpine', 'latest')
  t.ok(m.bytes.equals(up.images.alpine.manifest))
  t.equal(m.digest, up.images.alpine.digest)
  t.equal(m.mediaType, up.images.alpine.mediaType)
  await hub.headManifest('library/alpine', 'latest')
  t.equal(up.hub.counts.tokenRequests, 1, 'one token for two requests in one scope')
  await hub.headManifest('bitnami/redis', '7.2')
  t.equal(up.hub.counts.tokenRequests, 2, 'another repository, another scope')
  now += 301_000
  await hub.headManifest('library/alpine', 'latest')
  t.equal(up.hub.counts.tokenRequests, 3, 'expired token replaced')
  t.equal(u.counters.manifestGets, 1)
  t.equal(u.counters.manifestHeads, 3)
})

t.test('a token the registry no longer accepts is replaced once, transparently', async (t) => {
  let hubNow = Date.now()
  const up = await startUpstream({ hub: { tokenTtlSeconds: 300, now: () => hubNow } })
  t.teardown(() => up.stop())
  const u = new Upstreams({ overrides: { 'docker.io': up.hubUrl } })
  t.teardown(() => u.close())
  await u.get('docker.io').headManifest('library/alpine', 'latest')
  hubNow += 3600_000 // the registry's clock says our cached token expired
  const info = await u.get('docker.io').headManifest('library/alpine', 'latest')
  t.equal(info.digest, up.images.alpine.digest)
  t.equal(up.hub.counts.tokenRequests, 2)
})

t.test('credentials go to the token realm; rate limit is then the account\'s', async (t) => {
  const up = await startUpstream({ hub: { users: { alice: 's3cret' }, limit: 10 } })
  t.teardown(() => up.stop())
  const u = new Upstreams({
    overrides: { 'docker.io': up.hubUrl },
    credentials: async (registry) => (registry === 'docker.io' ? { username: 'alice', secret: 's3cret' } : undefined),
  })
  t.teardown(() => u.close())
  await u.get('docker.io').getManifest('library/alpine', 'latest')
  const rl = u.rateLimits.get('docker.io')
  t.equal(rl?.source, up.hub.sourceFor('alice'))
  t.equal(rl?.remaining, 9)
  t.equal(rl?.limit, 10)

  const bad = new Upstreams({
    overrides: { 'docker.io': up.hubUrl },
    credentials: async () => ({ username: 'alice', secret: 'wrong' }),
  })
  t.teardown(() => bad.close())
  const err = await bad.get('docker.io').headManifest('library/alpine', 'latest').catch((e: unknown) => e)
  t.match(err, { code: 'UNAUTHORIZED' })
  t.notMatch(String((err as Error).message), /wrong|s3cret/, 'no secret in the message')
})

t.test('blobs: 307 to the CDN is followed without Authorization', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const u = new Upstreams({ overrides: { 'docker.io': up.hubUrl } })
  t.teardown(() => u.close())
  const layer = up.images.alpine.blobs.find((b) => b.kind === 'layer')!
  const blob = await u.get('docker.io').getBlob('library/alpine', layer.digest)
  t.equal(blob.size, layer.size)
  const chunks: Buffer[] = []
  for await (const c of blob.body) chunks.push(c as Buffer)
  t.equal(sha256(Buffer.concat(chunks)), layer.digest, 'the CDN (which refuses Authorization) served it')
  t.notMatch(blob.url, /verify=/, 'the signed query is not in messages')
  t.strictSame((await u.get('docker.io').headBlob('library/alpine', layer.digest)).size, layer.size)
})

t.test('errors: not found, rate limited, HTML, unreachable', async (t) => {
  const up = await startUpstream({ hub: { limit: 1 } })
  t.teardown(() => up.stop())
  const u = new Upstreams({ overrides: { 'docker.io': up.hubUrl }, timeouts: { connectMs: 1000, headersMs: 2000 } })
  t.teardown(() => u.close())
  const hub = u.get('docker.io')
  await t.rejects(hub.headManifest('library/nope', 'latest'), { code: 'MANIFEST_UNKNOWN' })
  await hub.getManifest('library/alpine', 'latest')
  await t.rejects(hub.getManifest('library/alpine', 'latest'), { code: 'TOOMANYREQUESTS', status: 429 })
  t.equal(u.rateLimits.get('docker.io')?.remaining, 0, '429 responses update the reading too')
  up.hub.inject({ kind: 'html', path: /manifests/ })
  await t.rejects(hub.headManifest('library/alpine', 'latest'), { code: 'UPSTREAM_UNAVAILABLE', message: /HTML/ })
  await up.hub.setMode('refuse')
  await t.rejects(hub.headManifest('library/alpine', 'latest'), {
    code: 'UPSTREAM_UNAVAILABLE',
    message: /^HEAD http:\/\/127\.0\.0\.1:\d+\/v2\/library\/alpine\/manifests\/latest: ECONNREFUSED/,
  })
})

t.test('nextPage reads the n/last query of a rel="next" link', async (t) => {
  const base = new URL('http://127.0.0.1:1/v2/library/alpine/tags/list?n=2')
  t.equal(nextPage('</v2/library/alpine/tags/list?n=2&last=v2>; rel="next"', base)?.toString(), 'n=2&last=v2')
  t.equal(nextPage('<http://other.test/v2/x/tags/list?last=b&n=50&extra=1>; rel=next', base)?.toString(), 'n=50&last=b')
  t.equal(nextPage('</v2/x/tags/list?n=2>; rel="next"', base), undefined, 'no last: no usable next page')
  t.equal(nextPage('</v2/x/tags/list?last=b>; rel="prev"', base), undefined)
  t.equal(nextPage(undefined, base), undefined)
})

/** A service inside the machine that no client should reach through dproxy (think /_dproxy/status); counts requests. */
async function internalService(t: Test, host: string) {
  const seen: string[] = []
  const server = createServer((req, res) => {
    seen.push(req.url ?? '')
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"secret":"internal status"}')
  })
  server.listen(0, host)
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { port: (server.address() as AddressInfo).port, seen }
}

function resolverOf(table: Record<string, string>): Resolver {
  return async (hostname) => {
    const address = table[hostname]
    if (address === undefined) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' })
    return [{ address, family: 4 }]
  }
}

// The test seam for a reachable registry that nobody configured: the shim is mapped
// (overrides) but not trusted, `evil.test` resolves to 127.0.0.1 where it listens,
// and the address classifier treats 127.0.0.1 alone as public. 127.0.0.2 (the
// internal service) stays internal, as does everything else.
function untrustedShim(hubPort: number, extra: Record<string, string> = {}) {
  return new Upstreams({
    overrides: { 'evil.test': `http://evil.test:${hubPort}` },
    trusted: [],
    policy: {
      resolve: resolverOf({ 'evil.test': '127.0.0.1', ...extra }),
      isInternal: (a) => a !== '127.0.0.1' && isInternalAddress(a),
    },
    timeouts: { connectMs: 2000, headersMs: 5000 },
  })
}

t.test('SSRF: a blob redirect of a registry nobody configured may not point inside the machine', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const inside = await internalService(t, '127.0.0.2')
  const u = untrustedShim(up.hub.port, { 'inside.test': '127.0.0.2' })
  t.teardown(() => u.close())
  const [layer, other] = up.images.alpine.blobs
  const client = u.get('evil.test')

  const blob = await client.getBlob('library/alpine', layer!.digest)
  const chunks: Buffer[] = []
  for await (const c of blob.body) chunks.push(c as Buffer)
  t.equal(sha256(Buffer.concat(chunks)), layer!.digest, 'the seam works: a public-looking registry and its CDN are reached')

  for (const [what, location, code] of [
    ['an internal IP literal', `http://127.0.0.2:${inside.port}/_dproxy/status`, 'DENIED'],
    ['a localhost name', `http://localhost:${inside.port}/_dproxy/status`, 'DENIED'],
    ['a name that resolves inside', `http://inside.test:${inside.port}/_dproxy/status`, 'DENIED'],
    ['a mapped IPv6 literal', `http://[::ffff:127.0.0.2]:${inside.port}/`, 'DENIED'],
    ['a non-HTTP URL', 'file:///etc/passwd', 'UPSTREAM_INVALID'],
  ] as const) {
    up.hub.inject({ kind: 'redirect', location, digest: other!.digest, at: 'hub' })
    const err = await client.getBlob('library/alpine', other!.digest).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.match(err, { code }, what)
    t.notMatch(String((err as Error | undefined)?.message), /secret/, `${what}: nothing of the body in the error`)
  }
  t.strictSame(inside.seen, [], 'the internal service received no request at all')
})

t.test('SSRF: a token realm on an internal address is never called for a registry nobody configured', async (t) => {
  const inside = await internalService(t, '127.0.0.2')
  // Loopback targets only, so that even without the policy nothing leaves the machine.
  const realms = [`http://127.0.0.2:${inside.port}/token`, `http://[::ffff:127.0.0.2]:${inside.port}/token`, `http://localhost:${inside.port}/token`]
  for (const realm of realms) {
    const up = await startUpstream({ hub: { realm } })
    t.teardown(() => up.stop())
    const u = untrustedShim(up.hub.port)
    t.teardown(() => u.close())
    await t.rejects(u.get('evil.test').headManifest('library/alpine', 'latest'), { code: 'DENIED', status: 403 }, realm)
  }
  t.strictSame(inside.seen, [], 'the realm was never called')
})

t.test('SSRF: client-named hosts that are, or resolve to, internal addresses are refused before any byte is sent', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const u = new Upstreams({
    policy: { resolve: resolverOf({ 'rebind.test': '127.0.0.1' }) },
    overrides: { 'mapped.test': `http://rebind.test:${up.hub.port}` },
    trusted: [],
    timeouts: { connectMs: 2000, headersMs: 5000 },
  })
  t.teardown(() => u.close())
  const layer = up.images.alpine.blobs[0]!
  for (const registry of [`127.0.0.1:${up.hub.port}`, `localhost:${up.hub.port}`, `rebind.test:${up.hub.port}`, 'mapped.test']) {
    await t.rejects(u.get(registry).getBlob('library/alpine', layer.digest), { code: 'DENIED' }, registry)
    await t.rejects(u.get(registry).headManifest('library/alpine', 'latest'), { code: 'DENIED' }, registry)
  }
  t.strictSame(up.hub.counts.requests, [], 'the shim on 127.0.0.1 saw no request: the name was refused at connect time')
})

t.test('a configured upstream on a loopback address is trusted, and so are its CDN redirect and realm', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  // The strict default classifier and a resolver that knows no name: trust alone lets this through.
  const u = new Upstreams({ overrides: { 'docker.io': up.hubUrl }, policy: { resolve: resolverOf({}) } })
  t.teardown(() => u.close())
  const layer = up.images.alpine.blobs[0]!
  const blob = await u.get('docker.io').getBlob('library/alpine', layer.digest)
  const chunks: Buffer[] = []
  for await (const c of blob.body) chunks.push(c as Buffer)
  t.equal(sha256(Buffer.concat(chunks)), layer.digest)
  t.equal(up.hub.counts.cdnGet[layer.digest], 1, 'through the CDN on another loopback port')
  t.equal(up.hub.counts.tokenRequests, 1, 'the realm on 127.0.0.1 was called')
})

t.test('a configured upstream judged public may not redirect or send its realm inside; its own origin is still reached', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const inside = await internalService(t, '127.0.0.2')
  // The fixture is on loopback; classify is the seam that judges it as a registry on the internet.
  const u = new Upstreams({
    overrides: { 'docker.io': up.hubUrl },
    classify: () => 'public',
    policy: { resolve: resolverOf({ 'inside.test': '127.0.0.2' }) },
    timeouts: { connectMs: 2000, headersMs: 5000 },
  })
  t.teardown(() => u.close())
  const client = u.get('docker.io')
  const info = await client.headManifest('library/alpine', 'latest')
  t.equal(info.digest, up.images.alpine.digest, 'the upstream itself and its realm on the same origin are reached')
  const [layer, other] = up.images.alpine.blobs
  await t.rejects(client.getBlob('library/alpine', layer!.digest), { code: 'DENIED', message: /internal address/ }, 'its CDN on loopback')
  t.strictSame(up.hub.counts.cdnGet, {}, 'the CDN saw no GET')
  for (const location of [`http://127.0.0.2:${inside.port}/_dproxy/status`, `http://inside.test:${inside.port}/_dproxy/status`]) {
    up.hub.inject({ kind: 'redirect', location, digest: other!.digest, at: 'hub' })
    await t.rejects(client.getBlob('library/alpine', other!.digest), { code: 'DENIED' }, location)
  }

  const realm = `http://127.0.0.2:${inside.port}/token`
  const elsewhere = await startUpstream({ hub: { realm } })
  t.teardown(() => elsewhere.stop())
  const v = new Upstreams({ overrides: { 'docker.io': elsewhere.hubUrl }, classify: () => 'public' })
  t.teardown(() => v.close())
  await t.rejects(v.get('docker.io').headManifest('library/alpine', 'latest'), { code: 'DENIED' }, 'a realm on another, internal origin')
  t.strictSame(inside.seen, [], 'the internal service received no request at all')
})

t.test('no upstream leads to dproxy itself, even one on loopback: literals before, names once connected', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const self = await internalService(t, '127.0.0.1')
  const u = new Upstreams({
    overrides: { 'docker.io': up.hubUrl },
    policy: { resolve: resolverOf({ 'self.test': '127.0.0.1' }), ownListeners: () => [{ host: '127.0.0.1', port: self.port }] },
    timeouts: { connectMs: 2000, headersMs: 5000 },
  })
  t.teardown(() => u.close())
  const client = u.get('docker.io')
  const [layer, other] = up.images.alpine.blobs
  const blob = await client.getBlob('library/alpine', layer!.digest)
  const chunks: Buffer[] = []
  for await (const c of blob.body) chunks.push(c as Buffer)
  t.equal(sha256(Buffer.concat(chunks)), layer!.digest, 'its CDN on another loopback port is followed')
  for (const location of [
    `http://127.0.0.1:${self.port}/_dproxy/status`,
    `http://localhost:${self.port}/_dproxy/status`,
    `http://[::ffff:127.0.0.1]:${self.port}/_dproxy/status`,
    `http://self.test:${self.port}/_dproxy/status`,
  ]) {
    up.hub.inject({ kind: 'redirect', location, digest: other!.digest, at: 'hub' })
    await t.rejects(client.getBlob('library/alpine', other!.digest), { code: 'DENIED', message: /dproxy's own listener/ }, location)
  }
  t.strictSame(self.seen, [], 'dproxy\'s listener received no request')
})

t.test('only 2xx and 429 manifest answers update the rate-limit reading', async (t) => {
  let cred: { username: string; secret: string } | undefined = { username: 'alice', secret: 's3cret' }
  const up = await startUpstream({ hub: { users: { alice: 's3cret' }, requireAuth: true, limit: 10 } })
  t.teardown(() => up.stop())
  const u = new Upstreams({ overrides: { 'docker.io': up.hubUrl }, credentials: async () => cred })
  t.teardown(() => u.close())
  const hub = u.get('docker.io')
  await hub.getManifest('library/alpine', 'latest')
  const reading = u.rateLimits.get('docker.io')
  t.match(reading, { unlimited: false, remaining: 9, limit: 10 })

  up.hub.inject({ kind: 'status500', path: /manifests/ })
  await t.rejects(hub.headManifest('library/alpine', 'latest'), { code: 'UPSTREAM_UNAVAILABLE' })
  t.equal(u.rateLimits.get('docker.io'), reading, 'a 500 without RateLimit headers is not "unlimited"')
  await t.rejects(hub.headManifest('library/nope', 'latest'), { code: 'MANIFEST_UNKNOWN' })
  cred = undefined // anonymous tokens grant nothing here: the answer is a 401 without RateLimit headers
  await t.rejects(hub.getManifest('library/redis', 'latest'), { code: 'UNAUTHORIZED' })
  t.equal(u.rateLimits.get('docker.io'), reading, 'a 401 without RateLimit headers is not "unlimited"')
})

t.test('bounded maps: tokens per scope and clients per registry', async (t) => {
  let now = Date.now()
  const up = await startUpstream({ hub: { now: () => now } })
  t.teardown(() => up.stop())
  const clock = { now: () => now }
  const send = (method: string, url: URL, headers: Record<string, string>): Promise<Dispatcher.ResponseData> =>
    request(url, { method: method as Dispatcher.HttpMethod, headers })
  const auth = new TokenAuth('docker.io', new URL(up.hubUrl), anonymous, clock, send, 3)
  const scopes = ['a', 'b', 'c', 'd', 'e'].map((r) => `repository:library/${r}:pull`)
  for (const scope of scopes) t.match(await auth.authorization(scope), /^Bearer /)
  t.equal(up.hub.counts.tokenRequests, 5)
  t.equal(auth.cachedTokens, 3, 'five scopes, at most three tokens kept')
  await auth.authorization(scopes[4]!)
  t.equal(up.hub.counts.tokenRequests, 5, 'a recent token is reused')
  await auth.authorization(scopes[0]!)
  t.equal(up.hub.counts.tokenRequests, 6, 'an evicted token is fetched again')
  now += 301_000
  await auth.authorization(scopes[0]!)
  t.equal(up.hub.counts.tokenRequests, 7, 'an expired token is fetched again')
  t.equal(MAX_TOKENS, 1000, 'the bound a registry client uses')

  const u = new Upstreams()
  t.teardown(() => u.close())
  for (let i = 0; i < 300; i++) u.get(`r${i}.test`)
  t.equal(u.clientCount, 256, 'three hundred registries named, 256 clients kept')
  t.equal(u.get('r299.test'), u.get('r299.test'), 'a recent client is kept')
})
