// Upstream chains with real components: the laptop's dproxy asks the team's
// cache first (Debian's docker-registry in proxy mode in front of the Hub
// shim) and the origin (the same Hub shim) last. A counting front stands
// before each of them, so every case shows which endpoint was asked, in which
// order, and that the pull (skopeo) succeeded anyway: one line of the
// fall-through rule (README "Use your team's cache") per case.

import { mkdtempSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { freePort, makeTempDir, skopeoCopyAll } from '../fixtures/clients.js'
import { startFront, type Front } from '../fixtures/front.js'
import { CACHE_DIR, startRegistry, type Registry } from '../fixtures/registry.js'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import { get, getRaw, settled, startDaemon } from '../helpers/daemon.js'
import { until } from '../helpers/process.js'
import type { Daemon, DaemonOptions } from '../../src/daemon/daemon.js'
import type { UpstreamMap } from '../../src/upstream/registries.js'
import { Upstreams } from '../../src/upstream/client.js'
import { AdminClient } from '../../src/control/admin-client.js'
import type { WarmEvent } from '../../src/proxy/warm.js'
import type { RequestRecord } from '../../src/daemon/events.js'
import { WHOLE_FIRST_BYTES } from '../../src/proxy/blobs.js'

let up: Upstream
let team: Registry
/** Before the team registry: what the laptop's first endpoint is. */
let mirror: Front
/** Before the Hub shim, as the laptop's origin (the team registry talks to the shim directly). */
let origin: Front

t.before(async () => {
  up = await startUpstream()
  const work = mkdtempSync(join(CACHE_DIR, 'team-'))
  team = await startRegistry({ storageDir: join(work, 'storage'), workDir: work, removeOnStop: true, proxyRemoteUrl: up.hubUrl })
  mirror = await startFront(team.url)
  origin = await startFront(up.hubUrl)
})

t.teardown(async () => {
  await mirror?.stop()
  await origin?.stop()
  await team?.stop()
  await up?.stop()
})

t.beforeEach(() => {
  mirror.set({ kind: 'pass' })
  origin.set({ kind: 'pass' })
  mirror.requests.length = 0
  origin.requests.length = 0
})

/** A laptop dproxy whose docker.io is `first`, then the origin (the Hub shim behind its front). */
function laptop(tt: Tap, first: string | string[] = mirror.url, extra: Partial<DaemonOptions> = {}): Promise<Daemon> {
  const upstreams: UpstreamMap = { 'docker.io': [...(Array.isArray(first) ? first : [first]), 'origin'] }
  return startDaemon(tt, undefined, {
    upstreams,
    upstreamOrigins: { 'docker.io': origin.url },
    chainTimeouts: { connectMs: 1000, firstByteMs: 1500 },
    ...extra,
  })
}

type Tap = Test

async function skopeo(tt: Tap, d: Daemon, ref: string): Promise<void> {
  const dest = makeTempDir('dproxy-chain-', tt)
  await skopeoCopyAll(`${new URL(d.url).host}/${ref}`, dest, { timeoutMs: 60_000 })
}

const manifestCalls = (f: Front) => f.apiRequests().filter((r) => r.includes('/manifests/'))
const blobCalls = (f: Front) => f.apiRequests().filter((r) => r.includes('/blobs/'))

t.test('the team cache answers: the origin is never asked; the mirror is told the registry with ?ns=', async (t) => {
  const d = await laptop(t)
  await skopeo(t, d, 'library/alpine:latest')
  t.ok(manifestCalls(mirror).length > 0, 'manifests from the team cache')
  t.ok(blobCalls(mirror).length > 0, 'blobs from the team cache')
  t.ok(mirror.apiRequests().every((r) => r.includes('ns=docker.io')), 'every API request names the registry (?ns=)')
  t.strictSame(origin.apiRequests(), [], 'the origin saw no API request')
  const status = await d.status()
  t.equal(status.counters.upstreamManifestHeads + status.counters.upstreamManifestGets, 0, 'nothing the origin charges was counted')
  const endpoints = status.endpoints?.filter((e) => e.registry === 'docker.io') ?? []
  t.strictSame(endpoints.map((e) => [e.endpoint, e.kind, e.up]), [
    [mirror.url, 'mirror', true],
    [origin.url, 'origin', true],
  ])
  t.strictSame(status.upstreams.find((u) => u.registry === 'docker.io')?.endpoints, [mirror.url, origin.url])
})

t.test('mirror refused (closed port): the origin answers, and the mirror is skipped from then on', async (t) => {
  const closed = `http://127.0.0.1:${await freePort()}`
  const d = await laptop(t, closed)
  await skopeo(t, d, 'library/alpine:latest')
  t.ok(manifestCalls(origin).length > 0 && blobCalls(origin).length > 0, 'everything from the origin')
  const status = await d.status()
  t.equal(status.counters.upstreamManifestHeads, 1, 'the origin\'s HEAD is counted')
  const down = status.endpoints?.find((e) => e.endpoint === closed)
  t.equal(down?.up, false, 'the refused endpoint is down')
  t.match(down?.lastError, /ECONNREFUSED/)
  t.ok(down?.downSince)
})

t.test('mirror black-holed: one timeout, then skipped with no request until a probe finds it back', async (t) => {
  mirror.set({ kind: 'blackhole' })
  // The daemon's clock stands still, so no probe is due until the test moves it.
  let now = Date.now()
  const d = await laptop(t, mirror.url, { clock: { now: () => now } })
  await skopeo(t, d, 'library/alpine:latest')
  const asked = mirror.requests.length
  t.ok(asked >= 1, 'the black hole was asked once it was first')
  t.ok(manifestCalls(origin).length > 0, 'the origin answered')
  await skopeo(t, d, 'bitnami/redis:7.2')
  t.strictSame(mirror.requests.slice(asked), [], 'no request reached the black hole while its breaker is open')
  t.equal((await d.status()).endpoints?.find((e) => e.endpoint === mirror.url)?.up, false)
  const metrics = (await get(`${d.url}/metrics`)).body.toString()
  t.match(metrics, `dproxy_upstream_up{registry="docker.io",endpoint="${mirror.url}"} 0`)
  t.match(metrics, `dproxy_upstream_up{registry="docker.io",endpoint="${origin.url}"} 1`)
  t.match(metrics, new RegExp(`dproxy_upstream_endpoint_requests_total\\{registry="docker.io",endpoint="${origin.url}"\\} [1-9]`))

  // The mirror answers again; once its probe is due, the probe (GET /v2/) closes the breaker.
  mirror.set({ kind: 'pass' })
  now += 2000
  await until(() => mirror.requests.slice(asked).includes('GET /v2/'), 'the probe reached the mirror')
  let up = false
  await until(() => {
    void d.status().then((s) => (up = s.endpoints?.find((e) => e.endpoint === mirror.url)?.up === true))
    return up
  }, 'the breaker closed')
  origin.requests.length = 0
  await skopeo(t, d, 'library/multi:latest')
  t.strictSame(origin.apiRequests(), [], 'the mirror is asked first again')
})

t.test('mirror 500: next endpoint; three in a row open its breaker', async (t) => {
  mirror.set({ kind: 'status', status: 500 })
  const d = await laptop(t)
  await skopeo(t, d, 'library/alpine:latest')
  t.ok(mirror.requests.length > 0, 'the mirror was asked first')
  t.ok(manifestCalls(origin).length > 0 && blobCalls(origin).length > 0, 'the origin answered')
  t.equal((await d.status()).endpoints?.find((e) => e.endpoint === mirror.url)?.up, false, 'open after 5xx in a row')
})

t.test('mirror 429 and mirror HTML: next endpoint', async (t) => {
  for (const behaviour of [{ kind: 'status', status: 429, retryAfter: '120' }, { kind: 'html' }] as const) {
    mirror.set(behaviour)
    mirror.requests.length = 0
    origin.requests.length = 0
    const d = await laptop(t)
    await skopeo(t, d, 'library/layers:1')
    t.ok(mirror.requests.length > 0, `${behaviour.kind}: the mirror was asked`)
    t.ok(manifestCalls(origin).length > 0, `${behaviour.kind}: the origin answered`)
    await d.stop(0)
  }
})

t.test('mirror 404 for one repository: that one from the origin, the others from the mirror', async (t) => {
  mirror.set({ kind: 'notFound', repository: /\/v2\/bitnami\/redis\// })
  const d = await laptop(t)
  await skopeo(t, d, 'bitnami/redis:7.2')
  t.ok(manifestCalls(mirror).some((r) => r.includes('bitnami/redis')), 'the mirror was asked for redis first')
  t.ok(manifestCalls(origin).some((r) => r.includes('bitnami/redis')), 'the origin served redis')
  origin.requests.length = 0
  await skopeo(t, d, 'library/multi:latest')
  t.strictSame(origin.apiRequests(), [], 'multi came from the mirror alone')
  t.equal((await d.status()).endpoints?.find((e) => e.endpoint === mirror.url)?.up, true, 'a 404 is an answer: the mirror stays up')
})

t.test('404 from the last endpoint is the answer; from a mirror it is not', async (t) => {
  mirror.set({ kind: 'notFound', repository: /nosuch/ })
  const d = await laptop(t)
  const res = await get(`${d.url}/v2/library/nosuch/manifests/latest`)
  t.equal(res.status, 404)
  t.match(JSON.parse(res.body.toString()).errors[0].code, /MANIFEST_UNKNOWN|NAME_UNKNOWN/)
  t.ok(manifestCalls(mirror).length > 0 && manifestCalls(origin).length > 0, 'both were asked, mirror first')
})

t.test('mirror needs credentials the laptop lacks: the origin answers', async (t) => {
  mirror.set({ kind: 'auth' })
  const d = await laptop(t)
  await skopeo(t, d, 'library/ociindex:1')
  t.ok(mirror.requests.length > 0, 'the mirror was asked')
  t.ok(manifestCalls(origin).length > 0, 'the origin answered')
})

t.test('mirror sends wrong blob bytes: the bytes stream, the client that had some is cut, the next request goes to the origin', async (t) => {
  let release!: () => void
  const layer = up.images.alpine.blobs.find((b) => b.data.length > 100_000)!
  mirror.set({ kind: 'wrongBlobBytes', digest: layer.digest, hold: new Promise<void>((resolve) => (release = resolve)) })
  const d = await laptop(t)
  const res = await request(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  t.equal(res.statusCode, 200)
  const body = res.body[Symbol.asyncIterator]()
  const first = await bounded(body.next(), 'the first bytes from the mirror')
  t.ok((first.value as Buffer).length > 0, 'the client got the mirror\'s first bytes before the mirror finished')
  release()
  let got = (first.value as Buffer).length
  const cut = await (async () => {
    for (;;) {
      const next = await body.next()
      if (next.done === true) return false
      got += (next.value as Buffer).length
    }
  })().catch(() => true)
  t.ok(cut, 'the connection was cut')
  t.ok(got < layer.data.length, 'never the whole (wrong) body')
  t.equal(blobCalls(mirror).filter((r) => r.startsWith('GET') && r.includes(layer.digest)).length, 1, 'the mirror sent the layer (wrong)')
  t.equal(blobCalls(origin).filter((r) => r.includes(layer.digest)).length, 0, 'the origin was not asked yet')
  await settled(d)

  const again = await get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  t.equal(again.status, 200)
  t.ok(again.body.equals(layer.data), 'the retry got the right bytes')
  t.equal(blobCalls(mirror).filter((r) => r.startsWith('GET') && r.includes(layer.digest)).length, 1, 'the mirror was not asked for that digest again')
  t.equal(blobCalls(origin).filter((r) => r.startsWith('GET') && r.includes(layer.digest)).length, 1, 'the origin sent it')
  await skopeo(t, d, 'library/alpine:latest')
  t.ok(blobCalls(mirror).length > 1, 'the mirror sent the image\'s other blobs')
  t.strictSame(blobCalls(origin).filter((r) => !r.includes(layer.digest)), [], 'the origin sent none of them')
  await settled(d)
})

t.test('mirror sends wrong blob bytes at full speed: never a whole wrong body; the mirror once, the origin once', async (t) => {
  mirror.set({ kind: 'wrongBlobBytes' })
  const d = await laptop(t)
  const layer = up.images.alpine.blobs.find((b) => b.data.length > 100_000)!
  // Cut when bytes had gone out; whole and right when the failure came before the first (the origin asked within the request).
  const first = await getRaw(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  t.ok(!first.complete || first.body.equals(layer.data), 'cut, or whole and right: never whole and wrong')
  const second = await get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  t.ok(second.body.equals(layer.data), 'the right bytes')
  t.equal(blobCalls(mirror).filter((r) => r.startsWith('GET') && r.includes(layer.digest)).length, 1, 'the mirror was asked once')
  t.equal(blobCalls(origin).filter((r) => r.startsWith('GET') && r.includes(layer.digest)).length, 1, 'the origin once')
  await settled(d)
})

t.test('mirror sends wrong bytes for a small blob: the client gets the origin\'s bytes within the same request', async (t) => {
  // A config and a small layer: neither is sent before it verified, so wrong bytes cost the client nothing.
  const blobs = [up.images.redis.blobs.find((b) => b.kind === 'config')!, up.images.layers.blobs.find((b) => b.kind === 'layer' && b.data.length < 64 * 1024)!]
  mirror.set({ kind: 'wrongBlobBytes' })
  const d = await laptop(t)
  const served: RequestRecord[] = []
  d.events.on('request', (r) => served.push(r))
  for (const blob of blobs) {
    const res = await getRaw(`${d.url}/v2/${blob === blobs[0] ? 'bitnami/redis' : 'library/layers'}/blobs/${blob.digest}`)
    t.equal(res.error, undefined, `${blob.kind}: a response, not a cut before it`)
    t.equal(res.status, 200, `${blob.kind}: 200`)
    t.equal(res.headers['content-length'], String(blob.data.length), `${blob.kind}: the blob's length`)
    t.ok(res.complete && res.body.equals(blob.data), `${blob.kind}: whole and right, in one request`)
    t.equal(blobCalls(mirror).filter((r) => r.startsWith('GET') && r.includes(blob.digest)).length, 1, `${blob.kind}: the mirror once (wrong)`)
    t.equal(blobCalls(origin).filter((r) => r.startsWith('GET') && r.includes(blob.digest)).length, 1, `${blob.kind}: then the origin once`)
    await until(() => served.some((r) => r.path.endsWith(blob.digest)), 'the request was recorded')
    t.match(served.find((r) => r.path.endsWith(blob.digest)), { status: 200, complete: true, cache: 'miss', upstreamEndpoint: origin.url }, `${blob.kind}: the access log names the origin`)
  }
  const status = await d.status()
  t.equal(status.endpoints?.find((e) => e.endpoint === mirror.url)?.up, true, 'wrong bytes mark the digest, not the endpoint')
  await settled(d)
})

t.test('mirror sends wrong bytes for every blob: skopeo pulls on its first run; each digest from the mirror once, then the origin', async (t) => {
  mirror.set({ kind: 'wrongBlobBytes' })
  const d = await laptop(t)
  // Every blob of library/layers is small enough to be held back until it verified: none is cut.
  await skopeoCopyAll(`${new URL(d.url).host}/library/layers:1`, makeTempDir('dproxy-chain-', t))
  for (const { kind, digest } of up.images.layers.blobs) {
    t.equal(blobCalls(mirror).filter((r) => r.startsWith('GET') && r.includes(digest)).length, 1, `${kind} ${digest.slice(0, 15)}: the mirror once`)
    t.equal(blobCalls(origin).filter((r) => r.startsWith('GET') && r.includes(digest)).length, 1, `${kind} ${digest.slice(0, 15)}: then the origin`)
  }
  await settled(d)
})

t.test('a blob from a mirror reaches the client before the mirror finished sending it', async (t) => {
  let release!: () => void
  mirror.set({ kind: 'holdBlobs', hold: new Promise<void>((resolve) => (release = resolve)) })
  const d = await laptop(t)
  // Bigger than WHOLE_FIRST_BYTES: a smaller blob from a mirror is sent once verified.
  const layer = up.images.alpine.blobs.find((b) => b.data.length > WHOLE_FIRST_BYTES)!
  const res = await request(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  t.equal(res.statusCode, 200)
  const chunks: Buffer[] = []
  const body = res.body[Symbol.asyncIterator]()
  const first = await bounded(body.next(), 'the first bytes from the mirror')
  chunks.push(first.value as Buffer)
  t.ok(chunks[0]!.length > 0 && chunks[0]!.length < layer.data.length, 'part of the blob arrived while the mirror held the rest')
  release()
  for (;;) {
    const next = await body.next()
    if (next.done === true) break
    chunks.push(next.value as Buffer)
  }
  t.ok(Buffer.concat(chunks).equals(layer.data), 'then the whole blob, right')
  t.strictSame(blobCalls(origin), [], 'the origin was not asked')
  await settled(d)
})

t.test('origin down while the mirror is up: pulls work', async (t) => {
  origin.set({ kind: 'status', status: 503 })
  const d = await laptop(t)
  await skopeo(t, d, 'library/alpine:latest')
  t.strictSame(origin.apiRequests(), [], 'the origin was not needed')
})

t.test('serve-stale only when every endpoint fails', async (t) => {
  const d = await laptop(t)
  const ok = await get(`${d.url}/v2/library/alpine/manifests/latest`, { accept: 'application/vnd.docker.distribution.manifest.v2+json' })
  t.equal(ok.status, 200)
  mirror.set({ kind: 'status', status: 503 })
  const one = await get(`${d.url}/v2/library/alpine/manifests/latest`, { accept: 'application/vnd.docker.distribution.manifest.v2+json' })
  t.equal(one.status, 200)
  t.notOk(one.headers.warning, 'one endpoint down: the origin answered, nothing stale')
  origin.set({ kind: 'status', status: 503 })
  const all = await get(`${d.url}/v2/library/alpine/manifests/latest`, { accept: 'application/vnd.docker.distribution.manifest.v2+json' })
  t.equal(all.status, 200)
  t.match(all.headers.warning, /110/, 'every endpoint down: served stale')
})

t.test('mirror resets the connection, or speaks no TLS where https was asked: next endpoint', async (t) => {
  mirror.set({ kind: 'reset' })
  const d = await laptop(t)
  await skopeo(t, d, 'library/alpine:latest')
  t.ok(mirror.requests.length > 0 && manifestCalls(origin).length > 0, 'reset: the mirror, then the origin')
  mirror.set({ kind: 'pass' })
  mirror.requests.length = 0
  origin.requests.length = 0
  const tls = mirror.url.replace('http:', 'https:')
  const e = await laptop(t, tls)
  await skopeo(t, e, 'library/alpine:latest')
  t.ok(manifestCalls(origin).length > 0, 'TLS failure: the origin answered')
  t.equal((await e.status()).endpoints?.find((x) => x.endpoint === tls)?.up, false, 'a TLS failure is no answer: down at once')
})

t.test('DNS failure: next endpoint (a resolver that knows no address)', async (t) => {
  const ups = new Upstreams({
    overrides: { 'docker.io': ['http://team-cache.test:5000', 'origin'] },
    origins: { 'docker.io': origin.url },
    policy: { resolve: async () => [] },
  })
  t.teardown(() => ups.close())
  const head = await ups.get('docker.io').headManifest('library/alpine', 'latest')
  t.equal(head.digest, up.images.alpine.digest)
  const first = ups.endpoints().find((e) => e.endpoint === 'http://team-cache.test:5000')
  t.equal(first?.up, false)
  t.match(first?.lastError, /ENOTFOUND/)
})

t.test('each endpoint sends its own login: the mirror its host\'s, the origin the registry\'s', async (t) => {
  const secret = `Basic ${Buffer.from('team:pw').toString('base64')}`
  mirror.set({ kind: 'auth', accept: secret })
  const mirrorHost = new URL(mirror.url).host
  const asked: string[] = []
  const credentials = async (key: string) => {
    asked.push(key)
    return key === mirrorHost ? { username: 'team', secret: 'pw' } : undefined
  }
  const d = await laptop(t, mirror.url, { credentials })
  await skopeo(t, d, 'library/alpine:latest')
  t.ok(manifestCalls(mirror).length > 0, 'the mirror accepted its login')
  t.strictSame(origin.apiRequests(), [], 'the origin was not needed')
  t.ok(asked.includes(mirrorHost), 'the mirror\'s login was looked up by its host')
  t.notOk(asked.includes('docker.io'), 'the registry\'s login was not asked for the mirror')

  mirror.set({ kind: 'auth', accept: 'Basic nobody' })
  mirror.requests.length = 0
  asked.length = 0
  const e = await laptop(t, mirror.url, { credentials })
  await skopeo(t, e, 'library/layers:1')
  t.ok(manifestCalls(origin).length > 0, 'refused at the mirror: the origin answered')
  t.ok(asked.includes('docker.io'), 'the origin was asked with the registry\'s login')
})

t.test('a path-prefix registry: the path before the repository, after library/, no ?ns=', async (t) => {
  const prefix = 'acme/dependency_proxy/containers/'
  mirror.set({ kind: 'prefix', prefix })
  const d = await laptop(t, `${mirror.url}/${prefix}`)
  await skopeo(t, d, 'alpine:latest')
  t.ok(mirror.requests.includes(`GET /v2/${prefix}library/alpine/manifests/latest`), 'library/ then the prefix')
  t.notOk(mirror.requests.some((r) => r.includes('ns=')), 'a prefix registry is not told the registry')
  t.strictSame(origin.apiRequests(), [], 'the origin was not needed')
  const kinds = (await d.status()).endpoints?.filter((e) => e.registry === 'docker.io').map((e) => e.kind)
  t.strictSame(kinds, ['prefix', 'origin'])
})

t.test('when every endpoint fails, the last one\'s answer is the error, naming what the others said', async (t) => {
  const cases: Array<[string, Parameters<Front['set']>[0], Parameters<Front['set']>[0], string, RegExp]> = [
    ['library/nosuch', { kind: 'auth' }, { kind: 'pass' }, 'MANIFEST_UNKNOWN', /^docker\.io has no library\/nosuch:latest \(404.*before it: 127\.0\.0\.1:\d+ refused library\/nosuch:latest \(401\): it needs a login, or does not exist; log in with `dproxy login 127\.0\.0\.1:\d+`/],
    ['library/alpine', { kind: 'notFound', repository: /alpine/ }, { kind: 'status', status: 503 }, 'UPSTREAM_UNAVAILABLE', /HTTP 503.*before it: .*not found/],
    ['library/alpine', { kind: 'status', status: 429, retryAfter: '5' }, { kind: 'html' }, 'UPSTREAM_UNAVAILABLE', /HTML page.*before it: .*HTTP 429/],
  ]
  for (const [repository, first, last, code, message] of cases) {
    mirror.set(first)
    origin.set(last)
    const ups = new Upstreams({ overrides: { 'docker.io': [mirror.url, 'origin'] }, origins: { 'docker.io': origin.url } })
    const err = await ups.get('docker.io').getManifest(repository, 'latest').then(
      () => undefined,
      (e: unknown) => e as Error & { code: string },
    )
    await ups.close()
    t.equal(err?.code, code, `${first.kind} then ${last.kind}: ${code}`)
    t.match(err?.message, message)
  }
})

t.test('noOrigin: the chain is the only way out; 404 from its last endpoint is the answer', async (t) => {
  mirror.set({ kind: 'notFound', repository: /alpine/ })
  const ups = new Upstreams({ overrides: { 'docker.io': [mirror.url, `${mirror.url}/team`] }, noOrigin: ['docker.io'], origins: { 'docker.io': origin.url } })
  t.teardown(() => ups.close())
  t.strictSame(ups.chain('docker.io').map((e) => e.kind), ['mirror', 'prefix'])
  await t.rejects(ups.get('docker.io').headManifest('library/alpine', 'latest'), { code: 'MANIFEST_UNKNOWN' }, 'a HEAD has no body: the code is the 404 of a manifest')
  t.strictSame(origin.requests, [], 'the origin was never asked')
})

t.test('mirror breaks a blob off half-way: a client that had bytes is cut, one that had none gets them from the origin', async (t) => {
  mirror.set({ kind: 'cutBlobs' })
  const d = await laptop(t)
  const big = up.images.alpine.blobs.find((b) => b.data.length > WHOLE_FIRST_BYTES)!
  const first = await getRaw(`${d.url}/v2/library/alpine/blobs/${big.digest}`)
  t.ok(!first.complete || first.body.equals(big.data), 'cut, or whole and right')
  await settled(d)
  const res = await get(`${d.url}/v2/library/alpine/blobs/${big.digest}`)
  t.equal(res.status, 200)
  t.ok(res.body.equals(big.data), 'the right bytes, whole')
  t.equal(blobCalls(mirror).filter((r) => r.includes(big.digest)).length, 1, 'the mirror broke it off once and was not asked again')
  t.equal(blobCalls(origin).filter((r) => r.includes(big.digest)).length, 1, 'the origin sent it')
  await settled(d)

  // A small one is held back until it verified: the client never had a byte, and gets the origin's in its request.
  const small = up.images.redis.blobs.find((b) => b.kind === 'layer' && b.data.length <= WHOLE_FIRST_BYTES)!
  const whole = await getRaw(`${d.url}/v2/bitnami/redis/blobs/${small.digest}`)
  t.equal(whole.status, 200)
  t.ok(whole.complete && whole.body.equals(small.data), 'a small blob broken off: whole and right in one request')
  t.equal(blobCalls(mirror).filter((r) => r.includes(small.digest)).length, 1, 'the mirror broke it off once')
  t.equal(blobCalls(origin).filter((r) => r.includes(small.digest)).length, 1, 'the origin sent it')
  await settled(d)
})

/** `p`, or a failure naming `what` after a generous bound (so a regression fails instead of hanging). */
async function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within 30 s`)), 30_000)))
  try {
    return await Promise.race([p, limit])
  } finally {
    clearTimeout(timer)
  }
}

t.test('prefetch through the chain: --max-pulls counts only what the origin charges', async (t) => {
  const d = await laptop(t)
  const admin = new AdminClient(d.url, { token: d.adminToken })
  const run = async (image: string, maxPulls: number) => {
    let end: WarmEvent | undefined
    for await (const e of admin.stream<WarmEvent>('POST', '/_dproxy/pull', { body: { images: [image], platforms: 'all', maxPulls } })) end = e
    return end
  }
  const fromMirror = await run('docker.io/library/alpine:latest', 0)
  t.match(fromMirror, { type: 'summary', fetched: 1, failed: [], pulls: 0, hubPulls: 0 }, 'a healthy mirror: --max-pulls 0 still warms')
  const byDigest = await run(`docker.io/library/multi@${up.images.multi.digest}`, 0)
  t.match(byDigest, { type: 'summary', fetched: 1, failed: [], pulls: 0 }, 'and an image by digest')
  t.ok(manifestCalls(mirror).some((r) => r.startsWith('GET')), 'the mirror sent the manifest')
  t.strictSame(origin.apiRequests(), [], 'the origin saw nothing')

  mirror.set({ kind: 'status', status: 503 })
  const refused = await run('docker.io/bitnami/redis:7.2', 0)
  t.match(refused, { type: 'refused', pulls: 1 }, 'the mirror down: the origin would charge, so the limit applies')
  t.notOk(manifestCalls(origin).some((r) => r.startsWith('GET')), 'nothing was spent')
  const spent = await run('docker.io/bitnami/redis:7.2', 1)
  t.match(spent, { type: 'summary', fetched: 1, failed: [], pulls: 1, hubPulls: 1 }, 'within the limit: fetched from the origin, counted')
  t.equal(manifestCalls(origin).filter((r) => r.startsWith('GET')).length, 1, 'one counted GET at the origin')
  await settled(d)
})
