// Where the upstream client may connect. Clients name registries
// (`/v2/<host>/...`, `?ns=<host>`) and registries name more URLs (blob
// redirects, token realms); without a rule any of them could point dproxy at
// a service on this machine or its network (the admin API, a cloud metadata
// endpoint) and have the answer streamed back to the client (SSRF).
//
// The rule: a request for a registry the user did not configure goes only to
// public unicast addresses (net.ts isInternalAddress), over http or https. A
// configured upstream (`--upstream`, `upstreams`) is trusted, and so are its
// redirects and realms: a team mirror may live on a private address with its
// object store next to it.
//
// The address judged is the one connected to. Names are resolved inside the
// guarded dispatcher's `lookup` (net.connect honours it), which hands the
// socket only addresses that passed, so a name that answers differently the
// second time (DNS rebinding) gains nothing. IP literals never go through
// lookup, so check() judges them, and `localhost` names, before any request.

import { promises as dns, type LookupAddress, type LookupOptions } from 'node:dns'
import { isIP } from 'node:net'
import { DproxyError } from '../errors.js'
import { isInternalAddress } from '../net.js'

/** Every address a host name resolves to. */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>

export const systemResolver: Resolver = (hostname) => dns.lookup(hostname, { all: true, verbatim: true })

export interface AddressPolicyOptions {
  /** Default: the system resolver. Tests map made-up names (`rebind.test`) to fixture addresses. */
  resolve?: Resolver
  /**
   * Default: isInternalAddress. The one test seam for reaching a fixture on
   * loopback as if it were a public registry: a test narrows it by one address.
   */
  isInternal?: (address: string) => boolean
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

export class AddressPolicy {
  private readonly resolve: Resolver
  private readonly isInternal: (address: string) => boolean

  constructor(options: AddressPolicyOptions = {}) {
    this.resolve = options.resolve ?? systemResolver
    this.isInternal = options.isInternal ?? isInternalAddress
  }

  /**
   * Throws unless a request for `registry` may go to `url`: http(s) only, and
   * for a registry that is not trusted, no internal IP literal or localhost name.
   */
  check(url: URL, registry: string, trusted: boolean): void {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new DproxyError('UPSTREAM_INVALID', `${registry} named a ${url.protocol} URL; only http and https are followed`)
    }
    if (trusted) return
    const host = url.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase()
    const internal = isIP(host) === 0 ? host === 'localhost' || host.endsWith('.localhost') : this.isInternal(host)
    if (internal) {
      throw new DproxyError(
        'DENIED',
        `refusing to contact ${url.host} for ${registry}: it is a loopback, private or otherwise internal address, ` +
          `which dproxy contacts only for a configured upstream (--upstream)`,
        { detail: { registry, host: url.host } },
      )
    }
  }

  /** A net.connect `lookup` that resolves through the resolver and keeps only addresses that are not internal. */
  readonly lookup = (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family || 0
    this.resolve(hostname).then(
      (all) => {
        const candidates = all.filter((a) => family === 0 || a.family === family)
        const allowed = candidates.filter((a) => !this.isInternal(a.address))
        const first = allowed[0]
        if (!first) {
          const err =
            candidates.length === 0
              ? Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' })
              : new DproxyError(
                  'DENIED',
                  // The addresses are not quoted: a client should not learn how internal names resolve.
                  `refusing to connect to ${hostname}: it resolves only to loopback, private or otherwise internal ` +
                    'addresses, which dproxy contacts only for a configured upstream (--upstream)',
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
