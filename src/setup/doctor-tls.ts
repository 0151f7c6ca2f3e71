// What `dproxy doctor` checks about TLS, on both ends of a team server.
//
// On a client that `dproxy setup --server` configured (its record names the
// server and the fingerprint of the CA it installed): the server answers,
// still presents that CA (fetched and judged exactly as setup does) and a
// certificate that chains to it, and each CA file setup installed is still
// that CA, so a server whose CA was made anew, or a file someone replaced,
// is named with the fix instead of surfacing as an x509 error in a pull.
//
// On the server (a daemon whose settings turn TLS on): the certificate it
// serves is in date, not about to expire, and names every address it
// listens on and every --tls-name, since a client checks exactly those.

import { X509Certificate } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { isIP } from 'node:net'
import { connect } from 'node:tls'
import { isDproxyError } from '../errors.js'
import { certificateFingerprint } from '../fingerprint.js'
import type { SetupRecord } from './record.js'
import { fetchServerCa } from './server.js'

/** One line of the doctor's report (the same shape as doctor.ts's Check). */
export interface TlsCheck {
  name: string
  level: 'ok' | 'warn' | 'fail'
  detail: string
  fix?: string
}

/** A certificate expiring sooner than this is a warning (dproxy's own renews long before). */
export const EXPIRY_WARNING_MS = 14 * 24 * 3600 * 1000

const day = 24 * 3600 * 1000

/** The server and the CA files setup installed for it, on a client configured with setup --server. */
export async function serverChecks(record: SetupRecord & { server: NonNullable<SetupRecord['server']> }, o: { timeoutMs?: number } = {}): Promise<TlsCheck[]> {
  const { url, fingerprint } = record.server
  const again = `dproxy setup --server ${url} --fingerprint <the fingerprint dproxy status shows on the server>`
  const checks: TlsCheck[] = []
  try {
    await fetchServerCa(url, fingerprint, o)
    checks.push({ name: 'server', level: 'ok', detail: `${url} answers with the CA setup installed (${fingerprint}) and a certificate that chains to it` })
  } catch (err) {
    const detail = isDproxyError(err) ? err.message.replace(/ \(nothing was changed\)/g, '') : String(err)
    const untrusted = isDproxyError(err, 'SETUP_UNTRUSTED')
    checks.push({
      name: 'server',
      level: 'fail',
      detail,
      fix: untrusted
        ? `if the server's CA was made anew, check its new fingerprint with its admin, then: ${again}`
        : `make sure the server runs (dproxy status on it) and this machine reaches ${url}`,
    })
  }
  const files = record.entries.filter((e) => e.kind === 'whole')
  const wrong: string[] = []
  for (const f of files) {
    const text = await fs.readFile(f.path, 'utf8').catch(() => undefined)
    let got: string | undefined
    try {
      got = text === undefined ? undefined : certificateFingerprint(text)
    } catch {
      got = undefined
    }
    if (got !== fingerprint) wrong.push(`${f.shown} (${text === undefined ? 'missing' : got === undefined ? 'not a certificate' : got})`)
  }
  if (files.length > 0) {
    checks.push(
      wrong.length === 0
        ? { name: 'server CA', level: 'ok', detail: `installed for ${[...new Set(files.map((f) => f.target))].join(', ')}: ${fingerprint}` }
        : { name: 'server CA', level: 'fail', detail: `not the server's CA ${fingerprint}: ${wrong.join(', ')}`, fix: again },
    )
  }
  return checks
}

/** Whether `cert` names `host` (an IP address or a DNS name) the way a client checks it. */
function names(cert: X509Certificate, host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1')
  return isIP(h) !== 0 ? cert.checkIP(h) !== undefined : cert.checkHost(h) !== undefined
}

/**
 * The daemon's certificate (PEM; the first one in the file is the server's)
 * against now, its listen addresses (`host:port`; wildcards say nothing) and
 * the extra names it should carry.
 */
export function certificateChecks(pem: string | X509Certificate, o: { file: string; listen: string[]; names: readonly string[]; now: number }): TlsCheck[] {
  let cert: X509Certificate
  try {
    cert = typeof pem === 'string' ? new X509Certificate(pem) : pem
  } catch (err) {
    return [{ name: 'tls', level: 'fail', detail: `${o.file} is not a certificate (${(err as Error).message})`, fix: 'dproxy serve --tls auto makes one; or give --tls-cert a PEM file' }]
  }
  const checks: TlsCheck[] = []
  const notAfter = Date.parse(cert.validTo)
  const notBefore = Date.parse(cert.validFrom)
  const left = notAfter - o.now
  if (o.now < notBefore) {
    checks.push({ name: 'tls', level: 'fail', detail: `${o.file} is valid only from ${new Date(notBefore).toISOString()}`, fix: "check this machine's clock (timedatectl)" })
  } else if (left <= 0) {
    checks.push({ name: 'tls', level: 'fail', detail: `${o.file} expired on ${new Date(notAfter).toISOString()}: clients refuse it`, fix: 'renew it (dproxy serve --tls auto renews its own; a --tls-cert file is re-read when it changes)' })
  } else {
    const soon = left < EXPIRY_WARNING_MS
    checks.push({
      name: 'tls',
      level: soon ? 'warn' : 'ok',
      detail: `${o.file} is valid until ${new Date(notAfter).toISOString()} (${Math.floor(left / day)} days)`,
      ...(soon ? { fix: 'renew it before it expires (a --tls-cert file is re-read when it changes)' } : {}),
    })
  }
  const hosts = [...o.listen.map((l) => l.slice(0, l.lastIndexOf(':'))), ...o.names]
  const wanted = [...new Set(hosts.map((h) => h.replace(/^\[(.*)\]$/, '$1').toLowerCase()))].filter((h) => h !== '0.0.0.0' && h !== '::' && h !== '')
  const missing = wanted.filter((h) => !names(cert, h))
  checks.push(
    missing.length === 0
      ? { name: 'tls names', level: 'ok', detail: `the certificate names ${wanted.join(', ') || 'no particular address'}` }
      : {
          name: 'tls names',
          level: 'fail',
          detail: `the certificate does not name ${missing.join(', ')}: clients reaching dproxy by ${missing.length === 1 ? 'it' : 'them'} refuse the connection`,
          fix: `dproxy serve --tls auto ${missing.map((m) => `--tls-name ${m}`).join(' ')} (or a --tls-cert with those names)`,
        },
  )
  return checks
}

/** The certificate a TLS listener presents (nothing is trusted or sent: the handshake only). */
export function servedCertificate(address: string, timeoutMs = 5000): Promise<X509Certificate> {
  const at = address.lastIndexOf(':')
  const host = address.slice(0, at).replace(/^\[(.*)\]$/, '$1').replace(/^0\.0\.0\.0$/, '127.0.0.1').replace(/^::$/, '::1')
  const port = Number(address.slice(at + 1))
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, rejectUnauthorized: false, ...(isIP(host) === 0 ? { servername: host } : {}) }, () => {
      const raw = socket.getPeerCertificate().raw
      socket.end()
      if (raw === undefined) reject(new Error(`${address} presented no certificate`))
      else resolve(new X509Certificate(raw))
    })
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no TLS handshake with ${address} within ${timeoutMs} ms`)))
    socket.on('error', reject)
  })
}

/** The running daemon's TLS: the certificate its first listener serves, judged by certificateChecks. */
export async function daemonTlsChecks(o: { listen: string[]; names: readonly string[]; source: string; now: number }): Promise<TlsCheck[]> {
  const first = o.listen[0]
  if (first === undefined) return []
  let cert: X509Certificate
  try {
    cert = await servedCertificate(first)
  } catch (err) {
    return [{ name: 'tls', level: 'fail', detail: `dproxy is set to speak TLS, but ${first} does not: ${(err as Error).message}` }]
  }
  return certificateChecks(cert, { file: `the certificate of ${first} (${o.source})`, listen: o.listen, names: o.names, now: o.now })
}
