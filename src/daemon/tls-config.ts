// What the rest of dproxy needs to know of the daemon's TLS without loading
// it: the configuration the settings ask for, the path of the CA endpoint,
// what status reports, and the command other machines run to trust the
// daemon. The certificates themselves (tls.ts, with node:tls and node:https)
// load only when a listener speaks HTTPS, so a plain daemon's start-up and
// idle memory carry none of it.

import { networkInterfaces } from 'node:os'
import { join } from 'node:path'
import { isLoopbackHost } from '../net.js'

export type TlsConfig = { mode: 'auto'; dir: string; names?: readonly string[] } | { mode: 'files'; cert: string; key: string }

/** Where every listener serves the CA of --tls auto (GET, no auth; 404 without one). */
export const CA_PATH = '/_dproxy/ca.crt'

/** What `status` says about TLS (`status --json`'s `tls`). */
export interface TlsStatus {
  mode: 'off' | 'auto' | 'files'
  subject?: string
  /** DNS names and IP addresses the certificate covers. */
  names?: string[]
  notAfter?: string
  /** The server certificate's fingerprint (the CLI pins it when it talks to this daemon). */
  fingerprint?: string
  /** --tls auto: the CA's fingerprint, for `dproxy setup --server URL --fingerprint F`. */
  caFingerprint?: string
  cert?: string
  key?: string
  /** The last reload or renewal that failed (the previous certificate kept serving); absent after a good one. */
  lastError?: { message: string; at: string }
}

/** The TLS configuration the settings ask for; undefined for plain HTTP. */
export function tlsConfigOf(settings: { tls: 'off' | 'auto'; tlsCert: string | undefined; tlsKey: string | undefined; tlsNames: readonly string[]; stateDir: string }): TlsConfig | undefined {
  if (settings.tls === 'auto') return { mode: 'auto', dir: join(settings.stateDir, 'tls'), names: settings.tlsNames }
  if (settings.tlsCert !== undefined && settings.tlsKey !== undefined) return { mode: 'files', cert: settings.tlsCert, key: settings.tlsKey }
  return undefined
}

/**
 * The command another machine runs to trust this daemon (--tls auto, beyond
 * loopback): `dproxy setup --server https://HOST:PORT --fingerprint F`, HOST
 * being the first address others can reach (for a wildcard, this machine's
 * first such interface address, IPv4 first).
 */
export function trustCommand(
  listening: ReadonlyArray<{ host: string; port: number }>,
  caFingerprint: string,
  interfaces = networkInterfaces(),
): string | undefined {
  const reachable = (address: string) => !isLoopbackHost(address) && !/^fe80:/i.test(address)
  for (const a of listening) {
    if (isLoopbackHost(a.host)) continue
    let host: string | undefined = a.host
    if (a.host === '0.0.0.0' || a.host === '::') {
      const all = Object.values(interfaces).flatMap((list) => list ?? [])
      const v4 = all.find((i) => i.family === 'IPv4' && reachable(i.address))
      const v6 = a.host === '::' ? all.find((i) => i.family === 'IPv6' && reachable(i.address)) : undefined
      host = (v4 ?? v6)?.address
    }
    if (host === undefined) continue
    return `dproxy setup --server https://${host.includes(':') ? `[${host}]` : host}:${a.port} --fingerprint ${caFingerprint}`
  }
  return undefined
}
