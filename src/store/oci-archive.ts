// Carrying the cache on a file: `dproxy cache export` writes cached images as
// an OCI image layout in a tar (what `skopeo copy oci-archive:` reads and
// writes), and `dproxy cache import` puts such an archive into a cache. This
// file is what both sides share: the archive's description, its names and
// annotations, and what each side reports. archive-export.ts writes one,
// archive-import.ts reads one.
//
//   oci-layout             {"imageLayoutVersion":"1.0.0"}
//   index.json             one descriptor per tag, annotated with
//                          org.opencontainers.image.ref.name = registry/repository:tag
//                          (docker.io/library/alpine:latest) and, from dproxy,
//                          dev.dproxy.checked-at = when upstream last confirmed the tag
//   blobs/<alg>/<hex>      every manifest (an index and its cached children), config and
//                          layer, each once however many images share it

import type { Digest } from '../oci/digest.js'

export const REF_NAME = 'org.opencontainers.image.ref.name'
export const CHECKED_AT = 'dev.dproxy.checked-at'
/** The archive as a body (`dproxy cache import` to a running daemon): an OCI image layout in a tar. */
export const ARCHIVE_CONTENT_TYPE = 'application/vnd.dproxy.oci-archive.v1+tar'
/**
 * Reads of this size keep system calls few and still come from the
 * allocator's free lists; much larger ones are fresh mappings each time.
 */
export const READ_CHUNK = 1024 * 1024

export interface ArchiveProgress {
  /** Bytes of blobs and manifests written (export) or archive bytes read (import). */
  bytes: number
  /** Known for an export, and for an import from a file. */
  total?: number
}

export interface Skipped {
  image: string
  reason: string
}

export interface ArchiveSummary {
  /** `registry/repository:tag` of every image exported, or imported (added or replaced). */
  images: string[]
  skipped: Skipped[]
  manifests: number
  blobs: number
  /** Bytes of manifests and blobs written to the archive (export) or to the cache (import). */
  bytes: number
}

/** The entry of a blob (or manifest) in the archive. */
export function blobName(d: Digest): string {
  return `blobs/${d.algorithm}/${d.hex}`
}
