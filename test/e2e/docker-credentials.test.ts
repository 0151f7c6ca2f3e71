// The login `docker login` left behind, used by dproxy with no `dproxy login`:
// real components end to end. A D-Bus session and an unlocked gnome-keyring of
// the test's own (as test/credentials/keychain.test.ts has them) hold the
// password through Debian's docker-credential-secretservice, which a real
// `docker login` (through the test's own dockerd) stores it with; DOCKER_CONFIG
// names the helper as credsStore. `dproxy serve` then pulls a private image
// of the Hub shim. When the account's password changes (a short-lived token
// expiring) and `docker login` stores the new one, the daemon's cached answer
// is refused, it asks the helper again and the pull succeeds. Neither password
// appears in dproxy's output, `status --json`, /metrics or `login --list`.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { dockerAvailable, startDockerd } from '../fixtures/dockerd.js'
import { startUpstream } from '../fixtures/upstream.js'
import { isolatedEnv, runDproxy, spawnServe } from '../helpers/cli.js'
import { get, pull } from '../helpers/daemon.js'
import { until } from '../helpers/process.js'

const password1 = 'first-Passw0rd-in-the-keyring'
const password2 = 'second-Passw0rd-after-expiry'

function which(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`]).status === 0
}

const missing = ['dbus-daemon', 'gnome-keyring-daemon', 'docker-credential-secretservice'].filter((c) => !which(c))
const docker = dockerAvailable()
const skip =
  missing.length > 0
    ? `not installed: ${missing.join(', ')} (apt-get install dbus gnome-keyring golang-docker-credential-helpers)`
    : !docker.ok
      ? `no docker engine: ${docker.reason}`
      : false

/** Stops a child we started, by its pid, and waits for it (bounded). */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

/** A D-Bus session bus and an unlocked gnome-keyring on it; returns the variables a client needs. */
async function keyring(t: Test, root: string): Promise<Record<string, string>> {
  // A short runtime dir: socket paths inside t.testdir can exceed the 108-byte limit.
  const run = fs.mkdtempSync(path.join(os.tmpdir(), 'dproxy-dc-'))
  fs.chmodSync(run, 0o700)
  t.teardown(() => fs.rmSync(run, { recursive: true, force: true }))
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: path.join(root, 'home'), XDG_DATA_HOME: path.join(root, 'data'), XDG_RUNTIME_DIR: run }
  for (const name of ['DBUS_SESSION_BUS_ADDRESS', 'DISPLAY', 'WAYLAND_DISPLAY']) delete env[name]
  // A session bus without service activation: the first call to the Secret Service must not start a
  // second, locked gnome-keyring before ours has registered (it would take the name).
  const conf = path.join(run, 'bus.conf')
  fs.writeFileSync(
    conf,
    '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" ' +
      '"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n' +
      `<busconfig><type>session</type><listen>unix:path=${path.join(run, 'bus')}</listen>` +
      '<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy></busconfig>\n',
  )
  const bus = spawn('dbus-daemon', ['--config-file', conf, '--nofork', '--print-address=1'], {
    env,
    stdio: ['ignore', 'pipe', 'ignore'],
  })
  t.teardown(() => stop(bus))
  let printed = ''
  bus.stdout!.on('data', (c: Buffer) => (printed += c.toString()))
  await until(() => printed.includes('\n'), 'dbus-daemon printed no address', 200)
  const session = { DBUS_SESSION_BUS_ADDRESS: printed.trim().split('\n')[0]!, XDG_RUNTIME_DIR: run }
  const gk = spawn('gnome-keyring-daemon', ['--foreground', '--unlock', '--components=secrets'], {
    env: { ...env, ...session },
    stdio: ['pipe', 'ignore', 'ignore'],
  })
  t.teardown(() => stop(gk))
  gk.stdin!.end('pw')
  // The keyring answers once `list` through the real helper exits 0.
  for (let i = 0; ; i++) {
    const r = spawnSync('docker-credential-secretservice', ['list'], { env: { ...env, ...session }, timeout: 5000 })
    if (r.status === 0) break
    if (i >= 50) throw new Error(`gnome-keyring did not answer: ${String(r.stdout)} ${String(r.stderr)}`)
    await new Promise((r) => setTimeout(r, 100))
  }
  return session
}

function noSecretIn(t: Test, what: string, text: string): void {
  t.notMatch(text, password1, `${what}: not the first password`)
  t.notMatch(text, password2, `${what}: not the second password`)
}

t.test('docker login with credsStore secretservice, then a private image pulls through dproxy with no dproxy login', { skip }, async (t) => {
  const users: Record<string, string> = { alice: password1 }
  const up = await startUpstream({ hub: { users, privateRepositories: ['private/secret', 'private/second'] } })
  t.teardown(() => up.stop())
  await up.retag('private/secret', 'latest', up.images.alpine)
  await up.retag('private/second', 'latest', up.images.alpine)
  const registry = new URL(up.hubUrl).host // 127.0.0.1:PORT: what `docker login` names, and what dproxy pulls from

  const env = isolatedEnv(t, {}, { docker: { 'config.json': JSON.stringify({ credsStore: 'secretservice' }) }, data: {} })
  const root = path.dirname(env.HOME!)
  const session = await keyring(t, root)
  const dockerConfig = path.join(root, 'docker')
  const engine = await startDockerd(t)
  const login = async (pw: string) => {
    const r = await engine.docker(['login', '-u', 'alice', '--password-stdin', registry], { input: pw, env: { DOCKER_CONFIG: dockerConfig, PATH: `${process.env.PATH ?? ''}:/usr/bin`, ...session } })
    t.equal(r.code, 0, 'docker login', { stderr: r.stderr })
  }
  await login(password1)
  const config = fs.readFileSync(path.join(dockerConfig, 'config.json'), 'utf8')
  t.match(JSON.parse(config), { credsStore: 'secretservice', auths: { [registry]: {} } }, 'the CLI kept the password in the helper')
  noSecretIn(t, 'config.json', config)

  const serveEnv = { ...env, ...session, DOCKER_CONFIG: dockerConfig, PATH: `${process.env.PATH ?? ''}:/usr/bin` }
  const serving = await spawnServe(t, ['--port', '0', '--upstream', `${registry}=${up.hubUrl}`, '--log-level', 'debug'], serveEnv)
  t.match(serving.out(), `logins: dproxy login, then docker's and podman's of `)

  const pulled = await pull(serving.base, `${registry}/private/secret`, 'latest')
  t.equal(pulled.manifest.headers['docker-content-digest'], up.images.alpine.digest, 'the private image pulled')

  const listed = await runDproxy(['login', '--list', '--json'], serveEnv)
  t.equal(listed.code, 0, 'login --list', { err: listed.err })
  t.same(JSON.parse(listed.out).logins, [{ registry, username: 'alice', source: 'docker credsStore secretservice' }])
  noSecretIn(t, 'login --list', listed.out + listed.err)

  // The password expires; `docker login` stores the new one. The daemon still holds the first (cached 5 min):
  // the token service refuses it, the daemon asks the helper again and the pull succeeds.
  users.alice = password2
  await login(password2)
  up.hub.resetCounts()
  const second = await pull(serving.base, `${registry}/private/second`, 'latest')
  t.equal(second.manifest.status, 200, 'pulled after the login was renewed')
  t.equal(up.hub.counts.requests.filter((r) => r.path.startsWith('/token') && r.status === 401).length, 1, 'the old password was refused once')

  // A private repository that does not exist, with the login: the registry's 404, in words, in the access log too.
  const missingRepo = await get(`${serving.base}/v2/${registry}/private/secret/manifests/nope`)
  t.equal(missingRepo.status, 404)
  const wire = (JSON.parse(missingRepo.body.toString()) as { errors: Array<{ message: string }> }).errors[0]!.message
  t.equal(wire, `${registry} has no private/secret:nope (404 manifest unknown)`)
  await until(() => serving.err().includes(` 404 `) && serving.err().includes(`error=${JSON.stringify(wire)}`), 'the access log line repeats the message', 200)

  const status = await runDproxy(['status', '--json'], serveEnv)
  const metrics = await get(`${serving.base}/metrics`)
  noSecretIn(t, 'status --json', status.out + status.err)
  noSecretIn(t, '/metrics', metrics.body.toString())
  noSecretIn(t, "dproxy's output", serving.out() + serving.err())
})

t.test('turned off (--no-docker-credentials): the pull is refused, naming the registry, the image and the fix', { skip }, async (t) => {
  const up = await startUpstream({ hub: { users: { alice: password1 }, privateRepositories: ['private/secret'] } })
  t.teardown(() => up.stop())
  await up.retag('private/secret', 'latest', up.images.alpine)
  const registry = new URL(up.hubUrl).host
  const auth = Buffer.from(`alice:${password1}`).toString('base64')
  const env = isolatedEnv(t, {}, { docker: { 'config.json': JSON.stringify({ auths: { [registry]: { auth } } }) } })
  const serveEnv = { ...env, DOCKER_CONFIG: path.join(path.dirname(env.HOME!), 'docker') }
  const off = await spawnServe(t, ['--port', '0', '--upstream', `${registry}=${up.hubUrl}`, '--no-docker-credentials'], serveEnv)
  const refused = await get(`${off.base}/v2/${registry}/private/secret/manifests/latest`)
  t.equal(refused.status, 401)
  const message = (JSON.parse(refused.body.toString()) as { errors: Array<{ message: string }> }).errors[0]!.message
  t.equal(message, `${registry} refused private/secret:latest (401): it needs a login, or does not exist; log in with \`dproxy login ${registry}\``)
  await until(() => off.err().includes(`error=${JSON.stringify(message)}`), 'the access log line says the same', 200)
  await stop(off.child)

  const on = await spawnServe(t, ['--port', '0', '--upstream', `${registry}=${up.hubUrl}`], serveEnv)
  t.equal((await get(`${on.base}/v2/${registry}/private/secret/manifests/latest`)).status, 200, 'config.json auths, when not turned off')
  const listed = await runDproxy(['login', '--list'], serveEnv)
  t.match(listed.out, new RegExp(`^REGISTRY\\s+USER\\s+SOURCE\\n${registry.replace(/\./g, '\\.')}\\s+alice\\s+docker config\\.json auths\\n$`))
  t.equal((await runDproxy(['login', '--list', '--no-docker-credentials'], serveEnv)).out, 'no logins\n')
  noSecretIn(t, 'output', on.out() + on.err() + off.out() + off.err() + listed.out)
})
