// Where the upstream client may connect. Clients name registries
// (`/v2/<host>/...`, `?ns=<host>`) and registries name more URLs (blob
// redirects, token realms); without a rule any of them could point dproxy at
// a service on this machine or its network (the admin API, a cloud metadata
// endpoint) and have the answer streamed back to the client (SSRF).
//
// The rule, by the reach a request is given:
// - a registry the user did not configure goes only to public unicast
//   addresses (net.ts isInternalAddress), over http or https: reach `public`;
// - a configured upstream (`--upstream`, `upstreams`) is contacted wherever it
//   lives, as the user named it: reach `internal`;
// - what a configured upstream names elsewhere (a blob redirect, a token
//   realm on another origin) gets the reach of the upstream itself: an
//   upstream on an internal address (a team mirror and its object store on
//   the LAN, a test fixture on loopback) may lead to internal addresses, one
//   on a public address only to public ones. classify() decides which an
//   upstream is, from the addresses its name resolves to;
// - whatever the reach, never dproxy's own listeners (the daemon hands them
//   down as `ownListeners`): a redirect to `/_dproxy/status` would be answered
//   by dproxy itself and streamed back to the client.
//
// The address judged is the one connected to. Names are resolved inside the
// dispatchers' `lookup` (net.connect honours it); for reach `public` it hands
// the socket only addresses that passed, so a name that answers differently the
// second time (DNS rebinding) gains nothing; and every socket, whatever its
// reach, is checked once connected against the own listeners (guard()), as
// only then are address and port known together. IP literals never go
// through lookup, so check() judges them, and `localhost` names, before any
// request.

import { promises as dns, type LookupAddress, type LookupOptions } from 'node:dns'
import { BlockList, isIP, type Socket } from 'node:net'
import { networkInterfaces } from 'node:os'
import { DproxyError } from '../errors.js'
import { isInternalAddress } from '../net.js'

/** Every address a host name resolves to. */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>

export const systemResolver: Resolver = (hostname) => dns.lookup(hostname, { all: true, verbatim: true })

/**
 * What a request may connect to: `public` only public unicast addresses,
 * `internal` also loopback, private, link-local and unique-local ones.
 * Neither reaches dproxy's own listeners.
 */
export type Reach = 'public' | 'internal'

/** An address and port dproxy itself listens on (`0.0.0.0` and `::` stand for every address of this machine). */
export interface Endpoint {
  host: string
  port: number
}

export interface AddressPolicyOptions {
  /** Default: the system resolver. Tests map made-up names (`rebind.test`) to fixture addresses. */
  resolve?: Resolver
  /**
   * Default: isInternalAddress. The one test seam for reaching a fixture on
   * loopback as if it were a public registry: a test narrows it by one address.
   */
  isInternal?: (address: string) => boolean
  /** Where dproxy listens now, asked on every connection (the daemon's listeners appear once it listens). */
  ownListeners?: () => readonly Endpoint[]
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

const loopback = new BlockList()
loopback.addSubnet('127.0.0.0', 8, 'ipv4')
loopback.addAddress('::1', 'ipv6')

function family(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 6 ? 'ipv6' : 'ipv4'
}

/** The host of a URL as an address or a lower-case name: no brackets, no trailing dot, no zone. */
function bare(hostname: string): string {
  return hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').replace(/%.*$/, '').toLowerCase()
}

function isLocalhostName(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost')
}

function defaultPort(url: URL): number {
  return url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80
}

export class AddressPolicy {
  private readonly resolve: Resolver
  private readonly isInternal: (address: string) => boolean
  private readonly ownListeners: () => readonly Endpoint[]

  constructor(options: AddressPolicyOptions = {}) {
    this.resolve = options.resolve ?? systemResolver
    this.isInternal = options.isInternal ?? isInternalAddress
    this.ownListeners = options.ownListeners ?? (() => [])
  }

  /**
   * Throws unless a request for `registry` with `reach` may go to `url`:
   * http(s) only, never an IP literal or localhost name of dproxy's own
   * listeners, and with reach `public` no internal IP literal or localhost name.
   */
  check(url: URL, registry: string, reach: Reach): void {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new DproxyError('UPSTREAM_INVALID', `${registry} named a ${url.protocol} URL; only http and https are followed`)
    }
    const host = bare(url.hostname)
    const port = defaultPort(url)
    const addresses = isIP(host) !== 0 ? [host] : isLocalhostName(host) ? ['127.0.0.1', '::1'] : []
    if (addresses.some((a) => this.isOwn(a, port))) throw ownRefused(url.host, registry)
    if (reach === 'internal') return
    const internal = isIP(host) === 0 ? isLocalhostName(host) : this.isInternal(host)
    if (internal) {
      throw new DproxyError(
        'DENIED',
        `refusing to contact ${url.host} for ${registry}: it is a loopback, private or otherwise internal address, ` +
          `which dproxy contacts only for a configured upstream (--upstream) that is itself on an internal address`,
        { detail: { registry, host: url.host } },
      )
    }
  }

  /**
   * The reach of what a configured upstream at `base` names elsewhere:
   * `internal` when it is on an internal address itself (every address its
   * name resolves to is one), `public` otherwise, also when the name does
   * not resolve (nothing is lost: the upstream itself is then unreachable too).
   */
  async classify(base: URL): Promise<Reach> {
    const host = bare(base.hostname)
    if (isIP(host) !== 0) return this.isInternal(host) ? 'internal' : 'public'
    if (isLocalhostName(host)) return 'internal'
    const all = await this.resolve(host).catch(() => [])
    return all.length > 0 && all.every((a) => this.isInternal(a.address)) ? 'internal' : 'public'
  }

  /**
   * True when a connection to `address`:`port` would reach dproxy itself: a
   * listener on that address (any loopback address for a loopback listener),
   * or a wildcard listener and any address of this machine.
   */
  isOwn(address: string, port: number, localAddress?: string): boolean {
    const a = bare(address)
    if (isIP(a) === 0) return false
    for (const listener of this.ownListeners()) {
      if (listener.port !== port) continue
      const host = bare(listener.host)
      if (isIP(host) === 0 || host === '0.0.0.0' || host === '::') {
        if (isThisMachine(a, localAddress)) return true
        continue
      }
      const same = new BlockList()
      same.addAddress(host, family(host))
      if (same.check(a, family(a))) return true
      if (loopback.check(host, family(host)) && loopback.check(a, family(a))) return true
    }
    return false
  }

  /** Throws DENIED when a connected socket reached one of dproxy's own listeners (the caller destroys it). */
  guard(socket: Pick<Socket, 'remoteAddress' | 'remotePort' | 'localAddress'>, hostname: string): void {
    const { remoteAddress, remotePort } = socket
    if (remoteAddress !== undefined && remotePort !== undefined && this.isOwn(remoteAddress, remotePort, socket.localAddress)) {
      throw ownRefused(hostname, undefined)
    }
  }

  /** A net.connect `lookup` for reach `public`: resolves through the resolver and keeps only addresses that are not internal. */
  readonly lookup = (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    this.lookupWith(hostname, options, callback, (a) => !this.isInternal(a))
  }

  /** A net.connect `lookup` for reach `internal`: the same resolver, every address (the own listeners are guard()'s). */
  readonly lookupAny = (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    this.lookupWith(hostname, options, callback, () => true)
  }

  private lookupWith(hostname: string, options: LookupOptions, callback: LookupCallback, allow: (address: string) => boolean): void {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family || 0
    this.resolve(hostname).then(
      (all) => {
        const candidates = all.filter((a) => family === 0 || a.family === family)
        const allowed = candidates.filter((a) => allow(a.address))
        const first = allowed[0]
        if (!first) {
          const err =
            candidates.length === 0
              ? Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' })
              : new DproxyError(
                  'DENIED',
                  // The addresses are not quoted: a client should not learn how internal names resolve.
                  `refusing to connect to ${hostname}: it resolves only to loopback, private or otherwise internal ` +
                    'addresses, which dproxy contacts only for a configured upstream (--upstream) that is itself on one',
                  { detail: { host: hostname } },
                )
          callback(err, '', 0)
        } else if (options.all) callback(null, allowed)
        else callback(null, first.address, first.family)
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    )
  }
}

function ownRefused(host: string, registry: string | undefined): DproxyError {
  return new DproxyError(
    'DENIED',
    `refusing to contact ${host}${registry === undefined ? '' : ` for ${registry}`}: it is dproxy's own listener, ` +
      'which an upstream never leads to',
    { detail: { host, ...(registry === undefined ? {} : { registry }) } },
  )
}

/** Loopback, an address of one of this machine's interfaces, or the socket's own local address (a connection to itself). */
function isThisMachine(address: string, localAddress: string | undefined): boolean {
  if (address === '0.0.0.0' || address === '::' || loopback.check(address, family(address))) return true
  const mine = new BlockList()
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) mine.addAddress(i.address.replace(/%.*$/, ''), i.family === 'IPv6' ? 'ipv6' : 'ipv4')
  }
  if (localAddress !== undefined && isIP(bare(localAddress)) !== 0) mine.addAddress(bare(localAddress), family(bare(localAddress)))
  return mine.check(address, family(address))
}
