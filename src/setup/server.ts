// `dproxy setup --server https://HOST:PORT --fingerprint sha256:...`: learn a
// team server's CA without trusting anything yet, and trust it only when it
// is the one the admin named. The CA is fetched from GET /_dproxy/ca.crt
// with certificate checks off (for that one request only: the point is to
// get the certificate that makes checking possible), bounded in size and
// time, and judged by its SHA-256 alone: a mismatch is refused, naming both
// fingerprints, before any file is planned. Then a second request, with that
// CA as the only trust root and the usual host name check, proves the
// server's own certificate chains to it and names the address the clients
// will use, so setup never installs a CA that clients would then fail with.

import { X509Certificate } from 'node:crypto'
import { request, type RequestOptions } from 'node:https'
import { isIP } from 'node:net'
import { CA_PATH } from '../daemon/tls-config.js'
import { DproxyError, truncate } from '../errors.js'
import { certificateFingerprint, parseFingerprint } from '../fingerprint.js'
import { formatHost } from '../net.js'

/** A CA certificate is a few KiB; anything bigger is not one. */
const MAX_CA_BYTES = 64 * 1024

export interface TrustedServer {
  /** `https://HOST:PORT` */
  url: string
  /** `HOST:PORT` (IPv6 in brackets), as clients name the registry. */
  address: string
  /** The CA certificate, PEM. */
  ca: string
  /** `sha256:<hex>` of the CA. */
  fingerprint: string
}

/** `https://HOST[:PORT]` as the server's URL and HOST:PORT; anything else is refused. */
export function parseServerUrl(text: string): { url: string; address: string; host: string; port: number } {
  let u: URL
  try {
    u = new URL(text)
  } catch {
    throw new DproxyError('USAGE', `--server: '${truncate(text)}' is not a URL (expected https://HOST:PORT, as dproxy serve prints it)`)
  }
  if (u.protocol !== 'https:') {
    throw new DproxyError(
      'USAGE',
      `--server: '${truncate(text)}' is not https: a server other machines use speaks TLS (dproxy serve --tls auto); for this machine's own dproxy run dproxy setup without --server`,
    )
  }
  if (u.username !== '' || u.password !== '' || (u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.hash !== '') {
    throw new DproxyError('USAGE', `--server: '${truncate(text)}' must be only https://HOST:PORT (no login, path or query)`)
  }
  const port = u.port === '' ? 443 : Number(u.port)
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase()
  const address = `${formatHost(host)}:${port}`
  return { url: `https://${address}`, address, host, port }
}

/** The --fingerprint a user typed, checked; a missing one is refused with where to find it. */
export function requireFingerprint(server: string, text: string | undefined): string {
  if (text === undefined || text.trim() === '') {
    throw new DproxyError(
      'USAGE',
      `--server ${truncate(server)} needs --fingerprint sha256:<hex>, the fingerprint of the server's CA: dproxy serve prints the whole command, and dproxy status on the server shows it ` +
        '(or, on the server: openssl x509 -noout -fingerprint -sha256 -in <state dir>/tls/ca.pem)',
    )
  }
  const parsed = parseFingerprint(text)
  if (parsed === undefined) {
    throw new DproxyError('USAGE', `--fingerprint: '${truncate(text)}' is not a SHA-256 fingerprint (sha256:<64 hex digits>, or openssl's AB:CD:... form)`)
  }
  return parsed
}

interface Answer {
  status: number
  body: Buffer
}

/** One GET, bounded in time and size; TLS and connection failures reject with the socket's error. */
function get(o: RequestOptions & { timeoutMs: number; maxBytes: number }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const { timeoutMs, maxBytes, ...options } = o
    const req = request({ ...options, method: 'GET', agent: false, signal: AbortSignal.timeout(timeoutMs) }, (res) => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > maxBytes) {
          req.destroy(new DproxyError('SETUP_UNTRUSTED', `the answer of ${o.path} is over ${maxBytes} bytes: not a CA certificate (nothing was changed)`))
          return
        }
        chunks.push(c)
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

function why(err: unknown): string {
  if (err instanceof DproxyError) return err.message
  const e = err as NodeJS.ErrnoException
  if (e.name === 'AbortError' || e.name === 'TimeoutError') return 'no answer in time'
  return e.code !== undefined ? `${e.code}: ${e.message}` : String(e.message ?? err)
}

const PEM = /-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----/

export interface FetchCaOptions {
  /** Bound on each request. Default 10 s. */
  timeoutMs?: number
}

/**
 * Fetches the server's CA, checks it against `fingerprint` (sha256:<hex>) and
 * that the server's certificate chains to it; the CA when all holds. Throws
 * SETUP_UNREACHABLE (no answer, no CA served) or SETUP_UNTRUSTED (another
 * CA, a certificate that does not chain or does not name the host).
 */
export async function fetchServerCa(server: string, fingerprint: string, o: FetchCaOptions = {}): Promise<TrustedServer> {
  const { url, address, host, port } = parseServerUrl(server)
  const timeoutMs = o.timeoutMs ?? 10_000
  const base = { host, port, timeoutMs, maxBytes: MAX_CA_BYTES, ...(isIP(host) === 0 ? { servername: host } : {}) }
  let answer: Answer
  try {
    answer = await get({ ...base, path: CA_PATH, rejectUnauthorized: false })
  } catch (err) {
    if (err instanceof DproxyError) throw err
    throw new DproxyError('SETUP_UNREACHABLE', `cannot fetch ${url}${CA_PATH}: ${why(err)} (nothing was changed)`, { cause: err })
  }
  if (answer.status !== 200) {
    throw new DproxyError(
      'SETUP_UNREACHABLE',
      `${url}${CA_PATH} answered HTTP ${answer.status}: the server does not serve its CA (it does with dproxy serve --tls auto; a server with its own --tls-cert needs its CA installed by hand) (nothing was changed)`,
    )
  }
  const pem = PEM.exec(answer.body.toString('latin1'))?.[0]
  let ca: X509Certificate
  try {
    if (pem === undefined) throw new Error('no PEM certificate in the answer')
    ca = new X509Certificate(pem)
  } catch (err) {
    throw new DproxyError('SETUP_UNTRUSTED', `${url}${CA_PATH} did not answer with a certificate (${why(err)}) (nothing was changed)`, { cause: err })
  }
  const got = certificateFingerprint(ca.raw)
  if (got !== fingerprint) {
    throw new DproxyError(
      'SETUP_UNTRUSTED',
      `${url} presents a CA with fingerprint ${got}, but --fingerprint says ${fingerprint}: refusing to trust it (nothing was changed). ` +
        'Check the fingerprint dproxy serve or dproxy status prints on the server; a different one means this is not that server (or its CA was made anew)',
      { detail: { expected: fingerprint, got } },
    )
  }
  if (!ca.ca) {
    throw new DproxyError('SETUP_UNTRUSTED', `the certificate ${url}${CA_PATH} serves is not a CA certificate (nothing was changed)`)
  }
  const text = `${pem!.trim()}\n`
  try {
    await get({ ...base, path: '/v2/', ca: text, rejectUnauthorized: true })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== undefined && /CERT|SELF_SIGNED|ALTNAME|UNABLE_TO|HOSTNAME/.test(code)) {
      throw new DproxyError(
        'SETUP_UNTRUSTED',
        `${url}'s certificate is not one its CA (${got}) vouches for ${host} with (${why(err)}): refusing to install it (nothing was changed). ` +
          `On the server, add the name: dproxy serve --tls-name ${host}`,
        { cause: err },
      )
    }
    throw new DproxyError('SETUP_UNREACHABLE', `cannot check ${url}'s certificate: ${why(err)} (nothing was changed)`, { cause: err })
  }
  return { url, address, ca: text, fingerprint: got }
}
