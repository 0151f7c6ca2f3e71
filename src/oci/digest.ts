// Content digests: the grammar (`sha256:<64 hex>`, `sha512:<128 hex>`) and the
// hashing that proves bytes are what their digest promises. The store verifies
// blobs as they are written, the proxy verifies manifests before storing them,
// and the stream past a cache that cannot write checks the same way.

import { createHash, type Hash } from 'node:crypto'
import { DproxyError, truncate } from '../errors.js'

const digestAlgorithms: Record<string, number> = { sha256: 64, sha512: 128 }

export interface Digest {
  algorithm: 'sha256' | 'sha512'
  hex: string
  /** `algorithm:hex` */
  value: string
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

export function hasherFor(d: Pick<Digest, 'algorithm'>): Hash {
  return createHash(d.algorithm)
}

export function digestOf(bytes: Uint8Array, algorithm: Digest['algorithm'] = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`
}

/**
 * Hashes content as it passes and says whether it is what its digest (and
 * the size announced for it, when there was one) promised. Used wherever blob
 * bytes arrive: the cache's writer, and the stream past a cache that cannot
 * take them.
 */
export class ContentCheck {
  size = 0
  private readonly hash: Hash

  constructor(
    private readonly digest: Digest,
    private readonly expectedSize?: number,
  ) {
    this.hash = hasherFor(digest)
  }

  /** Adds chunks; SIZE_INVALID as soon as they exceed the announced size. */
  update(chunks: Uint8Array[]): void {
    const total = chunks.reduce((n, c) => n + c.length, 0)
    if (this.expectedSize !== undefined && this.size + total > this.expectedSize) {
      throw new DproxyError('SIZE_INVALID', `blob ${this.digest.value} is longer than the ${this.expectedSize} bytes announced`)
    }
    for (const c of chunks) this.hash.update(c)
    this.size += total
  }

  /** Throws SIZE_INVALID or DIGEST_INVALID unless everything added is the blob. Call once. */
  finish(): void {
    if (this.expectedSize !== undefined && this.size !== this.expectedSize) {
      throw new DproxyError('SIZE_INVALID', `blob ${this.digest.value}: got ${this.size} bytes, expected ${this.expectedSize}`)
    }
    const actual = `${this.digest.algorithm}:${this.hash.digest('hex')}`
    if (actual !== this.digest.value) {
      throw new DproxyError('DIGEST_INVALID', `blob ${this.digest.value}: content has digest ${actual}`, {
        detail: { expected: this.digest.value, actual },
      })
    }
  }
}
