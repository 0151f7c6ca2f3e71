// dproxy setup --server URL --fingerprint F against an HTTPS server with an
// openssl-made CA: the CA is trusted only when it is the one F names and the
// server's certificate chains to it and names the host; every refusal writes
// nothing. Then the files each client reads (t.testdir as --root), a second
// run that changes nothing, and --undo that leaves nothing behind.

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { parse as parseYaml } from 'yaml'
import t, { type Test } from 'tap'
import { fetchServerCa, parseServerUrl, requireFingerprint } from '../../src/setup/server.js'
import { makeCa, makeServerCert, startCaServer } from '../fixtures/tls.js'
import { runInProcess } from '../helpers/cli.js'
import { startDaemon } from '../helpers/daemon.js'

const pki = (() => {
  const dir = t.testdir({})
  const ca = makeCa(dir)
  const other = makeCa(dir, 'other')
  return {
    ca,
    other,
    good: makeServerCert(dir, ca, ['127.0.0.1', 'localhost']),
    wrongName: makeServerCert(dir, ca, ['localhost'], 'named'),
    strange: makeServerCert(dir, other, ['127.0.0.1'], 'strange'),
  }
})()

/** The openssl spelling of a fingerprint: AB:CD:... */
const colonForm = (f: string) => f.slice('sha256:'.length).toUpperCase().match(/../g)!.join(':')

t.test('the server URL and the fingerprint are checked before anything is fetched', async (t) => {
  t.strictSame(parseServerUrl('https://10.0.0.5:5443'), { url: 'https://10.0.0.5:5443', address: '10.0.0.5:5443', host: '10.0.0.5', port: 5443 })
  t.strictSame(parseServerUrl('https://Team.Example/'), { url: 'https://team.example:443', address: 'team.example:443', host: 'team.example', port: 443 })
  t.equal(parseServerUrl('https://[fd00::5]:5443').address, '[fd00::5]:5443')
  for (const [bad, why] of [
    ['http://10.0.0.5:5000', /is not https/],
    ['10.0.0.5:5443', /is not https|not a URL/],
    ['https://u:p@10.0.0.5:5443', /no login, path or query/],
    ['https://10.0.0.5:5443/v2/', /no login, path or query/],
  ] as const) {
    t.throws(() => parseServerUrl(bad), { code: 'USAGE', message: why }, bad)
  }
  t.throws(() => requireFingerprint('https://h:1', undefined), { code: 'USAGE', message: /needs --fingerprint sha256:<hex>/ })
  t.throws(() => requireFingerprint('https://h:1', 'sha256:abcd'), { code: 'USAGE', message: /is not a SHA-256 fingerprint/ })
  t.equal(requireFingerprint('https://h:1', colonForm(pki.ca.fingerprint)), pki.ca.fingerprint, "openssl's colon form is the same fingerprint")
})

t.test('fetchServerCa trusts the CA only when it is the one named and the server chains to it', async (t) => {
  const good = await startCaServer(t, { ...pki.good, servedCa: pki.ca.ca })
  const trusted = await fetchServerCa(good.url, pki.ca.fingerprint)
  t.equal(trusted.fingerprint, pki.ca.fingerprint)
  t.equal(trusted.address, good.address)
  t.equal(trusted.ca.trim(), pki.ca.ca.trim(), 'the CA as the server serves it')
  t.strictSame(good.paths, ['/_dproxy/ca.crt', '/v2/'], 'the CA, then one request that trusts only it')

  await t.rejects(fetchServerCa(good.url, pki.other.fingerprint), {
    code: 'SETUP_UNTRUSTED',
    message: new RegExp(`presents a CA with fingerprint ${pki.ca.fingerprint}, but --fingerprint says ${pki.other.fingerprint}: refusing`),
  }, 'another fingerprint: refused, naming both')

  // The served CA matches, but the server's certificate comes from another CA.
  const strange = await startCaServer(t, { ...pki.strange, servedCa: pki.ca.ca })
  await t.rejects(fetchServerCa(strange.url, pki.ca.fingerprint), { code: 'SETUP_UNTRUSTED', message: /is not one its CA .* vouches for 127\.0\.0\.1/ })
  // Its CA, but a certificate that does not name the address clients will use.
  const named = await startCaServer(t, { ...pki.wrongName, servedCa: pki.ca.ca })
  await t.rejects(fetchServerCa(named.url, pki.ca.fingerprint), { code: 'SETUP_UNTRUSTED', message: /ERR_TLS_CERT_ALTNAME_INVALID.*--tls-name 127\.0\.0\.1/ })

  const leaf = await startCaServer(t, { ...pki.good, servedCa: pki.good.cert })
  const { certificateFingerprint } = await import('../../src/fingerprint.js')
  await t.rejects(fetchServerCa(leaf.url, certificateFingerprint(pki.good.cert)), { code: 'SETUP_UNTRUSTED', message: /is not a CA certificate/ })
  const junk = await startCaServer(t, { ...pki.good, servedCa: 'hello' })
  await t.rejects(fetchServerCa(junk.url, pki.ca.fingerprint), { code: 'SETUP_UNTRUSTED', message: /did not answer with a certificate/ })
  const huge = await startCaServer(t, { ...pki.good, servedCa: Buffer.alloc(1 << 20, 'A') })
  await t.rejects(fetchServerCa(huge.url, pki.ca.fingerprint), { code: 'SETUP_UNTRUSTED', message: /over 65536 bytes/ })
  await huge.close()
  await t.rejects(fetchServerCa(huge.url, pki.ca.fingerprint), { code: 'SETUP_UNREACHABLE', message: /ECONNREFUSED/ }, 'nothing listens')
})

t.test("against a real daemon with --tls auto: its own CA, checked the same way", async (t) => {
  const dir = t.testdir({ cache: {}, tls: {} })
  const d = await startDaemon(t, undefined, { cacheDir: join(dir, 'cache'), tls: { mode: 'auto', dir: join(dir, 'tls') } })
  const fingerprint = d.tls!.caFingerprint!
  const url = `https://127.0.0.1:${d.port}`
  const trusted = await fetchServerCa(url, fingerprint)
  t.equal(trusted.fingerprint, fingerprint)
  t.equal(trusted.ca.trim(), readFileSync(join(dir, 'tls', 'ca.pem'), 'utf8').trim(), "the daemon's ca.pem")
  await t.rejects(fetchServerCa(url, pki.ca.fingerprint), { code: 'SETUP_UNTRUSTED', message: new RegExp(`fingerprint ${fingerprint}, but --fingerprint says ${pki.ca.fingerprint}`) })
})

function machine(t: Test) {
  const dir = t.testdir({ root: {}, home: {}, state: {}, config: {}, cache: {} })
  const root = join(dir, 'root')
  const env = {
    PATH: '',
    HOME: join(dir, 'home'),
    DPROXY_CONFIG_DIR: join(dir, 'config'),
    DPROXY_CACHE_DIR: join(dir, 'cache'),
    DPROXY_STATE_DIR: join(dir, 'state'),
  }
  return { root, env, state: join(dir, 'state'), at: (p: string) => join(root, p) }
}

const TARGETS = ['docker', 'containerd', 'podman', 'buildkit', 'k3s']

t.test('setup --server installs the CA where each client looks and points the mirrors at https', async (t) => {
  const srv = await startCaServer(t, { ...pki.good, servedCa: pki.ca.ca })
  const m = machine(t)
  const a = srv.address
  const args = ['setup', ...TARGETS, '--root', m.root, '--registries', 'docker.io,ghcr.io', '--server', srv.url, '--fingerprint', colonForm(pki.ca.fingerprint)]
  const res = await runInProcess([...args, '--yes'], m.env)
  t.equal(res.code, 0, res.err)
  t.match(res.out, `${srv.url}: its CA is ${pki.ca.fingerprint} as --fingerprint says`)
  t.match(res.out, `docker login ${a}`)

  for (const f of [`etc/docker/certs.d/${a}/ca.crt`, `etc/containerd/certs.d/${a}/ca.crt`, `etc/containers/certs.d/${a}/ca.crt`, `etc/buildkit/certs/${a}/ca.crt`, `etc/rancher/k3s/certs.d/${a}/ca.crt`]) {
    t.equal(readFileSync(m.at(f), 'utf8').trim(), pki.ca.ca.trim(), `${f} is the server's CA`)
  }
  t.strictSame(JSON.parse(readFileSync(m.at('etc/docker/daemon.json'), 'utf8'))['registry-mirrors'], [`https://${a}`])
  for (const dir of ['etc/docker/certs.d', 'etc/containerd/certs.d']) {
    const hosts = parseToml(readFileSync(m.at(`${dir}/ghcr.io/hosts.toml`), 'utf8')) as { server: string; host: Record<string, { ca: string; capabilities: string[] }> }
    t.strictSame(Object.keys(hosts.host), [`https://${a}`], `${dir}: dproxy's host is https`)
    t.equal(hosts.host[`https://${a}`]!.ca, `../${a}/ca.crt`, `${dir}: the CA beside it, relative to the hosts.toml's directory`)
    t.ok(existsSync(join(m.at(`${dir}/ghcr.io`), hosts.host[`https://${a}`]!.ca)), 'which resolves to the installed CA')
  }
  const conf = readFileSync(m.at('etc/containers/registries.conf.d/50-dproxy.conf'), 'utf8')
  t.notMatch(conf, 'insecure', 'podman: no insecure mirror')
  const registries = (parseToml(conf) as { registry: Array<{ mirror: Array<{ location: string }> }> }).registry
  t.strictSame(registries.map((r) => r.mirror[0]!.location), [a, `${a}/ghcr.io`])
  const bk = parseToml(readFileSync(m.at('etc/buildkit/buildkitd.toml'), 'utf8')) as { registry: Record<string, { mirrors?: string[]; ca?: string[]; http?: boolean }> }
  t.strictSame(bk.registry['docker.io']!.mirrors, [a])
  t.same({ ...bk.registry[a] }, { ca: [`/etc/buildkit/certs/${a}/ca.crt`] }, 'buildkit: the CA, not http')
  const k3s = parseYaml(readFileSync(m.at('etc/rancher/k3s/registries.yaml'), 'utf8')) as { mirrors: Record<string, { endpoint: string[] }>; configs: Record<string, unknown> }
  t.strictSame(k3s.mirrors['docker.io']!.endpoint, [`https://${a}`])
  t.strictSame(k3s.configs, { [a]: { tls: { ca_file: `/etc/rancher/k3s/certs.d/${a}/ca.crt` } } })

  const again = await runInProcess([...args, '--yes'], m.env)
  t.equal(again.code, 0, again.err)
  t.match(again.out, /nothing to change/, 'a second run changes nothing')
  const json = await runInProcess([...args, '--json'], m.env)
  t.match(JSON.parse(json.out), { address: a, server: { url: srv.url, fingerprint: pki.ca.fingerprint }, changed: [] })

  const undo = await runInProcess(['setup', '--undo', '--root', m.root], m.env)
  t.equal(undo.code, 0, undo.err)
  t.match(undo.out, new RegExp(`removed +/etc/docker/certs\\.d/${a.replace(/\./g, '\\.')}/ca\\.crt`))
  t.strictSame(readdirSync(m.root), [], 'undo removes every file and directory setup made')
})

t.test('a wrong or missing fingerprint is refused and writes nothing', async (t) => {
  const srv = await startCaServer(t, { ...pki.good, servedCa: pki.ca.ca })
  const m = machine(t)
  const base = ['setup', ...TARGETS, '--root', m.root, '--server', srv.url, '--yes']
  const wrong = await runInProcess([...base, '--fingerprint', pki.other.fingerprint], m.env)
  t.equal(wrong.code, 1)
  t.match(wrong.err, pki.ca.fingerprint, 'the fingerprint the server has')
  t.match(wrong.err, pki.other.fingerprint, 'the fingerprint given')
  t.match(wrong.err, /nothing was changed/)
  const missing = await runInProcess(base, m.env)
  t.equal(missing.code, 2)
  t.match(missing.err, /needs --fingerprint/)
  const alone = await runInProcess(['setup', 'docker', '--root', m.root, '--fingerprint', pki.ca.fingerprint, '--yes'], m.env)
  t.equal(alone.code, 2)
  t.match(alone.err, /--fingerprint goes with --server/)
  t.strictSame(readdirSync(m.root), [], 'no file written')
  t.notOk(existsSync(join(m.state, 'setup')), 'nothing recorded')
})

t.test('undo leaves a CA file the user changed since, and a server moved to replaces the old mirror', async (t) => {
  const srv = await startCaServer(t, { ...pki.good, servedCa: pki.ca.ca })
  const m = machine(t)
  const local = await runInProcess(['setup', 'docker', 'k3s', '--root', m.root, '--registries', 'docker.io', '--yes'], { ...m.env, DPROXY_PORT: '5000' })
  t.equal(local.code, 0, local.err)
  const res = await runInProcess(['setup', 'docker', 'k3s', '--root', m.root, '--registries', 'docker.io', '--server', srv.url, '--fingerprint', pki.ca.fingerprint, '--yes'], m.env)
  t.equal(res.code, 0, res.err)
  t.strictSame(JSON.parse(readFileSync(m.at('etc/docker/daemon.json'), 'utf8'))['registry-mirrors'], [`https://${srv.address}`], 'the local mirror is replaced, not kept beside')
  const k3s = parseYaml(readFileSync(m.at('etc/rancher/k3s/registries.yaml'), 'utf8')) as { mirrors: Record<string, { endpoint: string[] }> }
  t.strictSame(k3s.mirrors['docker.io']!.endpoint, [`https://${srv.address}`], 'k3s: the same')
  const ca = m.at(`etc/docker/certs.d/${srv.address}/ca.crt`)
  const { writeFileSync } = await import('node:fs')
  writeFileSync(ca, pki.other.ca)
  const undo = await runInProcess(['setup', '--undo', '--root', m.root], m.env)
  t.equal(undo.code, 0, undo.err)
  t.match(undo.out, /kept +\/etc\/docker\/certs\.d\/.*\/ca\.crt/)
  t.equal(readFileSync(ca, 'utf8'), pki.other.ca, "the user's file stays")
  t.notOk(existsSync(m.at('etc/docker/daemon.json')), 'the rest is gone')
  t.notOk(existsSync(m.at('etc/rancher/k3s/registries.yaml')), 'registries.yaml too')
})
