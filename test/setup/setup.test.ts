// dproxy setup on files (t.testdir as --root): what each target writes and
// merges, idempotency, --undo (byte-identical where nothing else changed,
// only dproxy's entries where the user changed the file since), refusals
// (a broken file, permission denied) that leave everything untouched, and
// the command's diff, --dry-run, --json and confirmation.

import { existsSync, readFileSync, promises as fs } from 'node:fs'
import { join } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { parse as parseYaml } from 'yaml'
import t, { type Test } from 'tap'
import { unifiedDiff } from '../../src/setup/diff.js'
import { mergeContainerdConfig } from '../../src/setup/containerd.js'
import { mergeDaemonJson } from '../../src/setup/docker.js'
import { mergeHostsToml } from '../../src/setup/hosts-toml.js'
import { buildxCommand } from '../../src/setup/buildkit.js'
import { applySetup, changedEdits, planSetup, undoSetup } from '../../src/setup/setup.js'
import type { SetupOptions } from '../../src/setup/targets.js'
import { runInProcess } from '../helpers/cli.js'

const ADDR = '127.0.0.1:5000'

function machine(t: Test, etc: NonNullable<Parameters<Test['testdir']>[0]> = {}) {
  const dir = t.testdir({ root: { etc }, home: {}, state: {}, config: {}, cache: {} })
  const root = join(dir, 'root')
  const o: SetupOptions = { root, home: join(dir, 'home'), user: false, address: ADDR, registries: ['docker.io', 'ghcr.io'] }
  const env = {
    PATH: '',
    HOME: join(dir, 'home'),
    DPROXY_CONFIG_DIR: join(dir, 'config'),
    DPROXY_CACHE_DIR: join(dir, 'cache'),
    DPROXY_STATE_DIR: join(dir, 'state'),
    DPROXY_PORT: '5000',
  }
  return { dir, root, o, env, state: join(dir, 'state'), at: (p: string) => join(root, p) }
}

t.test('unifiedDiff', async (t) => {
  t.equal(unifiedDiff('/f', 'a\n', 'a\n'), '')
  t.equal(unifiedDiff('/f', undefined, 'x\ny\n'), '--- /dev/null\n+++ b/f\n@@ -0,0 +1,2 @@\n+x\n+y\n')
  t.equal(unifiedDiff('/f', '1\n2\n3\n', '1\n3\n'), '--- a/f\n+++ b/f\n@@ -1,3 +1,2 @@\n 1\n-2\n 3\n')
  const long = Array.from({ length: 20 }, (_, i) => `l${i}`)
  const changed = [...long]
  changed[1] = 'X'
  changed[18] = 'Y'
  const d = unifiedDiff('/f', long.join('\n') + '\n', changed.join('\n') + '\n')
  t.equal(d.match(/^@@/gm)?.length, 2, 'distant changes are separate hunks')
})

t.test('hosts.toml: dproxy first, the user\'s hosts and comments kept, checked by parsing', async (t) => {
  const user = '# my mirror\nserver = "https://registry-1.docker.io"\n\n[host."https://mirror.corp"]\n  capabilities = ["pull"]\n'
  const merged = mergeHostsToml(user, 'docker.io', ADDR, '/h')
  t.match(merged, '# my mirror')
  const hosts = Object.keys((parseToml(merged) as { host: Record<string, unknown> }).host)
  t.strictSame(hosts, ['http://127.0.0.1:5000', 'https://mirror.corp'], 'dproxy is the first host')
  t.equal(mergeHostsToml(merged, 'docker.io', ADDR, '/h'), merged, 'a second merge changes nothing')
  const moved = mergeHostsToml(merged, 'docker.io', '127.0.0.1:6000', '/h')
  t.strictSame(Object.keys((parseToml(moved) as { host: Record<string, unknown> }).host), ['http://127.0.0.1:6000', 'https://mirror.corp'], 'a new port replaces the old one')
  t.throws(() => mergeHostsToml('server = \n', 'docker.io', ADDR, '/etc/x/hosts.toml'), { code: 'SETUP_FILE_INVALID', message: /^\/etc\/x\/hosts\.toml:1:\d+: / })
})

t.test('daemon.json: dproxy first in registry-mirrors; layout, comments and other keys kept', async (t) => {
  const user = '{\n    // mine\n    "debug": true,\n    "registry-mirrors": ["https://mirror.corp"]\n}\n'
  const merged = mergeDaemonJson(user, 'http://127.0.0.1:5000', [], '/d')
  t.match(merged, '// mine')
  t.match(merged, /\n {4}"debug": true,/)
  t.match(merged, /"registry-mirrors": \[\s*"http:\/\/127\.0\.0\.1:5000",\s*"https:\/\/mirror\.corp"\s*\]/)
  t.equal(mergeDaemonJson(merged, 'http://127.0.0.1:5000', [], '/d'), merged)
  const moved = mergeDaemonJson(merged, 'http://127.0.0.1:6000', ['http://127.0.0.1:5000'], '/d')
  t.notMatch(moved, '5000', 'the address an earlier setup wrote is replaced')
  t.throws(() => mergeDaemonJson('{\n  "a": 1,,\n}', 'http://x', [], '/etc/docker/daemon.json'), { code: 'SETUP_FILE_INVALID', message: /^\/etc\/docker\/daemon\.json:2:/ })
})

t.test('containerd config.toml: config_path added under the right plugin, or the user\'s kept', async (t) => {
  const v2 = 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri".registry]\n  # nothing yet\n'
  const merged = mergeContainerdConfig(v2, '/etc/containerd/certs.d', '/c')
  const doc = parseToml(merged.after!) as { plugins: Record<string, { registry: { config_path: string } }> }
  t.equal(doc.plugins['io.containerd.grpc.v1.cri']!.registry.config_path, '/etc/containerd/certs.d')
  const v3 = mergeContainerdConfig('version = 3\n', '/etc/containerd/certs.d', '/c')
  t.match(v3.after, '[plugins."io.containerd.cri.v1.images".registry]', 'containerd 2.x (config version 3)')
  const own = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/srv/hosts:/etc/docker/certs.d"\n'
  t.strictSame(mergeContainerdConfig(own, '/etc/containerd/certs.d', '/c'), { after: own, hostsDir: '/srv/hosts' })
  const old = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n  endpoint = ["https://m"]\n'
  const refused = mergeContainerdConfig(old, '/etc/containerd/certs.d', '/c')
  t.equal(refused.after, old, 'old-style mirrors: config.toml untouched')
  t.match(refused.note, /mirrors/)
})

t.test('every target, applied, is idempotent and undone byte for byte', async (t) => {
  const userJson = '{\n  "log-level": "warn"\n}\n'
  const userHosts = 'server = "https://ghcr.io"\n\n[host."https://mirror.corp"]\n  capabilities = ["pull"]\n'
  const m = machine(t, { docker: { 'daemon.json': userJson }, containerd: { 'certs.d': { 'ghcr.io': { 'hosts.toml': userHosts } } } })
  const targets = ['docker', 'containerd', 'podman', 'buildkit', 'k3s'] as const
  const plans = await planSetup(m.o, [...targets])
  const applied = await applySetup(plans, m.o, m.state)
  t.ok(applied.length >= 9, `${applied.length} files written`)
  t.equal(changedEdits(await planSetup(m.o, [...targets])).length, 0, 'a second run plans no change')

  const conf = parseToml(readFileSync(m.at('etc/containers/registries.conf.d/50-dproxy.conf'), 'utf8')) as { registry: Array<{ prefix: string; mirror: Array<{ location: string; insecure: boolean }> }> }
  t.strictSame(conf.registry.map((r) => [r.prefix, r.mirror[0]!.location, r.mirror[0]!.insecure]), [['docker.io', ADDR, true], ['ghcr.io', `${ADDR}/ghcr.io`, true]])
  const bk = parseToml(readFileSync(m.at('etc/buildkit/buildkitd.toml'), 'utf8')) as { registry: Record<string, { mirrors?: string[]; http?: boolean }> }
  t.strictSame(bk.registry['docker.io']!.mirrors, [ADDR])
  t.equal(bk.registry[ADDR]!.http, true)
  t.equal(buildxCommand('/etc/buildkit/buildkitd.toml'), 'docker buildx create --name dproxy --driver docker-container --driver-opt network=host --buildkitd-config /etc/buildkit/buildkitd.toml --use')
  const k3s = parseYaml(readFileSync(m.at('etc/rancher/k3s/registries.yaml'), 'utf8')) as { mirrors: Record<string, { endpoint: string[] }> }
  t.strictSame(k3s.mirrors['ghcr.io']!.endpoint, ['http://127.0.0.1:5000'])
  t.ok((await fs.readdir(join(m.state, 'setup'))).some((f) => f.startsWith('record-')), 'recorded in the state dir')

  const undone = await undoSetup(m.root, m.state)
  t.ok(undone.every((u) => u.action === 'restored' || u.action === 'removed'), 'nothing else changed: restored or removed')
  t.equal(readFileSync(m.at('etc/docker/daemon.json'), 'utf8'), userJson)
  t.equal(readFileSync(m.at('etc/containerd/certs.d/ghcr.io/hosts.toml'), 'utf8'), userHosts)
  t.notOk(existsSync(m.at('etc/containers')), 'directories setup created are gone')
  t.strictSame(await undoSetup(m.root, m.state), [], 'a second undo has nothing to do')
})

t.test('undo after the user changed a file removes only dproxy\'s entries', async (t) => {
  const m = machine(t, { docker: { 'daemon.json': '{\n  "log-level": "warn"\n}\n' } })
  await applySetup(await planSetup(m.o, ['docker', 'k3s']), m.o, m.state)
  const file = m.at('etc/docker/daemon.json')
  await fs.writeFile(file, readFileSync(file, 'utf8').replace('"warn"', '"debug"'))
  const hosts = m.at('etc/docker/certs.d/docker.io/hosts.toml')
  await fs.appendFile(hosts, '\n[host."https://other"]\n  capabilities = ["pull"]\n')
  const yaml = m.at('etc/rancher/k3s/registries.yaml')
  await fs.writeFile(yaml, readFileSync(yaml, 'utf8') + 'configs:\n  ghcr.io:\n    tls:\n      insecure_skip_verify: true\n')
  const undone = await undoSetup(m.root, m.state)
  t.equal(undone.find((u) => u.path === file)?.action, 'cleaned')
  t.strictSame(JSON.parse(readFileSync(file, 'utf8')), { 'log-level': 'debug' }, "the user's change stays, dproxy's mirror goes")
  t.equal(readFileSync(hosts, 'utf8').trim(), '[host."https://other"]\n  capabilities = ["pull"]')
  t.strictSame(parseYaml(readFileSync(yaml, 'utf8')), { configs: { 'ghcr.io': { tls: { insecure_skip_verify: true } } } })
})

t.test('a file that does not parse is refused with file:line and nothing is written', async (t) => {
  const broken = '{\n  "debug": true\n  "x": 1\n}\n'
  const m = machine(t, { docker: { 'daemon.json': broken } })
  const res = await runInProcess(['setup', 'docker', 'podman', '--root', m.root, '--yes'], m.env)
  t.equal(res.code, 1)
  t.match(res.err, /\/etc\/docker\/daemon\.json:3:\d+: invalid JSON/)
  t.equal(readFileSync(m.at('etc/docker/daemon.json'), 'utf8'), broken, 'untouched')
  t.notOk(existsSync(m.at('etc/containers')), 'no other target was written either')
})

t.test('permission denied says so and suggests sudo or --user', async (t) => {
  const m = machine(t)
  const { promises: real } = await import('node:fs')
  const files = await t.mockImport<typeof import('../../src/setup/files.js')>('../../src/setup/files.js', {
    'node:fs': {
      promises: {
        ...real,
        writeFile: async () => {
          throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' })
        },
      },
    },
  })
  await t.rejects(files.writeAtomic(m.at('etc/docker/daemon.json'), '{}'), {
    code: 'SETUP_DENIED',
    message: /permission denied writing .*daemon\.json \(EACCES\): run it with sudo, or pass --user/,
  })
  t.strictSame((await fs.readdir(m.at('etc/docker'))).filter((f) => f.includes('tmp')), [], 'no temp file left')
})

t.test('the command: diff, --dry-run, --json, confirmation, nothing to change', async (t) => {
  const m = machine(t)
  const args = ['setup', 'podman', '--root', m.root, '--registries', 'docker.io']
  const dry = await runInProcess([...args, '--dry-run'], m.env)
  t.equal(dry.code, 0, dry.err)
  t.match(dry.out, '+++ b/etc/containers/registries.conf.d/50-dproxy.conf')
  t.notOk(existsSync(m.at('etc/containers')), '--dry-run writes nothing')
  const piped = await runInProcess(args, m.env)
  t.equal(piped.code, 2, 'no terminal and no --yes: refused')
  t.match(piped.err, /--yes/)
  const declined = await runInProcess(args, m.env, { tty: true, answer: 'n\n' })
  t.equal(declined.code, 2)
  t.notOk(existsSync(m.at('etc/containers')))
  const yes = await runInProcess(args, m.env, { tty: true, answer: 'y\n' })
  t.equal(yes.code, 0, yes.err)
  t.ok(existsSync(m.at('etc/containers/registries.conf.d/50-dproxy.conf')))
  const again = await runInProcess([...args, '--json'], m.env)
  const report = JSON.parse(again.out) as { changed: string[]; applied: boolean; targets: Array<{ files: Array<{ action: string }> }> }
  t.strictSame(report.changed, [])
  t.equal(report.targets[0]!.files[0]!.action, 'unchanged')
  const text = await runInProcess(args, m.env)
  t.match(text.out, /nothing to change/)
})

t.test('chained upstreams: clients are told the local dproxy only, for the registries, never a team cache', async (t) => {
  const m = machine(t)
  const team = 'cache.team.example:5000'
  const gitlab = 'https://gitlab.team.example/acme/dependency_proxy/containers'
  const env = {
    ...m.env,
    DPROXY_UPSTREAMS: `docker.io=http://${team},${gitlab},origin,ghcr.io=http://${team},registry.team.example=https://registry.team.example,https://${team}`,
    DPROXY_NO_ORIGIN: 'registry.team.example',
  }
  const res = await runInProcess(['setup', 'docker', 'containerd', 'podman', 'buildkit', 'k3s', '--root', m.root, '--yes', '--json'], env)
  t.equal(res.code, 0, res.err)
  const report = JSON.parse(res.out) as { address: string; registries: string[] }
  t.equal(report.address, ADDR)
  t.ok(report.registries.includes('docker.io') && report.registries.includes('ghcr.io'), 'the chained registries are sent through dproxy')
  t.ok(report.registries.includes('registry.team.example'), 'a configured registry is, whatever its chain')
  t.notOk(report.registries.some((r) => r.startsWith('cache.team.example') || r.startsWith('gitlab.')), 'an endpoint is no registry of its own')

  const written: string[] = []
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fs.readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name)
      if (e.isDirectory()) await walk(p)
      else written.push(p)
    }
  }
  await walk(m.root)
  await walk(join(m.dir, 'home')).catch(() => {})
  t.ok(written.length >= 5, `files written: ${written.join(', ')}`)
  for (const file of written) {
    const text = readFileSync(file, 'utf8')
    t.notMatch(text, /cache\.team\.example|gitlab/, `${file} names no endpoint of a chain`)
  }
  // What containerd reads for docker.io: dproxy first, the registry's own origin as the server.
  const hosts = parseToml(readFileSync(m.at('etc/containerd/certs.d/docker.io/hosts.toml'), 'utf8')) as { server: string; host: Record<string, unknown> }
  t.equal(hosts.server, 'https://registry-1.docker.io')
  t.strictSame(Object.keys(hosts.host), [`http://${ADDR}`])
  t.ok(existsSync(m.at('etc/containerd/certs.d/registry.team.example/hosts.toml')))
})
