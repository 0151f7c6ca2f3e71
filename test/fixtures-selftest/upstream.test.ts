// Proves the fake Docker Hub behaves as the rest of the suite assumes: token flow, rate-limit accounting,
// CDN redirects, every fault kind, outage modes, per-instance isolation, and that the registry behind it
// holds exactly the catalogue's bytes (checked with skopeo, an independent client).

import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { request } from 'undici'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import { fetchToken, type Hub } from '../fixtures/hub.js'
import { ACCEPT_ALL_MANIFESTS, buildExtraImage, sha256, catalogueImages, fingerprint } from '../fixtures/images.js'
import { dockerAvailable, startDockerd } from '../fixtures/dockerd.js'

const exec = promisify(execFile)

interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

async function get(url: string, init: { method?: 'GET' | 'HEAD'; headers?: Record<string, string> } = {}): Promise<Reply> {
  const res = await request(url, { method: init.method ?? 'GET', headers: init.headers })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

async function manifest(up: Upstream, repo: string, ref: string, token: string, method: 'GET' | 'HEAD' = 'GET') {
  return get(`${up.hubUrl}/v2/${repo}/manifests/${ref}`, {
    method,
    headers: { ...bearer(token), accept: ACCEPT_ALL_MANIFESTS },
  })
}

/** Follows the 307 by hand, without the token, and returns the CDN URL. */
async function cdnLocation(up: Upstream, repo: string, digest: string, token: string): Promise<string> {
  const front = await get(`${up.hubUrl}/v2/${repo}/blobs/${digest}`, { headers: bearer(token) })
  if (front.status !== 307 || typeof front.headers.location !== 'string') {
    throw new Error(`expected a 307 for ${digest}, got ${front.status}`)
  }
  return front.headers.location
}

let t0 = performance.now()
const up = await startUpstream()
t.comment(`startUpstream (seeding if needed): ${(performance.now() - t0).toFixed(0)} ms`)
t.teardown(() => up.stop())
const { alpine, redis, multi, ociindex, layers } = up.images
const hub: Hub = up.hub

t.test('anonymous token flow', async (t) => {
  const ping = await get(`${up.hubUrl}/v2/`)
  t.equal(ping.status, 401)
  t.equal(ping.headers['www-authenticate'], `Bearer realm="${up.hubUrl}/token",service="registry.docker.io"`)

  const tok = await get(`${hub.realm}?service=registry.docker.io&scope=repository:library/alpine:pull`)
  t.equal(tok.status, 200)
  const body = JSON.parse(tok.body.toString()) as Record<string, unknown>
  t.type(body.token, 'string')
  t.equal(body.access_token, body.token)
  t.equal(body.expires_in, 300)
  t.type(body.issued_at, 'string')

  const ok = await get(`${up.hubUrl}/v2/`, { headers: bearer(body.token as string) })
  t.equal(ok.status, 200)

  const bad = await get(`${up.hubUrl}/v2/`, { headers: bearer('nope') })
  t.equal(bad.status, 401)
  t.match(bad.headers['www-authenticate'], /error="invalid_token"/)

  const noToken = await get(`${up.hubUrl}/v2/library/alpine/manifests/latest`)
  t.equal(noToken.status, 401)
  t.match(noToken.headers['www-authenticate'], /scope="repository:library\/alpine:pull"/)

  const wrongScope = await manifest(up, 'bitnami/redis', '7.2', body.token as string)
  t.equal(wrongScope.status, 401)
  t.match(wrongScope.headers['www-authenticate'], /scope="repository:bitnami\/redis:pull",error="insufficient_scope"/)

  const both = await fetchToken(hub, ['library/alpine', 'bitnami/redis'])
  t.equal((await manifest(up, 'bitnami/redis', '7.2', both)).status, 200)
})

t.test('manifest GET counts against the limit, HEAD does not', async (t) => {
  const token = await fetchToken(hub, ['library/alpine'])
  hub.resetCounts()
  const before = hub.remaining()

  const head = await manifest(up, 'library/alpine', 'latest', token, 'HEAD')
  t.equal(head.status, 200)
  t.equal(head.headers['docker-content-digest'], alpine.digest)
  t.equal(head.headers['content-length'], String(alpine.size))
  t.equal(head.headers['ratelimit-limit'], '100;w=21600')
  t.equal(head.headers['ratelimit-remaining'], `${before};w=21600`)
  t.equal(head.headers['docker-ratelimit-source'], '127.0.0.1')
  t.equal(hub.remaining(), before)

  const res = await manifest(up, 'library/alpine', 'latest', token)
  t.equal(res.status, 200)
  t.same(res.body, alpine.manifest, 'bytes relayed exactly')
  t.equal(res.headers['content-type'], alpine.mediaType)
  t.equal(res.headers['docker-content-digest'], alpine.digest)
  t.equal(res.headers['ratelimit-remaining'], `${before - 1};w=21600`)
  t.equal(hub.remaining(), before - 1)
  t.equal(hub.counts.manifestGet, 1)
  t.equal(hub.counts.manifestHead, 1)
  t.same(hub.counts.manifestGetByRepo, { 'library/alpine': 1 })
})

t.test('429 when the limit is used up; HEAD still answers', async (t) => {
  const token = await fetchToken(hub, ['library/alpine'])
  hub.setRemaining(1)
  t.equal((await manifest(up, 'library/alpine', 'latest', token)).status, 200)
  const limited = await manifest(up, 'library/alpine', 'latest', token)
  t.equal(limited.status, 429)
  t.equal(limited.headers['ratelimit-remaining'], '0;w=21600')
  t.match(JSON.parse(limited.body.toString()), { errors: [{ code: 'TOOMANYREQUESTS', message: /pull rate limit/ }] })
  t.equal((await manifest(up, 'library/alpine', 'latest', token, 'HEAD')).status, 200)
  hub.setRemaining(100)
})

t.test('manifest lists and OCI indexes with their children', async (t) => {
  const token = await fetchToken(hub, ['library/multi', 'library/ociindex', 'library/layers'])
  for (const img of [multi, ociindex]) {
    const top = await manifest(up, img.repository, img.tag, token)
    t.equal(top.headers['content-type'], img.mediaType)
    t.same(top.body, img.manifest)
    t.equal(img.children.length, 2)
    for (const child of img.children) {
      const res = await manifest(up, img.repository, child.digest, token)
      t.same(res.body, child.manifest, `${img.ref} ${child.platform.architecture}`)
      t.equal(res.headers['content-type'], child.mediaType)
    }
  }
  const oci = await manifest(up, 'library/layers', '1', token)
  t.same(oci.body, layers.manifest)
  t.equal(layers.blobs.filter((b) => b.kind === 'layer').length, 4)
})

t.test('blob GET redirects to the CDN, which serves verified bytes without Authorization', async (t) => {
  const token = await fetchToken(hub, ['bitnami/redis'])
  hub.resetCounts()
  const layer = redis.blobs.find((b) => b.kind === 'layer')!
  const location = await cdnLocation(up, 'bitnami/redis', layer.digest, token)
  t.ok(location.startsWith(`${hub.cdnUrl}/registry-v2/docker/registry/v2/blobs/sha256/`))
  t.match(location, /\/data\?verify=[0-9a-f]+&name=bitnami%2Fredis$/)

  const res = await get(location)
  t.equal(res.status, 200)
  t.equal(res.headers['content-length'], String(layer.size))
  t.equal(sha256(res.body), layer.digest)

  const withAuth = await get(location, { headers: bearer(token) })
  t.equal(withAuth.status, 400)

  const ranged = await get(location, { headers: { range: 'bytes=100-199' } })
  t.equal(ranged.status, 206)
  t.same(ranged.body, layer.data.subarray(100, 200))

  const head = await get(`${up.hubUrl}/v2/bitnami/redis/blobs/${layer.digest}`, { method: 'HEAD', headers: bearer(token) })
  t.equal(head.status, 307)
  const missing = await get(`${up.hubUrl}/v2/bitnami/redis/blobs/sha256:${'0'.repeat(64)}`, { headers: bearer(token) })
  t.equal(missing.status, 404)
  const forged = await get(location.replace(/verify=[0-9a-f]+/, 'verify=00'))
  t.equal(forged.status, 403)

  t.ok(hub.counts.requests.some((r) => r.listener === 'cdn' && r.method === 'GET' && r.status === 400), 'logged')
  t.equal(hub.counts.blobGet[layer.digest], 1)
  t.equal(hub.counts.cdnGet[layer.digest], 2, 'the 400 and the 403 are not served')
  t.equal(hub.counts.cdnBytes[layer.digest], layer.size + 100)
})

t.test('fault injection', async (t) => {
  const token = await fetchToken(hub, ['library/alpine'])
  const layer = alpine.blobs.find((b) => b.kind === 'layer')!
  const manifestPath = /\/v2\/library\/alpine\/manifests\//
  t.afterEach(() => hub.clearFaults())

  t.test('truncate: full Content-Length, half the bytes, then EOF', async (t) => {
    hub.inject({ kind: 'truncate', digest: layer.digest })
    const res = await request(await cdnLocation(up, 'library/alpine', layer.digest, token))
    t.equal(res.headers['content-length'], String(layer.size))
    let got = 0
    await t.rejects(
      (async () => {
        for await (const c of res.body) got += (c as Buffer).length
      })(),
    )
    t.equal(got, Math.floor(layer.size / 2))
    t.equal(hub.pendingFaults().length, 0)
  })

  t.test('reset: connection destroyed mid-body', async (t) => {
    hub.inject({ kind: 'reset', path: manifestPath })
    await t.rejects(manifest(up, 'library/alpine', 'latest', token))
    t.equal((await manifest(up, 'library/alpine', 'latest', token)).status, 200, 'only once')
  })

  t.test('wrongBytes: same length, different digest', async (t) => {
    hub.inject({ kind: 'wrongBytes', digest: layer.digest, at: 'cdn' })
    const res = await get(await cdnLocation(up, 'library/alpine', layer.digest, token))
    t.equal(res.body.length, layer.size)
    t.not(sha256(res.body), layer.digest)
  })

  t.test('hold: the body stops half-way until released, whatever the client drains meanwhile', async (t) => {
    const big = alpine.blobs.find((b) => b.size > 1_000_000)!
    const holdAt = Math.floor(big.size / 2)
    let release!: () => void
    hub.inject({ kind: 'length', digest: big.digest, at: 'cdn', hold: new Promise<void>((r) => (release = r)) })
    hub.resetCounts()
    const res = await request(await cdnLocation(up, 'library/alpine', big.digest, token))
    const chunks: Buffer[] = []
    let got = 0
    let reached!: () => void
    const atHold = new Promise<void>((r) => (reached = r))
    const reading = (async () => {
      for await (const c of res.body) {
        chunks.push(c as Buffer)
        got += (c as Buffer).length
        if (got >= holdAt) reached()
      }
    })()
    await atHold
    // A hold that gives way lets the rest through within a few turns of the event loop; give it ample time.
    await new Promise((r) => setTimeout(r, 300))
    t.equal(got, holdAt, 'the client has the first half only')
    t.equal(hub.counts.cdnBytes[big.digest], holdAt, 'and the hub sent no more')
    release()
    await reading
    t.equal(sha256(Buffer.concat(chunks)), big.digest, 'the rest once released')
  })

  t.test('html: a 200 challenge page', async (t) => {
    hub.inject({ kind: 'html', path: manifestPath })
    const res = await manifest(up, 'library/alpine', 'latest', token)
    t.equal(res.status, 200)
    t.match(res.headers['content-type'], /^text\/html/)
    t.match(res.body.toString(), /Just a moment/)
  })

  t.test('status500 and status503, twice each', async (t) => {
    hub.inject({ kind: 'status500', path: manifestPath, times: 2 })
    hub.inject({ kind: 'status503', digest: layer.digest })
    t.equal((await manifest(up, 'library/alpine', 'latest', token)).status, 500)
    t.equal((await manifest(up, 'library/alpine', 'latest', token)).status, 500)
    t.equal((await manifest(up, 'library/alpine', 'latest', token)).status, 200)
    const front = await get(`${up.hubUrl}/v2/library/alpine/blobs/${layer.digest}`, { headers: bearer(token) })
    t.equal(front.status, 503)
    t.match(JSON.parse(front.body.toString()), { errors: [{ code: 'UNAVAILABLE' }] })
  })

  t.test('slow: headers delayed', async (t) => {
    hub.inject({ kind: 'slow', path: manifestPath, delayMs: 300 })
    const start = performance.now()
    const res = await manifest(up, 'library/alpine', 'latest', token, 'HEAD')
    t.equal(res.status, 200)
    t.ok(performance.now() - start >= 290, 'took at least the delay')
  })

  t.test('whole-server modes', async (t) => {
    await hub.setMode('down-5xx')
    t.equal((await manifest(up, 'library/alpine', 'latest', token)).status, 503)
    t.equal((await get(`${hub.realm}?service=registry.docker.io`)).status, 503)
    await hub.setMode('down-html')
    const html = await manifest(up, 'library/alpine', 'latest', token)
    t.equal(html.status, 403)
    t.match(html.body.toString(), /Just a moment/)
    await hub.setMode('refuse')
    await t.rejects(get(`${up.hubUrl}/v2/`), { code: 'ECONNREFUSED' })
    await t.rejects(get(`${hub.cdnUrl}/`), { code: 'ECONNREFUSED' })
    await hub.setMode('up')
    t.equal((await manifest(up, 'library/alpine', 'latest', token)).status, 200, 'same port again')
  })
})

t.test('tags/list is proxied', async (t) => {
  const token = await fetchToken(hub, ['library/ociindex'])
  const res = await get(`${up.hubUrl}/v2/library/ociindex/tags/list`, { headers: bearer(token) })
  t.same(JSON.parse(res.body.toString()), { name: 'library/ociindex', tags: ['1'] })
})

t.test('skopeo reads the exact manifest bytes from the registry', async (t) => {
  const host = up.registryUrl.replace('http://', '')
  const raw = await exec('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${host}/library/alpine:latest`], {
    encoding: 'buffer',
  })
  t.equal(sha256(raw.stdout), alpine.digest)
  const list = await exec('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${host}/library/multi:latest`], {
    encoding: 'buffer',
  })
  t.equal(sha256(list.stdout), multi.digest)
})

t.test('retag and remove stay inside one upstream instance', async (t) => {
  t0 = performance.now()
  const other = await startUpstream()
  t.comment(`startUpstream (seeded): ${(performance.now() - t0).toFixed(0)} ms`)
  t.teardown(() => other.stop())
  const replacement = buildExtraImage('retag-1')
  t.not(replacement.digest, alpine.digest)
  await other.retag('library/alpine', 'latest', replacement)

  const tokOther = await fetchToken(other.hub, ['library/alpine', 'bitnami/redis'])
  const tokUp = await fetchToken(hub, ['library/alpine'])
  t.equal((await manifest(other, 'library/alpine', 'latest', tokOther, 'HEAD')).headers['docker-content-digest'],
    replacement.digest)
  t.equal((await manifest(up, 'library/alpine', 'latest', tokUp, 'HEAD')).headers['docker-content-digest'],
    alpine.digest, 'the first upstream still has the original')

  await other.remove('bitnami/redis', '7.2')
  t.equal((await manifest(other, 'bitnami/redis', '7.2', tokOther, 'HEAD')).status, 404)
})

t.test('accounts, private repositories, unlimited plans and token expiry', async (t) => {
  let clock = Date.now()
  t0 = performance.now()
  const priv = await startUpstream({
    hub: { users: { alice: 's3cret' }, requireAuth: true, tokenTtlSeconds: 60, limit: 10, now: () => clock },
  })
  t.comment(`startUpstream (seeded, second in process): ${(performance.now() - t0).toFixed(0)} ms`)
  t.teardown(() => priv.stop())

  const bad = await get(`${priv.hub.realm}?service=registry.docker.io&scope=repository:library/alpine:pull`, {
    headers: { authorization: 'Basic ' + Buffer.from('alice:wrong').toString('base64') },
  })
  t.equal(bad.status, 401)
  t.same(JSON.parse(bad.body.toString()), { details: 'incorrect username or password' })

  const anon = await fetchToken(priv.hub, ['library/alpine'])
  const denied = await manifest(priv, 'library/alpine', 'latest', anon)
  t.equal(denied.status, 401)
  t.match(denied.headers['www-authenticate'], /error="insufficient_scope"/)

  const alice = await fetchToken(priv.hub, ['library/alpine'], { user: 'alice', password: 's3cret' })
  const res = await manifest(priv, 'library/alpine', 'latest', alice)
  t.equal(res.status, 200)
  const source = priv.hub.sourceFor('alice')
  t.match(source, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  t.equal(res.headers['docker-ratelimit-source'], source)
  t.equal(res.headers['ratelimit-remaining'], '9;w=21600')
  t.equal(priv.hub.remaining(source), 9)
  t.equal(priv.hub.remaining(), 10, 'anonymous budget untouched')

  clock += 61_000
  const expired = await manifest(priv, 'library/alpine', 'latest', alice)
  t.equal(expired.status, 401)
  t.match(expired.headers['www-authenticate'], /error="invalid_token"/)

  const free = await startUpstream({ hub: { unlimited: true, requireUserAgent: true } })
  t.teardown(() => free.stop())
  const challenge = await get(`${free.hubUrl}/v2/`)
  t.equal(challenge.status, 403, 'no User-Agent: HTML challenge')
  t.match(challenge.body.toString(), /Just a moment/)
  const tok = await fetchToken(free.hub, ['library/alpine'])
  const unlimited = await get(`${free.hubUrl}/v2/library/alpine/manifests/latest`, {
    headers: { ...bearer(tok), accept: ACCEPT_ALL_MANIFESTS, 'user-agent': 'dproxy-selftest' },
  })
  t.equal(unlimited.status, 200)
  t.equal(unlimited.headers['ratelimit-limit'], undefined)
  t.equal(unlimited.headers['docker-ratelimit-source'], undefined)
})

t.test('big image: 100 MiB layer through the CDN, with ranges', async (t) => {
  t0 = performance.now()
  const withBig = await startUpstream({ big: true })
  t.comment(`startUpstream({ big: true }): ${(performance.now() - t0).toFixed(0)} ms`)
  t.teardown(() => withBig.stop())
  const big = withBig.images.big!
  const layer = big.blobs.find((b) => b.kind === 'layer')!
  t.ok(layer.size >= 100 * 1024 * 1024)
  t.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar')
  t.equal(layer.digest, layer.diffId, 'uncompressed: digest is the diff id')

  const token = await fetchToken(withBig.hub, ['library/big'])
  const location = await cdnLocation(withBig, 'library/big', layer.digest, token)
  const tail = await get(location, { headers: { range: `bytes=${layer.size - 4096}-` } })
  t.equal(tail.status, 206)
  t.same(tail.body, layer.data.subarray(layer.size - 4096))

  const res = await request(location)
  t.equal(res.headers['content-length'], String(layer.size))
  const { createHash } = await import('node:crypto')
  const h = createHash('sha256')
  for await (const c of res.body) h.update(c as Buffer)
  t.equal('sha256:' + h.digest('hex'), layer.digest)
  t.equal(fingerprint(catalogueImages(up.images)), fingerprint(catalogueImages({ ...withBig.images, big: undefined })))
})

const docker = dockerAvailable()
const dockerRequired = (process.env.CI ?? '') !== '' || (process.env.DPROXY_REQUIRE_DOCKER ?? '') !== ''
t.test('the real Docker engine pulls through the hub: token dance, CDN redirect, diff_ids', {
  skip: !docker.ok && !dockerRequired ? `docker engine unavailable: ${docker.reason}` : false,
}, async (t) => {
  const engine = await startDockerd(t)
  hub.resetCounts()
  hub.setRemaining(100)
  const host = up.hubUrl.replace('http://', '')
  for (const img of [alpine, ociindex]) {
    const pull = await engine.docker(['pull', `${host}/${img.ref}`])
    t.equal(pull.code, 0, `docker pull ${img.ref}`, { stderr: pull.stderr, log: engine.logTail(20) })
    t.match(pull.stdout, img.digest)
  }
  t.equal(hub.counts.manifestGet, 3, 'alpine, the index and its amd64 child')
  t.equal(hub.remaining(), 97)
  const layer = alpine.blobs.find((b) => b.kind === 'layer')!
  t.equal(hub.counts.cdnBytes[layer.digest], layer.size)
})
