// What the composition root decides about which registries clients reach:
// through a real daemon, a registry a client names on an internal address
// gets an OCI 403 and the target sees no request; with the allow-list of a
// daemon other machines can reach, other registries are DENIED even for
// content already in the cache.

import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { registryAllowList } from '../../src/daemon/daemon.js'
import { silentLogger } from '../../src/log.js'
import { BlobProxy } from '../../src/proxy/blobs.js'
import { newCounters } from '../../src/proxy/counters.js'
import { ManifestProxy } from '../../src/proxy/manifests.js'
import { registryHandler } from '../../src/registry/handler.js'
import { Store } from '../../src/store/store.js'
import { Upstreams } from '../../src/upstream/client.js'
import { DEFAULT_ALLOWED_REGISTRIES } from '../../src/upstream/registries.js'
import { ACCEPT_ALL_MANIFESTS } from '../fixtures/images.js'
import { startUpstream } from '../fixtures/upstream.js'
import { get, pull, startDaemon } from '../helpers/daemon.js'

function ociError(t: Test, res: { status: number; headers: Record<string, unknown>; body: Buffer }, code: string, what: string) {
  t.equal(res.status, 403, `${what}: 403`)
  t.match(String(res.headers['content-type']), /^application\/json/, `${what}: JSON`)
  t.equal((JSON.parse(res.body.toString()) as { errors: Array<{ code: string }> }).errors[0]?.code, code, `${what}: ${code}`)
}

t.test('a client naming a registry on an internal address gets a 403 and the target no request', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = up.images.alpine.blobs[0]!
  const port = up.hub.port
  const paths = [
    `/v2/127.0.0.1:${port}/library/alpine/blobs/${layer.digest}`,
    `/v2/127.0.0.1:${port}/library/alpine/manifests/latest`,
    `/v2/localhost:${port}/library/alpine/manifests/${up.images.alpine.digest}`,
    `/v2/library/alpine/blobs/${layer.digest}?ns=127.0.0.1:${port}`,
    `/v2/library/alpine/manifests/latest?ns=127.0.0.1:${port}`,
    `/v2/library/alpine/tags/list?ns=127.0.0.1:${port}`,
    `/v2/[::ffff:127.0.0.1]:${port}/library/alpine/manifests/latest`,
    `/v2/library/alpine/manifests/latest?ns=2130706433:${port}`,
  ]
  for (const path of paths) ociError(t, await get(`${d.url}${path}`, { accept: ACCEPT_ALL_MANIFESTS }), 'DENIED', path)
  const head = await get(`${d.url}/v2/127.0.0.1:${port}/library/alpine/blobs/${layer.digest}`, {}, 'HEAD')
  t.equal(head.status, 403, 'HEAD of a blob too')
  t.strictSame(up.hub.counts.requests, [], 'the shim on 127.0.0.1 received zero requests')
  await pull(d.url, 'alpine', 'latest')
  t.ok(up.hub.counts.cdnGet[layer.digest], 'the configured upstream on the same address works, CDN redirect included')
})

t.test('registryAllowList: only beyond loopback; the user list or the default, plus configured upstreams', async (t) => {
  const upstreams = { 'mirror.example:5000': 'http://10.0.0.5:5000' }
  t.equal(registryAllowList({ hosts: ['127.0.0.1', '::1'], upstreams }), undefined)
  t.equal(registryAllowList({ upstreams }), undefined, 'the default listen addresses are loopback')
  t.strictSame(registryAllowList({ hosts: ['0.0.0.0'], upstreams }), [...DEFAULT_ALLOWED_REGISTRIES, 'mirror.example:5000'])
  t.strictSame(registryAllowList({ hosts: ['127.0.0.1', '192.168.1.5'], registries: ['ghcr.io'], upstreams }), [
    'ghcr.io',
    'mirror.example:5000',
  ])
  t.ok(DEFAULT_ALLOWED_REGISTRIES.includes('docker.io'))
})

t.test('with the allow-list in force, other registries are DENIED, cached content included', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const overrides = { 'docker.io': up.hubUrl }
  // Composed as Daemon.start does for a daemon listening on 0.0.0.0 (which a test cannot do safely).
  const allowRegistries = registryAllowList({ hosts: ['0.0.0.0'], upstreams: overrides })!
  const store = await Store.open(t.testdir())
  const upstreams = new Upstreams({ overrides, allowRegistries })
  t.teardown(() => upstreams.close())
  const counters = newCounters()
  const clock = { now: () => Date.now() }
  const handler = registryHandler({
    manifests: new ManifestProxy({ store, upstreams, counters, clock, log: silentLogger, maxAgeMs: 0 }),
    blobs: new BlobProxy({ store, upstreams, counters, log: silentLogger }),
    log: silentLogger,
    admit: (registry) => upstreams.admit(registry),
  })
  const server: Server = createServer((req, res) => void handler(req, res))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  await pull(base, 'alpine', 'latest')
  const layer = up.images.alpine.blobs[0]!
  const digest = up.images.alpine.digest
  up.hub.resetCounts()
  const denied = [
    `/v2/elsewhere.example/library/alpine/blobs/${layer.digest}`,
    `/v2/elsewhere.example/library/alpine/manifests/${digest}`,
    `/v2/library/alpine/manifests/latest?ns=elsewhere.example`,
    `/v2/library/alpine/tags/list?ns=elsewhere.example`,
  ]
  for (const path of denied) {
    const res = await get(`${base}${path}`, { accept: ACCEPT_ALL_MANIFESTS })
    ociError(t, res, 'DENIED', path)
    t.match(res.body.toString(), /not in this dproxy's allowed registries/, `${path}: says why`)
  }
  const cached = await get(`${base}/v2/library/alpine/blobs/${layer.digest}`)
  t.equal(cached.status, 200, 'an allowed registry is served')
  t.equal(up.hub.counts.requests.length, 0, 'nothing went upstream')
})

t.test('127.1 and 0:0:0:0:0:0:0:1 are loopback: the daemon listens there without client auth and answers', async (t) => {
  const d = await startDaemon(t, undefined, { hosts: ['127.1', '0:0:0:0:0:0:0:1'] })
  t.strictSame(d.listening.map((a) => a.host), ['127.1', '0:0:0:0:0:0:0:1'])
  t.equal(registryAllowList({ hosts: ['127.1', '0:0:0:0:0:0:0:1'] }), undefined, 'no registry allow-list either')
  for (const base of [`http://127.0.0.1:${d.port}`, `http://[::1]:${d.port}`]) {
    t.equal((await get(`${base}/v2/`)).status, 200, `${base}/v2/ answers`)
  }
})
