// Hashing helpers shared by the store (verifying blobs as they are written) and
// the proxy (verifying manifests before they are stored).

import { createHash, type Hash } from 'node:crypto'
import type { Digest } from '../registry/names.js'

export function hasherFor(d: Pick<Digest, 'algorithm'>): Hash {
  return createHash(d.algorithm)
}

export function digestOf(bytes: Uint8Array, algorithm: Digest['algorithm'] = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`
}
