// dproxy doctor and TLS: on a client that setup --server configured, the
// server and the CA files installed for it are checked instead of a local
// daemon (a replaced file, a server gone, each named with the fix); on a
// server, its certificate's dates and names against what it listens on.
// Certificates are openssl's (test/fixtures/tls.ts).

import { writeFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import t from 'tap'
import { certificateChecks, serverChecks } from '../../src/setup/doctor-tls.js'
import type { DoctorReport } from '../../src/setup/doctor.js'
import { readRecord } from '../../src/setup/record.js'
import { makeCa, makeServerCert, startCaServer } from '../fixtures/tls.js'
import { isolatedEnv, runInProcess } from '../helpers/cli.js'
import { startDaemon } from '../helpers/daemon.js'

const dir = t.testdir({})
const ca = makeCa(dir)
const other = makeCa(dir, 'other')
const good = makeServerCert(dir, ca, ['127.0.0.1', 'team.example'])
const long = makeServerCert(dir, ca, ['127.0.0.1', 'team.example'], 'long', 400)

t.test('certificateChecks: dates against now, names against the listen addresses and --tls-name', async (t) => {
  const cert = new X509Certificate(good.cert)
  const from = Date.parse(cert.validFrom)
  const to = Date.parse(cert.validTo)
  const o = { file: '/state/tls/server.pem', listen: ['127.0.0.1:5443', '0.0.0.0:5443'], names: ['team.example'] }
  t.match(certificateChecks(long.cert, { ...o, now: from + 1000 }), [
    { name: 'tls', level: 'ok', detail: /^\/state\/tls\/server\.pem is valid until .* \((399|400) days\)$/ },
    { name: 'tls names', level: 'ok', detail: 'the certificate names 127.0.0.1, team.example' },
  ])
  t.match(certificateChecks(good.cert, { ...o, now: from + 1000 })[0], { level: 'warn', detail: /\([12] days\)$/, fix: /renew it before it expires/ }, 'two weeks or less: a warning')
  t.match(certificateChecks(good.cert, { ...o, now: to + 1000 })[0], { level: 'fail', detail: /expired on/, fix: /renew/ })
  t.match(certificateChecks(good.cert, { ...o, now: from - 3_600_000 })[0], { level: 'fail', detail: /valid only from/, fix: /clock/ })
  t.match(
    certificateChecks(good.cert, { ...o, listen: ['10.0.0.5:5443', '[::1]:5443'], names: ['host.docker.internal'], now: from + 1000 })[1],
    {
      level: 'fail',
      detail: 'the certificate does not name 10.0.0.5, ::1, host.docker.internal: clients reaching dproxy by them refuse the connection',
      fix: 'dproxy serve --tls auto --tls-name 10.0.0.5 --tls-name ::1 --tls-name host.docker.internal (or a --tls-cert with those names)',
    },
  )
  t.match(certificateChecks('junk', { ...o, now: from }), [{ level: 'fail', detail: /is not a certificate/ }])
})

t.test('on a client of a team server: the server and the CA files setup installed', async (t) => {
  const srv = await startCaServer(t, { ...good, servedCa: ca.ca })
  const env = isolatedEnv(t, { PATH: '' })
  const root = t.testdir({})
  const setup = await runInProcess(['setup', 'docker', 'podman', '--root', root, '--registries', 'docker.io', '--server', srv.url, '--fingerprint', ca.fingerprint, '--yes'], env)
  t.equal(setup.code, 0, setup.err)
  const record = (await readRecord(env.DPROXY_STATE_DIR!, root))!
  t.match(record.server, { url: srv.url, fingerprint: ca.fingerprint }, 'setup recorded the server')
  const server = record.server!

  t.match(await serverChecks({ ...record, server }), [
    { name: 'server', level: 'ok', detail: `${srv.url} answers with the CA setup installed (${ca.fingerprint}) and a certificate that chains to it` },
    { name: 'server CA', level: 'ok', detail: `installed for docker, podman: ${ca.fingerprint}` },
  ])

  // The doctor command: no local daemon is needed, and it is not what is checked.
  const doctor = await runInProcess(['doctor', '--json', '--root', root], env)
  t.equal(doctor.code, 0, doctor.out + doctor.err)
  const report = JSON.parse(doctor.out) as DoctorReport
  t.same(report.checks.map((c) => [c.name, c.level]), [['server', 'ok'], ['server CA', 'ok']])
  t.equal(report.address, srv.address)

  const docker = record.entries.find((e) => e.kind === 'whole' && e.target === 'docker')!
  writeFileSync(docker.path, other.ca)
  t.match((await serverChecks({ ...record, server }))[1], {
    name: 'server CA',
    level: 'fail',
    detail: `not the server's CA ${ca.fingerprint}: /etc/docker/certs.d/${srv.address}/ca.crt (${other.fingerprint})`,
    fix: new RegExp(`^dproxy setup --server ${srv.url} --fingerprint`),
  })
  const again = await runInProcess(['doctor', '--root', root], env)
  t.equal(again.code, 1, 'a wrong CA file fails the doctor')
  t.match(again.out, /server CA +FAIL/)

  await srv.close()
  t.match((await serverChecks({ ...record, server }))[0], { name: 'server', level: 'fail', detail: /ECONNREFUSED/, fix: /make sure the server runs/ })

  // The same port, now with another CA: what a server whose CA was made anew looks like.
  const moved = await startCaServer(t, { ...makeServerCert(dir, other, ['127.0.0.1'], 'moved'), servedCa: other.ca, port: srv.port })
  t.equal(moved.port, srv.port)
  t.match((await serverChecks({ ...record, server }))[0], {
    level: 'fail',
    detail: new RegExp(`presents a CA with fingerprint ${other.fingerprint}, but --fingerprint says ${ca.fingerprint}`),
    fix: /check its new fingerprint with its admin/,
  })
})

t.test("on the server: the certificate the daemon serves, against its listen addresses and --tls-name", async (t) => {
  const env = isolatedEnv(t, { PATH: '', DPROXY_UPSTREAMS: 'docker.io=http://127.0.0.1:1' })
  await startDaemon(t, undefined, { cacheDir: env.DPROXY_CACHE_DIR, upstreams: { 'docker.io': 'http://127.0.0.1:1' }, tls: { mode: 'auto', dir: `${env.DPROXY_STATE_DIR}/tls` } })
  const res = await runInProcess(['doctor', '--json'], env)
  const report = JSON.parse(res.out) as DoctorReport
  t.match(report.checks.find((c) => c.name === 'tls'), { level: 'ok', detail: /^the certificate of 127\.0\.0\.1:\d+ \(dproxy's own CA, --tls auto\) is valid until .* \((89|90) days\)$/ })
  t.match(report.checks.find((c) => c.name === 'tls names'), { level: 'ok', detail: 'the certificate names 127.0.0.1' })
  // A name the settings ask for that the running daemon's certificate lacks (it was started without it).
  const more = await runInProcess(['doctor', '--json'], { ...env, DPROXY_TLS_NAMES: 'team.example' })
  t.match((JSON.parse(more.out) as DoctorReport).checks.find((c) => c.name === 'tls names'), {
    level: 'fail',
    detail: /does not name team\.example/,
    fix: 'dproxy serve --tls auto --tls-name team.example (or a --tls-cert with those names)',
  })
  t.equal(more.code, 1, 'and the doctor fails')
})
