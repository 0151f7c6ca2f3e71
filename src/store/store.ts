// The content-addressed cache on disk (see layout.ts for the tree), the file
// implementation of the blob, manifest and tag stores of api.ts. It knows
// nothing about upstreams or HTTP: it stores verified bytes under their digest,
// remembers what tags pointed at, and records when things were last used.
//
// Writes go to a temp file that is hashed while it is written and renamed into
// place only when digest and size match, so the cache never holds a partial or
// wrong file. Readers get an open file handle, which stays valid if another
// process deletes or replaces the file meanwhile.
//
// Everything is created private to the user (dir 0700, files 0600; layout.ts
// says why). A write the disk refuses (full, read-only, permissions) throws
// CACHE_UNAVAILABLE and is recorded in `health`; recording when a blob or
// manifest was last used is best effort and never fails a read.

import { constants, promises as fs, type Dirent } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { LRUCache } from 'lru-cache'
import { systemClock, type Clock } from '../clock.js'
import { DproxyError, isDproxyError } from '../errors.js'
import { silentLogger, type Logger } from '../log.js'
import { isProcessAlive } from '../process.js'
import { isNotFound, removeFile } from '../fs.js'
import { DiskHealth } from './health.js'
import { DIR_MODE, FILE_MODE, LAYOUT_VERSION, Layout, tagFileName, tempFileOwner } from './layout.js'
import { type Digest, ContentCheck } from '../oci/digest.js'
import type { BlobReader, BlobWriter, CacheStore, StoredBlob, StoredManifest, TagRecord } from './api.js'

export type { StoredManifest, TagRecord } from './api.js'

export interface CacheStats {
  bytes: number
  blobs: number
  manifests: number
  tags: number
  /** Files under tmp/: downloads in progress, and what killed writers left (removed at start, by clear and prune). */
  tempFiles: number
  tempBytes: number
}

/** Temp files left by writers that are gone, found (and unless a dry run, removed). */
export interface OrphanTemps {
  files: number
  bytes: number
}

export interface StoreOptions {
  clock?: Clock
  /** Don't rewrite a file's access time more often than this (ms). */
  touchIntervalMs?: number
  /** How many recently touched files to remember for that (the least recently touched are forgotten). */
  touchMemory?: number
  /** Where the store says that it tightened the cache dir's mode, or that the disk refuses writes. */
  log?: Logger
  /**
   * Bring an older layout up to date. Only for the owner of the cache dir (the
   * daemon, holding daemon.json): others read the layout they find.
   */
  migrate?: boolean
}

const TOUCH_MEMORY = 4096
/**
 * A blob being written is flushed to disk every this many bytes, in the
 * background: a large blob's flush then overlaps its hashing instead of all
 * coming after it (a 512 MiB import spent a quarter of its time in one final
 * datasync). Smaller blobs are flushed once, at commit.
 */
export const SYNC_STEP = 32 * 1024 * 1024

export class Store implements CacheStore {
  readonly layout: Layout
  readonly clock: Clock
  /** Whether the disk takes writes (status reports it). */
  readonly health: DiskHealth
  private readonly log: Logger
  private readonly touchIntervalMs: number
  /** Bounded: a long-running daemon serves more distinct blobs than it should remember. */
  private readonly touched: LRUCache<string, number>

  private constructor(root: string, options: StoreOptions) {
    this.layout = new Layout(root)
    this.clock = options.clock ?? systemClock
    this.log = options.log ?? silentLogger
    this.health = new DiskHealth(this.clock, this.log)
    this.touchIntervalMs = options.touchIntervalMs ?? 60_000
    this.touched = new LRUCache({ max: options.touchMemory ?? TOUCH_MEMORY })
  }

  /** Opens (creating when needed) the cache at `root`. */
  static async open(root: string, options: StoreOptions = {}): Promise<Store> {
    const store = new Store(root, options)
    await store.init(options.migrate === true)
    return store
  }

  get root(): string {
    return this.layout.root
  }

  private async init(migrate: boolean): Promise<void> {
    const { layout } = this
    await fs.mkdir(layout.tmpDir, { recursive: true, mode: DIR_MODE })
    await this.restrictAccess()
    let version: unknown
    try {
      version = JSON.parse(await fs.readFile(layout.versionFile, 'utf8')).version
    } catch (err) {
      if (!isNotFound(err)) throw err
      await writeAtomic(layout, layout.versionFile, JSON.stringify({ version: LAYOUT_VERSION }) + '\n')
      version = LAYOUT_VERSION
    }
    if (version === 1 && migrate) {
      await migrateTagFiles(layout)
      await writeAtomic(layout, layout.versionFile, JSON.stringify({ version: LAYOUT_VERSION }) + '\n')
      version = LAYOUT_VERSION
    }
    if (version !== 1 && version !== LAYOUT_VERSION) {
      throw new DproxyError(
        'CONFIG_INVALID',
        `cache dir ${layout.root} has layout version ${String(version)}, this dproxy understands ${LAYOUT_VERSION}`,
      )
    }
    layout.version = version
  }

  /** Makes the cache dir private when an older dproxy (or the user) created it readable by others. */
  private async restrictAccess(): Promise<void> {
    if (process.platform === 'win32') return
    const { root } = this.layout
    const mode = (await fs.stat(root)).mode & 0o777
    if ((mode & 0o077) === 0) return
    const was = mode.toString(8).padStart(4, '0')
    try {
      await fs.chmod(root, DIR_MODE)
      this.log.info(`cache dir ${root} was open to other users (mode ${was}); now 0700, so cached private images stay private`)
    } catch (err) {
      this.log.warn(`cache dir ${root} is open to other users (mode ${was}) and cannot be made private: ${(err as Error).message}`)
    }
  }

  /**
   * Removes the temp files of writers that are gone: their pid is not a live
   * process (or, with `ownPidIsDead`, it is ours, which a daemon that has not
   * written anything yet can only have inherited: a container restarted with
   * the same pid). Every writer names its files by pid, so a live download is
   * never touched.
   */
  async removeOrphanTemps(opts: { dryRun?: boolean; ownPidIsDead?: boolean } = {}): Promise<OrphanTemps> {
    const found: OrphanTemps = { files: 0, bytes: 0 }
    for (const name of await fs.readdir(this.layout.tmpDir).catch(emptyWhenMissing)) {
      const owner = tempFileOwner(name)
      if (owner !== undefined && (owner === process.pid ? !opts.ownPidIsDead : isProcessAlive(owner))) continue
      const path = join(this.layout.tmpDir, name)
      const st = await fs.stat(path).catch(() => undefined)
      if (!st?.isFile()) continue
      if (!opts.dryRun && !(await removeFile(path))) continue
      found.files++
      found.bytes += st.size
    }
    return found
  }

  // ---- blobs

  /** Opens a cached blob for reading, or undefined when it is not cached. */
  async openBlob(d: Digest): Promise<StoredBlob | undefined> {
    let fh: FileHandle
    try {
      fh = await fs.open(this.layout.blob(d), constants.O_RDONLY)
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw this.health.readFailed(err, `blob ${d.value}`)
    }
    const { size } = await fh.stat()
    return new FileReader(fh, size)
  }

  async statBlob(d: Digest): Promise<number | undefined> {
    const st = await fs.stat(this.layout.blob(d)).catch((err: unknown) => {
      if (isNotFound(err)) return undefined
      throw this.health.readFailed(err, `blob ${d.value}`)
    })
    return st?.size
  }

  blobPath(d: Digest): string {
    return this.layout.blob(d)
  }

  async createBlobWriter(d: Digest, expectedSize?: number): Promise<VerifyingWriter> {
    return VerifyingWriter.create(this.layout, d, this.layout.blob(d), this.health, expectedSize)
  }

  async touchBlob(d: Digest): Promise<void> {
    await this.touch(this.layout.blob(d))
  }

  async deleteBlob(d: Digest): Promise<boolean> {
    return removeFile(this.layout.blob(d))
  }

  // ---- manifests and tags

  async getManifest(d: Digest): Promise<StoredManifest | undefined> {
    try {
      const [bytes, type] = await Promise.all([
        fs.readFile(this.layout.manifest(d)),
        fs.readFile(this.layout.manifestType(d), 'utf8'),
      ])
      return { digest: d.value, mediaType: type.trim(), bytes }
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  async hasManifest(d: Digest): Promise<boolean> {
    return fs.access(this.layout.manifest(d)).then(
      () => true,
      () => false,
    )
  }

  /** Stores manifest bytes under their digest. The caller has verified the digest. */
  async putManifest(d: Digest, bytes: Uint8Array, mediaType: string): Promise<void> {
    await this.write(this.layout.manifestType(d), mediaType + '\n', `manifest ${d.value}`)
    await this.write(this.layout.manifest(d), bytes, `manifest ${d.value}`)
  }

  async touchManifest(d: Digest): Promise<void> {
    await this.touch(this.layout.manifest(d))
  }

  async deleteManifest(d: Digest): Promise<boolean> {
    const removed = await removeFile(this.layout.manifest(d))
    await removeFile(this.layout.manifestType(d))
    return removed
  }

  async getTag(registry: string, repository: string, tag: string): Promise<TagRecord | undefined> {
    try {
      const rec = JSON.parse(await fs.readFile(this.layout.tag(registry, repository, tag), 'utf8')) as TagRecord
      return typeof rec.digest === 'string' && typeof rec.mediaType === 'string' ? rec : undefined
    } catch (err) {
      if (isNotFound(err) || err instanceof SyntaxError) return undefined
      throw err
    }
  }

  async putTag(registry: string, repository: string, tag: string, rec: TagRecord): Promise<void> {
    await this.write(this.layout.tag(registry, repository, tag), JSON.stringify(rec) + '\n', `tag ${repository}:${tag}`)
  }

  private async write(path: string, data: string | Uint8Array, what: string): Promise<void> {
    try {
      await writeAtomic(this.layout, path, data)
    } catch (err) {
      throw this.health.writeFailed(err, what, path)
    }
    this.health.writeSucceeded()
  }

  async listTags(registry: string, repository: string): Promise<string[]> {
    const names = await fs.readdir(this.layout.tagsDir(registry, repository)).catch((err: unknown) => {
      if (isNotFound(err)) return [] as string[]
      throw err
    })
    return names.flatMap((name) => this.layout.tagOfFile(name) ?? []).sort()
  }

  /** Records that `repository` references manifest `d` (idempotent). */
  async linkManifest(registry: string, repository: string, d: Digest): Promise<void> {
    const path = this.layout.manifestLink(registry, repository, d)
    try {
      try {
        await fs.writeFile(path, '', { flag: 'wx', mode: FILE_MODE })
      } catch (err) {
        if (isExists(err)) return
        if (!isNotFound(err)) throw err
        await fs.mkdir(dirname(path), { recursive: true, mode: DIR_MODE })
        await fs.writeFile(path, '', { flag: 'w', mode: FILE_MODE })
      }
    } catch (err) {
      throw this.health.writeFailed(err, `the link of ${repository} to ${d.value}`, path)
    }
  }

  // ---- whole-cache views

  async stats(): Promise<CacheStats> {
    const stats: CacheStats = { bytes: 0, blobs: 0, manifests: 0, tags: 0, tempFiles: 0, tempBytes: 0 }
    await walk(this.layout.blobsDir, async (path) => {
      const st = await fs.stat(path).catch(() => undefined)
      if (st) {
        stats.blobs++
        stats.bytes += st.size
      }
    })
    await walk(this.layout.manifestsDir, async (path) => {
      const st = await fs.stat(path).catch(() => undefined)
      if (!st) return
      stats.bytes += st.size
      if (!path.endsWith('.type')) stats.manifests++
    })
    await walk(this.layout.repositoriesDir, async (path) => {
      if (this.layout.repositoryFile(path)?.kind === 'tag') stats.tags++
    })
    await walk(this.layout.tmpDir, async (path) => {
      const st = await fs.stat(path).catch(() => undefined)
      if (st) {
        stats.tempFiles++
        stats.tempBytes += st.size
      }
    })
    return stats
  }

  private async touch(path: string): Promise<void> {
    const now = this.clock.now()
    const last = this.touched.get(path)
    if (last !== undefined && now - last < this.touchIntervalMs) return
    this.touched.set(path, now)
    try {
      const st = await fs.stat(path)
      await fs.utimes(path, new Date(now), st.mtime)
    } catch (err) {
      if (isNotFound(err)) return
      // Eviction may pick this file a little early; serving it matters more.
      const failure = this.health.writeFailed(err, 'the last-used time', path)
      if (!isDproxyError(failure, 'CACHE_UNAVAILABLE')) throw failure
    }
  }
}

/**
 * An open file as a blob reader. The handle stays valid when another process
 * deletes or replaces the file, so a reader never loses bytes to eviction.
 */
class FileReader implements StoredBlob {
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

async function writeAtomic(layout: Layout, path: string, data: string | Uint8Array): Promise<void> {
  const temp = layout.tempFile()
  try {
    await fs.writeFile(temp, data, { flag: 'wx', mode: FILE_MODE })
  } catch (err) {
    // ENOSPC can come after the file was created.
    await fs.rm(temp, { force: true }).catch(() => {})
    throw err
  }
  try {
    await fs.mkdir(dirname(path), { recursive: true, mode: DIR_MODE })
    await fs.rename(temp, path)
  } catch (err) {
    await fs.rm(temp, { force: true }).catch(() => {})
    throw err
  }
}

/**
 * Layout 1 -> 2: renames every tag file whose name has an upper-case letter
 * to its case-safe name. Each rename is atomic, so a migration cut short is
 * finished by the next open; the version is raised only after the last one.
 */
async function migrateTagFiles(layout: Layout): Promise<void> {
  await walk(layout.repositoriesDir, async (path) => {
    const file = layout.repositoryFile(path)
    if (file?.kind !== 'tag' || !/[A-Z]/.test(file.file)) return
    await fs.rename(path, join(dirname(path), tagFileName(file.file))).catch((err: unknown) => {
      if (!isNotFound(err)) throw err
    })
  })
}

function emptyWhenMissing(err: unknown): string[] {
  if (isNotFound(err)) return []
  throw err
}

/** Calls `fn` for every regular file below `dir` (missing dir = nothing). */
export async function walk(dir: string, fn: (path: string, entry: Dirent) => Promise<void>): Promise<void> {
  let entries: Dirent[]
  try {
    entries = await fs.readdir(dir, { withFileTypes: true })
  } catch (err) {
    if (isNotFound(err)) return
    throw err
  }
  for (const entry of entries) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) await walk(path, fn)
    else if (entry.isFile()) await fn(path, entry)
  }
}

function isExists(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'EEXIST'
}

