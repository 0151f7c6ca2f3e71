// One image reference as users write it (`alpine`, `ghcr.io/o/i:1.2`,
// `node:20@sha256:...`) turned into the canonical form the cache and the
// daemon use (`docker.io/library/alpine:latest`). The name grammar is the
// registry's own (src/oci/reference.ts), so a reference accepted here is one
// the daemon will accept when it is pulled through it.

import { DproxyError } from '../../errors.js'
import { parseDigest } from '../../oci/digest.js'
import { parseReference, resolveImageName } from '../../oci/reference.js'

export interface NormalizedReference {
  /** `registry/repository[:tag][@digest]`; the tag is `latest` unless a digest is given. */
  ref: string
  registry: string
  repository: string
  tag?: string
  digest?: string
}

/** Longer than any valid reference (255-char repository, host, tag and sha512 digest). */
const maxLength = 600

/** Throws a DproxyError whose message says why the reference is invalid. */
export function normalizeReference(raw: string): NormalizedReference {
  if (raw.length === 0) throw invalid('empty reference')
  if (raw.length > maxLength) throw invalid(`longer than ${maxLength} characters`)
  if (/\s/.test(raw)) throw invalid('contains white space')
  const at = raw.indexOf('@')
  const nameAndTag = at < 0 ? raw : raw.slice(0, at)
  const digest = at < 0 ? undefined : parseDigest(raw.slice(at + 1)).value
  // A colon after the last slash starts the tag; one before it is a registry port.
  const colon = nameAndTag.lastIndexOf(':')
  const hasTag = colon > nameAndTag.lastIndexOf('/')
  const name = hasTag ? nameAndTag.slice(0, colon) : nameAndTag
  let tag = hasTag ? nameAndTag.slice(colon + 1) : undefined
  if (tag !== undefined) {
    const parsed = parseReference(tag)
    if (parsed.kind !== 'tag') throw invalid(`invalid tag '${tag}'`)
  } else if (digest === undefined) {
    tag = 'latest'
  }
  const { registry, repository } = resolveImageName(name)
  const ref = `${registry}/${repository}${tag !== undefined ? `:${tag}` : ''}${digest !== undefined ? `@${digest}` : ''}`
  return {
    ref,
    registry,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
  }
}

function invalid(why: string): DproxyError {
  return new DproxyError('NAME_INVALID', `invalid reference: ${why}`)
}
