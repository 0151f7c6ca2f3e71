// The cache interfaces (api.ts) kept in memory: for the proxy's and the
// daemon's unit tests, which then run in milliseconds with nothing on disk,
// and as the second implementation that keeps the contract honest (the same
// suite runs against it and the file store).
//
// It behaves as the file store does where a caller can tell: writers verify
// before anything becomes visible, readers follow a growing blob and keep
// their bytes after a delete, manifests come back byte for byte. With
// `maxBytes` it refuses a blob that would take it past that many bytes, the
// way a full disk does (CACHE_UNAVAILABLE), so the proxy's fallback past the
// cache can be tested without filling a disk.

import { systemClock, type Clock } from '../clock.js'
import { DproxyError } from '../errors.js'
import { type Digest, ContentCheck, parseDigest } from '../oci/digest.js'
import type { BlobReader, BlobWriter, CacheStore, StoredBlob, StoredManifest, TagRecord } from './api.js'
import { LinkIndex } from './links.js'

export interface MemoryStoreOptions {
  clock?: Clock
  /** Blob bytes it holds at most, committed and being written together. */
  maxBytes?: number
}

export class MemoryStore implements CacheStore {
  private readonly blobs = new Map<string, Buffer>()
  private readonly manifests = new Map<string, StoredManifest>()
  private readonly tags = new Map<string, TagRecord>()
  /** Manifest digests each repository references, by `registry\nrepository`. */
  private readonly links = new Map<string, Set<string>>()
  private readonly index: LinkIndex
  /** When each blob or manifest was last used, by digest. */
  readonly lastUsed = new Map<string, number>()
  private readonly clock: Clock
  private readonly maxBytes: number
  /** Bytes held by writers not yet committed or aborted. */
  private pending = 0

  constructor(o: MemoryStoreOptions = {}) {
    this.clock = o.clock ?? systemClock
    this.maxBytes = o.maxBytes ?? Infinity
    if (!(this.maxBytes >= 0)) throw new RangeError(`expected maxBytes to be a byte count, got ${String(o.maxBytes)}`)
    this.index = new LinkIndex({
      linkedManifests: async (registry, repository) => [...(this.links.get(tagKey(registry, repository, '')) ?? [])].map((d) => parseDigest(d)),
      getManifest: (d) => this.getManifest(d),
    })
  }

  /** Blob bytes held, committed and pending. */
  get bytes(): number {
    let total = this.pending
    for (const b of this.blobs.values()) total += b.length
    return total
  }

  async statBlob(d: Digest): Promise<number | undefined> {
    return this.blobs.get(d.value)?.length
  }

  async openBlob(d: Digest): Promise<StoredBlob | undefined> {
    const bytes = this.blobs.get(d.value)
    return bytes ? new BufferReader(() => bytes, bytes.length) : undefined
  }

  async createBlobWriter(d: Digest, expectedSize?: number): Promise<BlobWriter> {
    return new MemoryWriter(d, new ContentCheck(d, expectedSize), {
      reserve: (n) => {
        if (this.bytes + n > this.maxBytes) {
          throw new DproxyError('CACHE_UNAVAILABLE', `blob ${d.value} does not fit in the memory store (${this.maxBytes} bytes)`)
        }
        this.pending += n
      },
      unreserve: (n) => (this.pending -= n),
      commit: (bytes) => {
        this.blobs.set(d.value, bytes)
      },
    })
  }

  async touchBlob(d: Digest): Promise<void> {
    if (this.blobs.has(d.value)) this.lastUsed.set(d.value, this.clock.now())
  }

  async deleteBlob(d: Digest): Promise<boolean> {
    return this.blobs.delete(d.value)
  }

  async getManifest(d: Digest): Promise<StoredManifest | undefined> {
    const m = this.manifests.get(d.value)
    return m && { ...m, bytes: Buffer.from(m.bytes) }
  }

  async hasManifest(d: Digest): Promise<boolean> {
    return this.manifests.has(d.value)
  }

  async putManifest(d: Digest, bytes: Uint8Array, mediaType: string): Promise<void> {
    this.manifests.set(d.value, { digest: d.value, mediaType, bytes: Buffer.from(bytes) })
  }

  async touchManifest(d: Digest): Promise<void> {
    if (this.manifests.has(d.value)) this.lastUsed.set(d.value, this.clock.now())
  }

  async deleteManifest(d: Digest): Promise<boolean> {
    return this.manifests.delete(d.value)
  }

  async linkManifest(registry: string, repository: string, d: Digest): Promise<void> {
    const key = tagKey(registry, repository, '')
    let set = this.links.get(key)
    if (!set) this.links.set(key, (set = new Set()))
    set.add(d.value)
    await this.index.addManifest(registry, repository, d)
  }

  /** Whether `repository` was recorded as referencing manifest `d` (what the file store keeps under repositories/). */
  linked(registry: string, repository: string, d: Digest): boolean {
    return this.links.get(tagKey(registry, repository, ''))?.has(d.value) === true
  }

  async isLinked(registry: string, repository: string, d: Digest): Promise<boolean> {
    return this.index.has(registry, repository, d)
  }

  async linkBlob(registry: string, repository: string, d: Digest): Promise<void> {
    await this.index.addBlob(registry, repository, d)
  }

  async getTag(registry: string, repository: string, tag: string): Promise<TagRecord | undefined> {
    const rec = this.tags.get(tagKey(registry, repository, tag))
    return rec && { ...rec }
  }

  async putTag(registry: string, repository: string, tag: string, rec: TagRecord): Promise<void> {
    this.tags.set(tagKey(registry, repository, tag), { ...rec })
  }

  async listTags(registry: string, repository: string): Promise<string[]> {
    const prefix = tagKey(registry, repository, '')
    return [...this.tags.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length)).sort()
  }
}

/** Names and tags cannot hold a newline, so it separates them unambiguously. */
function tagKey(registry: string, repository: string, tag: string): string {
  return `${registry}\n${repository}\n${tag}`
}

interface WriterHooks {
  /** Throws CACHE_UNAVAILABLE when `n` more bytes do not fit. */
  reserve(n: number): void
  unreserve(n: number): void
  commit(bytes: Buffer): void
}

class MemoryWriter implements BlobWriter {
  written = 0
  /** Grows by doubling; readers see [0, written). */
  private buf = Buffer.alloc(0)
  private state: 'open' | 'verified' | 'done' = 'open'
  private aborted = false

  constructor(
    private readonly d: Digest,
    private readonly check: ContentCheck,
    private readonly hooks: WriterHooks,
  ) {}

  async write(chunk: Uint8Array): Promise<void> {
    await this.writev([chunk])
  }

  async writev(chunks: Uint8Array[]): Promise<void> {
    if (this.state !== 'open') throw new DproxyError('INTERNAL', `write to the finished writer of blob ${this.d.value}`)
    const total = chunks.reduce((n, c) => n + c.length, 0)
    this.check.update(chunks)
    this.hooks.reserve(total)
    if (this.written + total > this.buf.length) {
      const grown = Buffer.alloc(Math.max(this.written + total, this.buf.length * 2))
      this.buf.copy(grown, 0, 0, this.written)
      this.buf = grown
    }
    for (const c of chunks) {
      this.buf.set(c, this.written)
      this.written += c.length
    }
  }

  async verify(): Promise<void> {
    if (this.state !== 'open') return
    try {
      this.check.finish()
      this.state = 'verified'
    } catch (err) {
      await this.abort()
      throw err
    }
  }

  async commit(): Promise<void> {
    await this.verify()
    if (this.aborted) throw new DproxyError('INTERNAL', `commit of the aborted writer of blob ${this.d.value}`)
    this.state = 'done'
    this.hooks.unreserve(this.written)
    this.hooks.commit(this.buf.subarray(0, this.written))
  }

  async abort(): Promise<void> {
    if (this.state === 'done') return
    this.state = 'done'
    this.aborted = true
    this.hooks.unreserve(this.written)
  }

  async follow(): Promise<BlobReader> {
    if (this.aborted) throw new DproxyError('BLOB_UNKNOWN', `the download of blob ${this.d.value} was abandoned`)
    // The buffer is replaced as it grows: read whichever is current.
    return new BufferReader(() => this.buf.subarray(0, this.written), -1)
  }
}

class BufferReader implements StoredBlob {
  constructor(
    private readonly bytes: () => Buffer,
    readonly size: number,
  ) {}

  async read(buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const src = this.bytes()
    if (position >= src.length) return 0
    return src.copy(buf, offset, position, Math.min(src.length, position + length))
  }

  async close(): Promise<void> {}
}
