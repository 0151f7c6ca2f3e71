// Docker in mirror mode in front of a laptop dproxy whose docker.io chain has
// a failing team cache first: dockerd's registry-mirrors names dproxy, and
// Docker Hub itself is out of reach for dockerd (HTTPS_PROXY to a closed
// port), so a pull that succeeds came through dproxy. For the refused, the
// black-holed and the 500 team cache, the pull succeeds and the counters at
// the team front and the origin front show the order: team first, then the
// origin. The same lines with skopeo, and the others, are in chain.test.ts.

import t from 'tap'
import { freePort } from '../fixtures/clients.js'
import { dockerOrSkip, startDockerd, type Dockerd } from '../fixtures/dockerd.js'
import { startFront, type Behaviour, type Front } from '../fixtures/front.js'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import { startDaemon } from '../helpers/daemon.js'

let up: Upstream
let mirror: Front
let origin: Front

t.before(async () => {
  up = await startUpstream()
  mirror = await startFront(up.hubUrl)
  origin = await startFront(up.hubUrl)
})

t.teardown(async () => {
  await mirror?.stop()
  await origin?.stop()
  await up?.stop()
})

t.test('docker (registry-mirrors = dproxy) pulls when the team cache is refused, black-holed or answers 500', async (t) => {
  if (!dockerOrSkip(t)) return
  const port = await freePort()
  const closed = await freePort()
  const engine: Dockerd = await startDockerd(t, {
    extraArgs: [`--registry-mirror=http://127.0.0.1:${port}`],
    env: { HTTPS_PROXY: `http://127.0.0.1:${closed}`, HTTP_PROXY: `http://127.0.0.1:${closed}`, NO_PROXY: '127.0.0.1,localhost' },
  })
  const refusedUrl = `http://127.0.0.1:${await freePort()}`
  const cases: Array<[string, string, Behaviour, string]> = [
    ['refused', refusedUrl, { kind: 'pass' }, 'alpine:latest'],
    ['black-holed', mirror.url, { kind: 'blackhole' }, 'bitnami/redis:7.2'],
    ['500', mirror.url, { kind: 'status', status: 500 }, 'layers:1'],
  ]
  for (const [name, first, behaviour, image] of cases) {
    await t.test(name, async (t) => {
      mirror.set(behaviour)
      mirror.requests.length = 0
      origin.requests.length = 0
      // The same port each time: dockerd's mirror is fixed when it starts.
      const d = await startDaemon(t, undefined, {
        port,
        upstreams: { 'docker.io': [first, 'origin'] },
        upstreamOrigins: { 'docker.io': origin.url },
        chainTimeouts: { connectMs: 1000, firstByteMs: 1500 },
      })
      const res = await engine.docker(['pull', image], { timeoutMs: 120_000 })
      t.equal(res.code, 0, res.code === 0 ? `docker pull ${image}` : `docker pull ${image}: ${res.stderr.trim().split('\n').pop()}`)
      const status = await d.status()
      const team = status.endpoints?.find((e) => e.endpoint === first)
      t.ok((team?.requests ?? 0) > 0, 'the team cache was asked first')
      if (name !== 'refused') t.ok(mirror.requests.length > 0, 'its front saw the request')
      t.equal(team?.up, false, 'and is down now')
      t.ok(origin.apiRequests().some((r) => r.includes('/manifests/')), 'the origin served the manifest')
      t.ok(origin.apiRequests().some((r) => r.includes('/blobs/')), 'and the blobs')
      t.ok(status.counters.cacheMisses > 0, 'through dproxy')
      await d.stop(0)
    })
  }
})
