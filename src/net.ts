// Which addresses belong to this machine or to a private network. The daemon
// asks when it decides who may use the admin endpoints and whether listening
// needs client auth; the upstream client asks before it calls a token realm a
// registry named (a realm on a private address is refused).

import { BlockList, isIP } from 'node:net'

/**
 * True for addresses only this machine can reach: a listen address (anything
 * else requires client auth) or a peer's address (the admin endpoints answer
 * these only). Brackets and IPv4-mapped IPv6 are accepted.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  if (h === 'localhost' || h === '::1') return true
  if (isIP(h) === 4) return h.startsWith('127.')
  return /^::ffff:127\./.test(h)
}

const privateRanges = new BlockList()
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
] as const) {
  privateRanges.addSubnet(net, prefix, 'ipv4')
}
for (const [net, prefix] of [
  ['::1', 128],
  ['::', 128],
  ['fc00::', 7],
  ['fe80::', 10],
] as const) {
  privateRanges.addSubnet(net, prefix, 'ipv6')
}

export function isPrivateAddress(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '')
  if (host === 'localhost' || host.endsWith('.localhost')) return true
  const family = isIP(host)
  if (family === 0) return false
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host)
  if (mapped) return privateRanges.check(mapped[1]!, 'ipv4')
  return privateRanges.check(host, family === 4 ? 'ipv4' : 'ipv6')
}
