// `dproxy doctor` against real clients: after `dproxy setup --root` (and the
// --user podman drop-in), dockerd started with that daemon.json, ctr on the
// engine's containerd and podman (storage and runtime settings through its
// own environment variables, so doctor runs it as a shell would) all pull the
// probe image through dproxy and are reported verified, at no cost upstream.
// With their configuration removed, each is reported as not going through
// dproxy, with the fix, and doctor exits 1. The origin is unreachable, so a
// client that bypasses dproxy fails.

import { existsSync, promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import type { DoctorReport } from '../../src/setup/doctor.js'
import { makeTempDir, sleep } from '../fixtures/clients.js'
import { dockerOrSkip, startDockerd } from '../fixtures/dockerd.js'
import { runInProcess } from '../helpers/cli.js'
import { setUpClients } from '../helpers/setup.js'

t.test('dproxy doctor verifies docker, ctr and podman by a real pull, and names the one that bypasses dproxy', async (t) => {
  if (!dockerOrSkip(t)) return
  if (!existsSync('/usr/bin/podman')) {
    t.fail('podman is not installed (apt-get install podman)')
    return
  }
  const { up, d, root, daemonJson, userDaemonJson, env, noOrigin, system, user } = await setUpClients(t)
  t.equal(system.code, 0, system.err)
  t.equal(user.code, 0, user.err)
  const engine = await startDockerd(t, { configFile: daemonJson })

  // podman as the user's shell runs it: everything through its environment. A short dir: runroot paths are limited.
  const p = makeTempDir('dpd-', t)
  const storageConf = join(p, 'storage.conf')
  await fs.writeFile(storageConf, `[storage]\ndriver = "vfs"\ngraphroot = "${join(p, 'root')}"\nrunroot = "${join(p, 'run')}"\n`)
  await fs.writeFile(join(p, 'containers.conf'), '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n')
  await fs.writeFile(join(p, 'registries.conf'), '')
  await fs.mkdir(join(env.HOME, '.config', 'containers'), { recursive: true })
  await fs.writeFile(join(env.HOME, '.config', 'containers', 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }))
  const shell = {
    ...env,
    ...noOrigin,
    TMPDIR: p,
    DOCKER_HOST: engine.host,
    CONTAINERD_ADDRESS: engine.containerdSocket,
    CONTAINERD_NAMESPACE: 'dproxy-doctor',
    CONTAINERS_STORAGE_CONF: storageConf,
    CONTAINERS_CONF: join(p, 'containers.conf'),
    CONTAINERS_REGISTRIES_CONF: join(p, 'registries.conf'),
  }
  const before = { ...d.upstreams.counters }
  const hubRequests = up.hub.counts.requests.length

  const good = await runInProcess(['doctor', '--json', '--root', root], shell)
  t.equal(good.code, 0, `doctor: ${good.err}\n${good.out}`)
  const report = JSON.parse(good.out) as DoctorReport
  for (const client of ['docker', 'ctr', 'podman']) {
    t.match(report.clients.find((c) => c.client === client), { state: 'ok', configured: true, verified: true, reason: /reached dproxy/ }, `${client} verified`)
  }
  t.match(report.clients.find((c) => c.client === 'ctr'), { reason: /\?ns=/ }, 'ctr came with ?ns=')
  t.match(report.checks.find((c) => c.name === 'dproxy'), { level: 'ok' })
  t.match(report.checks.find((c) => c.name === 'address'), { level: 'ok', detail: new RegExp(`127\\.0\\.0\\.1:${d.port}`) })
  t.same(
    [d.upstreams.counters.manifestGets - before.manifestGets, d.upstreams.counters.blobGets - before.blobGets],
    [0, 0],
    'the probe pulls cost no upstream manifest or blob GET',
  )
  t.notOk(up.hub.counts.requests.slice(hubRequests).some((r) => r.path.includes('dproxy-doctor')), 'the hub never saw the probe repository')
  const images = await engine.docker(['images', '--format', '{{.Repository}}'])
  t.notMatch(images.stdout, 'dproxy-doctor', 'the probe image is removed from docker again')

  const text = await runInProcess(['doctor', '--root', root], shell)
  t.equal(text.code, 0, text.err)
  t.match(text.out, /^docker {4}yes {9}yes/m, 'a plain table when piped')
  t.notMatch(text.out, '\u001b[', 'no escape codes when piped')

  // Take each client's configuration away again. dockerd's reload keeps the mirrors it has when the key is gone: an empty list clears them.
  await fs.writeFile(daemonJson, userDaemonJson.replace('{\n', '{\n  "registry-mirrors": [],\n'))
  await fs.rm(join(root, 'etc', 'docker', 'certs.d'), { recursive: true })
  process.kill(engine.pid, 'SIGHUP')
  for (let i = 0; i < 100; i++) {
    const info = await engine.docker(['info', '--format', '{{json .RegistryConfig.Mirrors}}'])
    if (!info.stdout.includes('127.0.0.1')) break
    await sleep(100)
  }
  await fs.rm(join(root, 'etc', 'containerd', 'certs.d', 'docker.io'), { recursive: true })
  await fs.rm(join(env.HOME, '.config', 'containers', 'registries.conf.d', '50-dproxy.conf'))

  const bad = await runInProcess(['doctor', '--json', '--root', root], shell)
  t.equal(bad.code, 1, 'exit 1 when a client bypasses dproxy')
  const broken = JSON.parse(bad.out) as DoctorReport
  const fixes: Record<string, string> = { docker: 'dproxy setup docker --restart', ctr: 'dproxy setup containerd', podman: 'dproxy setup podman' }
  for (const client of ['docker', 'ctr', 'podman']) {
    t.match(
      broken.clients.find((c) => c.client === client),
      { state: 'broken', configured: false, verified: false, reason: new RegExp(`^${client} does not go through dproxy: `), fix: fixes[client] },
      `${client} reported as bypassing dproxy`,
    )
  }
})
