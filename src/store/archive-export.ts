// `dproxy cache export`: cached images as an OCI image layout in a tar (the
// archive oci-archive.ts describes).
//
// Export streams: blobs are read from open file handles chunk by chunk, and
// the tar goes through a pipeline with backpressure (or, to a file, straight
// through one reused buffer: fresh memory for every chunk costs more than
// the copy), so memory stays flat whatever the archive's size. Only
// manifests (small JSON) are held.

import type { FileHandle } from 'node:fs/promises'
import type { BlobReader } from './api.js'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { DproxyError } from '../errors.js'
import { parseDigest } from '../oci/digest.js'
import { OCI_INDEX } from '../oci/media-types.js'
import type { ImageSelector } from './evict.js'
import { inventory, type CacheUnit } from './inventory.js'
import { blobName, CHECKED_AT, READ_CHUNK, REF_NAME, type ArchiveProgress, type ArchiveSummary, type Skipped } from './oci-archive.js'
import type { Store } from './store.js'
import { endOfArchive, fileHeader, padding } from './tar.js'

export interface ExportOptions {
  /** Only these images (all cached tags when absent). */
  images?: ImageSelector[]
  onProgress?: (p: ArchiveProgress) => void
}

/** A file the caller opened (and closes), or a stream (ended unless `keepOpen`, as stdout must be). */
export type ArchiveOutput = { file: FileHandle } | { stream: NodeJS.WritableStream; keepOpen?: boolean }

const refOf = (u: Pick<CacheUnit, 'registry' | 'repository' | 'tag'>): string => `${u.registry}/${u.repository}:${u.tag ?? ''}`

function matches(u: CacheUnit, s: ImageSelector): boolean {
  return (
    u.registry === s.registry &&
    u.repository === s.repository &&
    (s.tag === undefined || u.tag === s.tag) &&
    (s.digest === undefined || u.digest === s.digest)
  )
}

/** Writes the archive of the cached images to `out`. */
export async function exportArchive(store: Store, out: ArchiveOutput, opts: ExportOptions = {}): Promise<ArchiveSummary> {
  const inv = await inventory(store)
  const tagged = inv.units.filter((u) => u.kind === 'image' && u.tag !== null)
  const skipped: Skipped[] = []
  let chosen = tagged
  if (opts.images !== undefined && opts.images.length > 0) {
    const sel = opts.images
    for (const s of sel) {
      if (!tagged.some((u) => matches(u, s))) {
        const what = `${s.registry}/${s.repository}${s.tag !== undefined ? `:${s.tag}` : ''}${s.digest !== undefined ? `@${s.digest}` : ''}`
        throw new DproxyError('MANIFEST_UNKNOWN', `nothing cached for ${what}`, { status: 404 })
      }
    }
    chosen = tagged.filter((u) => sel.some((s) => matches(u, s)))
  }
  const images = chosen.filter((u) => {
    if (!u.complete) skipped.push({ image: refOf(u), reason: 'partly cached (a pull stopped before every blob was fetched)' })
    return u.complete
  })

  const manifests = new Map<string, { bytes: Buffer; mediaType: string }>()
  const blobs = new Map<string, number>()
  for (const u of images) {
    for (const d of u.manifestDigests) {
      if (manifests.has(d)) continue
      const m = await store.getManifest(parseDigest(d))
      if (!m) throw new DproxyError('MANIFEST_UNKNOWN', `manifest ${d} of ${refOf(u)} disappeared from the cache during the export`)
      manifests.set(d, { bytes: m.bytes, mediaType: m.mediaType })
    }
    for (const f of u.files) if (f.startsWith('b:')) blobs.set(f.slice(2), inv.scan.blobs.get(f.slice(2))?.size ?? 0)
  }

  const repos = new Map(inv.scan.repositories.map((r) => [`${r.registry}/${r.repository}`, r]))
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: images.map((u) => {
      const m = manifests.get(u.digest)!
      const rec = repos.get(`${u.registry}/${u.repository}`)?.tags.get(u.tag!)
      return {
        mediaType: m.mediaType,
        digest: u.digest,
        size: m.bytes.length,
        annotations: {
          [REF_NAME]: refOf(u),
          ...(rec?.checkedAt ? { [CHECKED_AT]: new Date(rec.checkedAt).toISOString() } : {}),
        },
      }
    }),
  }

  let total = 0
  for (const m of manifests.values()) total += m.bytes.length
  for (const size of blobs.values()) total += size
  const progress = { bytes: 0, total }
  const mtime = Math.floor(store.clock.now() / 1000)

  // A file write completes before the next chunk is asked for, so one buffer serves every read.
  const reused = 'file' in out ? Buffer.allocUnsafe(READ_CHUNK) : undefined
  async function* tar(): AsyncGenerator<Buffer> {
    const small = (name: string, data: Buffer) => [fileHeader(name, data.length, mtime), data, padding(data.length)]
    yield* small('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }) + '\n'))
    yield* small('index.json', Buffer.from(JSON.stringify(index) + '\n'))
    for (const [d, m] of manifests) {
      yield Buffer.concat(small(blobName(parseDigest(d)), m.bytes))
      progress.bytes += m.bytes.length
    }
    opts.onProgress?.({ ...progress })
    for (const d of blobs.keys()) {
      const digest = parseDigest(d)
      const handle = await store.openBlob(digest)
      if (!handle) throw new DproxyError('BLOB_UNKNOWN', `blob ${d} disappeared from the cache during the export`)
      try {
        yield fileHeader(blobName(digest), handle.size, mtime)
        yield* readAll(handle, handle.size, d, reused, (n) => {
          progress.bytes += n
          opts.onProgress?.({ ...progress })
        })
        yield padding(handle.size)
      } finally {
        await handle.close()
      }
    }
    yield endOfArchive()
  }

  if ('file' in out) {
    for await (const chunk of tar()) await writeFully(out.file, chunk)
  } else {
    await pipeline(Readable.from(tar(), { objectMode: false, highWaterMark: READ_CHUNK }), out.stream, { end: !out.keepOpen })
  }
  return {
    images: images.map(refOf),
    skipped,
    manifests: manifests.size,
    blobs: blobs.size,
    bytes: progress.bytes,
  }
}

async function writeFully(fh: FileHandle, chunk: Buffer): Promise<void> {
  let off = 0
  while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten
}

/**
 * Exactly `size` bytes of an open file: into `reused` when the consumer is
 * done with a chunk before it asks for the next, else into fresh buffers.
 */
async function* readAll(blob: BlobReader, size: number, what: string, reused: Buffer | undefined, counted: (n: number) => void): AsyncGenerator<Buffer> {
  let pos = 0
  while (pos < size) {
    const want = Math.min(READ_CHUNK, size - pos)
    const buf = reused ? reused.subarray(0, want) : Buffer.allocUnsafe(want)
    const bytesRead = await blob.read(buf, 0, want, pos)
    if (bytesRead === 0) throw new DproxyError('CACHE_UNAVAILABLE', `blob ${what} is shorter than its ${size} bytes`)
    pos += bytesRead
    counted(bytesRead)
    yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead)
  }
}
