// Which addresses belong to this machine or to a private network. The daemon
// asks when it decides who may use the admin endpoints and whether listening
// needs client auth; the upstream address policy (upstream/policy.ts) asks
// before it lets a request for a registry a client named reach an address:
// whatever is not a public unicast address is "internal" there.
//
// IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d, the old
// compatible ::a.b.c.d, NAT64 64:ff9b::/96 and 6to4 2002::/16) are judged by
// the IPv4 address inside, in any spelling (URL parsing turns
// [::ffff:127.0.0.1] into [::ffff:7f00:1]).

import { BlockList, isIP } from 'node:net'

/**
 * True for addresses only this machine can reach: a listen address (anything
 * else requires client auth) or a peer's address (the admin endpoints answer
 * these only). Judged on the address, not its spelling: brackets, IPv4-mapped
 * IPv6, `0:0:0:0:0:0:0:1`, and the short, octal, hex and decimal IPv4 forms
 * the resolver takes for a listen address (`127.1`, `0x7f.1`, `2130706433`).
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase()
  if (h === 'localhost') return true
  if (isIP(h) === 6) {
    const g = ipv6Groups(h)
    if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return true
    return g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff && loopbackV4.check(v4(g[6]!, g[7]!), 'ipv4')
  }
  const address = isIP(h) === 4 ? h : ipv4Of(h)
  return address !== undefined && loopbackV4.check(address, 'ipv4')
}

const loopbackV4 = new BlockList()
loopbackV4.addSubnet('127.0.0.0', 8, 'ipv4')

/**
 * The dotted-quad form of an IPv4 address in any spelling inet_aton takes,
 * or undefined for anything else. The URL host parser applies exactly those
 * rules (WHATWG "IPv4 parser"), so it does the work; only digits, hex and dots
 * reach it.
 */
function ipv4Of(host: string): string | undefined {
  if (!/^[0-9a-fx.]+$/.test(host)) return undefined
  try {
    const parsed = new URL(`http://${host}/`).hostname
    return isIP(parsed) === 4 ? parsed : undefined
  } catch {
    return undefined
  }
}

/** A host as it goes before `:port` in an address or URL: IPv6 in brackets. */
export function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host
}

/** The listen addresses that other machines can reach (the daemon then requires client auth and an allow-list). */
export function exposedHosts(hosts: readonly string[]): string[] {
  return hosts.filter((host) => !isLoopbackHost(host))
}

const internalV4 = new BlockList()
for (const [net, prefix] of [
  ['0.0.0.0', 8], // "this network", unspecified
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, cloud metadata
  ['172.16.0.0', 12],
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  internalV4.addSubnet(net, prefix, 'ipv4')
}

const internalV6 = new BlockList()
for (const [net, prefix] of [
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // old site-local
  ['ff00::', 8], // multicast
] as const) {
  internalV6.addSubnet(net, prefix, 'ipv6')
}

/** The eight 16-bit groups of a valid IPv6 address (zone id dropped). */
function ipv6Groups(address: string): number[] {
  let text = address.replace(/%.*$/, '')
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number]
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, tail] = text.split('::') as [string, string | undefined]
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)))
  const front = parse(head)
  if (tail === undefined) return front
  const back = parse(tail)
  return [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back]
}

function v4(hi: number, lo: number): string {
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`
}

/** The IPv4 address an IPv6 address stands for or tunnels to, if any. */
function embeddedIPv4(g: number[]): string | undefined {
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0)
  if (zeros(0, 5) && (g[5] === 0xffff || g[5] === 0)) return v4(g[6]!, g[7]!) // mapped, compatible (and :: and ::1)
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return v4(g[6]!, g[7]!) // NAT64
  if (g[0] === 0x2002) return v4(g[1]!, g[2]!) // 6to4
  return undefined
}

/**
 * True for an IP address that is not a public unicast address: loopback,
 * private (RFC 1918, fc00::/7), link-local, CGNAT, multicast, unspecified,
 * reserved, and IPv6 forms of those. False for host names.
 */
export function isInternalAddress(address: string): boolean {
  const family = isIP(address)
  if (family === 4) return internalV4.check(address, 'ipv4')
  if (family !== 6) return false
  const groups = ipv6Groups(address)
  const inner = embeddedIPv4(groups)
  if (inner !== undefined) return internalV4.check(inner, 'ipv4')
  return internalV6.check(address.replace(/%.*$/, ''), 'ipv6')
}

/** Like isInternalAddress for a URL's hostname: brackets allowed, and `localhost` names count as internal. */
export function isPrivateAddress(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase()
  if (host === 'localhost' || host.endsWith('.localhost')) return true
  return isInternalAddress(host)
}
