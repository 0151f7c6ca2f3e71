// One spelling per registry host. Docker Hub answers to several host names
// (index.docker.io is what `docker login` stores, registry-1.docker.io is where
// the API lives); image names, credentials, upstream overrides and cache keys
// must all agree on 'docker.io', and only registryOrigin knows the API host. The host grammar (name[:port], IPv4, [IPv6])
// is checked here before a host becomes a file name or an upstream URL.

import { isIPv4, isIPv6 } from 'node:net'
import { DproxyError } from '../errors.js'

export const DOCKER_HUB = 'docker.io'

/** Where Docker Hub's registry API lives: not at its image-name host. */
const DOCKER_HUB_API = 'https://registry-1.docker.io'

const dockerHubAliases = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.docker.io'])

/**
 * The URL of a registry's API when nothing maps the registry elsewhere: what
 * dproxy contacts upstream, and the origin clients are told to fall back to.
 * Every registry but Docker Hub serves it over HTTPS at its own host.
 */
export function registryOrigin(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : `https://${registry}`
}

/** Folds Docker Hub's aliases into 'docker.io' and lower-cases; for hosts already checked. */
export function canonicalRegistry(host: string): string {
  const lower = host.toLowerCase()
  return dockerHubAliases.has(lower) ? DOCKER_HUB : lower
}

const hostLabel = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

/** True for `host`, `host:port`, IPv4 with optional port and `[ipv6]` with optional port. */
export function isValidRegistryHost(input: string): boolean {
  const value = input.toLowerCase()
  const isPort = (p: string | undefined) => p === undefined || (/^\d{1,5}$/.test(p) && Number(p) >= 1 && Number(p) <= 65535)
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(value)
  if (bracketed) return isIPv6(bracketed[1]!) && isPort(bracketed[2])
  const colon = value.lastIndexOf(':')
  const host = colon === -1 ? value : value.slice(0, colon)
  const port = colon === -1 ? undefined : value.slice(colon + 1)
  const hostname = host.length <= 253 && host.split('.').every((label) => hostLabel.test(label))
  return (isIPv4(host) || hostname) && isPort(port)
}

/**
 * A registry host the user typed (config, `--upstream`, `dproxy login`): trimmed,
 * lower-cased, Docker Hub aliases folded into 'docker.io'. Throws
 * CONFIG_INVALID for anything that is not hostname[:port]; `what` names the
 * input in that message.
 */
export function parseRegistryHost(input: string, what = 'a registry host'): string {
  const value = input.trim().toLowerCase()
  if (!isValidRegistryHost(value)) {
    throw new DproxyError('CONFIG_INVALID', `expected ${what} like 'ghcr.io' or 'localhost:5000', got '${input}'`, {
      detail: { value: input },
    })
  }
  return canonicalRegistry(value)
}
