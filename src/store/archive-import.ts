// `dproxy cache import`: an OCI image layout in a tar (the archive
// oci-archive.ts describes, from export or skopeo) into a cache.
//
// Import is two phases, so that a bad archive leaves nothing half-imported:
//   1. read the whole tar once; every blobs/ entry is hashed while it streams
//      (ContentCheck) and refused, naming the entry, when it is not what its
//      name says or is cut short. Large entries go straight through the
//      store's verifying writer (temp file, renamed only when verified: a
//      verified blob is harmless, content-addressed and referenced by nothing
//      yet); small JSON entries (manifests, configs) are kept in memory,
//      because which of them are manifests is only known from index.json.
//   2. only then, per tag: check that its manifests and blobs are all there
//      (in the archive or already cached), store them, and record the tag.
// A refused archive takes back what phase 1 (or a failing disk in phase 2)
// wrote: every blob and manifest it added that no image references, so a
// flipped byte late in a large archive does not leave its first gigabytes
// behind as unreferenced files. What the cache held before the import stays.
// A tag is named by its ref.name. A full `registry/repository:tag` is taken
// as it is; a bare `repository:tag` (`alpine:3.19`, as other tools often
// write) means Docker Hub, as it would for `docker pull`; a name without a
// tag (`latest`, or none at all) says no image and is reported and skipped.
// A tag already cached is replaced only when the cached record is not newer
// than the archive's (`force` replaces anyway); an archive without
// dev.dproxy.checked-at counts as old, so it never replaces a tag silently,
// and what it adds counts as never checked (the daemon asks upstream first).

import type { FileHandle } from 'node:fs/promises'
import type { BlobWriter } from './api.js'
import { DproxyError, truncate } from '../errors.js'
import { ContentCheck, parseDigest, type Digest } from '../oci/digest.js'
import { blobsOf, MANIFEST_SIZE_LIMIT, parseManifest, type Manifest } from '../oci/manifest.js'
import { parseTaggedReference } from '../oci/reference.js'
import { inventory } from './inventory.js'
import { CHECKED_AT, REF_NAME, type ArchiveProgress, type ArchiveSummary, type Skipped } from './oci-archive.js'
import type { Store } from './store.js'
import { readTar } from './tar.js'

const MAX_INDEX_JSON = 16 * 1024 * 1024
/** Small JSON entries are held until index.json says which are manifests: thousands of images fit. */
const MAX_HELD = 512 * 1024 * 1024
/** Reads of an archive file (readReusing), into two buffers used over and over. */
const IMPORT_READ = 4 * 1024 * 1024
/** Writes are batched to this size. */
const WRITE_BATCH = 4 * 1024 * 1024

/**
 * An open file's bytes from its current position, read into two buffers in
 * turn: each chunk is good until the next is asked for, which is what
 * importArchive takes. The next chunk is read while the consumer hashes and
 * copies this one, and reads are larger than READ_CHUNK: nothing fresh is
 * allocated per read here, and each read is a trip through the thread pool.
 */
export async function* readReusing(fh: FileHandle): AsyncGenerator<Buffer> {
  const bufs = [Buffer.allocUnsafe(IMPORT_READ), Buffer.allocUnsafe(IMPORT_READ)]
  const readInto = (buf: Buffer) => fh.read(buf, 0, buf.length, null).then((r) => buf.subarray(0, r.bytesRead))
  let turn = 0
  let next: Promise<Buffer> | undefined = readInto(bufs[turn]!)
  try {
    for (;;) {
      const chunk: Buffer = await next
      next = undefined
      if (chunk.length === 0) return
      turn ^= 1
      next = readInto(bufs[turn]!)
      yield chunk
    }
  } finally {
    // A consumer that stops early: the read in flight ends before the caller closes the file.
    await next?.catch(() => {})
  }
}

export interface ImportOptions {
  /** Replace cached tags even when they are newer than the archive's. */
  force?: boolean
  onProgress?: (p: ArchiveProgress) => void
  /** The archive's size, when known (a file), for progress. */
  total?: number
}

export interface ImportSummary extends ArchiveSummary {
  /** Tags the archive names that were cached with the same digest already. */
  unchanged: string[]
}

interface IndexDescriptor {
  mediaType?: unknown
  digest?: unknown
  size?: unknown
  annotations?: Record<string, unknown>
}

interface PlannedTag {
  ref: string
  registry: string
  repository: string
  tag: string
  digest: string
  mediaType: string
  size: number
  checkedAt: number
  /** Manifests of the image in the archive or the cache, with their media types. */
  manifests: Map<string, string>
  blobs: Set<string>
}

/**
 * Reads an archive into the store; throws ARCHIVE_INVALID (naming the entry)
 * and records nothing when it is bad. `input` may reuse a chunk's memory once
 * the next chunk is asked for (readReusing): what is kept longer is copied.
 */
export async function importArchive(
  store: Store,
  input: AsyncIterable<Buffer | Uint8Array | string>,
  opts: ImportOptions = {},
): Promise<ImportSummary> {
  const added: Added = { blobs: new Set(), manifests: new Set() }
  try {
    return await importInto(store, input, opts, added)
  } catch (err) {
    await removeAdded(store, added)
    throw err
  }
}

/** What an import wrote that was not in the cache before it began. */
interface Added {
  blobs: Set<string>
  manifests: Set<string>
}

/**
 * After a refused import: removes what it wrote that no image references (a
 * pull or an earlier tag of this import may have come to use it meanwhile).
 * What was cached before the import was never written by it, so it stays.
 */
async function removeAdded(store: Store, added: Added): Promise<void> {
  if (added.blobs.size === 0 && added.manifests.size === 0) return
  const referenced = new Set<string>()
  for (const u of (await inventory(store)).units) if (u.kind === 'image') for (const f of u.files) referenced.add(f)
  for (const d of added.blobs) if (!referenced.has(`b:${d}`)) await store.deleteBlob(parseDigest(d)).catch(() => false)
  for (const d of added.manifests) if (!referenced.has(`m:${d}`)) await store.deleteManifest(parseDigest(d)).catch(() => false)
}

async function importInto(
  store: Store,
  input: AsyncIterable<Buffer | Uint8Array | string>,
  opts: ImportOptions,
  added: Added,
): Promise<ImportSummary> {
  const progress: ArchiveProgress = { bytes: 0, ...(opts.total !== undefined ? { total: opts.total } : {}) }
  let lastReport = 0
  async function* counted(): AsyncGenerator<Buffer | Uint8Array | string> {
    for await (const chunk of input) {
      progress.bytes += chunk.length
      if (progress.bytes - lastReport >= 1 << 20) {
        lastReport = progress.bytes
        opts.onProgress?.({ ...progress })
      }
      yield chunk
    }
  }

  // Phase 1: read and verify everything.
  const small = new Map<string, Buffer>()
  const stored = new Set<string>()
  let heldBytes = 0
  let layout: unknown
  let indexJson: unknown
  const written = { blobs: 0, bytes: 0 }
  const batches = new WriteBehind()
  for await (const entry of readTar(counted())) {
    if (entry.type !== 'file') continue
    if (entry.name === 'oci-layout') {
      layout = parseJson(await collect(entry.body, entry.size, 64 * 1024, entry.name), entry.name)
      continue
    }
    if (entry.name === 'index.json') {
      indexJson = parseJson(await collect(entry.body, entry.size, MAX_INDEX_JSON, entry.name), entry.name)
      continue
    }
    const m = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(entry.name)
    if (!m) continue
    let d: Digest
    try {
      d = parseDigest(`${m[1]}:${m[2]}`)
    } catch {
      throw archiveError('not a valid digest name', entry.name)
    }
    const check = new ContentCheck(d, entry.size)
    const fail = (err: unknown): never => {
      // A disk that refuses the write is the cache's failure, not the archive's.
      if (err instanceof DproxyError && !['DIGEST_INVALID', 'SIZE_INVALID', 'ARCHIVE_INVALID'].includes(err.code)) throw err
      throw archiveError(err instanceof Error ? err.message : String(err), entry.name, err)
    }
    const it = entry.body[Symbol.asyncIterator]()
    const first = await it.next().catch(fail)
    const head = first.done ? Buffer.alloc(0) : first.value
    const rest = { [Symbol.asyncIterator]: () => it }
    if (entry.size <= MANIFEST_SIZE_LIMIT && looksLikeJson(head)) {
      heldBytes += entry.size
      if (heldBytes > MAX_HELD) throw archiveError(`more than ${MAX_HELD} bytes of small JSON entries (manifests, configs)`, entry.name)
      // Copies: the input may reuse its buffers (see importArchive).
      const parts = [Buffer.from(head)]
      for await (const part of rest) parts.push(Buffer.from(part))
      const bytes = Buffer.concat(parts)
      try {
        check.update([bytes])
        check.finish()
      } catch (err) {
        fail(err)
      }
      small.set(d.value, bytes)
      continue
    }
    if ((await store.statBlob(d)) === entry.size) {
      // Cached already: still proves the archive's bytes, writes nothing.
      try {
        check.update([head])
        for await (const part of rest) check.update([part])
        check.finish()
      } catch (err) {
        fail(err)
      }
      stored.add(d.value)
      continue
    }
    const w = await store.createBlobWriter(d, entry.size)
    const out = batches.start(w)
    try {
      await out.add(head)
      for await (const part of rest) await out.add(part)
      await out.end()
      await w.commit()
    } catch (err) {
      await out.settle()
      await w.abort()
      fail(err)
    }
    added.blobs.add(d.value)
    stored.add(d.value)
    written.blobs++
    written.bytes += entry.size
  }
  opts.onProgress?.({ ...progress })
  if (!isObject(layout) || typeof layout.imageLayoutVersion !== 'string') {
    throw archiveError('missing or without imageLayoutVersion: not an OCI image layout', 'oci-layout')
  }
  if (!isObject(indexJson) || !Array.isArray(indexJson.manifests)) throw archiveError('missing or without manifests[]', 'index.json')

  // Phase 2: plan every tag; refuse the archive if one lacks anything.
  const skipped: Skipped[] = []
  const plans: PlannedTag[] = []
  for (const raw of indexJson.manifests as IndexDescriptor[]) {
    const digest = typeof raw?.digest === 'string' ? raw.digest : ''
    const refName = typeof raw?.annotations?.[REF_NAME] === 'string' ? (raw.annotations[REF_NAME] as string) : undefined
    if (refName === undefined) {
      skipped.push({ image: `@${truncate(digest)}`, reason: `no ${REF_NAME} annotation: no tag to record` })
      continue
    }
    let name: ReturnType<typeof parseTaggedReference>
    try {
      name = parseTaggedReference(refName)
    } catch (err) {
      skipped.push({ image: truncate(refName), reason: err instanceof Error ? err.message : String(err) })
      continue
    }
    const ref = `${name.registry}/${name.repository}:${name.tag}`
    const where = `index.json entry ${truncate(refName)}`
    let root: Digest
    try {
      root = parseDigest(digest)
    } catch {
      throw archiveError(`bad digest '${truncate(digest)}'`, where)
    }
    const plan: PlannedTag = {
      ref,
      ...name,
      digest: root.value,
      mediaType: typeof raw.mediaType === 'string' ? raw.mediaType : '',
      size: typeof raw.size === 'number' ? raw.size : -1,
      checkedAt: checkedAtOf(raw.annotations?.[CHECKED_AT]),
      manifests: new Map(),
      blobs: new Set(),
    }
    await walkImage(store, small, stored, plan, root.value, plan.mediaType, true, where)
    plan.mediaType = plan.manifests.get(root.value)!
    plans.push(plan)
  }

  // Phase 3: everything needed is verified; store it, then record the tags.
  const summary: ImportSummary = { images: [], unchanged: [], skipped, manifests: 0, blobs: written.blobs, bytes: written.bytes }
  const manifestsDone = new Set<string>()
  for (const plan of plans) {
    for (const b of plan.blobs) {
      const bytes = small.get(b)
      if (bytes === undefined || stored.has(b)) continue
      const d = parseDigest(b)
      if ((await store.statBlob(d)) !== bytes.length) {
        const w = await store.createBlobWriter(d, bytes.length)
        await w.write(bytes)
        await w.commit()
        added.blobs.add(b)
        summary.blobs++
        summary.bytes += bytes.length
      }
      stored.add(b)
    }
    for (const [d, mediaType] of plan.manifests) {
      if (manifestsDone.has(d)) continue
      manifestsDone.add(d)
      const bytes = small.get(d)
      const digest = parseDigest(d)
      if (bytes === undefined || (await store.hasManifest(digest))) continue
      added.manifests.add(d)
      await store.putManifest(digest, bytes, mediaType)
      summary.manifests++
      summary.bytes += bytes.length
    }
  }
  for (const plan of plans) {
    const cached = await store.getTag(plan.registry, plan.repository, plan.tag)
    if (cached && !opts.force && cached.checkedAt >= plan.checkedAt) {
      if (cached.digest === plan.digest) summary.unchanged.push(plan.ref)
      else skipped.push({ image: plan.ref, reason: `the cached tag is newer (checked ${new Date(cached.checkedAt).toISOString()}); --force replaces it` })
      continue
    }
    for (const d of plan.manifests.keys()) await store.linkManifest(plan.registry, plan.repository, parseDigest(d))
    const size = small.get(plan.digest)?.length ?? (await store.getManifest(parseDigest(plan.digest)))?.bytes.length ?? plan.size
    await store.putTag(plan.registry, plan.repository, plan.tag, {
      digest: plan.digest,
      mediaType: plan.mediaType,
      size,
      checkedAt: plan.checkedAt,
    })
    summary.images.push(plan.ref)
  }
  return summary
}

/**
 * Adds the manifest `d` and what it names to `plan`: every blob must be in
 * the archive or the cache; an index's children may be absent (platforms
 * that were never pulled), the image's own manifest may not.
 */
async function walkImage(
  store: Store,
  small: Map<string, Buffer>,
  stored: Set<string>,
  plan: PlannedTag,
  d: string,
  descriptorType: string,
  isRoot: boolean,
  where: string,
): Promise<void> {
  if (plan.manifests.has(d)) return
  let bytes = small.get(d)
  if (bytes === undefined) bytes = (await store.getManifest(parseDigest(d)))?.bytes
  if (bytes === undefined) {
    if (isRoot) throw archiveError(`its manifest ${d} is neither in the archive nor cached`, where)
    return
  }
  let m: Manifest
  try {
    m = parseManifest(bytes, { mediaType: descriptorType })
  } catch (err) {
    throw archiveError(err instanceof Error ? err.message : String(err), `blobs/${d.replace(':', '/')}`, err)
  }
  if (!m.mediaType) throw archiveError(`manifest ${d} says no media type`, where)
  plan.manifests.set(d, m.mediaType)
  for (const b of new Set(blobsOf(m).map((x) => x.digest.value))) {
    if (small.has(b) || stored.has(b)) plan.blobs.add(b)
    else if ((await store.statBlob(parseDigest(b))) !== undefined) stored.add(b)
    else throw archiveError(`blob ${b} of manifest ${d} is neither in the archive nor cached`, where)
  }
  const children = new Map<string, string>()
  for (const c of m.manifests) if (!children.has(c.digest.value)) children.set(c.digest.value, c.mediaType ?? '')
  for (const [c, mediaType] of children) await walkImage(store, small, stored, plan, c, mediaType, false, where)
}

function checkedAtOf(value: unknown): number {
  const ms = typeof value === 'string' ? Date.parse(value) : Number.NaN
  return Number.isFinite(ms) && ms > 0 ? ms : 0
}

function looksLikeJson(head: Buffer): boolean {
  for (const b of head.subarray(0, 64)) {
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) continue
    return b === 0x7b
  }
  return false
}

async function collect(body: AsyncIterable<Buffer>, size: number, max: number, entry: string): Promise<Buffer> {
  if (size > max) throw archiveError(`${size} bytes, at most ${max} expected`, entry)
  const parts: Buffer[] = []
  for await (const part of body) parts.push(Buffer.from(part))
  return Buffer.concat(parts)
}

/**
 * A blob's bytes on their way to its writer, copied into one of two buffers
 * of WRITE_BATCH bytes: while one is written, the next fills and is hashed.
 * Large writes keep system calls few; the copy lets the input reuse its own
 * buffer, which is cheaper than fresh memory for every chunk.
 */
class WriteBehind {
  private readonly buffers = [Buffer.allocUnsafe(WRITE_BATCH), Buffer.allocUnsafe(WRITE_BATCH)]
  private current = 0
  private filled = 0
  /** The write of the other buffer, still in flight. */
  private pending: Promise<void> | undefined
  private writer: BlobWriter | undefined

  start(w: BlobWriter): this {
    this.writer = w
    this.filled = 0
    this.pending = undefined
    return this
  }

  async add(chunk: Uint8Array): Promise<void> {
    let off = 0
    while (off < chunk.length) {
      const n = Math.min(chunk.length - off, WRITE_BATCH - this.filled)
      this.buffers[this.current]!.set(chunk.subarray(off, off + n), this.filled)
      this.filled += n
      off += n
      if (this.filled === WRITE_BATCH) await this.flush()
    }
  }

  /** Writes what is left and waits for every write. */
  async end(): Promise<void> {
    await this.flush()
    await this.pending
  }

  /** Waits for a write in flight, whatever its outcome (before the writer is aborted). */
  async settle(): Promise<void> {
    await this.pending?.catch(() => {})
  }

  private async flush(): Promise<void> {
    if (this.filled === 0) return
    // Hashed now, written after the previous write (store.ts), whose buffer is refilled next.
    const writing = this.writer!.write(this.buffers[this.current]!.subarray(0, this.filled))
    // Until it is awaited below or in end() or settle(): not an unhandled rejection meanwhile.
    writing.catch(() => {})
    const previous = this.pending
    this.pending = writing
    this.current ^= 1
    this.filled = 0
    await previous
  }
}

function parseJson(bytes: Buffer, entry: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'))
  } catch {
    throw archiveError('not valid JSON', entry)
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function archiveError(message: string, entry: string, cause?: unknown): DproxyError {
  if (cause instanceof DproxyError && cause.code === 'ARCHIVE_INVALID') return cause
  return new DproxyError('ARCHIVE_INVALID', `${truncate(entry)}: ${message}`, {
    detail: { entry: truncate(entry) },
    ...(cause !== undefined ? { cause } : {}),
  })
}
