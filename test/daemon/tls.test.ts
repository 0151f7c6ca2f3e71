// The daemon over TLS, with real clients (node's https trusting only the CA
// in question, curl --cacert): --tls auto makes its CA once and a server
// certificate for its names, serves the CA at /_dproxy/ca.crt, renews on the
// injectable clock; --tls-cert/--tls-key files are picked up when they
// change, a broken pair keeps the old one and status says why; plain HTTP to
// the TLS port gets a 400 that says so; handshake garbage, a truncated
// ClientHello and a stalled handshake never take the daemon down; past the
// handshake, the bounds of connections.ts hold as on plain HTTP (a silent,
// half-sent or trickled request head loses its connection, a source at its
// bound gets the next one closed).

import { execFile } from 'node:child_process'
import { promises as fs, statSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { connect, type Socket } from 'node:net'
import { Duplex } from 'node:stream'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { certificateFingerprint } from '../../src/fingerprint.js'
import type { Daemon } from '../../src/daemon/daemon.js'
import { refuseExposureWithoutAuth } from '../../src/daemon/daemon.js'
import { TOKEN_PATH } from '../../src/daemon/clientauth.js'
import { issueCa, issueServer, type Issued } from '../../src/daemon/tls-issue.js'
import { certificateNamesFor, dueForRenewal, tlsFiles } from '../../src/daemon/tls.js'
import { trustCommand } from '../../src/daemon/tls-config.js'
import { X509Certificate } from 'node:crypto'
import { startDaemon, get } from '../helpers/daemon.js'
import { pingV2, trickleHead, type Watched, watchRaw } from '../helpers/raw-http.js'
import { until } from '../helpers/process.js'

const run = promisify(execFile)

interface Answer {
  status: number
  body: string
  headers: Record<string, string | string[] | undefined>
  /** The fingerprint of the certificate the server showed. */
  certificate: string
  /** The cipher the handshake settled on. */
  cipher: string
}

/** One GET on a new connection that trusts `ca` only; `ciphers`: the client's, in its order of preference. */
function httpsGet(url: string, ca: string, headers: Record<string, string> = {}, ciphers?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, agent: false, headers, ...(ciphers !== undefined ? { ciphers } : {}) }, (res) => {
      const socket = res.socket as TLSSocket
      const certificate = certificateFingerprint(socket.getPeerCertificate().raw)
      const cipher = socket.getCipher().name
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers, certificate, cipher }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

function clockAt(start: number) {
  const clock = { ms: start, now: () => clock.ms }
  return clock
}

t.test('--tls auto: the CA once (key 0600), a certificate for the listen names, /_dproxy/ca.crt, https realm; reused on restart', async (t) => {
  const root = t.testdir()
  const dir = join(root, 'tls')
  const cacheDir = join(root, 'cache')
  const names = ['host.docker.internal', '10.9.8.7']
  const d = await startDaemon(t, undefined, { cacheDir, tls: { mode: 'auto', dir, names }, clientAuth: { secret: async () => 'pw' } })
  const files = tlsFiles(dir)
  t.equal(statSync(files.caKey).mode & 0o777, 0o600, 'the CA key is for this user only')
  t.equal(statSync(files.serverKey).mode & 0o777, 0o600)
  const ca = await fs.readFile(files.ca, 'utf8')
  const caCert = new X509Certificate(ca)
  t.ok(caCert.ca, 'a CA certificate')
  t.ok(Date.parse(caCert.validTo) - Date.now() > 9 * 365 * 86_400_000, 'valid for ten years')
  t.match(caCert.publicKey.asymmetricKeyDetails, { namedCurve: 'prime256v1' }, 'ECDSA P-256')

  t.match(d.url, /^https:\/\/127\.0\.0\.1:\d+$/)
  const served = await httpsGet(`${d.url}/_dproxy/ca.crt`, ca)
  t.equal(served.status, 200, 'no auth needed for the CA')
  t.equal(served.body, ca)
  t.equal(served.headers['content-type'], 'application/x-pem-file')
  const server = new X509Certificate((await fs.readFile(files.server, 'utf8')).split(/(?<=-----END CERTIFICATE-----\n)/)[0]!)
  t.equal(server.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:host.docker.internal, IP Address:10.9.8.7')
  t.ok(server.checkIssued(caCert) && server.verify(caCert.publicKey), 'signed by the CA')
  t.equal(served.certificate, d.tls!.fingerprint)
  // By name too: localhost is in the certificate.
  t.equal((await httpsGet(`https://localhost:${d.port}/_dproxy/ca.crt`, ca)).status, 200)

  const challenge = await httpsGet(`${d.url}/v2/`, ca)
  t.equal(challenge.status, 401)
  t.equal(challenge.headers['www-authenticate'], `Bearer realm="${d.url}${TOKEN_PATH}",service="dproxy"`, 'the realm is https')

  const { stdout } = await run('curl', ['-sS', '--cacert', files.ca, `${d.url}/_dproxy/ca.crt`])
  t.equal(stdout, ca, 'curl --cacert agrees')

  const status = await d.status()
  t.match(status.tls, { mode: 'auto', subject: 'CN=localhost', notAfter: String, caFingerprint: certificateFingerprint(ca) })
  t.strictSame(status.tls?.names, ['localhost', '127.0.0.1', '::1', 'host.docker.internal', '10.9.8.7'])
  t.equal(status.trustCommand, undefined, 'loopback only: nothing for other machines to run')
  const lock = JSON.parse(await fs.readFile(join(cacheDir, 'daemon.json'), 'utf8')) as { url: string; tlsCertificate: string }
  t.equal(lock.url, d.url)
  t.equal(lock.tlsCertificate, d.tls!.fingerprint, 'daemon.json names the certificate the CLI pins')
  await d.stop(0)

  const serverPem = await fs.readFile(files.server, 'utf8')
  const again = await startDaemon(t, undefined, { cacheDir, tls: { mode: 'auto', dir, names } })
  t.equal(await fs.readFile(files.ca, 'utf8'), ca, 'the CA is made once')
  t.equal(await fs.readFile(files.server, 'utf8'), serverPem, 'a certificate that covers the names is reused')
  t.equal((await httpsGet(`${again.url}/v2/`, ca)).status, 200)
  await again.stop(0)

  const more = await startDaemon(t, undefined, { cacheDir, tls: { mode: 'auto', dir, names: [...names, 'cache.lan'] } })
  t.not(await fs.readFile(files.server, 'utf8'), serverPem, 'a new name: a new certificate')
  t.equal(await fs.readFile(files.ca, 'utf8'), ca, 'from the same CA')
  t.match((await more.status()).tls?.names, ['localhost', '127.0.0.1', '::1', 'host.docker.internal', '10.9.8.7', 'cache.lan'])
})

t.test('the cipher: AES-128-GCM over the AES-256-GCM clients list first, ChaCha20 for a client that lists that first', async (t) => {
  const root = t.testdir()
  const dir = join(root, 'tls')
  const d = await startDaemon(t, undefined, { cacheDir: join(root, 'cache'), tls: { mode: 'auto', dir } })
  const ca = await fs.readFile(tlsFiles(dir).ca, 'utf8')
  const aesFirst = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256'
  t.equal((await httpsGet(`${d.url}/v2/`, ca, {}, aesFirst)).cipher, 'TLS_AES_128_GCM_SHA256', 'the server order decides')
  t.equal((await httpsGet(`${d.url}/v2/`, ca)).cipher, 'TLS_AES_128_GCM_SHA256', "node's own client order")
  const chachaFirst = 'TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256'
  t.equal((await httpsGet(`${d.url}/v2/`, ca, {}, chachaFirst)).cipher, 'TLS_CHACHA20_POLY1305_SHA256', 'a client without AES instructions keeps ChaCha20')
  const { stderr } = await run('curl', ['-sS', '-v', '-o', '/dev/null', '--cacert', tlsFiles(dir).ca, `${d.url}/v2/`])
  t.match(stderr, /SSL connection using TLSv1\.3 \/ TLS_AES_128_GCM_SHA256/, 'curl too (the bench client)')
})

t.test('--tls auto: the server certificate is renewed when a third of its life is left, without a restart', async (t) => {
  // Issued 65 days ago by the clock, so that the renewed certificate is valid by the real time clients check.
  const now = Date.now()
  const clock = clockAt(now - 65 * 86_400_000)
  const root = t.testdir()
  const d = await startDaemon(t, undefined, { clock, cacheDir: join(root, 'cache'), tls: { mode: 'auto', dir: join(root, 'tls') } })
  const ca = d.tls!.ca!
  const first = (await httpsGet(`${d.url}/v2/`, ca)).certificate
  clock.ms += 50 * 86_400_000
  await d.tls!.renewIfDue()
  t.equal((await httpsGet(`${d.url}/v2/`, ca)).certificate, first, 'at 50 of 90 days: kept')
  clock.ms += 15 * 86_400_000
  t.ok(dueForRenewal(new X509Certificate(d.tls!.current.cert), clock.ms))
  await d.tls!.renewIfDue()
  const renewed = await httpsGet(`${d.url}/v2/`, ca)
  t.not(renewed.certificate, first, 'at 65 days: a new certificate on the next connection')
  t.equal(renewed.status, 200)
  t.equal(d.tls!.ca, ca, 'from the same CA')
  t.ok(Date.parse((await d.status()).tls!.notAfter!) > now + 80 * 86_400_000, 'valid for 90 days from the clock')
})

async function pairFiles(dir: string, ca: Issued, name = 'localhost'): Promise<void> {
  const server = await issueServer({ ca, names: [name, '127.0.0.1'], now: Date.now(), days: 30 })
  await fs.writeFile(join(dir, 'cert.pem.new'), server.certPem)
  await fs.writeFile(join(dir, 'key.pem.new'), server.keyPem)
  // As a rotation tool does: each file renamed into place.
  await fs.rename(join(dir, 'key.pem.new'), join(dir, 'key.pem'))
  await fs.rename(join(dir, 'cert.pem.new'), join(dir, 'cert.pem'))
}

t.test('--tls-cert/--tls-key: a rotated pair is served without a restart; a broken one keeps the old and status says why', async (t) => {
  const root = t.testdir({ certs: {} })
  const dir = join(root, 'certs')
  const cacheDir = join(root, 'cache')
  const now = Date.now()
  const [caA, caB] = await Promise.all([issueCa({ now, days: 365, machine: 'a' }), issueCa({ now, days: 365, machine: 'b' })])
  await pairFiles(dir, caA)
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  const d = await startDaemon(t, undefined, { cacheDir, tls: { mode: 'files', cert, key }, tlsPollMs: 100 })
  t.equal((await httpsGet(`${d.url}/v2/`, caA.certPem)).status, 200)
  t.equal((await httpsGet(`${d.url}/_dproxy/ca.crt`, caA.certPem)).status, 404, 'no CA of its own to serve')
  await t.rejects(httpsGet(`${d.url}/v2/`, caB.certPem), /self.signed|unable to verify|certificate/i, 'a client trusting only B is refused')

  await pairFiles(dir, caB)
  let answer: Answer | undefined
  for (let i = 0; i < 200 && answer === undefined; i++) {
    answer = await httpsGet(`${d.url}/v2/`, caB.certPem).catch(() => undefined)
    if (answer === undefined) await new Promise((r) => setTimeout(r, 50))
  }
  t.equal(answer?.status, 200, 'a client trusting the new CA pulls without a restart')
  const rotated = d.tls!.fingerprint
  t.equal(answer?.certificate, rotated)
  t.equal(answer?.cipher, 'TLS_AES_128_GCM_SHA256', 'the new context keeps the cipher preference')

  // A key that does not go with the certificate.
  const other = await issueServer({ ca: caA, names: ['localhost'], now, days: 30 })
  await fs.writeFile(key, other.keyPem)
  await until(() => d.tls!.status().lastError !== undefined, 'the broken pair to be noticed')
  const status = await d.status()
  t.match(status.tls?.lastError?.message, /the new certificate was refused, the previous one serves on: .*key does not go with the certificate/)
  t.equal(status.tls?.fingerprint, rotated)
  t.equal((await httpsGet(`${d.url}/v2/`, caB.certPem)).certificate, rotated, 'the previous pair serves on')

  // An unreadable file: the same.
  await fs.rm(cert)
  await until(() => /cannot read the TLS certificate/.test(d.tls!.status().lastError?.message ?? ''), 'the missing file to be noticed')
  t.equal((await httpsGet(`${d.url}/v2/`, caB.certPem)).status, 200)

  // A good pair again clears the error.
  await pairFiles(dir, caA)
  await until(() => d.tls!.status().lastError === undefined && d.tls!.fingerprint !== rotated, 'the good pair to be loaded')
  t.equal((await httpsGet(`${d.url}/v2/`, caA.certPem)).status, 200)
})

t.test('--tls-cert/--tls-key: a pair that does not load is refused at start', async (t) => {
  const root = t.testdir({ certs: {} })
  const dir = join(root, 'certs')
  const cacheDir = join(root, 'cache')
  const ca = await issueCa({ now: Date.now(), days: 365, machine: 'a' })
  await pairFiles(dir, ca)
  const other = await issueServer({ ca, names: ['localhost'], now: Date.now(), days: 30 })
  await fs.writeFile(join(dir, 'key.pem'), other.keyPem)
  await t.rejects(startDaemon(t, undefined, { cacheDir, tls: { mode: 'files', cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') } }), {
    code: 'CONFIG_INVALID',
    message: /key does not go with the certificate/,
  })
  await t.rejects(startDaemon(t, undefined, { cacheDir, tls: { mode: 'files', cert: join(dir, 'missing.pem'), key: join(dir, 'key.pem') } }), {
    code: 'CONFIG_INVALID',
    message: /cannot read the TLS certificate .*missing\.pem: ENOENT/,
  })
})

t.test('without TLS, /_dproxy/ca.crt is 404', async (t) => {
  const d = await startDaemon(t, undefined)
  t.equal((await get(`${d.url}/_dproxy/ca.crt`)).status, 404)
  t.strictSame((await d.status()).tls, { mode: 'off' })
})

/** Sends `bytes` on a raw connection and resolves with what came back once the daemon closed it (or after `ms`). */
function raw(d: Daemon, bytes: Buffer | string, ms = 10_000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket: Socket = connect({ host: '127.0.0.1', port: d.port })
    const chunks: Buffer[] = []
    const timer = setTimeout(() => {
      socket.destroy()
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: false })
    }, ms)
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => {})
    socket.on('close', () => {
      clearTimeout(timer)
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: true })
    })
    if (bytes.length > 0) socket.write(bytes)
  })
}

t.test('plain HTTP to the TLS port: a 400 saying to use https, not a hang; curl shows it', async (t) => {
  const d = await startDaemon(t, undefined, { tls: { mode: 'auto', dir: join(t.testdir(), 'tls') } })
  const answer = await raw(d, 'GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  t.ok(answer.closed, 'the daemon closed the connection')
  t.match(answer.text, /^HTTP\/1\.1 400 Bad Request\r\n/)
  t.match(answer.text, new RegExp(`This port speaks HTTPS, not plain HTTP: use https://127\\.0\\.0\\.1:${d.port}/`))
  const { stdout } = await run('curl', ['-sS', `http://127.0.0.1:${d.port}/v2/`])
  t.match(stdout, /use https:\/\//)
})

t.test('handshake fuzz: garbage, a truncated ClientHello, a stalled handshake, silence: closed, and the daemon serves on', async (t) => {
  const d = await startDaemon(t, undefined, { tls: { mode: 'auto', dir: join(t.testdir(), 'tls') }, headersTimeoutMs: 300 })
  const ca = d.tls!.ca!
  const hello = await clientHello()
  t.equal(hello[0], 0x16, 'a handshake record')
  const cases: Array<[string, Buffer | string]> = [
    ['garbage', Buffer.from('\x00\xff\x13\x37garbage\r\n\r\n', 'latin1')],
    ['a handshake byte, then garbage', Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]), Buffer.alloc(64, 0xaa)])],
    ['a truncated ClientHello (then silence)', hello.subarray(0, Math.floor(hello.length / 2))],
    ['a ClientHello with a record length beyond it', Buffer.concat([hello.subarray(0, 3), Buffer.from([0x40, 0x00]), hello.subarray(5)])],
    ['nothing at all', Buffer.alloc(0)],
    ['a TLS alert', Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])],
  ]
  for (const [what, bytes] of cases) {
    const answer = await raw(d, bytes)
    t.ok(answer.closed, `${what}: closed by the daemon`)
    t.equal((await httpsGet(`${d.url}/v2/`, ca)).status, 200, `${what}: others are still served`)
  }
  const all = await Promise.all(cases.map(([, bytes]) => raw(d, bytes)))
  t.ok(all.every((a) => a.closed), 'all at once: every one closed')
  t.equal((await httpsGet(`${d.url}/v2/`, ca)).status, 200)
})

t.test('names: a wildcard listens on every interface address and localhost; extras last, once', async (t) => {
  const interfaces = {
    lo: [{ address: '127.0.0.1', family: 'IPv4' as const, internal: true, netmask: '', mac: '', cidr: null }],
    eth0: [
      { address: '192.168.1.5', family: 'IPv4' as const, internal: false, netmask: '', mac: '', cidr: null },
      { address: 'fe80::1', family: 'IPv6' as const, internal: false, netmask: '', mac: '', cidr: null, scopeid: 2 },
      { address: 'fd00::5', family: 'IPv6' as const, internal: false, netmask: '', mac: '', cidr: null, scopeid: 0 },
    ],
  }
  t.strictSame(certificateNamesFor(['0.0.0.0'], ['cache.lan', '192.168.1.5'], interfaces), ['localhost', '127.0.0.1', '::1', '192.168.1.5', 'fd00::5', 'cache.lan'])
  t.strictSame(certificateNamesFor(['127.0.0.1', '::1'], [], interfaces), ['localhost', '127.0.0.1', '::1'])
  t.strictSame(certificateNamesFor(['10.0.0.5'], ['Host.Docker.Internal'], interfaces), ['10.0.0.5', 'host.docker.internal'])
  const fp = `sha256:${'ab'.repeat(32)}`
  t.equal(trustCommand([{ host: '0.0.0.0', port: 5443 }], fp, interfaces), `dproxy setup --server https://192.168.1.5:5443 --fingerprint ${fp}`)
  t.equal(trustCommand([{ host: '127.0.0.1', port: 5000 }, { host: 'fd00::5', port: 5000 }], fp, interfaces), `dproxy setup --server https://[fd00::5]:5000 --fingerprint ${fp}`)
  t.equal(trustCommand([{ host: '127.0.0.1', port: 5000 }], fp, interfaces), undefined, 'loopback only: none')
})

t.test('beyond loopback: TLS and client auth, unless --insecure-lan (then a warning)', async (t) => {
  t.equal(refuseExposureWithoutAuth(['127.0.0.1', '::1'], false), undefined, 'plain HTTP on loopback stays as it is')
  t.throws(() => refuseExposureWithoutAuth(['0.0.0.0'], true), { code: 'USAGE', message: /must speak TLS: pass --tls auto \(or --tls-cert FILE --tls-key FILE\), or --insecure-lan/ })
  t.throws(() => refuseExposureWithoutAuth(['0.0.0.0'], false, { tls: true }), { code: 'USAGE', message: /clients must authenticate/ })
  t.equal(refuseExposureWithoutAuth(['0.0.0.0'], true, { tls: true }), undefined)
  t.match(refuseExposureWithoutAuth(['0.0.0.0'], true, { insecureLan: true }), /^INSECURE: listening on 0\.0\.0\.0 without TLS \(--insecure-lan\)/)
  t.match(refuseExposureWithoutAuth(['10.0.0.5'], false, { tls: true, insecureLan: true }), /without client auth .*anyone on the network can use this cache/)
})

/** The first bytes a real TLS client sends (its ClientHello), taken from a stream that never answers. */
function clientHello(): Promise<Buffer> {
  return new Promise((resolve) => {
    const tls = tlsConnect({
      servername: 'localhost',
      socket: new Duplex({
        read() {},
        write(chunk: Buffer, _encoding, callback) {
          resolve(chunk)
          callback()
        },
      }),
    })
    tls.on('error', () => {})
    setImmediate(() => tls.destroy())
  })
}

/** A TLS connection and what the daemon did with it (what it sent: decrypted). */
interface TlsRaw extends Watched {
  socket: TLSSocket
  /** Whether the handshake completed (false: the daemon closed the connection before). */
  secure: boolean
}

/** A TLS connection trusting `ca` that completes its handshake (when the daemon lets it) and then sends only what the test writes. */
async function openTls(t: Test, d: Daemon, ca: string, localAddress = '127.0.0.1'): Promise<TlsRaw> {
  // Half open allowed underneath: the daemon's FIN does not make this side close, as with a client that ignores it.
  const tcp = connect({ host: '127.0.0.1', port: d.port, localAddress, allowHalfOpen: true })
  const socket = tlsConnect({ socket: tcp, ca, servername: 'localhost' })
  t.teardown(() => (socket.destroy(), tcp.destroy()))
  const watched = watchRaw(socket, tcp)
  const secure = await new Promise<boolean>((resolve) => {
    socket.once('secureConnect', () => resolve(true))
    socket.once('close', () => resolve(false))
    socket.once('error', () => resolve(false))
  })
  return { socket, secure, ...watched }
}

t.test('over TLS, a request head that does not arrive within the bound loses its connection, as on plain HTTP', async (t) => {
  const d = await startDaemon(t, undefined, { tls: { mode: 'auto', dir: join(t.testdir(), 'tls') }, headersTimeoutMs: 2500 })
  const ca = d.tls!.ca!
  const idle = await openTls(t, d, ca)
  const partial = await openTls(t, d, ca)
  const trickled = await openTls(t, d, ca)
  t.ok(idle.secure && partial.secure && trickled.secure, 'every handshake completed')
  partial.socket.write('GET /v2/ HT')
  trickled.socket.write('GET /v2/ HTTP/1.1\r\n')
  const trickling = trickleHead(trickled, d.port)
  const [a, b, c] = await Promise.all([idle.closedByServer(), partial.closedByServer(), trickled.closedByServer()])
  t.ok(a, 'silent after the handshake: closed by the daemon')
  t.ok(b, 'half a request line: closed by the daemon')
  t.ok(c, 'headers trickled a byte a second: closed by the daemon')
  const { sent, length } = await trickling
  t.ok(sent < length, `the trickled head never completed (${sent} of ${length} bytes sent)`)
  t.match(partial.received(), /^HTTP\/1\.1 408 /, 'a started request hears 408')
  t.ok(await idle.releasedByServer(), 'the daemon lets go of the silent one though the client keeps its side open')
  t.ok(await partial.releasedByServer(), 'and of the half-sent one')

  const legit = await openTls(t, d, ca)
  t.equal(await pingV2(legit, d.port), 'HTTP/1.1 200 OK', 'a whole request is answered')
  await sleep(3000)
  t.equal(await pingV2(legit, d.port), 'HTTP/1.1 200 OK', 'and its keep-alive connection, idle past the head bound between requests, still serves the next')
})

t.test('over TLS, a source at its bound gets the next connection closed; its others work, and other sources get in', async (t) => {
  const d = await startDaemon(t, undefined, { tls: { mode: 'auto', dir: join(t.testdir(), 'tls') }, maxConnectionsPerClient: 3 })
  const ca = d.tls!.ca!
  const held = [await openTls(t, d, ca), await openTls(t, d, ca), await openTls(t, d, ca)]
  const over = await openTls(t, d, ca)
  t.notOk(over.secure, 'the fourth connection from 127.0.0.1 gets no handshake')
  t.ok(await over.closedByServer(), 'and is closed by the daemon')
  for (const [i, raw] of held.entries()) t.equal(await pingV2(raw, d.port), 'HTTP/1.1 200 OK', `connection ${i + 1} from 127.0.0.1 still works`)
  const other = await openTls(t, d, ca, '127.0.0.2')
  t.equal(await pingV2(other, d.port), 'HTTP/1.1 200 OK', 'a connection from 127.0.0.2 works')
  held[0]!.socket.destroy()
  let again = false
  for (let i = 0; i < 200 && !again; i++) {
    const raw = await openTls(t, d, ca)
    again = raw.secure && (await pingV2(raw, d.port)) === 'HTTP/1.1 200 OK'
    if (!again) (raw.socket.destroy(), await sleep(10))
  }
  t.ok(again, 'once one of them closed, 127.0.0.1 gets a connection again')
})
