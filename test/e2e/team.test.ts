// A team server and a second machine, as the README tells a team to set it
// up: `dproxy serve --tls auto --auth --host <LAN address>` on the server;
// on the other machine, `dproxy setup --server URL --fingerprint F` with
// the exact command the server printed, then the real clients pull over TLS
// with no insecure setting anywhere, logged in as `dproxy` with the password
// of `dproxy env`.
//
// The other machine is a network namespace (test/fixtures/netns.ts): the
// daemon listens on the root namespace's end of a veth pair, the clients run
// inside and reach it only by that address. setup writes with --root into a
// test dir, and the namespace sees that dir's etc/docker, etc/containers and
// etc/containerd as its /etc (ip netns exec binds /etc/netns/<name>/*), so
// dockerd, podman, skopeo and ctr find the CA where they look on a real
// machine. Docker Hub is the hub shim in the root namespace, which only the
// daemon reaches; a pull that works went through dproxy, over TLS.

import { existsSync, promises as fs, readdirSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { makeTempDir } from '../fixtures/clients.js'
import { dockerAvailable, startDockerd } from '../fixtures/dockerd.js'
import { makeNetns, netnsAvailable } from '../fixtures/netns.js'
import { startUpstream } from '../fixtures/upstream.js'
import { bin, isolatedEnv, runDproxy, spawnServe } from '../helpers/cli.js'

const required = (process.env.CI ?? '') !== '' || (process.env.DPROXY_REQUIRE_DOCKER ?? '') !== ''
const avail = netnsAvailable()
const skip = avail.ok || required ? false : `no network namespaces: ${avail.reason}`

t.test('a machine on the LAN trusts the team server by its fingerprint and pulls over TLS', { skip, timeout: 600_000 }, async (t) => {
  t.ok(avail.ok, 'network namespaces available', { reason: avail.reason })
  if (!avail.ok) return
  const up = await startUpstream()
  t.teardown(() => up.stop())

  // The other machine's /etc, as dproxy setup --root writes it; daemon.json and
  // policy.json are what that machine had before (dockerd 20.10 would otherwise
  // write /etc/docker/key.json; podman needs a policy).
  const root = makeTempDir('dpteam-', t)
  const etc = (p: string) => join(root, 'etc', p)
  for (const d of ['docker', 'containers', 'containerd']) await fs.mkdir(etc(d), { recursive: true })
  const userDaemonJson = `{\n  "deprecated-key-path": ${JSON.stringify(join(root, 'key.json'))}\n}\n`
  await fs.writeFile(etc('docker/daemon.json'), userDaemonJson)
  await fs.writeFile(etc('containers/policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }))
  await fs.writeFile(etc('containers/registries.conf'), '')
  const ns = makeNetns(t, { etc: { docker: etc('docker'), containers: etc('containers'), ...(existsSync('/etc/containerd') ? { containerd: etc('containerd') } : {}) } })

  // The server.
  const serverEnv = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl},ghcr.io=${up.registryUrl}` })
  const serve = await spawnServe(t, ['--tls', 'auto', '--auth', '--host', ns.hostAddress, '--port', '0'], serverEnv)
  t.match(serve.base, new RegExp(`^https://${ns.hostAddress.replace(/\./g, '\\.')}:\\d+$`), 'it listens with https on the LAN address')
  let trust: RegExpExecArray | null = null
  for (let i = 0; i < 50 && trust === null; i++) {
    trust = /other machines trust this server with: (dproxy setup --server (\S+) --fingerprint (\S+))/.exec(serve.out())
    if (trust === null) await new Promise((r) => setTimeout(r, 100))
  }
  if (trust === null) return t.fail(`serve printed no trust command:\n${serve.out()}`)
  const [, , url, fingerprint] = trust as unknown as [string, string, string, string]
  t.equal(url, serve.base, 'the command names the LAN address')
  const address = new URL(url).host
  const creds = await runDproxy(['env', '--format', 'json', '--host', address], serverEnv)
  t.equal(creds.code, 0, creds.err)
  const password = (JSON.parse(creds.out) as Record<string, string>).CI_DEPENDENCY_PROXY_PASSWORD!
  const user = 'dproxy'

  // The other machine: its own dproxy config and state, nothing of the server's.
  const home = makeTempDir('dpth-', t)
  const clientEnv = { HOME: home, DPROXY_CONFIG_DIR: join(home, 'config'), DPROXY_CACHE_DIR: join(home, 'cache'), DPROXY_STATE_DIR: join(home, 'state') }
  const setup = (args: string[]) => ns.run(process.execPath, [bin, 'setup', ...args], { env: clientEnv, timeoutMs: 60_000 })
  const targets = ['docker', 'containerd', 'podman', '--root', root, '--registries', 'docker.io,ghcr.io']

  // A wrong fingerprint: refused, and nothing is written.
  const before = readdirSync(etc('docker')).sort()
  const wrongFingerprint = `sha256:${'0'.repeat(64)}`
  const wrong = await setup([...targets, '--server', url, '--fingerprint', wrongFingerprint, '--yes'])
  t.equal(wrong.code, 1, 'a wrong fingerprint is refused')
  t.match(wrong.stderr, fingerprint, "naming the server's fingerprint")
  t.match(wrong.stderr, wrongFingerprint, 'and the one given')
  t.strictSame(readdirSync(etc('docker')).sort(), before, 'nothing written')
  t.notOk(existsSync(join(clientEnv.DPROXY_STATE_DIR, 'setup')), 'nothing recorded')

  // The printed command, from the other machine.
  const done = await setup([...targets, '--server', url, '--fingerprint', fingerprint, '--yes'])
  t.equal(done.code, 0, done.stderr)
  t.match(done.stdout, `its CA is ${fingerprint} as --fingerprint says`)
  for (const f of [`docker/certs.d/${address}/ca.crt`, `containers/certs.d/${address}/ca.crt`, `containerd/certs.d/${address}/ca.crt`]) {
    t.ok(existsSync(etc(f)), `/etc/${f} installed`)
  }
  const noInsecure = (await Promise.all([etc('docker/daemon.json'), etc('containers/registries.conf.d/50-dproxy.conf'), etc('containerd/certs.d/docker.io/hosts.toml')].map((f) => fs.readFile(f, 'utf8')))).join('\n')
  t.notMatch(noInsecure, /insecure|http:\/\/|skip_verify/, 'no insecure setting and no plain-HTTP mirror anywhere')

  // skopeo: by the server's name, the CA found in /etc/containers/certs.d/HOST:PORT.
  const p = makeTempDir('dptp-', t)
  const skopeo = await ns.run('skopeo', ['inspect', '--retry-times', '0', '--creds', `${user}:${password}`, `docker://${address}/library/alpine:latest`], {
    env: { HOME: p, TMPDIR: p },
    timeoutMs: 120_000,
  })
  t.equal(skopeo.code, 0, `skopeo inspect over TLS: ${skopeo.stderr.trim().split('\n').pop()}`)
  t.match(JSON.parse(skopeo.stdout || '{}'), { Digest: up.images.alpine.digest }, "skopeo: the fixture's digest")
  const noCa = await ns.run('skopeo', ['inspect', '--retry-times', '0', '--cert-dir', p, '--creds', `${user}:${password}`, `docker://${address}/library/alpine:latest`], {
    env: { HOME: p, TMPDIR: p },
    timeoutMs: 60_000,
  })
  t.not(noCa.code, 0, 'without the CA the same request is refused (the check is real)')
  t.match(noCa.stderr, /x509|certificate/)

  // podman: docker.io/library/alpine through the mirror in registries.conf.d, logged in to the server.
  const podman = (args: string[], input?: string) =>
    ns.run('podman', ['--root', join(p, 'root'), '--runroot', join(p, 'run'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'none', ...args], {
      env: { HOME: p, TMPDIR: p, REGISTRY_AUTH_FILE: join(p, 'auth.json') },
      timeoutMs: 120_000,
      ...(input !== undefined ? { input } : {}),
    })
  const login = await podman(['login', '-u', user, '--password-stdin', address], password)
  t.equal(login.code, 0, `podman login: ${login.stderr}`)
  for (const [ref, image] of [['docker.io/library/alpine:latest', up.images.alpine], ['ghcr.io/bitnami/redis:7.2', up.images.redis]] as const) {
    const pulled = await podman(['pull', ref])
    t.equal(pulled.code, 0, `podman pull ${ref} over TLS: ${pulled.stderr.trim().split('\n').pop()}`)
    const digest = await podman(['image', 'inspect', '--format', '{{.Digest}}', ref])
    t.equal(digest.stdout.trim(), image.digest, `podman pull ${ref}: the fixture's digest`)
  }

  // dproxy doctor on the other machine: the server, the CA files, and podman verified by its pull of the probe.
  const onlyPodman = makeTempDir('dptb-', t)
  await fs.symlink('/usr/bin/podman', join(onlyPodman, 'podman'))
  await fs.writeFile(join(p, 'storage.conf'), `[storage]\ndriver = "vfs"\nrunroot = "${join(p, 'run')}"\ngraphroot = "${join(p, 'root')}"\n`)
  await fs.writeFile(join(p, 'containers.conf'), '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\n')
  const doctorEnv = { ...clientEnv, PATH: onlyPodman, TMPDIR: p, REGISTRY_AUTH_FILE: join(p, 'auth.json'), CONTAINERS_STORAGE_CONF: join(p, 'storage.conf'), CONTAINERS_CONF: join(p, 'containers.conf') }
  const doctor = await ns.run(process.execPath, [bin, 'doctor', '--json', '--root', root], { env: doctorEnv, timeoutMs: 120_000 })
  const report = JSON.parse(doctor.stdout || '{}') as { checks?: Array<{ name: string; level: string }>; clients?: Array<{ client: string; state: string; verified: boolean; reason: string }> }
  t.same(report.checks?.map((c) => [c.name, c.level]), [['server', 'ok'], ['server CA', 'ok']], 'doctor: the server and its CA files', { stderr: doctor.stderr })
  t.match(report.clients?.find((c) => c.client === 'podman'), { state: 'ok', verified: true, reason: /succeeded, which only https:\/\// }, 'doctor: podman verified through the server')
  t.equal(doctor.code, 0, 'doctor: all good')

  // The Docker Engine and ctr, both with dockerd's containerd.
  const docker = dockerAvailable()
  if (!docker.ok) {
    if (required) t.fail(`docker engine required here: ${docker.reason}`)
    else t.comment(`no docker engine: ${docker.reason}`)
    return
  }
  // dockerd runs inside the namespace: its pulls leave from there, and its /etc/docker is the one setup wrote.
  const engine = await startDockerd(t, { configFile: etc('docker/daemon.json'), wrap: ns.daemonExec })
  t.teardown(() => engine.stop())
  const dockerLogin = await engine.docker(['login', '-u', user, '--password-stdin', address], { input: password })
  t.equal(dockerLogin.code, 0, `docker login ${address}: ${dockerLogin.stderr}`)
  const dockerPull = await engine.docker(['pull', `${address}/library/alpine:latest`], { timeoutMs: 120_000 })
  t.equal(dockerPull.code, 0, `docker pull over TLS: ${dockerPull.stderr.trim()} ${dockerPull.code === 0 ? '' : engine.logTail(15)}`)
  t.match(dockerPull.stdout, up.images.alpine.digest, "docker: the fixture's digest")

  // ctr in the namespace reads the hosts.toml setup wrote (https host, ca beside it) and pulls in its own process.
  const hostsDir = existsSync('/etc/containerd') ? '/etc/containerd/certs.d' : etc('containerd/certs.d')
  const ctr = await ns.run('ctr', ['--address', engine.containerdSocket, '--namespace', 'dproxy-team', 'images', 'pull', '--hosts-dir', hostsDir, '--user', `${user}:${password}`, 'docker.io/library/alpine:latest'], {
    timeoutMs: 120_000,
  })
  t.equal(ctr.code, 0, `ctr pull through the https mirror: ${ctr.stderr.trim().split('\n').pop()}`)
  const ls = await ns.run('ctr', ['--address', engine.containerdSocket, '--namespace', 'dproxy-team', 'images', 'ls'])
  t.match(ls.stdout, up.images.alpine.digest, "ctr: the fixture's digest")

  // Plain HTTP to the TLS port: a clear answer, not a hang.
  const plain = await ns.run('curl', ['-sS', '--max-time', '10', `http://${address}/v2/`])
  t.match(plain.stdout, 'This port speaks HTTPS', 'plain HTTP gets told to use https')

  // Undo, from the other machine: what setup wrote is gone, what was there is back.
  const undo = await ns.run(process.execPath, [bin, 'setup', '--undo', '--root', root], { env: clientEnv })
  t.equal(undo.code, 0, undo.stderr)
  t.equal(await fs.readFile(etc('docker/daemon.json'), 'utf8'), userDaemonJson, 'daemon.json is as before')
  t.notOk(existsSync(etc(`docker/certs.d`)), 'the CA and hosts.toml files are gone')
  t.notOk(existsSync(etc(`containers/certs.d`)))
})
