// End-to-end pull-through behaviour against the real registry behind the
// Docker-Hub-like shim: what reaches upstream, what is served from cache, and
// what happens when upstream misbehaves. Upstream traffic is counted by the
// shim, never inferred from dproxy's own counters.

import { promises as fs } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { buildExtraImage } from '../fixtures/images.js'
import { startUpstream } from '../fixtures/upstream.js'
import { blobDigests, get, pull, settled, sha256, startDaemon } from '../helpers/daemon.js'
import { parseDigest } from '../../src/oci/digest.js'

t.test('first pull fills the cache; second pull costs one HEAD and no blob', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const { alpine } = up.images

  const v2 = await get(`${d.url}/v2/`)
  t.equal(v2.status, 200)
  t.equal(v2.headers['docker-distribution-api-version'], 'registry/2.0')
  t.strictSame(JSON.parse(v2.body.toString()), {})

  const first = await pull(d.url, 'alpine', 'latest')
  t.ok(first.manifest.body.equals(alpine.manifest), 'manifest bytes are exactly upstream bytes')
  t.equal(first.manifest.headers['content-type'], alpine.mediaType)
  t.equal(first.manifest.headers['docker-content-digest'], alpine.digest)
  t.equal(first.manifest.headers['etag'], `"${alpine.digest}"`)
  t.equal(Number(first.manifest.headers['content-length']), alpine.manifest.length)
  t.strictSame(first.digests.sort(), blobDigests(alpine).sort())
  t.equal(up.hub.counts.manifestGet, 1, 'one counted manifest GET')
  t.equal(up.hub.counts.tokenRequests, 1, 'one token for the repository')
  for (const digest of blobDigests(alpine)) t.equal(up.hub.counts.cdnGet[digest], 1, `blob ${digest.slice(7, 19)} fetched once`)

  up.hub.resetCounts()
  await pull(d.url, 'alpine', 'latest')
  t.equal(up.hub.counts.manifestGet, 0, 'second pull: zero counted manifest GETs')
  t.equal(up.hub.counts.manifestHead, 1, 'second pull: one HEAD')
  t.strictSame(up.hub.counts.blobGet, {}, 'second pull: zero blob requests')
  t.strictSame(up.hub.counts.cdnGet, {})

  const head = await get(`${d.url}/v2/library/alpine/manifests/latest`, {}, 'HEAD')
  t.equal(head.status, 200)
  t.equal(head.body.length, 0)
  t.equal(Number(head.headers['content-length']), alpine.manifest.length)
  t.equal(head.headers['docker-content-digest'], alpine.digest)

  up.hub.resetCounts()
  const byDigest = await get(`${d.url}/v2/library/alpine/manifests/${alpine.digest}`)
  t.ok(byDigest.body.equals(alpine.manifest))
  t.equal(up.hub.counts.requests.length, 0, 'manifest by digest: no upstream request at all')

  await settled(d)
  const status = await d.status()
  t.equal(status.counters.manifestGetsAvoided >= 1, true)
  t.equal(status.cache.manifests, 1)
  t.equal(status.cache.blobs, alpine.blobs.length)
  t.equal(status.cache.tags, 1)
})

t.test('multi-arch list, OCI index and multi-layer OCI image are byte-exact', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  for (const image of [up.images.multi, up.images.ociindex, up.images.layers, up.images.redis]) {
    const { manifest, digests } = await pull(d.url, image.repository, image.tag)
    t.ok(manifest.body.equals(image.manifest), `${image.ref} manifest bytes`)
    t.equal(manifest.headers['content-type'], image.mediaType, `${image.ref} media type`)
    t.equal(sha256(manifest.body), image.digest)
    t.strictSame([...new Set(digests)].sort(), blobDigests(image).sort(), `${image.ref} blobs`)
    for (const child of image.children) {
      const m = await get(`${d.url}/v2/${image.repository}/manifests/${child.digest}`)
      t.ok(m.body.equals(child.manifest), `${image.ref} child ${child.platform.architecture}`)
      t.equal(m.headers['content-type'], child.mediaType)
    }
  }
})

t.test('a retagged upstream image is picked up by the next pull', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'alpine', 'latest')
  const next = buildExtraImage('retag-1', 'library/alpine', 'latest')
  await up.retag('library/alpine', 'latest', next)
  up.hub.resetCounts()
  const { manifest } = await pull(d.url, 'alpine', 'latest')
  t.equal(manifest.headers['docker-content-digest'], next.digest)
  t.ok(manifest.body.equals(next.manifest))
  t.equal(up.hub.counts.manifestHead, 1)
  t.equal(up.hub.counts.manifestGet, 1, 'one GET because the digest changed')
})

t.test('upstream down: cached tags are served stale, uncached ones fail clearly', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'alpine', 'latest')

  for (const mode of ['refuse', 'down-5xx', 'down-html'] as const) {
    await up.hub.setMode(mode)
    const cached = await get(`${d.url}/v2/library/alpine/manifests/latest`)
    t.equal(cached.status, 200, `${mode}: cached tag served`)
    t.equal(cached.headers['warning'], '110 - "Response is stale"', `${mode}: marked stale`)
    t.ok(cached.body.equals(up.images.alpine.manifest))
    await pull(d.url, 'alpine', 'latest')

    const uncached = await get(`${d.url}/v2/bitnami/redis/manifests/7.2`)
    t.equal(uncached.status, 404, `${mode}: uncached fails`)
    const err = JSON.parse(uncached.body.toString()).errors[0]
    t.equal(err.code, 'MANIFEST_UNKNOWN')
    t.match(err.message, /^docker\.io\/bitnami\/redis:7\.2 is not cached, and upstream docker\.io is unavailable: .*127\.0\.0\.1/, `${mode}: the message says why`)
    const blob = await get(`${d.url}/v2/bitnami/redis/blobs/${up.images.redis.blobs[0]!.digest}`)
    t.equal(blob.status, 404, `${mode}: uncached blob fails`)
    t.equal(JSON.parse(blob.body.toString()).errors[0].code, 'BLOB_UNKNOWN')
  }
  await up.hub.setMode('up')
  t.ok(d.counters.staleServed >= 3)
})

t.test('a fully cached pull does not need the token service', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const cacheDir = t.testdir()
  const first = await startDaemon(t, up, { cacheDir })
  await pull(first.url, 'alpine', 'latest')
  await first.stop(0)

  // A new daemon has no token; the token service and registry are gone.
  await up.hub.setMode('refuse')
  const second = await startDaemon(t, up, { cacheDir })
  const { digests } = await pull(second.url, 'alpine', 'latest')
  t.equal(digests.length, up.images.alpine.blobs.length)
  const byDigest = await get(`${second.url}/v2/library/alpine/manifests/${up.images.alpine.digest}`)
  t.equal(byDigest.status, 200)
  t.notOk(byDigest.headers['warning'], 'by digest is never stale')
})

t.test('429 from upstream: TOOMANYREQUESTS when nothing is cached, stale when it is', async (t) => {
  const up = await startUpstream({ hub: { limit: 2 } })
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'alpine', 'latest')
  await pull(d.url, 'bitnami/redis', '7.2')
  t.equal(up.hub.remaining(), 0)
  const multi = await get(`${d.url}/v2/library/multi/manifests/latest`)
  t.equal(multi.status, 429)
  t.equal(JSON.parse(multi.body.toString()).errors[0].code, 'TOOMANYREQUESTS')
  // A retag needs a GET, which is refused: the old digest is served stale.
  await up.retag('library/alpine', 'latest', buildExtraImage('retag-429', 'library/alpine', 'latest'))
  const stale = await get(`${d.url}/v2/library/alpine/manifests/latest`)
  t.equal(stale.status, 200)
  t.equal(stale.headers['docker-content-digest'], up.images.alpine.digest)
  t.equal(stale.headers['warning'], '110 - "Response is stale"')

  const status = await d.status()
  const rl = status.rateLimit.find((r) => r.registry === 'docker.io')
  t.equal(rl?.limit, 2)
  t.equal(rl?.remaining, up.hub.remaining())
  t.equal(rl?.windowSeconds, 21600)
  t.equal(rl?.source, up.hub.sourceFor())
})

t.test('20 concurrent cold pulls cause one upstream fetch per blob and one manifest GET', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const image = up.images.layers
  const results = await Promise.all(Array.from({ length: 20 }, () => pull(d.url, image.repository, image.tag)))
  for (const r of results) t.ok(r.manifest.body.equals(image.manifest))
  for (const digest of blobDigests(image)) {
    t.equal(up.hub.counts.cdnGet[digest], 1, `blob ${digest.slice(7, 19)}: one upstream fetch for 20 clients`)
  }
  t.equal(up.hub.counts.manifestGet, 1)
  t.ok(up.hub.counts.manifestHead <= 1)
})

t.test('truncated, reset and wrong-bytes blobs are never cached; the next pull succeeds', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = up.images.alpine.blobs.find((b) => b.kind === 'layer')!
  for (const kind of ['truncate', 'reset', 'wrongBytes', 'status500'] as const) {
    up.hub.inject({ kind, digest: layer.digest, at: 'cdn' })
    const url = `${d.url}/v2/library/alpine/blobs/${layer.digest}`
    let body: Buffer | undefined
    let failed = false
    try {
      const res = await request(url)
      body = Buffer.from(await res.body.arrayBuffer())
      failed = res.statusCode !== 200
    } catch {
      failed = true
    }
    t.ok(failed || (body !== undefined && body.length < layer.size), `${kind}: client never gets a complete wrong body`)
    if (body && !failed) t.not(sha256(body), layer.digest)
    t.equal(await d.store.statBlob(parseDigest(layer.digest)), undefined, `${kind}: not cached`)
    t.strictSame((await fs.readdir(d.store.layout.tmpDir)).filter((n) => !n.startsWith('w-')), [], `${kind}: temp file removed`)
    const ok = await get(url)
    t.equal(ok.status, 200, `${kind}: next pull works`)
    t.equal(sha256(ok.body), layer.digest)
    await settled(d)
    t.equal(await d.store.statBlob(parseDigest(layer.digest)), layer.size, `${kind}: the good copy is cached`)
    await d.store.deleteBlob(parseDigest(layer.digest))
  }
})

t.test('Range on cached blobs, HEAD on uncached blobs, missing files refetched', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = up.images.alpine.blobs.find((b) => b.kind === 'layer')!
  const url = `${d.url}/v2/library/alpine/blobs/${layer.digest}`

  const head = await get(url, {}, 'HEAD')
  t.equal(head.status, 200)
  t.equal(Number(head.headers['content-length']), layer.size, 'HEAD of an uncached blob asks upstream')
  t.equal(head.headers['docker-content-digest'], layer.digest)

  // A range on an uncached blob starts the one download and is served from it.
  const cold = await get(url, { range: 'bytes=1000-1099' })
  t.equal(cold.status, 206)
  t.ok(cold.body.equals(layer.data.subarray(1000, 1100)))
  await get(url)
  await settled(d)
  t.equal(up.hub.counts.cdnGet[layer.digest], 1, 'range + full GET: one upstream fetch')
  const part = await get(url, { range: 'bytes=100-199' })
  t.equal(part.status, 206)
  t.equal(part.headers['content-range'], `bytes 100-199/${layer.size}`)
  t.ok(part.body.equals(layer.data.subarray(100, 200)))
  const suffix = await get(url, { range: 'bytes=-10' })
  t.ok(suffix.body.equals(layer.data.subarray(layer.size - 10)))
  const bad = await get(url, { range: `bytes=${layer.size}-` })
  t.equal(bad.status, 416)
  t.equal(bad.headers['content-range'], `bytes */${layer.size}`)

  await fs.rm(d.store.blobPath(parseDigest(layer.digest)))
  up.hub.resetCounts()
  const again = await get(url)
  t.equal(sha256(again.body), layer.digest, 'a blob deleted from disk is fetched again')
  t.equal(up.hub.counts.cdnGet[layer.digest], 1)
})

t.test('a fetch keeps filling the cache when its client goes away', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = up.images.alpine.blobs.find((b) => b.kind === 'layer')!
  up.hub.inject({ kind: 'slow', digest: layer.digest, at: 'cdn', delayMs: 500 })
  const ac = new AbortController()
  const pending = request(`${d.url}/v2/library/alpine/blobs/${layer.digest}`, { signal: ac.signal })
  for (let i = 0; i < 100 && d.blobs.inflight === 0; i++) await new Promise((r) => setTimeout(r, 10))
  t.equal(d.blobs.inflight, 1, 'download started')
  ac.abort()
  await t.rejects(pending)
  for (let i = 0; i < 100 && (await d.store.statBlob(parseDigest(layer.digest))) === undefined; i++) {
    await new Promise((r) => setTimeout(r, 50))
  }
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), layer.size, 'cached although the client left')
})

t.test('names: GitLab alias, ?ns=, other registries; invalid names and digests get OCI errors', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const { alpine, redis } = up.images

  const gitlab = await get(`${d.url}/v2/mygroup/dependency_proxy/containers/alpine/manifests/latest`)
  t.equal(gitlab.headers['docker-content-digest'], alpine.digest, 'GitLab-style path')

  const ns = await get(`${d.url}/v2/library/alpine/manifests/latest?ns=docker.io`)
  t.equal(ns.status, 200)
  t.equal(ns.headers['oci-namespace'], 'docker.io')

  // Any registry host in the path: registry.test:5000 is mapped to the plain registry.
  const other = await pull(d.url, `registry.test:5000/${redis.repository}`, redis.tag)
  t.ok(other.manifest.body.equals(redis.manifest))
  const viaNs = await get(`${d.url}/v2/${redis.repository}/manifests/${redis.tag}?ns=registry.test:5000`)
  t.equal(viaNs.status, 200)

  const cases: Array<[string, string, number, string]> = [
    ['GET', '/v2/UPPER/manifests/latest', 400, 'NAME_INVALID'],
    ['GET', '/v2/a/../b/manifests/latest', 400, 'NAME_INVALID'],
    ['GET', '/v2/a/%2e%2e/b/manifests/latest', 400, 'NAME_INVALID'],
    ['GET', '/v2/alpine/manifests/sha256:1234', 400, 'DIGEST_INVALID'],
    ['GET', '/v2/alpine/blobs/sha256:zz', 400, 'DIGEST_INVALID'],
    ['GET', '/v2/alpine/blobs/latest', 400, 'DIGEST_INVALID'],
    ['GET', '/v2/alpine/manifests/.bad', 400, 'MANIFEST_INVALID'],
    ['GET', '/v2/library/nope/manifests/latest', 404, 'MANIFEST_UNKNOWN'],
    ['GET', `/v2/library/alpine/blobs/sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
    ['PUT', '/v2/library/alpine/manifests/latest', 405, 'UNSUPPORTED'],
    ['POST', '/v2/library/alpine/blobs/uploads/', 405, 'UNSUPPORTED'],
    ['DELETE', `/v2/library/alpine/manifests/${alpine.digest}`, 405, 'UNSUPPORTED'],
    ['PATCH', '/v2/library/alpine/blobs/uploads/x', 405, 'UNSUPPORTED'],
    ['GET', '/v2/_catalog', 404, 'NAME_UNKNOWN'],
  ]
  for (const [method, path, status, code] of cases) {
    const res = await rawRequest(d.port, method, path)
    t.equal(res.status, status, `${method} ${path} status`)
    t.match(res.type, /^application\/json/)
    t.equal(JSON.parse(res.body).errors[0].code, code, `${method} ${path} code`)
  }
  t.equal((await fs.readdir(d.store.root)).includes('etc'), false)
})

t.test('by-digest pulls under a repository upstream does not have are refused and record nothing under repositories/', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const { alpine } = up.images
  await pull(d.url, 'alpine', 'latest')
  await settled(d)
  const entries = async () => {
    const found: string[] = []
    const visit = async (dir: string): Promise<void> => {
      for (const e of await fs.readdir(dir, { withFileTypes: true })) {
        found.push(`${dir}/${e.name}`)
        if (e.isDirectory()) await visit(`${dir}/${e.name}`)
      }
    }
    await visit(d.store.layout.repositoriesDir)
    return found.sort()
  }
  const before = await entries()
  t.ok(before.length > 0, 'the tag pull recorded library/alpine')

  for (const repo of ['nosuch/repo', 'library/nothere', `deep/${'x/'.repeat(20)}y`]) {
    const cached = await get(`${d.url}/v2/${repo}/manifests/${alpine.digest}`)
    t.equal(cached.status, 404, `${repo}: a cached manifest is served only under a repository that has it`)
    const head = await get(`${d.url}/v2/${repo}/manifests/${alpine.digest}`, {}, 'HEAD')
    t.equal(head.status, 404)
    const uncached = await get(`${d.url}/v2/${repo}/manifests/sha256:${'1'.repeat(64)}`)
    t.equal(uncached.status, 404, `${repo}: an uncached one is asked upstream, which says no`)
    const blob = await get(`${d.url}/v2/${repo}/blobs/${alpine.blobs[0]!.digest}`)
    t.equal(blob.status, 404, `${repo}: a cached blob is served only under a repository that has it`)
  }
  t.strictSame(await entries(), before, 'not one new entry under repositories/')
})

t.test('tags V1 and v1 are two images; a cache of layout 1 is migrated by the daemon and keeps serving', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const upper = buildExtraImage('case-upper')
  const lower = buildExtraImage('case-lower')
  await up.retag('library/alpine', 'V1', upper)
  await up.retag('library/alpine', 'v1', lower)
  const cacheDir = t.testdir()
  const first = await startDaemon(t, up, { cacheDir })
  t.equal((await pull(first.url, 'alpine', 'V1')).manifest.headers['docker-content-digest'], upper.digest)
  t.equal((await pull(first.url, 'alpine', 'v1')).manifest.headers['docker-content-digest'], lower.digest)
  await settled(first)
  await first.stop(0)

  // What dproxy with layout 1 left: the tag file named by the tag itself.
  const tags = first.store.layout.tagsDir('docker.io', 'library/alpine')
  await fs.rm(join(tags, '!v1'))
  await fs.writeFile(join(tags, 'V1'), JSON.stringify({ digest: upper.digest, mediaType: upper.mediaType, size: upper.manifest.length, checkedAt: 0 }))
  await fs.writeFile(join(cacheDir, 'layout.json'), '{"version": 1}\n')

  const second = await startDaemon(t, up, { cacheDir })
  t.strictSame(JSON.parse(await fs.readFile(join(cacheDir, 'layout.json'), 'utf8')), { version: 2 }, 'migrated at start')
  await up.hub.setMode('refuse')
  for (const [tag, image] of [['V1', upper], ['v1', lower]] as const) {
    const res = await get(`${second.url}/v2/library/alpine/manifests/${tag}`)
    t.equal(res.status, 200, `${tag}: served from the cache`)
    t.equal(res.headers['docker-content-digest'], image.digest, `${tag}: its own digest`)
  }
  t.strictSame(await second.store.listTags('docker.io', 'library/alpine'), ['V1', 'v1'])
  await up.hub.setMode('up')
})

t.test('tags/list comes from upstream, falling back to cached tags', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const live = await get(`${d.url}/v2/alpine/tags/list`)
  t.equal(live.status, 200)
  t.strictSame(JSON.parse(live.body.toString()), { name: 'alpine', tags: ['latest'] })
  t.notOk(live.headers['link'], 'no next page when upstream sends none')
  await pull(d.url, 'alpine', 'latest')
  await up.hub.setMode('refuse')
  const cached = await get(`${d.url}/v2/alpine/tags/list`)
  t.equal(cached.status, 200)
  t.strictSame(JSON.parse(cached.body.toString()).tags, ['latest'])
  t.equal(cached.headers['warning'], '110 - "Response is stale"')
  await up.hub.setMode('up')
})

t.test('max-age: a recently checked tag is served without contacting upstream', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  let now = Date.now()
  const d = await startDaemon(t, up, { maxAgeMs: 10 * 60_000, clock: { now: () => now } })
  await pull(d.url, 'alpine', 'latest')
  up.hub.resetCounts()
  now += 5 * 60_000
  await get(`${d.url}/v2/alpine/manifests/latest`)
  t.equal(up.hub.counts.requests.length, 0, 'within max-age: nothing upstream')
  now += 6 * 60_000
  await get(`${d.url}/v2/alpine/manifests/latest`)
  t.equal(up.hub.counts.manifestHead, 1, 'after max-age: one HEAD')
  t.equal(up.hub.counts.manifestGet, 0)
})

t.test('status endpoint reports cache, counters and rate limit; loopback only', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'alpine', 'latest')
  await settled(d)
  const res = await get(`${d.url}/_dproxy/status`)
  t.equal(res.status, 200)
  const s = JSON.parse(res.body.toString())
  t.match(s, {
    version: String,
    pid: process.pid,
    uptimeSeconds: Number,
    listen: [`127.0.0.1:${d.port}`],
    cacheDir: d.store.root,
    cache: { blobs: up.images.alpine.blobs.length, manifests: 1, tags: 1, bytes: Number },
    counters: {
      requests: Number,
      cacheHits: Number,
      cacheMisses: Number,
      bytesFromCache: Number,
      bytesFromUpstream: Number,
      upstreamManifestGets: 1,
      upstreamManifestHeads: 1,
      manifestGetsAvoided: Number,
    },
  })
  t.equal(s.counters.bytesFromUpstream, up.images.alpine.blobs.reduce((n: number, b: { size: number }) => n + b.size, 0))
  const rl = s.rateLimit.find((r: { registry: string }) => r.registry === 'docker.io')
  t.match(rl, { limit: 100, remaining: up.hub.remaining(), windowSeconds: 21600, source: '127.0.0.1', checkedAt: String })
})

/** Sends the path exactly as written (URL parsers would resolve `..` and `%2e%2e`). */
function rawRequest(port: number, method: string, path: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body: Buffer.concat(chunks).toString() }),
      )
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('a redirect to dproxy itself is refused although the upstream is on loopback; its CDN on loopback is followed', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up, { metricsAddress: { host: '127.0.0.1', port: 0 } })
  const [layer, other] = up.images.alpine.blobs
  const followed = await get(`${d.url}/v2/library/alpine/blobs/${layer!.digest}`)
  t.equal(followed.status, 200)
  t.equal(sha256(followed.body), layer!.digest, 'the CDN on another loopback port')
  const metrics = `http://127.0.0.1:${d.metricsListening!.port}/metrics`
  for (const location of [`${d.url}/_dproxy/status`, `http://localhost:${d.port}/_dproxy/status`, metrics]) {
    up.hub.inject({ kind: 'redirect', location, digest: other!.digest, at: 'hub' })
    const res = await get(`${d.url}/v2/library/alpine/blobs/${other!.digest}`)
    t.equal(res.status, 403, location)
    t.match(JSON.parse(res.body.toString()), { errors: [{ code: 'DENIED', message: /dproxy's own listener/ }] })
    t.notMatch(res.body.toString(), /counters|uptime|"cache"|dproxy_/, 'nothing of the status or metrics answer')
  }
})

t.test('a cold 429 with a long Retry-After: answered at once with the reset time, no counted GET before it', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  let now = Date.now()
  const d = await startDaemon(t, up, { clock: { now: () => now } })
  await pull(d.url, 'bitnami/redis', '7.2')
  up.hub.resetCounts()
  up.hub.inject({ kind: 'status429', method: 'GET', path: /manifests/, retryAfter: '120' })
  const first = await get(`${d.url}/v2/library/alpine/manifests/latest`)
  t.equal(first.status, 429)
  t.equal(first.headers['retry-after'], '120', 'the client hears when to come back')
  t.match(JSON.parse(first.body.toString()), {
    errors: [{ code: 'TOOMANYREQUESTS', message: /retry after 120 s/, detail: { retryAfterSeconds: 120, resetAt: new Date(now + 120_000).toISOString() } }],
  })
  t.equal(up.hub.counts.manifestGet, 1)

  // What a client that retries a 429 (containers/image: 5 tries) sends meanwhile costs no counted GET.
  for (let i = 0; i < 4; i++) {
    now += 10_000
    const again = await get(`${d.url}/v2/library/alpine/manifests/latest`)
    t.equal(again.status, 429)
    t.equal(again.headers['retry-after'], String(120 - 10 * (i + 1)))
    t.match(JSON.parse(again.body.toString()), { errors: [{ code: 'TOOMANYREQUESTS', message: /not sent, as docker\.io answered 429/ }] })
  }
  t.equal(up.hub.counts.manifestGet, 1, 'no further counted GET until the reset')

  // A cached tag that moved upstream needs a GET: it is served stale instead, as for any 429.
  await up.retag('bitnami/redis', '7.2', buildExtraImage('retag-cooldown', 'bitnami/redis', '7.2'))
  const stale = await get(`${d.url}/v2/bitnami/redis/manifests/7.2`)
  t.equal(stale.status, 200)
  t.equal(stale.headers['docker-content-digest'], up.images.redis.digest)
  t.equal(stale.headers['warning'], '110 - "Response is stale"')
  t.equal(up.hub.counts.manifestGet, 1)

  now += 81_000
  const after = await get(`${d.url}/v2/library/alpine/manifests/latest`)
  t.equal(after.status, 200, 'past the reset upstream is asked again')
  t.equal(up.hub.counts.manifestGet, 2)

  // RateLimit-Reset when there is no Retry-After; a minute when the 429 names no time at all.
  up.hub.inject({ kind: 'status429', method: 'GET', path: /manifests/, rateLimitReset: '30' })
  t.equal((await get(`${d.url}/v2/library/multi/manifests/latest`)).headers['retry-after'], '30')
  now += 31_000
  up.hub.inject({ kind: 'status429', method: 'GET', path: /manifests/ })
  t.equal((await get(`${d.url}/v2/library/multi/manifests/latest`)).headers['retry-after'], '60')
  t.equal(up.hub.counts.manifestGet, 4)
})

t.test('a 429 with a short Retry-After is waited out and the GET sent once more', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  up.hub.inject({ kind: 'status429', method: 'GET', path: /manifests/, retryAfter: '1' })
  const res = await get(`${d.url}/v2/library/alpine/manifests/latest`)
  t.equal(res.status, 200)
  t.equal(res.headers['docker-content-digest'], up.images.alpine.digest)
  t.equal(up.hub.counts.manifestGet, 2, 'the 429 and the one retry')

  up.hub.inject({ kind: 'status429', method: 'GET', path: /manifests/, retryAfter: '1', times: 2 })
  const twice = await get(`${d.url}/v2/library/multi/manifests/latest`)
  t.equal(twice.status, 429, 'one retry only')
  t.equal(up.hub.counts.manifestGet, 4)
})
