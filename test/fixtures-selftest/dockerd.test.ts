// Proves the real-client harness works on this machine before any dproxy test
// relies on it: a hand-built image pushed with skopeo into the reference
// registry on loopback can be pulled by a private Docker Engine under both
// `127.0.0.1:PORT` and `localhost:PORT` with no insecure-registries setting,
// and every client sees the exact manifest bytes that were pushed. If this
// fails, dproxy's docker tests would fail for reasons that are not dproxy's.
//
// Without a usable dockerd the test skips with the precise reason, except when
// CI or DPROXY_REQUIRE_DOCKER is set: there a missing engine is a failure.

import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import {
  hostPlatform, makeTempDir, skopeoCopyAll, skopeoInspectRaw, skopeoPush, startRegistry, writeTinyOciLayout,
} from '../fixtures/clients.js'
import { dockerAvailable, startDockerd } from '../fixtures/dockerd.js'

const required = (process.env.CI ?? '') !== '' || (process.env.DPROXY_REQUIRE_DOCKER ?? '') !== ''
const avail = dockerAvailable()

const skip = !avail.ok && !required ? 'docker engine unavailable: ' + avail.reason : false

t.test('docker pulls from a plain-HTTP registry on loopback', { timeout: 90_000, skip }, async (t) => {
  t.ok(avail.ok, 'docker engine available', { reason: avail.reason })
  if (!avail.ok) return

  const [registry, engine] = await Promise.all([startRegistry(t), startDockerd(t)])
  t.comment('dockerd ready in ' + engine.startupMs + ' ms (' + engine.cli + ', ' + engine.host + ')')

  // No mirrors and no configured insecure registries: loopback is insecure by default.
  const rc = await engine.docker(['info', '--format', '{{json .RegistryConfig}}'])
  t.equal(rc.code, 0, 'docker info', { stderr: rc.stderr })
  const registryConfig = JSON.parse(rc.stdout) as { InsecureRegistryCIDRs: string[], Mirrors: string[] | null }
  t.same(registryConfig.InsecureRegistryCIDRs, ['127.0.0.0/8'], 'only the built-in loopback range is insecure')
  t.same(registryConfig.Mirrors ?? [], [], 'no registry mirrors')

  const layout = writeTinyOciLayout(path.join(makeTempDir('dpl-', t), 'layout'), {
    content: 'selftest ' + process.pid + ' ' + Date.now() + '\n',
  })
  const repo = 'library/tiny'
  await skopeoPush(layout.ref, registry.host + '/' + repo + ':v1')

  const raw = await skopeoInspectRaw(registry.host + '/' + repo + ':v1')
  t.ok(raw.equals(layout.top), 'skopeo inspect --raw returns the pushed manifest bytes')

  for (const name of [registry.host, 'localhost:' + registry.port]) {
    const ref = name + '/' + repo + ':v1'
    const t0 = Date.now()
    const pull = await engine.docker(['pull', ref])
    t.equal(pull.code, 0, 'docker pull ' + ref, { stdout: pull.stdout, stderr: pull.stderr, log: engine.logTail(20) })
    t.comment('docker pull ' + ref + ': ' + (Date.now() - t0) + ' ms')
    t.match(pull.stdout, layout.digest, 'pull reports the manifest digest')

    const insp = await engine.docker(['image', 'inspect', ref])
    t.equal(insp.code, 0, 'docker image inspect ' + ref, { stderr: insp.stderr })
    const [image] = JSON.parse(insp.stdout) as Array<{ Id: string, RepoDigests: string[], RepoTags: string[] }>
    t.ok(image!.RepoDigests.includes(name + '/' + repo + '@' + layout.digest), 'RepoDigests has ' + name + '@digest', { got: image!.RepoDigests })
    t.ok(image!.RepoTags.includes(ref), 'RepoTags has ' + ref)
    t.equal(image!.Id, layout.images[0]!.configDigest, 'image id is the config digest')
  }
  // The Engine probes https:// first, gets an HTTP answer, and falls back to
  // http:// (HEAD by tag, then GET by digest) without any configuration.
  const engineLines = registry.logTail(400).split('\n').filter((l) => /^127\.0\.0\.1 .*"docker\//.test(l))
  t.ok(engineLines.some((l) => l.includes('"GET /v2/library/tiny/manifests/' + layout.digest + ' HTTP/1.1" 200')),
    'the registry served the manifest to the Engine over HTTP', { engineLines })

  // skopeo copy --all keeps every byte when mirroring a multi-platform index.
  const multi = writeTinyOciLayout(path.join(makeTempDir('dpl-', t), 'layout'), {
    content: 'multi ' + process.pid + '\n',
    platforms: [hostPlatform(), { os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 's390x' }],
  })
  await skopeoPush(multi.ref, registry.host + '/library/multi:v1')
  const copyDir = path.join(makeTempDir('dpc-', t), 'copy')
  await skopeoCopyAll(registry.host + '/library/multi:v1', copyDir)
  t.ok(fs.readFileSync(path.join(copyDir, 'manifest.json')).equals(multi.index!.bytes), 'dir: copy holds the index bytes')
  for (const img of multi.images) {
    const hex = img.manifestDigest.slice('sha256:'.length)
    t.ok(fs.readFileSync(path.join(copyDir, hex + '.manifest.json')).equals(img.manifest),
      'dir: copy holds the ' + img.platform.architecture + ' manifest bytes')
  }
  const pullMulti = await engine.docker(['pull', registry.host + '/library/multi:v1'])
  t.equal(pullMulti.code, 0, 'docker pull of an index', { stderr: pullMulti.stderr })
  t.match(pullMulti.stdout, multi.digest, 'pull of an index reports the index digest')
})
