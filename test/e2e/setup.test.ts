// `dproxy setup --root` on a temp dir, then the real clients read what it
// wrote and pull by their ordinary names: dockerd (--config-file), ctr
// (--hosts-dir) and podman (the --user drop-in, HOME in the test dir). The
// origin cannot be reached (no public DNS here, and clients that honour a
// proxy get a closed one), and the images are the fixture's, so a pull that
// succeeds with the fixture's digest went through dproxy; dproxy's request
// counter and the hub shim's counters say so too.

import { existsSync, promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { makeTempDir, run } from '../fixtures/clients.js'
import { dockerOrSkip, startDockerd } from '../fixtures/dockerd.js'
import { runInProcess } from '../helpers/cli.js'
import { setUpClients } from '../helpers/setup.js'

t.test('dproxy setup makes dockerd, ctr and podman pull through dproxy by their usual names', async (t) => {
  if (!dockerOrSkip(t)) return
  const { up, d, root, daemonJson, userDaemonJson, env, registries, noOrigin, system, user } = await setUpClients(t)
  t.equal(system.code, 0, system.err)
  t.match(system.out, `"http://127.0.0.1:${d.port}"`, 'the running daemon\'s address')
  t.equal(user.code, 0, user.err)

  // dockerd, with the daemon.json setup merged into.
  const engine = await startDockerd(t, { configFile: daemonJson })
  t.teardown(() => engine.stop())
  // `FROM node:22`-style names: a multi-arch image, as Docker Hub's node is.
  await up.retag('library/node', 'latest', up.images.multi)
  for (const [ref, image] of [['alpine:latest', up.images.alpine], ['node:latest', up.images.multi]] as const) {
    const before = d.counters.requests
    const res = await engine.docker(['pull', ref], { timeoutMs: 120_000 })
    t.equal(res.code, 0, `docker pull ${ref}: ${res.stderr.trim().split('\n').pop()}`)
    t.match(res.stdout, image.digest, `docker pull ${ref}: the fixture's digest`)
    t.ok(d.counters.requests > before, `docker pull ${ref} went through dproxy`)
  }
  t.ok((up.hub.counts.manifestGetByRepo['library/alpine'] ?? 0) >= 1, 'the hub shim served library/alpine to dproxy')
  t.ok((up.hub.counts.manifestGetByRepo['library/node'] ?? 0) >= 1, 'the hub shim served library/node to dproxy')

  // ctr, with the hosts.toml files under <root>/etc/containerd/certs.d.
  const hostsDir = join(root, 'etc', 'containerd', 'certs.d')
  for (const [ref, image] of [['docker.io/library/alpine:latest', up.images.alpine], ['ghcr.io/bitnami/redis:7.2', up.images.redis]] as const) {
    const before = d.counters.requests
    const ctr = await run('ctr', ['--address', engine.containerdSocket, '--namespace', 'dproxy-setup', 'images', 'pull', '--hosts-dir', hostsDir, ref], {
      timeoutMs: 120_000,
      env: noOrigin,
    })
    t.equal(ctr.code, 0, `ctr pull ${ref}: ${ctr.stderr.trim().split('\n').pop()}`)
    const ls = await run('ctr', ['--address', engine.containerdSocket, '--namespace', 'dproxy-setup', 'images', 'ls'])
    t.match(ls.stdout, image.digest, `ctr pull ${ref}: the fixture's digest`)
    t.ok(d.counters.requests > before, `ctr pull ${ref} went through dproxy`)
  }

  // podman, with ~/.config/containers/registries.conf.d/50-dproxy.conf and nothing of the machine's storage.
  if (!existsSync('/usr/bin/podman')) {
    t.fail('podman is not installed (apt-get install podman)')
  } else {
    // A short dir: podman refuses a runroot path over 50 characters.
    const p = makeTempDir('dpp-', t)
    await fs.writeFile(join(p, 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }))
    await fs.writeFile(join(p, 'registries.conf'), '')
    await fs.writeFile(join(p, 'containers.conf'), '')
    const podman = (args: string[]) =>
      run('podman', ['--root', join(p, 'root'), '--runroot', join(p, 'run'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'none', ...args], {
        timeoutMs: 120_000,
        env: { ...noOrigin, HOME: env.HOME, TMPDIR: p, CONTAINERS_REGISTRIES_CONF: join(p, 'registries.conf'), CONTAINERS_CONF: join(p, 'containers.conf') },
      })
    for (const [ref, image] of [['docker.io/library/alpine:latest', up.images.alpine], ['ghcr.io/bitnami/redis:7.2', up.images.redis]] as const) {
      const before = d.counters.requests
      const res = await podman(['pull', '--signature-policy', join(p, 'policy.json'), ref])
      t.equal(res.code, 0, `podman pull ${ref}: ${res.stderr.trim().split('\n').pop()}`)
      const digest = await podman(['image', 'inspect', '--format', '{{.Digest}}', ref])
      t.equal(digest.stdout.trim(), image.digest, `podman pull ${ref}: the fixture's digest`)
      t.ok(d.counters.requests > before, `podman pull ${ref} went through dproxy`)
    }
  }

  // A second setup changes nothing; --undo gives the user's daemon.json back byte for byte.
  const again = await runInProcess(['setup', 'docker', 'containerd', '--root', root, ...registries, '--yes'], env)
  t.equal(again.code, 0, again.err)
  t.match(again.out, /nothing to change/)
  const undo = await runInProcess(['setup', '--undo', '--root', root], env)
  t.equal(undo.code, 0, undo.err)
  t.match(undo.out, /dockerd keeps the mirror until it restarts/, 'undo says a reload is not enough for dockerd')
  t.equal(await fs.readFile(daemonJson, 'utf8'), userDaemonJson, 'daemon.json is byte-identical to before setup')
  t.notOk(existsSync(join(root, 'etc', 'containerd')), 'what setup created is gone')
  const undoUser = await runInProcess(['setup', '--undo'], env)
  t.equal(undoUser.code, 0, undoUser.err)
  t.notOk(existsSync(join(env.HOME, '.config', 'containers', 'registries.conf.d', '50-dproxy.conf')), 'the podman drop-in is gone')
})
