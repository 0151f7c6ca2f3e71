// Which repository may have which cached manifest asked for by digest, end to
// end: a real daemon in front of the Hub shim and its real registry. A cached
// manifest is served by digest under a repository that has it (its own
// marker, or a child of an index linked to it), or that upstream confirms has
// it (one HEAD by digest, counted by the shim); under any other name the
// client gets what a cold miss gets, so the answer does not tell whether the
// cache holds it. Linked manifests keep being served with upstream down.

import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { ACCEPT_ALL_MANIFESTS } from '../fixtures/images.js'
import { codeOf, get, pull, refusedAlike, settled, sha256, startDaemon } from '../helpers/daemon.js'

const accept = { accept: ACCEPT_ALL_MANIFESTS }

t.test("a public image's manifest cached for library/alpine is not served as /v2/private/secret/manifests/<its digest>", async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const { manifest } = await pull(d.url, 'library/alpine', 'latest')
  await settled(d)
  const digest = sha256(manifest.body)

  for (const method of ['GET', 'HEAD']) {
    const theirs = await get(`${d.url}/v2/private/secret/manifests/${digest}`, accept, method)
    t.equal(theirs.status, 404, `${method}: refused`)
    t.notOk(theirs.headers['docker-content-digest'], `${method}: no digest header`)
    if (method === 'GET') {
      t.equal(codeOf(theirs.body), 'MANIFEST_UNKNOWN')
      t.notOk(theirs.body.includes(manifest.body), 'not the bytes')
    }
  }

  up.hub.resetCounts()
  const ours = await get(`${d.url}/v2/library/alpine/manifests/${digest}`, accept)
  t.equal(ours.status, 200)
  t.equal(sha256(ours.body), digest)
  t.equal(up.hub.counts.requests.length, 0, 'under its own repository: from the cache, nothing asked')
})

t.test('refused under a name: the same answer whether the cache holds the manifest or not', async (t) => {
  const up = await startUpstream({ hub: { privateRepositories: ['private/secret'] } })
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'library/alpine', 'latest')
  await settled(d)
  const cached = up.images.alpine.digest
  // A manifest upstream has (bitnami/redis) that this cache never fetched.
  const notCached = up.images.redis.digest

  await refusedAlike(t, d.url, 'manifests', cached, notCached, accept)
})

t.test("upstream's word links a cached manifest to another repository: one HEAD, then none", async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  await up.retag('library/alpine-copy', 'latest', up.images.alpine)
  const d = await startDaemon(t, up)
  await pull(d.url, 'library/alpine', 'latest')
  await settled(d)
  const digest = up.images.alpine.digest
  up.hub.resetCounts()

  for (const round of ['first', 'second']) {
    const res = await get(`${d.url}/v2/library/alpine-copy/manifests/${digest}`, accept)
    t.equal(res.status, 200, `${round}: served`)
    t.equal(sha256(res.body), digest, `${round}: the bytes`)
  }
  t.equal(up.hub.counts.manifestHeadByRepo['library/alpine-copy'], 1, 'one HEAD confirmed it, the second request asked nothing')
  t.equal(up.hub.counts.manifestGet, 0, 'no counted GET')

  // The marker it wrote lends the repository the manifest's blobs too.
  const layer = up.images.alpine.blobs.find((b) => b.kind === 'layer')!
  up.hub.resetCounts()
  const blob = await get(`${d.url}/v2/library/alpine-copy/blobs/${layer.digest}`)
  t.equal(blob.status, 200)
  t.equal(up.hub.counts.requests.length, 0, 'its layer is linked with it')
})

t.test('upstream unreachable: an unlinked cached manifest is refused as a miss is; linked ones, index children included, are served', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const cacheDir = t.testdir()
  const first = await startDaemon(t, up, { cacheDir })
  await pull(first.url, 'library/alpine', 'latest')
  await pull(first.url, 'library/multi', 'latest')
  await settled(first)
  await first.stop(0)

  // A restarted daemon derives the links from the markers on disk.
  const d = await startDaemon(t, up, { cacheDir })
  await up.hub.setMode('down-5xx')
  const multi = up.images.multi
  t.ok(multi.children.length >= 2, 'a multi-arch index')

  for (const digest of [multi.digest, ...multi.children.map((c) => c.digest)]) {
    const ours = await get(`${d.url}/v2/library/multi/manifests/${digest}`, accept)
    t.equal(ours.status, 200, `library/multi@${digest.slice(7, 19)}: served through the outage`)
    t.equal(sha256(ours.body), digest)
    const theirs = await get(`${d.url}/v2/someone/else/manifests/${digest}`, accept)
    t.equal(theirs.status, 404, `someone/else@${digest.slice(7, 19)}: refused`)
    t.equal(codeOf(theirs.body), 'MANIFEST_UNKNOWN')
    t.match(theirs.body.toString(), /upstream docker\.io is unavailable/)
  }
  const alpine = await get(`${d.url}/v2/library/alpine/manifests/${up.images.alpine.digest}`, accept, 'HEAD')
  t.equal(alpine.status, 200, 'a single-platform image under its own repository')
  t.equal((await get(`${d.url}/v2/library/multi/manifests/${up.images.alpine.digest}`, accept, 'HEAD')).status, 404, 'not under another cached one')
})
