// What the rest of dproxy may ask of a cache, as three small interfaces: the
// blobs, the manifests and the tags. The proxy is written against these and
// nothing else, so the policy of a pull-through cache (proxy/) never learns
// where the bytes live; the file store (store.ts) keeps them on disk, the
// memory store (memory.ts) in a Map, and one contract suite
// (test/store/contract.ts) holds both to the same behaviour.
//
// The blob store's writer is the piece the proxy's single flight rests on: it
// hashes what it is given, commits only when digest and size match, and lets
// any number of readers follow the bytes while they arrive, so one download
// feeds every client that asked for the blob. A writer the store cannot take
// (disk full, read-only, over a memory cap) throws CACHE_UNAVAILABLE.

import type { Digest } from '../oci/digest.js'

/** Random access to a blob's bytes. */
export interface BlobReader {
  /**
   * Reads up to `length` bytes at `position` into `buf` at `offset`, and says
   * how many it read: fewer (down to 0) past the end of what is there.
   */
  read(buf: Uint8Array, offset: number, length: number, position: number): Promise<number>
  close(): Promise<void>
}

/** A committed blob: verified bytes of a known size. */
export interface StoredBlob extends BlobReader {
  readonly size: number
}

/**
 * The bytes of one blob on their way in. Nothing is visible under the
 * digest until commit() verified them; abort() (or a failed verify) throws
 * them away.
 */
export interface BlobWriter {
  /** Bytes taken so far. */
  readonly written: number
  write(chunk: Uint8Array): Promise<void>
  /** Several chunks at once (a download arrives in many small pieces). */
  writev(chunks: Uint8Array[]): Promise<void>
  /**
   * Checks digest and expected size of everything written: SIZE_INVALID or
   * DIGEST_INVALID on a mismatch, after which the bytes are gone. Separate from
   * commit() so readers can be released while the commit is still flushing.
   */
  verify(): Promise<void>
  /** Verifies (if not done yet) and makes the blob visible under its digest. */
  commit(): Promise<void>
  abort(): Promise<void>
  /**
   * Optional, for a store on a disk that can fill up: after a write refused
   * with CACHE_UNAVAILABLE, writes the refused bytes again (room was made
   * meanwhile). Throws as the write did when there is still none.
   */
  retry?(): Promise<void>
  /**
   * Optional, with retry(): gives up storing after a refused write. What was
   * stored goes (readers opened before keep reading it); from now on the
   * writer only checks: later writes are hashed, not kept, verify() still
   * says whether the bytes were the blob, commit() and follow() refuse.
   */
  stopStoring?(): Promise<void>
  /**
   * A reader of the bytes written so far, which sees later writes as they
   * land (`written` says how far it may read) and keeps its bytes after the
   * commit. Fails when the writer was aborted before it was opened.
   */
  follow(): Promise<BlobReader>
}

export interface BlobStore {
  /** Size of a committed blob, or undefined when it is not stored. */
  statBlob(d: Digest): Promise<number | undefined>
  /** A committed blob for reading, or undefined when it is not stored. */
  openBlob(d: Digest): Promise<StoredBlob | undefined>
  createBlobWriter(d: Digest, expectedSize?: number): Promise<BlobWriter>
  /** Records that the blob was used (eviction picks the least recently used); best effort. */
  touchBlob(d: Digest): Promise<void>
  deleteBlob(d: Digest): Promise<boolean>
}

export interface StoredManifest {
  digest: string
  mediaType: string
  bytes: Buffer
}

export interface ManifestStore {
  getManifest(d: Digest): Promise<StoredManifest | undefined>
  hasManifest(d: Digest): Promise<boolean>
  /** Stores manifest bytes as they are under their digest. The caller has verified the digest. */
  putManifest(d: Digest, bytes: Uint8Array, mediaType: string): Promise<void>
  touchManifest(d: Digest): Promise<void>
  deleteManifest(d: Digest): Promise<boolean>
  /**
   * Records that `repository` references manifest `d` (idempotent; stored
   * already): the repository then has what the manifest names (LinkStore).
   */
  linkManifest(registry: string, repository: string, d: Digest): Promise<void>
}

/**
 * Which content a repository may be served (links.ts): its blobs, and its
 * manifests by digest. Both are stored once and shared by every repository,
 * so that one is cached says nothing about whether a repository has it: a
 * manifest linked to the repository does, and what it names (its config and
 * layers; an index's children, and theirs when cached), and so does
 * upstream's word (linkBlob; linkManifest for a manifest). Answered from
 * memory once a repository was looked at.
 */
export interface LinkStore {
  /** Whether `repository` is known to have `d`. */
  isLinked(registry: string, repository: string, d: Digest): Promise<boolean>
  /** Records that upstream confirmed that `repository` has `d` (idempotent; kept in memory only). */
  linkBlob(registry: string, repository: string, d: Digest): Promise<void>
}

export interface TagRecord {
  digest: string
  mediaType: string
  size: number
  /** When upstream last confirmed (or gave us) this digest for the tag, ms since epoch. */
  checkedAt: number
}

export interface TagStore {
  /** Tags are case-sensitive: `V1` and `v1` are two tags. */
  getTag(registry: string, repository: string, tag: string): Promise<TagRecord | undefined>
  putTag(registry: string, repository: string, tag: string, rec: TagRecord): Promise<void>
  /** The repository's tags, sorted. */
  listTags(registry: string, repository: string): Promise<string[]>
}

/** Everything the pull-through proxy needs of a cache. */
export interface CacheStore extends BlobStore, ManifestStore, TagStore, LinkStore {}
