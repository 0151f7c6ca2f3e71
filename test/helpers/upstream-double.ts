// A counting upstream for the proxy's unit tests: it implements the upstream
// client methods the proxies call (no HTTP), serves the bytes a test gives it
// and counts every call, so a test can say "served from cache" as "zero
// upstream calls". Blob bodies can be held back and released piece by piece
// (`hold`), which is how a test puts clients on a download in progress.

import { PassThrough, Readable } from 'node:stream'
import { DproxyError } from '../../src/errors.js'
import type { BlobBody, ManifestBody, ManifestInfo, TagPage } from '../../src/upstream/client.js'
import { digestOf } from '../../src/oci/digest.js'

export interface UpstreamCalls {
  getBlob: number
  headBlob: number
  headManifest: number
  getManifest: number
  listTags: number
}

/** A blob body the test feeds by hand. */
export interface HeldBody {
  push(bytes: Buffer): void
  end(): void
  fail(err: Error): void
}

export class CountingUpstream {
  readonly calls: UpstreamCalls = { getBlob: 0, headBlob: 0, headManifest: 0, getManifest: 0, listTags: 0 }
  /** Blob bytes by digest; the bytes need not match the digest (a lying upstream). */
  readonly blobs = new Map<string, Buffer>()
  /** Manifests by reference: a digest, or `repository:tag`. */
  private readonly manifests = new Map<string, { bytes: Buffer; mediaType: string }>()
  /** When set, every call fails with it (an outage). */
  down: DproxyError | undefined
  /** When set, getBlob answers with a body the test feeds, one per call, in call order. */
  hold = false
  readonly held: HeldBody[] = []
  /** Send no Content-Length with blobs. */
  noLength = false

  get(_registry: string): this {
    return this
  }

  addBlob(bytes: Buffer): string {
    const digest = digestOf(bytes)
    this.blobs.set(digest, bytes)
    return digest
  }

  /** Serves `bytes` under its digest, and under `repository:tag` when given. */
  addManifest(bytes: Buffer, mediaType: string, repository?: string, tag?: string): string {
    const digest = digestOf(bytes)
    this.manifests.set(digest, { bytes, mediaType })
    if (repository !== undefined && tag !== undefined) this.manifests.set(`${repository}:${tag}`, { bytes, mediaType })
    return digest
  }

  /** Answers `reference` (a digest, or `repository:tag`) with `bytes` whatever their digest: a lying upstream. */
  lie(reference: string, bytes: Buffer, mediaType: string): void {
    this.manifests.set(reference, { bytes, mediaType })
  }

  async getBlob(_repository: string, digest: string): Promise<BlobBody> {
    this.calls.getBlob++
    const bytes = this.blob(digest)
    const size = this.noLength ? undefined : bytes.length
    if (!this.hold) return { size, body: Readable.from([bytes]), url: `double/blobs/${digest}` }
    const body = new PassThrough()
    this.held.push({ push: (b) => body.write(b), end: () => body.end(), fail: (err) => body.destroy(err) })
    return { size, body, url: `double/blobs/${digest}` }
  }

  async headBlob(_repository: string, digest: string): Promise<{ size: number | undefined }> {
    this.calls.headBlob++
    return { size: this.noLength ? undefined : this.blob(digest).length }
  }

  async headManifest(repository: string, reference: string): Promise<ManifestInfo> {
    this.calls.headManifest++
    const m = this.manifest(repository, reference)
    return { digest: digestOf(m.bytes), mediaType: m.mediaType, size: m.bytes.length }
  }

  async getManifest(repository: string, reference: string): Promise<ManifestBody> {
    this.calls.getManifest++
    const m = this.manifest(repository, reference)
    return { digest: digestOf(m.bytes), mediaType: m.mediaType, size: m.bytes.length, bytes: Buffer.from(m.bytes) }
  }

  async listTags(repository: string): Promise<TagPage> {
    this.calls.listTags++
    this.check()
    const prefix = `${repository}:`
    return { tags: [...this.manifests.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length)).sort() }
  }

  private blob(digest: string): Buffer {
    this.check()
    const bytes = this.blobs.get(digest)
    if (!bytes) throw new DproxyError('BLOB_UNKNOWN', `upstream has no blob ${digest}`)
    return bytes
  }

  private manifest(repository: string, reference: string) {
    this.check()
    const m = this.manifests.get(reference.includes(':') ? reference : `${repository}:${reference}`)
    if (!m) throw new DproxyError('MANIFEST_UNKNOWN', `upstream has no manifest ${repository}:${reference}`)
    return m
  }

  private check(): void {
    if (this.down) throw this.down
  }
}
