// Docker in mirror mode in front of a laptop dproxy whose docker.io chain has
// a failing team cache first: dockerd's registry-mirrors names dproxy, and
// Docker Hub itself is out of reach for dockerd (HTTPS_PROXY to a closed
// port), so a pull that succeeds came through dproxy. One subtest per line of
// the fall-through rule: the team cache refused, black-holed, answering 500,
// 404 for one repository, wanting a login the laptop lacks, or sending wrong
// blob bytes; and the origin down while the team cache is up. Each pull
// succeeds and the counters at the team front and the origin front show the
// order. The same lines with skopeo are in chain.test.ts.

import t, { type Test } from 'tap'
import { freePort } from '../fixtures/clients.js'
import { dockerOrSkip, startDockerd, type Dockerd } from '../fixtures/dockerd.js'
import { startFront, type Behaviour, type Front } from '../fixtures/front.js'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import { startDaemon } from '../helpers/daemon.js'
import type { Daemon } from '../../src/daemon/daemon.js'
import type { RequestRecord } from '../../src/daemon/events.js'
import { WHOLE_FIRST_BYTES } from '../../src/proxy/blobs.js'

let up: Upstream
let mirror: Front
let origin: Front
/** Before the plain registry (no CDN redirect, so a blob body passes through the front and can be spoiled). */
let direct: Front

t.before(async () => {
  up = await startUpstream()
  mirror = await startFront(up.hubUrl)
  origin = await startFront(up.hubUrl)
  direct = await startFront(up.registryUrl)
})

t.teardown(async () => {
  await mirror?.stop()
  await origin?.stop()
  await direct?.stop()
  await up?.stop()
})

interface Case {
  name: string
  /** The laptop's first endpoint (the team front, or a closed port). */
  first: string
  team: Behaviour
  /** The front `team` is set on: `mirror` unless given. */
  front?: Front
  origin?: Behaviour
  image: string
  /** `served`: dproxy's record of each request it answered in this case. */
  check(t: Test, d: Daemon, first: string, served: RequestRecord[]): Promise<void>
}

const manifestCalls = (f: Front) => f.apiRequests().filter((r) => r.includes('/manifests/'))
const blobGets = (f: Front) => f.apiRequests().filter((r) => r.startsWith('GET') && r.includes('/blobs/'))

/** The team cache failed (as `name` says) and the origin served the pull. */
async function fellThrough(t: Test, d: Daemon, first: string, name: string): Promise<void> {
  const status = await d.status()
  const team = status.endpoints?.find((e) => e.endpoint === first)
  t.ok((team?.requests ?? 0) > 0, 'the team cache was asked first')
  if (name !== 'refused') t.ok(mirror.requests.length > 0, 'its front saw the request')
  t.equal(team?.up, false, 'and is down now')
  t.ok(manifestCalls(origin).length > 0, 'the origin served the manifest')
  t.ok(blobGets(origin).length > 0, 'and the blobs')
  t.ok(status.counters.cacheMisses > 0, 'through dproxy')
}

t.test('docker (registry-mirrors = dproxy) pulls whichever way the team cache fails', async (t) => {
  if (!dockerOrSkip(t)) return
  const port = await freePort()
  const closed = await freePort()
  const engine: Dockerd = await startDockerd(t, {
    extraArgs: [`--registry-mirror=http://127.0.0.1:${port}`],
    env: { HTTPS_PROXY: `http://127.0.0.1:${closed}`, HTTP_PROXY: `http://127.0.0.1:${closed}`, NO_PROXY: '127.0.0.1,localhost' },
  })
  const refusedUrl = `http://127.0.0.1:${await freePort()}`
  const failing = (name: string, first: string, team: Behaviour, image: string): Case => ({
    name,
    first,
    team,
    image,
    check: (t, d, first) => fellThrough(t, d, first, name),
  })
  const cases: Case[] = [
    failing('refused', refusedUrl, { kind: 'pass' }, 'alpine:latest'),
    failing('black-holed', mirror.url, { kind: 'blackhole' }, 'bitnami/redis:7.2'),
    failing('500', mirror.url, { kind: 'status', status: 500 }, 'layers:1'),
    {
      name: '404 for one repository',
      first: mirror.url,
      team: { kind: 'notFound', repository: /^\/v2\/library\/ociindex\// },
      image: 'ociindex:1',
      async check(t, d, first) {
        const asked = manifestCalls(mirror)
        t.ok(asked.length > 0 && asked.every((r) => r.includes('/library/ociindex/')), 'the team cache was asked for that repository first')
        t.ok(manifestCalls(origin).some((r) => r.includes('/library/ociindex/')), 'the origin served its manifest')
        t.ok(blobGets(origin).length > 0, 'and its blobs')
        for (const r of blobGets(mirror)) {
          const digest = /sha256:[0-9a-f]{64}/.exec(r)![0]
          t.ok(blobGets(origin).some((o) => o.includes(digest)), `${digest.slice(0, 15)}: refused by the team cache, sent by the origin`)
        }
        t.equal((await d.status()).endpoints?.find((e) => e.endpoint === first)?.up, true, 'a 404 is an answer: the team cache stays up')
      },
    },
    {
      name: 'a login the laptop lacks',
      first: mirror.url,
      // A Bearer challenge whose token realm (on the front) refuses the laptop too: it has no login for that host.
      team: { kind: 'auth', bearer: true },
      image: 'multi:latest',
      async check(t, d, first) {
        t.ok(mirror.requests.some((r) => r.startsWith('GET /token')), 'dproxy tried the team cache\'s token realm')
        t.ok(manifestCalls(origin).length > 0 && blobGets(origin).length > 0, 'the origin served the pull')
        const team = (await d.status()).endpoints?.find((e) => e.endpoint === first)
        t.match(team?.lastError, /401|login/, 'status shows why the team cache was passed over')
      },
    },
    {
      name: 'origin down while the team cache is up',
      first: mirror.url,
      team: { kind: 'pass' },
      origin: { kind: 'status', status: 503 },
      // alpine again, removed from dockerd first (the refused case pulled it).
      image: 'alpine:latest',
      async check(t, d, first) {
        t.ok(manifestCalls(mirror).length > 0 && blobGets(mirror).length > 0, 'the team cache served the pull')
        t.strictSame(origin.apiRequests(), [], 'the origin saw no API request')
        t.equal((await d.status()).endpoints?.find((e) => e.endpoint === first)?.up, true, 'the team cache is up')
      },
    },
    {
      name: 'wrong blob bytes (config and layers)',
      // The Hub shim answers blob GETs with a 307 to its CDN, which the front relays untouched: the bytes
      // would come right from the CDN. So this team cache is the plain registry, which sends the bodies.
      // Every blob of redis (a config of 824 bytes, layers of 512 and 256 KiB) is at most WHOLE_FIRST_BYTES:
      // dproxy sends none before it verified, so each wrong one is replaced by the origin's within
      // dockerd's request. dockerd sees no failure (it does not retry a config blob at all, and a layer
      // only after its 5 s and 10 s backoff).
      first: direct.url,
      front: direct,
      team: { kind: 'wrongBlobBytes' },
      image: 'bitnami/redis:7.2',
      async check(t, _d, _first, served) {
        const asked = (f: Front, digest: string) => blobGets(f).filter((r) => r.includes(digest)).length
        t.ok(up.images.redis.blobs.every((b) => b.data.length <= WHOLE_FIRST_BYTES), 'every blob is held back until verified')
        for (const { kind, digest } of up.images.redis.blobs) {
          t.equal(asked(direct, digest), 1, `${kind} ${digest.slice(0, 15)}: the team cache once`)
          t.equal(asked(origin, digest), 1, `${kind} ${digest.slice(0, 15)}: then the origin`)
          const gets = served.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`))
          t.strictSame(gets.map((r) => [r.status, r.complete]), [[200, true]], `${kind} ${digest.slice(0, 15)}: dockerd asked once and got it whole`)
        }
      },
    },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      for (const f of [mirror, origin, direct]) {
        f.set({ kind: 'pass' })
        f.requests.length = 0
      }
      ;(c.front ?? mirror).set(c.team)
      if (c.origin) origin.set(c.origin)
      // An image an earlier case pulled would come from dockerd's own store.
      await engine.docker(['rmi', '-f', c.image], { timeoutMs: 60_000 })
      // The same port each time: dockerd's mirror is fixed when it starts.
      const d = await startDaemon(t, undefined, {
        port,
        upstreams: { 'docker.io': [c.first, 'origin'] },
        upstreamOrigins: { 'docker.io': origin.url },
        chainTimeouts: { connectMs: 1000, firstByteMs: 1500 },
      })
      const served: RequestRecord[] = []
      d.events.on('request', (r) => served.push(r))
      const res = await engine.docker(['pull', c.image], { timeoutMs: 120_000 })
      t.equal(res.code, 0, res.code === 0 ? `docker pull ${c.image}` : `docker pull ${c.image}: ${res.stderr.trim().split('\n').pop()}`)
      await c.check(t, d, c.first, served)
      await d.stop(0)
    })
  }
})
