// Which address clients are told: the running daemon's (its daemon.json in
// the cache dir says where it listens, also after `dproxy start --port`),
// else the configured one. A loopback IPv4 address is preferred because every
// client reaches it without a DNS or IPv6 question; a wildcard listen address
// is reached through loopback.

import { readDaemonLock } from '../daemon/lifecycle.js'
import { isLoopbackHost } from '../net.js'
import { DproxyError } from '../errors.js'
import { allowedRegistries, type UpstreamMap } from '../upstream/registries.js'
import { isValidRegistryHost, canonicalRegistry } from '../oci/registry-host.js'

function pick(candidates: string[]): string | undefined {
  const local = candidates.map((a) => a.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:'))
  const host = (a: string) => a.slice(0, a.lastIndexOf(':'))
  return local.find((a) => host(a).startsWith('127.')) ?? local.find((a) => isLoopbackHost(host(a))) ?? local[0]
}

export async function clientAddress(settings: { cacheDir: string; hosts: string[]; port: number }): Promise<{ address: string; running: boolean }> {
  const lock = await readDaemonLock(settings.cacheDir)
  if (lock?.alive && lock.info.listen.length > 0) {
    const address = pick(lock.info.listen)
    if (address !== undefined) return { address, running: true }
  }
  const configured = settings.hosts.map((h) => `${h.includes(':') ? `[${h}]` : h}:${settings.port}`)
  return { address: pick(configured) ?? `127.0.0.1:${settings.port}`, running: false }
}

/** --registries, or docker.io, the configured upstreams and the well-known public registries. */
export function setupRegistries(list: string | undefined, upstreams: UpstreamMap): string[] {
  const named = list === undefined ? allowedRegistries(undefined, upstreams) : list.split(',')
  const out: string[] = []
  for (const raw of named.map((r) => r.trim()).filter((r) => r !== '')) {
    if (!isValidRegistryHost(raw)) throw new DproxyError('USAGE', `--registries: '${raw}' is not a registry host (like ghcr.io or registry.local:5000)`)
    const registry = canonicalRegistry(raw)
    if (!out.includes(registry)) out.push(registry)
  }
  if (out.length === 0) throw new DproxyError('USAGE', '--registries: name at least one registry')
  return out
}
