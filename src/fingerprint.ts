// How dproxy names a certificate to a person: `sha256:<64 hex>`, the SHA-256
// of its DER bytes. `dproxy serve` prints it for its CA and `dproxy setup
// --server URL --fingerprint F` checks the CA it fetched against it, so the
// one spelling lives here. Setup also takes the colon-separated upper-case
// form that `openssl x509 -fingerprint -sha256` prints (with or without its
// `sha256 Fingerprint=` label), because that is what an admin can compute on
// the server without dproxy.

import { createHash, X509Certificate } from 'node:crypto'

const PREFIX = 'sha256:'

/** The fingerprint of a certificate (PEM text, or DER bytes) as `sha256:<lower-case hex>`. */
export function certificateFingerprint(certificate: string | Uint8Array): string {
  const der = typeof certificate === 'string' ? new X509Certificate(certificate).raw : certificate
  return PREFIX + createHash('sha256').update(der).digest('hex')
}

/**
 * A fingerprint a person typed, in dproxy's form or openssl's, as
 * `sha256:<lower-case hex>`; undefined when it is neither (so a truncated
 * or mistyped one is refused, never matched loosely).
 */
export function parseFingerprint(text: string): string | undefined {
  let s = text.trim()
  const label = /^sha-?256\s*fingerprint\s*=\s*/i.exec(s)
  if (label) s = s.slice(label[0].length)
  else if (s.toLowerCase().startsWith(PREFIX)) s = s.slice(PREFIX.length)
  const hex = /^[0-9a-f]{2}(:[0-9a-f]{2}){31}$/i.test(s) ? s.replaceAll(':', '') : s
  return /^[0-9a-f]{64}$/i.test(hex) ? PREFIX + hex.toLowerCase() : undefined
}
