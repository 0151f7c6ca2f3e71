// Who may talk to the daemon from a browser: nobody. A web page can make the
// user's browser send requests to 127.0.0.1:5000 in two ways, and each has its
// check here.
//
// - A cross-site request (a form POST, `fetch` in no-cors mode) carries the
//   page's `Origin`. The daemon serves no pages, so no legitimate request to
//   its admin endpoints has one from elsewhere: any Origin that is not the
//   daemon's own address is refused.
// - DNS rebinding: the page's own name is re-pointed at 127.0.0.1, so the
//   request is "same-origin" for the browser and has no Origin at all, but its
//   `Host` is still the attacker's name. Only names that cannot be rebound are
//   accepted: loopback names and addresses (localhost, *.localhost, 127.x,
//   [::1]), the names Docker Desktop and podman give the host machine inside
//   their VMs, and the addresses the daemon was told to listen on. This
//   applies to the admin endpoints always, and to the registry API on
//   loopback listeners. A daemon listening beyond loopback must have client
//   auth (daemon.ts), which a rebinding page cannot supply, so its registry
//   API takes any Host: remote clients reach it under names dproxy cannot
//   know (DNS names, NAT, a wildcard address).
//
// Finally, what changes state (every method but GET and HEAD) needs the admin
// token: a secret in `<stateDir>/admin-token` (0600, in a 0700 dir), which the
// CLI reads and sends as `x-dproxy-admin-token`. A browser can neither read
// the file nor add that header to a cross-site request without a preflight
// the daemon never grants.

import { randomBytes, timingSafeEqual, createHash } from 'node:crypto'
import { constants, promises as fs } from 'node:fs'
import { dirname } from 'node:path'
import type { IncomingMessage } from 'node:http'
import { DproxyError, truncate } from '../errors.js'
import { isLoopbackHost } from '../net.js'

export const ADMIN_TOKEN_HEADER = 'x-dproxy-admin-token'
export const ADMIN_TOKEN_FILE = 'admin-token'

/** Names a rebinding page cannot own: reserved for this machine, or handed out by a local VM's resolver. */
const HOST_MACHINE_NAMES = new Set(['host.docker.internal', 'host.containers.internal'])

/** The name in a Host header without its port, lower case, IPv6 without brackets; undefined when malformed. */
export function hostName(header: string): string | undefined {
  const h = header.trim().toLowerCase()
  const v6 = /^\[([0-9a-f:.]+)\](?::\d{1,5})?$/.exec(h)
  if (v6) return v6[1]
  const named = /^([a-z0-9.-]+)(?::\d{1,5})?$/.exec(h)
  return named?.[1]?.replace(/\.$/, '')
}

export interface HostPolicy {
  /** The addresses and names the daemon listens on, as configured. */
  listenHosts: readonly string[]
}

/** Whether a Host header names this machine in a way DNS rebinding cannot forge (see the module comment). */
export function isTrustedHost(header: string | undefined, policy: HostPolicy): boolean {
  // HTTP/1.0 without Host: not a browser.
  if (header === undefined) return true
  const name = hostName(header)
  if (name === undefined) return false
  if (isLoopbackHost(name) || name.endsWith('.localhost') || HOST_MACHINE_NAMES.has(name)) return true
  return policy.listenHosts.some((h) => h.replace(/^\[|\]$/g, '').toLowerCase() === name && !isWildcard(h))
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]'
}

/** Throws DENIED (421) for a Host that is not this machine's. */
export function checkHost(req: IncomingMessage, policy: HostPolicy): void {
  if (!isTrustedHost(req.headers.host, policy)) {
    throw new DproxyError('DENIED', `this dproxy does not answer to Host '${truncate(String(req.headers.host))}'`, {
      status: 421,
    })
  }
}

/**
 * The registry API's Host check for a daemon listening on `listenHosts`: on a
 * loopback connection, this machine's names only; none when a wildcard
 * address is among them (client auth guards it, see the module comment).
 */
export function registryHostCheck(listenHosts: readonly string[]): (req: IncomingMessage) => void {
  if (listenHosts.some(isWildcard)) return () => undefined
  return (req) => {
    if (isLoopbackHost(req.socket.localAddress ?? '')) checkHost(req, { listenHosts })
  }
}

/** Throws DENIED (403) for a request a web page sent: an Origin other than the daemon itself. */
export function checkOrigin(req: IncomingMessage): void {
  const origin = req.headers.origin
  if (origin === undefined) return
  let same = false
  try {
    const u = new URL(origin)
    same = u.protocol === 'http:' && req.headers.host !== undefined && u.host === req.headers.host.toLowerCase()
  } catch {
    same = false
  }
  if (!same) throw new DproxyError('DENIED', `requests from web pages (Origin '${truncate(origin)}') are refused`)
}

/** Throws DENIED (403) unless the request carries the admin token. */
export function checkAdminToken(req: IncomingMessage, token: string): void {
  const given = req.headers[ADMIN_TOKEN_HEADER]
  if (typeof given !== 'string' || !sameSecret(given, token)) {
    throw new DproxyError(
      'DENIED',
      `${req.method ?? 'this method'} on the admin endpoints needs the admin token in the ${ADMIN_TOKEN_HEADER} header ` +
        `(the dproxy CLI sends it, from ${ADMIN_TOKEN_FILE} in its state dir)`,
    )
  }
}

/** Compares in constant time, whatever the lengths (hashing first makes them equal). */
export function sameSecret(a: string, b: string): boolean {
  const h = (s: string) => createHash('sha256').update(s, 'utf8').digest()
  return timingSafeEqual(h(a), h(b))
}

const TOKEN_RE = /^[A-Za-z0-9_-]{20,200}$/

/** A fresh token, for a daemon that has no file to keep it in (nobody can then change its state). */
export function newAdminToken(): string {
  return randomBytes(32).toString('base64url')
}

/**
 * Reads the admin token from `file`, creating it (0600, its directory 0700)
 * when missing. A file that is not a regular file or holds no token is an
 * error rather than replaced: something else is there. One with looser
 * permissions is tightened.
 */
export async function ensureAdminToken(file: string): Promise<string> {
  await fs.mkdir(dirname(file), { recursive: true, mode: 0o700 })
  try {
    await fs.writeFile(file, `${newAdminToken()}\n`, { flag: 'wx', mode: 0o600 })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  const fh = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW).catch((err: unknown) => {
    throw new DproxyError('CONFIG_INVALID', `cannot read the admin token ${file}: ${(err as Error).message}`, { cause: err })
  })
  try {
    const st = await fh.stat()
    if (!st.isFile()) throw new DproxyError('CONFIG_INVALID', `${file} is not a regular file; remove it so dproxy can create its admin token`)
    if ((st.mode & 0o077) !== 0) await fh.chmod(0o600)
    return parseToken(await fh.readFile('utf8'), file)
  } finally {
    await fh.close()
  }
}

/** The admin token in `file` (for the CLI); undefined when there is none. */
export async function readAdminToken(file: string): Promise<string | undefined> {
  const text = await fs.readFile(file, 'utf8').catch(() => undefined)
  return text === undefined ? undefined : parseToken(text, file)
}

function parseToken(text: string, file: string): string {
  const token = text.trim()
  if (!TOKEN_RE.test(token)) {
    throw new DproxyError('CONFIG_INVALID', `${file} does not hold a dproxy admin token; remove it and restart the daemon`)
  }
  return token
}
