// Reading a manifest for the descriptors it holds: an index's or manifest
// list's children (with their platforms), an image's config and layers, an
// artifact manifest's blobs, schema 1's fsLayers, and the subject a referrer
// points at. Every format the cache may hold goes through here: Docker v2
// schema 2 and its manifest list, OCI manifest and index, OCI artifact
// manifests, Docker schema 1. The bytes are never rewritten (their digest
// would change); they are only read.
//
// Manifests come from upstreams and archives, so they are hostile: the size is
// capped (the limit upstream manifests are read with), so are the descriptors
// one manifest may hold, every digest must be valid before it becomes a file
// name or a URL, and a platform's fields must look like platform names before
// they reach a message. Two ways to read:
//   strict   (warming): a bad descriptor fails the manifest, as a client would fail.
//   lenient  (listing the cache, reading an archive): a bad descriptor names nothing.
// Either way a document that is not a JSON object, or too big, is refused.

import { DproxyError } from '../errors.js'
import { parseDigest, type Digest } from './digest.js'
import { isIndexMediaType } from './media-types.js'
import type { Platform } from './platform.js'

/** Manifests larger than this are refused, from a registry as in a parse (the spec asks registries to accept 4 MB). */
export const MANIFEST_SIZE_LIMIT = 8 * 1024 * 1024
/** Descriptors one manifest may hold (children, config, layers, blobs, subject together). */
export const MAX_DESCRIPTORS = 10_000

export interface Descriptor {
  digest: Digest
  /** Bytes; 0 when the manifest does not say (schema 1) or says nonsense. */
  size: number
  mediaType?: string
  platform?: Platform
}

export interface Manifest {
  /** The manifest's own `mediaType` field, else the type it was served or described with. */
  mediaType: string
  /** An index or manifest list: its `manifests` are the platforms' manifests. */
  index: boolean
  /** `manifests[]`: an index's children. */
  manifests: Descriptor[]
  config?: Descriptor
  /** `layers[]`, then an artifact manifest's `blobs[]`, then schema 1's `fsLayers[]` (no sizes). */
  layers: Descriptor[]
  /** The manifest a referrer (signature, SBOM) is about. */
  subject?: Descriptor
}

export interface ParseOptions {
  /** The type the manifest was served or described with (Content-Type, a parent's descriptor). */
  mediaType?: string
  /** Throw on a bad descriptor instead of leaving it out. */
  strict?: boolean
}

/** A platform field as registries write them (`linux`, `arm64`, `v8`, `unknown`). */
const platformField = /^[A-Za-z0-9._-]{1,64}$/
/** RFC 6838 allows 127 characters per side of the slash. */
const mediaTypeRe = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/

/**
 * Reads the descriptors of a manifest. MANIFEST_INVALID for a document that
 * is too big, not JSON, not an object or holds too many descriptors; with
 * `strict`, also for a descriptor without a digest (DIGEST_INVALID for a
 * malformed one).
 */
export function parseManifest(bytes: Uint8Array, o: ParseOptions = {}): Manifest {
  if (bytes.length > MANIFEST_SIZE_LIMIT) throw invalid(`the manifest is ${bytes.length} bytes, over the ${MANIFEST_SIZE_LIMIT} byte limit`)
  let doc: unknown
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8'))
  } catch {
    throw invalid('the manifest is not JSON')
  }
  if (!isObject(doc)) throw invalid('the manifest is not a JSON object')

  let count = 0
  const read = (value: unknown, digestKey = 'digest'): Descriptor | undefined => {
    if (++count > MAX_DESCRIPTORS) throw invalid(`the manifest holds more than ${MAX_DESCRIPTORS} descriptors`)
    return descriptor(value, digestKey, o.strict === true)
  }
  const list = (value: unknown, digestKey?: string): Descriptor[] => {
    if (!Array.isArray(value)) return []
    const out: Descriptor[] = []
    for (const item of value) {
      const d = read(item, digestKey)
      if (d) out.push(d)
    }
    return out
  }

  const own = typeof doc.mediaType === 'string' && mediaTypeRe.test(doc.mediaType) ? doc.mediaType : ''
  const mediaType = own || o.mediaType || ''
  const manifests = list(doc.manifests)
  const config = doc.config !== undefined ? read(doc.config) : undefined
  const layers = [...list(doc.layers), ...list(doc.blobs), ...list(doc.fsLayers, 'blobSum')]
  const subject = doc.subject !== undefined ? read(doc.subject) : undefined
  return {
    mediaType,
    index: isIndexMediaType(o.mediaType ?? '') || isIndexMediaType(own) || Array.isArray(doc.manifests),
    manifests,
    ...(config ? { config } : {}),
    layers,
    ...(subject ? { subject } : {}),
  }
}

/** Every blob an image manifest names: the config first, then the layers. */
export function blobsOf(m: Manifest): Descriptor[] {
  return m.config ? [m.config, ...m.layers] : m.layers
}

/**
 * The digests a stored manifest names, each once in the order found: its
 * children, and its blobs. Anything unreadable names nothing: what is listed
 * or kept from the cache never depends on a manifest being well formed.
 */
export function referencedDigests(bytes: Uint8Array): { children: string[]; blobs: string[] } {
  let m: Manifest
  try {
    m = parseManifest(bytes)
  } catch {
    return { children: [], blobs: [] }
  }
  const unique = (ds: Descriptor[]) => [...new Set(ds.map((d) => d.digest.value))]
  return { children: unique(m.manifests), blobs: unique(blobsOf(m)) }
}

function descriptor(value: unknown, digestKey: string, strict: boolean): Descriptor | undefined {
  const o = isObject(value) ? value : {}
  const raw = o[digestKey]
  if (typeof raw !== 'string') {
    if (strict) throw invalid('a descriptor has no digest')
    return undefined
  }
  let digest: Digest
  try {
    digest = parseDigest(raw)
  } catch (err) {
    if (strict) throw err
    return undefined
  }
  const size = typeof o.size === 'number' && Number.isSafeInteger(o.size) && o.size >= 0 ? o.size : 0
  const mediaType = typeof o.mediaType === 'string' && mediaTypeRe.test(o.mediaType) ? o.mediaType : undefined
  const platform = platformOf(o.platform)
  return { digest, size, ...(mediaType ? { mediaType } : {}), ...(platform ? { platform } : {}) }
}

/** A descriptor's platform; none when its fields are missing or do not look like platform names. */
function platformOf(value: unknown): Platform | undefined {
  if (!isObject(value)) return undefined
  const { os, architecture, variant } = value
  const field = (v: unknown): v is string => typeof v === 'string' && platformField.test(v)
  if (!field(os) || !field(architecture)) return undefined
  return { os, architecture, ...(field(variant) ? { variant } : {}) }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function invalid(message: string): DproxyError {
  return new DproxyError('MANIFEST_INVALID', message)
}
