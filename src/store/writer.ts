// The verifying writer: the one way bytes become a blob in the file store
// (store.ts hands it out as createBlobWriter). It writes to a temp file under
// tmp/, hashes while it writes, and renames the file to the blob's path only
// when digest and size match, so the cache never holds a partial or wrong
// file; any number of readers may follow the temp file while it grows. A
// large blob is flushed to disk in steps while it is written, so the commit
// waits only for the last part. When the disk refuses a write (full), the
// refused bytes can be written again once there is room (retry), or the
// writer stops storing and only checks the rest (stopStoring), so a download
// past a full disk is still verified.

import { constants, promises as fs } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { DproxyError, isDproxyError } from '../errors.js'
import type { DiskHealth } from './health.js'
import { DIR_MODE, FILE_MODE, type Layout } from './layout.js'
import { isNotFound } from '../fs.js'
import { type Digest, ContentCheck } from '../oci/digest.js'
import type { BlobReader, BlobWriter, StoredBlob } from './api.js'

/**
 * A blob being written is flushed to disk every this many bytes, in the
 * background: a large blob's flush then overlaps its hashing instead of all
 * coming after it (a 512 MiB import spent a quarter of its time in one final
 * datasync). Smaller blobs are flushed once, at commit.
 */
export const SYNC_STEP = 32 * 1024 * 1024

/**
 * An open file as a blob reader. The handle stays valid when another process
 * deletes or replaces the file, so a reader never loses bytes to eviction.
 */
export class FileReader implements StoredBlob {
  constructor(
    private readonly fh: FileHandle,
    readonly size: number,
  ) {}

  async read(buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return (await this.fh.read(buf, offset, length, position)).bytesRead
  }

  close(): Promise<void> {
    return this.fh.close()
  }
}

/**
 * A temp file that hashes what is written to it and becomes `finalPath` only
 * when the digest (and the expected size, when known) match.
 */
export class VerifyingWriter implements BlobWriter {
  written = 0
  private done = false
  private verified = false
  private committed = false
  /** The last write queued (writev). */
  private tail: Promise<void> = Promise.resolve()
  /** A flush of what is written so far, running while more is written (see append). */
  private syncing: Promise<void> | undefined
  /**
   * Its failure, thrown by commit(): after a failed flush the kernel may drop
   * the dirty pages and let the next flush succeed, so a later success proves nothing.
   */
  private syncError: unknown
  /** `written` at which the next such flush starts. */
  private nextSync = SYNC_STEP
  /** The chunks of the last write the disk refused (hashed already), for retry() or stopStoring(). */
  private refused: Uint8Array[] | undefined
  /** Only checking from now on (stopStoring): the temp file is gone. */
  private stopped = false

  private constructor(
    readonly tempPath: string,
    private readonly finalPath: string,
    private readonly digest: Digest,
    private readonly check: ContentCheck,
    private readonly fh: FileHandle,
    private readonly health: DiskHealth,
  ) {}

  static async create(
    layout: Layout,
    d: Digest,
    finalPath: string,
    health: DiskHealth,
    expectedSize?: number,
  ): Promise<VerifyingWriter> {
    const tempPath = layout.tempFile(d.hex.slice(0, 16))
    let fh: FileHandle
    try {
      fh = await fs.open(tempPath, 'wx', FILE_MODE)
    } catch (err) {
      throw health.writeFailed(err, `blob ${d.value}`, tempPath)
    }
    return new VerifyingWriter(tempPath, finalPath, d, new ContentCheck(d, expectedSize), fh, health)
  }

  async write(chunk: Uint8Array): Promise<void> {
    await this.writev([chunk])
  }

  /**
   * Appends chunks in one system call where the OS allows (downloads arrive in
   * many small pieces). The chunks are hashed at once and written after any
   * write still in progress, so a caller may hash its next batch while this
   * one is on its way to the disk (it must leave the chunks alone until the
   * promise settles).
   */
  writev(chunks: Uint8Array[]): Promise<void> {
    if (this.refused) return Promise.reject(new DproxyError('INTERNAL', `write after a refused write to blob ${this.digest.value}`))
    try {
      this.check.update(chunks)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.stopped) {
      this.written += chunks.reduce((n, c) => n + c.length, 0)
      return Promise.resolve()
    }
    const wrote = this.tail.then(() => this.append(chunks))
    this.tail = wrote.catch(() => {})
    return wrote
  }

  /**
   * Writes at the position the chunks belong at (not the file's position, which
   * a refused write leaves anywhere), so retry() writes them again in place.
   */
  private async append(chunks: Uint8Array[]): Promise<void> {
    const total = chunks.reduce((n, c) => n + c.length, 0)
    try {
      let { bytesWritten } = await this.fh.writev(chunks, this.written)
      // A short write leaves the rest: finish it chunk by chunk.
      let at = this.written
      for (const c of chunks) {
        if (bytesWritten >= c.length) {
          bytesWritten -= c.length
          at += c.length
          continue
        }
        let off = bytesWritten
        bytesWritten = 0
        while (off < c.length) off += (await this.fh.write(c, off, c.length - off, at + off)).bytesWritten
        at += c.length
      }
    } catch (err) {
      const failure = this.health.writeFailed(err, `blob ${this.digest.value}`, this.tempPath)
      if (isDproxyError(failure, 'CACHE_UNAVAILABLE')) this.refused = chunks
      throw failure
    }
    this.written += total
    if (this.written >= this.nextSync && !this.syncing) {
      this.nextSync = this.written + SYNC_STEP
      // The disk takes the first bytes while later ones are hashed, so the flush in
      // commit() has only the rest to wait for.
      this.syncing = this.fh.datasync().then(
        () => void (this.syncing = undefined),
        (err: unknown) => {
          this.syncError ??= err
          this.syncing = undefined
        },
      )
    }
  }

  async retry(): Promise<void> {
    const chunks = this.refused
    if (!chunks || this.stopped) return
    this.refused = undefined
    const wrote = this.tail.then(() => this.append(chunks))
    this.tail = wrote.catch(() => {})
    await wrote
  }

  async stopStoring(): Promise<void> {
    if (this.stopped || this.done) return
    this.stopped = true
    await this.tail
    this.written += (this.refused ?? []).reduce((n, c) => n + c.length, 0)
    this.refused = undefined
    await this.discard()
  }

  /**
   * Checks size and digest of everything written. On a mismatch the temp file
   * is removed and SIZE_INVALID / DIGEST_INVALID thrown. Separate from commit()
   * so readers can be released as soon as the bytes are known good, while the
   * flush to disk is still running.
   */
  async verify(): Promise<void> {
    if (this.verified) return
    try {
      this.check.finish()
      this.verified = true
    } catch (err) {
      this.done = true
      if (!this.stopped) await this.discard()
      throw err
    }
  }

  /** Verifies (if not done yet), flushes to disk and renames into place. */
  async commit(): Promise<void> {
    await this.tail
    await this.verify()
    if (this.stopped) throw new DproxyError('CACHE_UNAVAILABLE', `blob ${this.digest.value} was not stored: the disk refused it`)
    this.done = true
    try {
      await this.syncing
      if (this.syncError !== undefined) throw this.syncError
      await this.fh.datasync()
      await this.fh.close()
      await fs.mkdir(dirname(this.finalPath), { recursive: true, mode: DIR_MODE })
      await fs.rename(this.tempPath, this.finalPath)
    } catch (err) {
      await this.discard()
      throw this.health.writeFailed(err, `blob ${this.digest.value}`, this.finalPath)
    }
    this.committed = true
    this.health.writeSucceeded()
  }

  /**
   * Opens the temp file, or the blob in place once it was renamed there: a
   * reader opened either way reads the same inode, which the rename does not
   * change. The only bytes ever found under the final path are verified ones.
   */
  async follow(): Promise<BlobReader> {
    const read = (path: string) => fs.open(path, constants.O_RDONLY).then((fh) => new FileReader(fh, -1))
    if (this.stopped) throw new DproxyError('CACHE_UNAVAILABLE', `blob ${this.digest.value} is not being stored: the disk refused it`)
    if (!this.committed) {
      try {
        return await read(this.tempPath)
      } catch (err) {
        if (!isNotFound(err)) throw this.health.readFailed(err, `blob ${this.digest.value}`)
      }
    }
    try {
      return await read(this.finalPath)
    } catch (err) {
      if (isNotFound(err)) throw new DproxyError('BLOB_UNKNOWN', `the download of blob ${this.digest.value} was abandoned`)
      throw this.health.readFailed(err, `blob ${this.digest.value}`)
    }
  }

  async abort(): Promise<void> {
    if (this.done) return
    this.done = true
    if (!this.stopped) await this.discard()
  }

  private async discard(): Promise<void> {
    await this.tail
    await this.syncing
    await this.fh.close().catch(() => {})
    // On a read-only disk this fails too; the temp file is then an orphan, removed at the next start.
    await fs.rm(this.tempPath, { force: true }).catch(() => {})
  }
}
