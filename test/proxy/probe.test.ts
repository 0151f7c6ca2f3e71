import { gunzipSync } from 'node:zlib'
import t from 'tap'
import { buildProbeImage, PROBE_REPOSITORY } from '../../src/proxy/probe.js'
import { startUpstream } from '../fixtures/upstream.js'
import { get, sha256, startDaemon } from '../helpers/daemon.js'
import { ACCEPT_ALL_MANIFESTS } from '../fixtures/images.js'

t.test('the probe image is deterministic and valid: digests, diff_ids, a gzip of an empty tar', async (t) => {
  const a = buildProbeImage('arm64')
  const b = buildProbeImage('arm64')
  t.equal(a.manifest.bytes.toString(), b.manifest.bytes.toString(), 'the same bytes every time')
  t.equal(a.manifest.digest, sha256(a.manifest.bytes))
  const manifest = JSON.parse(a.manifest.bytes.toString()) as { config: { digest: string; size: number }; layers: Array<{ digest: string; size: number }> }
  const config = a.blobs.get(manifest.config.digest)!
  const layer = a.blobs.get(manifest.layers[0]!.digest)!
  t.equal(sha256(config), manifest.config.digest)
  t.equal(config.length, manifest.config.size)
  t.equal(sha256(layer), manifest.layers[0]!.digest)
  t.equal(layer.length, manifest.layers[0]!.size)
  const tar = gunzipSync(layer)
  t.same(tar, Buffer.alloc(1024), 'the layer is an empty tar')
  t.match(JSON.parse(config.toString()), { architecture: 'arm64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(tar)] } })
  t.not(buildProbeImage('amd64').manifest.digest, a.manifest.digest, 'the platform is in the config')
})

t.test('the probe repository is answered by dproxy under every registry and route, with zero upstream requests', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  // Both registries lead to the hub shim, which counts every request it gets.
  const d = await startDaemon(t, undefined, { upstreams: { 'docker.io': up.hubUrl, 'ghcr.io': up.hubUrl } })
  const image = d.probe.image
  const manifest = JSON.parse(image.manifest.bytes.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> }
  const routes: Array<[nonce: string, name: string, query: string, registry: string, route: string]> = [
    ['root-1', PROBE_REPOSITORY, '', 'docker.io', 'root'],
    ['ns-hub-1', PROBE_REPOSITORY, '?ns=docker.io', 'docker.io', 'ns'],
    ['ns-ghcr-1', PROBE_REPOSITORY, '?ns=ghcr.io', 'ghcr.io', 'ns'],
    ['path-ghcr-1', `ghcr.io/${PROBE_REPOSITORY}`, '', 'ghcr.io', 'path'],
    ['path-hub-1', `docker.io/${PROBE_REPOSITORY}`, '', 'docker.io', 'path'],
  ]
  for (const [nonce, name, query, registry, route] of routes) {
    const base = `${d.url}/v2/${name}`
    const head = await get(`${base}/manifests/${nonce}${query}`, { accept: ACCEPT_ALL_MANIFESTS, 'user-agent': `test/${nonce}` }, 'HEAD')
    t.equal(head.status, 200, `${name}${query}: HEAD by tag`)
    t.equal(head.headers['docker-content-digest'], image.manifest.digest)
    t.equal(head.headers['content-length'], String(image.manifest.bytes.length))
    const byTag = await get(`${base}/manifests/${nonce}${query}`, { accept: ACCEPT_ALL_MANIFESTS, 'user-agent': `test/${nonce}` })
    t.equal(byTag.status, 200, `${name}${query}: GET by tag`)
    t.equal(byTag.headers['content-type'], image.manifest.mediaType)
    t.equal(sha256(byTag.body), image.manifest.digest)
    const byDigest = await get(`${base}/manifests/${image.manifest.digest}${query}`, { accept: ACCEPT_ALL_MANIFESTS })
    t.equal(byDigest.status, 200, `${name}${query}: GET by digest`)
    t.equal(sha256(byDigest.body), image.manifest.digest)
    for (const digest of [manifest.config.digest, manifest.layers[0]!.digest]) {
      const blob = await get(`${base}/blobs/${digest}${query}`)
      t.equal(blob.status, 200, `${name}${query}: blob ${digest}`)
      t.equal(sha256(blob.body), digest)
      const size = await get(`${base}/blobs/${digest}${query}`, {}, 'HEAD')
      t.equal(size.headers['content-length'], String(blob.body.length))
      const part = await get(`${base}/blobs/${digest}${query}`, { range: 'bytes=1-4' })
      t.equal(part.status, 206)
      t.same(part.body, blob.body.subarray(1, 5))
    }
    const seen = await get(`${d.url}/_dproxy/probe/${nonce}`)
    t.equal(seen.status, 200)
    const hits = (JSON.parse(seen.body.toString()) as { hits: Array<Record<string, string>> }).hits
    t.equal(hits.length, 2, `${nonce}: the HEAD and the GET by tag are noted`)
    t.match(hits[0], { registry, route, method: 'HEAD', userAgent: `test/${nonce}`, at: String })
  }
  const unknown = await get(`${d.url}/v2/${PROBE_REPOSITORY}/manifests/sha256:${'0'.repeat(64)}`)
  t.equal(unknown.status, 404)
  t.match(unknown.body.toString(), 'MANIFEST_UNKNOWN')
  const noBlob = await get(`${d.url}/v2/${PROBE_REPOSITORY}/blobs/sha256:${'0'.repeat(64)}`)
  t.equal(noBlob.status, 404)
  t.match(noBlob.body.toString(), 'BLOB_UNKNOWN')
  const never = JSON.parse((await get(`${d.url}/_dproxy/probe/never-sent`)).body.toString()) as { hits: unknown[] }
  t.same(never.hits, [], 'a nonce that never arrived has no hits')

  t.equal(up.hub.counts.requests.length, 0, 'the hub shim saw no request at all')
  t.same(
    [d.upstreams.counters.manifestGets, d.upstreams.counters.manifestHeads, d.upstreams.counters.blobGets],
    [0, 0, 0],
    'dproxy asked no upstream',
  )
})

t.test('the nonce book is bounded and keeps user agents printable', async (t) => {
  const d = await startDaemon(t, undefined)
  const { ProbeRepository } = await import('../../src/proxy/probe.js')
  const probe = new ProbeRepository({ clock: { now: () => 0 }, maxNonces: 2 })
  const claim = (ua: string) => probe.claim({ registry: 'docker.io', repository: PROBE_REPOSITORY }, { name: PROBE_REPOSITORY, ns: undefined, method: 'GET', userAgent: ua })!
  for (const nonce of ['a', 'b', 'c']) await claim('x\u0007y'.repeat(100)).manifests.get({ registry: 'docker.io', repository: PROBE_REPOSITORY }, { kind: 'tag', tag: nonce })
  t.equal(probe.seen('a'), undefined, 'the oldest nonce is forgotten')
  t.equal(probe.seen('c')?.[0]?.userAgent, 'x?y'.repeat(100).slice(0, 200))
  t.equal(probe.claim({ registry: 'docker.io', repository: 'library/alpine' }, { name: 'alpine', ns: undefined, method: 'GET', userAgent: undefined }), undefined, 'other repositories go to the proxies')
  const bad = await get(`${d.url}/_dproxy/probe/..%2f`)
  t.equal(bad.status, 404, 'only tag-shaped nonces are looked up')
})
