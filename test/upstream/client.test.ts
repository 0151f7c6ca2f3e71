// The upstream client against the Docker-Hub-like shim: token flow and
// caching, credentials, redirects, User-Agent, rate-limit readings and error
// classification. Requests are counted by the shim.

import t from 'tap'
import { nextPage, Upstreams } from '../../src/upstream/client.js'
import { startUpstream } from '../fixtures/upstream.js'
import { sha256 } from '../helpers/daemon.js'

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
