// Turns what a client or a user names into the image it means: which
// registry, which repository there, and which tag or digest. Everything that
// later becomes a file name or an upstream URL passes through here first, so
// the grammar is enforced strictly (the OCI name and reference rules: path
// components of lower-case letters and digits joined by `.`, `_`, `__` or
// dashes, at most 255 characters; tags of at most 128 characters; sha256 or
// sha512 digests) and nothing that could walk out of the cache directory gets
// any further. This is the one parser of references: the registry's request
// paths, `dproxy pull`, prefetch's files, cache selectors, warm targets and
// archive ref names all use it.
//
// The names a client may use (the path of a request, or a reference's name):
//   alpine                                  -> docker.io library/alpine
//   bitnami/redis                           -> docker.io bitnami/redis
//   ghcr.io/owner/img                       -> ghcr.io owner/img (first component looks like a host)
//   group/dependency_proxy/containers/img   -> GitLab's alias for img
//   library/alpine?ns=docker.io             -> containerd's mirror form (registry from ?ns=)
// A whole reference, as `docker pull` takes it, adds `:tag`, `@digest` or both:
//   ghcr.io/o/i:1.2   localhost:5000/x   node:20@sha256:...

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
  return { kind: 'tag', tag: parseTag(value) }
}

/** A tag (at most 128 characters, no leading `.` or `-`); MANIFEST_INVALID otherwise. */
function parseTag(value: string): string {
  if (!tagRe.test(value)) {
    throw new DproxyError('MANIFEST_INVALID', `invalid tag '${truncate(value)}'`, {
      status: 400,
      detail: { tag: truncate(value) },
    })
  }
  return value
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

/** A whole reference as users write it: a name, and a tag, a digest, both or neither. */
export interface ImageReference extends ImageName {
  tag?: string
  digest?: Digest
}

/**
 * Longer than any valid reference: a 253-character host with a port, a
 * 255-character repository, a 128-character tag and a sha512 digest (780).
 */
export const MAX_REFERENCE_LENGTH = 1024

function invalidReference(why: string): DproxyError {
  return new DproxyError('NAME_INVALID', `invalid reference: ${why}`)
}

/**
 * Parses `[registry/]repository[:tag][@digest]` as `docker pull` takes it
 * (`alpine`, `ghcr.io/o/i:1.2`, `localhost:5000/x`, `node:20@sha256:...`).
 * No default tag is filled in (withDefaultTag does that). Throws
 * NAME_INVALID, MANIFEST_INVALID (the tag) or DIGEST_INVALID with the reason.
 */
export function parseImageReference(raw: string): ImageReference {
  if (typeof raw !== 'string' || raw.length === 0) throw invalidReference('empty reference')
  if (raw.length > MAX_REFERENCE_LENGTH) throw invalidReference(`longer than ${MAX_REFERENCE_LENGTH} characters`)
  if (/\s/.test(raw)) throw invalidReference('contains white space')
  const at = raw.indexOf('@')
  const nameAndTag = at < 0 ? raw : raw.slice(0, at)
  const digest = at < 0 ? undefined : parseDigest(raw.slice(at + 1))
  // A colon after the last slash starts the tag; one before it is a registry port.
  const colon = nameAndTag.lastIndexOf(':')
  const hasTag = colon > nameAndTag.lastIndexOf('/')
  const name = hasTag ? nameAndTag.slice(0, colon) : nameAndTag
  if (name.length === 0) throw invalidReference('no image name')
  const tag = hasTag ? parseTag(nameAndTag.slice(colon + 1)) : undefined
  return { ...resolveImageName(name), ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) }
}

/** `docker pull`'s rule: `latest` when a reference names neither a tag nor a digest. */
export function withDefaultTag(r: ImageReference): ImageReference {
  return r.tag === undefined && r.digest === undefined ? { ...r, tag: 'latest' } : r
}

/** What to ask a registry for: the digest when there is one (it wins over a tag), else the tag, else `latest`. */
export function manifestReference(r: ImageReference): Reference {
  return r.digest ? { kind: 'digest', digest: r.digest } : { kind: 'tag', tag: r.tag ?? 'latest' }
}

/** `registry/repository[:tag][@digest]` */
export function formatImageReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest.value}` : ''}`
}

/** A reference in the canonical form listings and JSON show: `ref` is `registry/repository[:tag][@digest]`. */
export interface CanonicalReference extends ImageName {
  ref: string
  tag?: string
  /** `algorithm:hex` */
  digest?: string
}

/** `alpine` -> `docker.io/library/alpine:latest`; throws as parseImageReference. */
export function canonicalReference(raw: string): CanonicalReference {
  const r = withDefaultTag(parseImageReference(raw))
  return {
    ref: formatImageReference(r),
    registry: r.registry,
    repository: r.repository,
    ...(r.tag !== undefined ? { tag: r.tag } : {}),
    ...(r.digest !== undefined ? { digest: r.digest.value } : {}),
  }
}

/**
 * A reference that names exactly one tag to record (an OCI image layout's
 * `org.opencontainers.image.ref.name`): `name:tag`, no digest. NAME_INVALID
 * says why another one names no tag (a bare `latest` is a tag without a name).
 */
export function parseTaggedReference(raw: string): ImageName & { tag: string } {
  if (typeof raw === 'string' && raw.includes('@')) throw new DproxyError('NAME_INVALID', 'a reference by digest names no tag to record')
  const r = parseImageReference(raw)
  if (r.tag === undefined) throw new DproxyError('NAME_INVALID', raw.includes('/') ? 'a name without a tag' : 'a tag without an image name')
  return { registry: r.registry, repository: r.repository, tag: r.tag }
}
