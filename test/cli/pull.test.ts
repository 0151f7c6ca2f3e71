// `dproxy pull IMAGE` as users run it: against a running `dproxy serve` (the
// daemon does the fetching), then again (up to date, no counted GET); a
// name that upstream does not have fails the run with exit 1.

import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { isolatedEnv, runDproxy, spawnServe } from '../helpers/cli.js'

t.test('pull caches an image through the running daemon', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  const serving = await spawnServe(t, ['--host', '127.0.0.1', '--port', '0'], env)

  const first = await runDproxy(['pull', 'bitnami/redis:7.2', 'multi', '--json', '--platform', 'linux/arm64'], env)
  t.equal(first.code, 0, first.err)
  const events = first.out.trim().split('\n').map((l) => JSON.parse(l) as { type: string; state?: string; image?: string })
  t.match(events.at(-1), { type: 'summary', fetched: 2, failed: [], hubPulls: 3 })
  t.ok(events.some((e) => e.type === 'image' && e.image === 'docker.io/library/multi:latest' && e.state === 'fetching'))

  // Fetched by the daemon: it counted the upstream traffic, and a client now pulls from its cache.
  const status = (await (await fetch(`${serving.base}/_dproxy/status`)).json()) as { counters: { upstreamManifestGets: number } }
  t.equal(status.counters.upstreamManifestGets, 3, 'redis, the multi index and its arm64 child')

  up.hub.resetCounts()
  const again = await runDproxy(['pull', 'bitnami/redis:7.2', 'multi', '--platform', 'linux/arm64'], env)
  t.equal(again.code, 0, again.err)
  t.match(again.out, /^up to date docker\.io\/bitnami\/redis:7\.2  3 blobs, /m)
  t.match(again.out, /2 up to date, 0 refreshed, 0 fetched, 0 failed; 0B from upstream; 0 Docker Hub pulls spent\n$/)
  t.equal(up.hub.counts.manifestGet, 0)

  const missing = await runDproxy(['pull', 'library/nothere:1'], env)
  t.equal(missing.code, 1)
  t.match(missing.out, /^failed     docker\.io\/library\/nothere:1  /m)
  t.equal(missing.err, 'dproxy: 1 of 1 image failed\n')

  const bad = await runDproxy(['pull', 'alpine', '--platform', 'linux'], env)
  t.equal(bad.code, 2)
  t.match(bad.err, "expected a platform like 'linux/amd64'")
})
