// Hashing helpers shared by the store (verifying blobs as they are written) and
// the proxy (verifying manifests before they are stored).

import { createHash, type Hash } from 'node:crypto'
import { DproxyError } from '../errors.js'
import type { Digest } from '../registry/names.js'

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
