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

import { DproxyError, truncate } from '../errors.js'
import { parseDigest, type Digest } from './digest.js'
import { DOCKER_HUB, isValidRegistryHost, canonicalRegistry } from './registry-host.js'

/** One path component of a repository name (OCI distribution spec). */
const componentRe = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/
const tagRe = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/

export interface ImageName {
  /** Canonical registry host, `docker.io` for Docker Hub. */
  registry: string
  /** Repository path inside that registry, `library/alpine` for official images. */
  repository: string
}

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest }

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
    const registry = canonicalRegistry(ns)
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
    registry = canonicalRegistry(parts[0]!)
    rest = parts.slice(1)
  }
  const repository = rest.join('/')
  validateRepository(name, repository)
  return { registry, repository: withLibrary(registry, repository) }
}

function withLibrary(registry: string, repository: string): string {
  return registry === DOCKER_HUB && !repository.includes('/') ? `library/${repository}` : repository
}
