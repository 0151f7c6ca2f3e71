// Real clients through a real dproxy: skopeo copies every fixture image with
// --all and gets the same digests, the Docker engine pulls through it like a
// user would (`docker pull localhost:PORT/...`), and containerd resolves
// docker.io through dproxy as its mirror (hosts.toml, `?ns=`). Upstream
// traffic is counted by the hub shim.

import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { makeTempDir, run, skopeoCopyAll, skopeoInspectRaw } from '../fixtures/clients.js'
import { dockerOrSkip, startDockerd } from '../fixtures/dockerd.js'
import { catalogueImages } from '../fixtures/images.js'
import { startUpstream } from '../fixtures/upstream.js'
import { sha256, startDaemon } from '../helpers/daemon.js'


t.test('skopeo copy --all of every test image through dproxy keeps every digest', async (t) => {
  const up = await startUpstream({ big: true })
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const host = `127.0.0.1:${d.port}`
  for (const image of catalogueImages(up.images)) {
    const raw = await skopeoInspectRaw(`${host}/${image.ref}`)
    t.equal(sha256(raw), image.digest, `${image.ref}: manifest digest through dproxy`)
    const dest = makeTempDir('dproxy-skopeo-', t)
    await skopeoCopyAll(`${host}/${image.ref}`, dest, { timeoutMs: 120_000 })
    const copied = await fs.readFile(join(dest, 'manifest.json'))
    t.ok(copied.equals(image.manifest), `${image.ref}: copied manifest is byte-identical`)
    for (const blob of image.blobs) {
      const file = join(dest, blob.digest.slice('sha256:'.length))
      const bytes = await fs.readFile(file)
      t.equal(sha256(bytes), blob.digest, `${image.ref}: blob ${blob.digest.slice(7, 19)}`)
    }
  }
  const big = up.images.big!
  for (const blob of big.blobs) t.equal(up.hub.counts.cdnGet[blob.digest], 1, 'the 100 MiB layer came from upstream once')
})

t.test('docker pull through dproxy, twice, with the real Docker engine', async (t) => {
  if (!dockerOrSkip(t)) return
  const up = await startUpstream()
  t.teardown(() => up.stop())
  // ghcr.io is mapped to the plain fixture registry: no public name is ever resolved.
  const d = await startDaemon(t, undefined, {
    upstreams: { 'docker.io': up.hubUrl, 'ghcr.io': up.registryUrl },
  })
  const engine = await startDockerd(t)
  t.teardown(() => engine.stop())
  const host = `localhost:${d.port}`

  const refs: Array<[string, string]> = [
    [`${host}/alpine:latest`, up.images.alpine.digest],
    [`${host}/multi:latest`, up.images.multi.digest],
    [`${host}/ociindex:1`, up.images.ociindex.digest],
    [`${host}/layers:1`, up.images.layers.digest],
    [`${host}/bitnami/redis:7.2`, up.images.redis.digest],
    [`${host}/mygroup/dependency_proxy/containers/alpine:latest`, up.images.alpine.digest],
    [`${host}/ghcr.io/bitnami/redis:7.2`, up.images.redis.digest],
  ]
  for (const [ref, digest] of refs) {
    const res = await engine.docker(['pull', ref], { timeoutMs: 120_000 })
    t.equal(res.code, 0, `docker pull ${ref}: ${res.stderr.trim().split('\n').pop()}`)
    t.match(res.stdout, digest, `${ref}: digest ${digest.slice(7, 19)}`)
    const inspect = await engine.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}', ref])
    t.match(inspect.stdout, digest)
  }

  // Second pull of an unchanged image: no blob and no counted manifest GET upstream.
  const alpine = `${host}/alpine:latest`
  const rmi = await engine.docker(['rmi', alpine, `${host}/mygroup/dependency_proxy/containers/alpine:latest`])
  t.equal(rmi.code, 0, rmi.stderr)
  up.hub.resetCounts()
  const again = await engine.docker(['pull', alpine], { timeoutMs: 120_000 })
  t.equal(again.code, 0, again.stderr)
  t.equal(up.hub.counts.manifestGet, 0, 'second pull: zero counted manifest GETs')
  t.strictSame(up.hub.counts.blobGet, {}, 'second pull: zero upstream blob requests')
  t.ok(up.hub.counts.manifestHead >= 1, 'second pull: the tag was HEAD-checked')

  // Upstream gone: cached tags still pull, uncached ones fail with a clear error.
  await engine.docker(['rmi', alpine])
  await up.hub.setMode('refuse')
  const offline = await engine.docker(['pull', alpine], { timeoutMs: 120_000 })
  t.equal(offline.code, 0, `cached image pulls with upstream down: ${offline.stderr}`)
  const missing = await engine.docker(['pull', `${host}/never-pulled:1`], { timeoutMs: 120_000 })
  t.not(missing.code, 0)
  t.match(missing.stderr, /not cached, and upstream docker\.io is unavailable: .*ECONNREFUSED/, `clear error: ${missing.stderr.trim()}`)
  await up.hub.setMode('up')

  // containerd with dproxy as its docker.io mirror: hosts.toml, ?ns=docker.io.
  const hostsDir = makeTempDir('dproxy-hosts-', t)
  await fs.mkdir(join(hostsDir, 'docker.io'))
  await fs.writeFile(
    join(hostsDir, 'docker.io', 'hosts.toml'),
    `server = "http://127.0.0.1:${d.port}"\n\n[host."http://127.0.0.1:${d.port}"]\n  capabilities = ["pull", "resolve"]\n`,
  )
  d.counters.requests = 0
  const ctr = await run(
    'ctr',
    ['--address', engine.containerdSocket, '--namespace', 'dproxy-test', 'images', 'pull', '--hosts-dir', hostsDir, 'docker.io/library/multi:latest'],
    { timeoutMs: 120_000 },
  )
  t.equal(ctr.code, 0, `ctr pull via hosts.toml: ${ctr.stderr.trim().split('\n').pop()}`)
  t.ok(d.counters.requests > 0, 'containerd went through dproxy')
})
