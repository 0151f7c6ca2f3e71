// Making certificates for `--tls auto`: dproxy's own CA (once, ten years)
// and a server certificate signed by it. tls.ts imports this module only when
// it has to make one, so @peculiar/x509 and its dependency injection (which
// needs the reflect-metadata polyfill, loaded first) stay off the daemon's
// start-up path on every other start.
//
// @peculiar/x509 signs through the platform's WebCrypto, so the keys are
// ECDSA P-256: small certificates and fast handshakes. Keys are written as
// PKCS#8 PEM, which node:tls and openssl read as they are.

import { webcrypto } from 'node:crypto'
import { isIP } from 'node:net'

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const

export interface Issued {
  certPem: string
  keyPem: string
}

async function x509() {
  await import('reflect-metadata')
  const lib = await import('@peculiar/x509')
  lib.cryptoProvider.set(webcrypto as unknown as Parameters<typeof lib.cryptoProvider.set>[0])
  return lib
}

function keyPem(der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{1,64}/g, '$&\n')
  return `-----BEGIN PRIVATE KEY-----\n${b64}-----END PRIVATE KEY-----\n`
}

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64')
}

function serial(): string {
  // Positive (high bit clear) and 16 bytes: unique without a counter on disk.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16))
  bytes[0] = bytes[0]! & 0x7f
  return Buffer.from(bytes).toString('hex')
}

/** A new CA: `CN=dproxy CA on <machine>`, valid from `now` for `days`. */
export async function issueCa(opts: { now: number; days: number; machine: string }): Promise<Issued> {
  const lib = await x509()
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair
  const cert = await lib.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=dproxy CA on ${opts.machine.replace(/[,+="<>#;\\]/g, '_')}`,
    notBefore: new Date(opts.now - 60_000),
    notAfter: new Date(opts.now + opts.days * 86_400_000),
    signingAlgorithm: SIGNING,
    keys,
    extensions: [
      new lib.BasicConstraintsExtension(true, 0, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.cRLSign, true),
      await lib.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  return { certPem: cert.toString('pem') + '\n', keyPem: keyPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)) }
}

/** A server certificate for `names` (host names and IP addresses), signed by the CA, valid from `now` for `days`. */
export async function issueServer(opts: { ca: Issued; names: readonly string[]; now: number; days: number }): Promise<Issued> {
  const lib = await x509()
  const ca = new lib.X509Certificate(opts.ca.certPem)
  const caKey = await webcrypto.subtle.importKey('pkcs8', pemBody(opts.ca.keyPem), ALGORITHM, false, ['sign'])
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair
  const first = opts.names.find((n) => isIP(n) === 0) ?? opts.names[0] ?? 'localhost'
  const cert = await lib.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${first}`,
    issuer: ca.subject,
    notBefore: new Date(opts.now - 60_000),
    notAfter: new Date(opts.now + opts.days * 86_400_000),
    signingAlgorithm: SIGNING,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new lib.BasicConstraintsExtension(false, undefined, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.digitalSignature, true),
      new lib.ExtendedKeyUsageExtension([lib.ExtendedKeyUsage.serverAuth]),
      new lib.SubjectAlternativeNameExtension(opts.names.map((n) => ({ type: isIP(n) === 0 ? ('dns' as const) : ('ip' as const), value: n }))),
      await lib.AuthorityKeyIdentifierExtension.create(ca.publicKey),
      await lib.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  return { certPem: cert.toString('pem') + '\n', keyPem: keyPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)) }
}
