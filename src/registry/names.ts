// Turns the path a client asked for into the image it means: which registry,
// which repository there, and which tag or digest. Everything that later
// becomes a file name or an upstream URL passes through here first, so the
// grammar is enforced strictly (the OCI name and reference rules) and nothing
// that could walk out of the cache directory gets any further.
//
// The forms a client may use:
//   alpine                                  -> docker.io library/alpine
//   bitnami/redis                           -> docker.io bitnami/redis
//   ghcr.io/owner/img                       -> ghcr.io owner/img (first component looks like a host)
//   group/dependency_proxy/containers/img   -> GitLab's alias for img
//   library/alpine?ns=docker.io             -> containerd's mirror form (registry from ?ns=)

import { isIPv4, isIPv6 } from 'node:net'
import { DproxyError } from '../errors.js'

export const DOCKER_HUB = 'docker.io'

const dockerHubAliases = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.docker.io'])

/** One path component of a repository name (OCI distribution spec). */
const componentRe = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/
const tagRe = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/
const digestAlgorithms: Record<string, number> = { sha256: 64, sha512: 128 }

export interface ImageName {
  /** Canonical registry host, `docker.io` for Docker Hub. */
  registry: string
  /** Repository path inside that registry, `library/alpine` for official images. */
  repository: string
}

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest }

export interface Digest {
  algorithm: 'sha256' | 'sha512'
  hex: string
  /** `algorithm:hex` */
  value: string
}

export function normalizeRegistry(host: string): string {
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

export function parseDigest(value: string): Digest {
  const m = /^([a-z0-9]+):([a-f0-9]+)$/.exec(value)
  const algorithm = m?.[1]
  if (!m || algorithm === undefined || digestAlgorithms[algorithm] !== m[2]!.length) {
    throw new DproxyError('DIGEST_INVALID', `invalid digest '${truncate(value)}'`, {
      detail: { digest: truncate(value) },
    })
  }
  return { algorithm: algorithm as Digest['algorithm'], hex: m[2]!, value }
}

export function parseReference(value: string): Reference {
  if (value.includes(':')) return { kind: 'digest', digest: parseDigest(value) }
  if (!tagRe.test(value)) {
    throw new DproxyError('MANIFEST_INVALID', `invalid tag '${truncate(value)}'`, {
      status: 400,
      detail: { tag: truncate(value) },
    })
  }
  return { kind: 'tag', tag: value }
}

function looksLikeHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost'
}

function invalidName(name: string, why: string): DproxyError {
  return new DproxyError('NAME_INVALID', `invalid repository name '${truncate(name)}': ${why}`, {
    detail: { name: truncate(name) },
  })
}

function validateRepository(name: string, repository: string): void {
  if (repository.length === 0) throw invalidName(name, 'empty repository')
  if (repository.length > 255) throw invalidName(name, 'longer than 255 characters')
  for (const component of repository.split('/')) {
    if (!componentRe.test(component)) throw invalidName(name, `bad component '${truncate(component)}'`)
  }
}

/**
 * Resolves a client-supplied repository name, optionally with containerd's
 * `ns` query parameter, into a registry and a repository there.
 */
export function resolveImageName(name: string, ns?: string): ImageName {
  if (ns !== undefined) {
    if (!isValidRegistryHost(ns)) throw invalidName(ns, 'bad ns registry host')
    const registry = normalizeRegistry(ns)
    validateRepository(name, name)
    return { registry, repository: withLibrary(registry, name) }
  }

  const parts = name.split('/')
  const alias = parts.indexOf('dependency_proxy')
  if (alias > 0 && parts[alias + 1] === 'containers' && parts.length > alias + 2) {
    // GitLab: <group>[/<subgroup>...]/dependency_proxy/containers/<image>
    return resolveImageName(parts.slice(alias + 2).join('/'))
  }

  let registry = DOCKER_HUB
  let rest = parts
  if (parts.length > 1 && looksLikeHost(parts[0]!)) {
    if (!isValidRegistryHost(parts[0]!)) throw invalidName(name, 'bad registry host')
    registry = normalizeRegistry(parts[0]!)
    rest = parts.slice(1)
  }
  const repository = rest.join('/')
  validateRepository(name, repository)
  return { registry, repository: withLibrary(registry, repository) }
}

function withLibrary(registry: string, repository: string): string {
  return registry === DOCKER_HUB && !repository.includes('/') ? `library/${repository}` : repository
}

/**
 * What an error message may quote of a value a client (or an upstream) chose:
 * at most 80 characters, so a 5,000-character header or path is never echoed
 * back whole. Every message that quotes such a value goes through here.
 */
export function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s
}
