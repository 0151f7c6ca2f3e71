// One spelling per registry. Docker Hub answers to several host names
// (index.docker.io is what `docker login` stores, registry-1.docker.io is where
// the API lives); credentials, upstream overrides and cache keys must all agree
// on 'docker.io' or a login under one name would be missed under another. Both
// src/config (upstream overrides) and src/credentials use this module.

import net from 'node:net'
import { DproxyError } from '../errors.js'

/** The key under which every Docker Hub alias is stored. */
export const DOCKER_HUB = 'docker.io'

/**
 * Pseudo-registry under which the daemon's client password (`dproxy env
 * --rotate`) lives in the credential store. It is a valid registry key, so it
 * needs no code of its own, and no real registry is called that (no dot, no port).
 */
export const CLIENT_SECRET_KEY = 'dproxy-client'

const dockerHubAliases = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.docker.io'])

const label = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

function isHostname(host: string): boolean {
  return host.length <= 253 && host.split('.').every((part) => label.test(part))
}

function isPort(port: string): boolean {
  return /^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535
}

/** True for 'host', 'host:port', IPv4 with optional port, and '[ipv6]' with optional port. */
export function isRegistryHost(input: string): boolean {
  const value = input.toLowerCase()
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(value)
  if (bracketed) {
    const [, address = '', port] = bracketed
    return net.isIPv6(address) && (port === undefined || isPort(port))
  }
  const colon = value.lastIndexOf(':')
  const host = colon === -1 ? value : value.slice(0, colon)
  const port = colon === -1 ? undefined : value.slice(colon + 1)
  return (net.isIPv4(host) || isHostname(host)) && (port === undefined || isPort(port))
}

/**
 * The canonical key for a registry host: trimmed, lower-cased, Docker Hub
 * aliases folded into 'docker.io'. Throws CONFIG_INVALID for anything that is
 * not hostname[:port]; `what` names the input in that message.
 */
export function normalizeRegistry(input: string, what = 'a registry host'): string {
  const value = input.trim().toLowerCase()
  if (!isRegistryHost(value)) {
    throw new DproxyError('CONFIG_INVALID', `expected ${what} like 'ghcr.io' or 'localhost:5000', got '${input}'`, {
      detail: { value: input },
    })
  }
  return dockerHubAliases.has(value) ? DOCKER_HUB : value
}
