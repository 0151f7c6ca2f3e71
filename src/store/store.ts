// The content-addressed cache on disk (see layout.ts for the tree), the file
// implementation of the blob, manifest and tag stores of api.ts. It knows
// nothing about upstreams or HTTP: it stores verified bytes under their digest,
// remembers what tags pointed at, and records when things were last used.
//
// Blobs are written through the verifying writer (writer.ts): a temp file
// hashed while it is written and renamed into place only when digest and size
// match, so the cache never holds a partial or wrong file. Readers get an open
// file handle, which stays valid if another process deletes or replaces the
// file meanwhile.
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
import { FileReader, VerifyingWriter } from './writer.js'
import { DIR_MODE, FILE_MODE, LAYOUT_VERSION, Layout, tagFileName, tempFileOwner } from './layout.js'
import { LinkIndex } from './links.js'
import { parseDigest, type Digest } from '../oci/digest.js'
import type { CacheStore, StoredBlob, StoredManifest, TagRecord } from './api.js'

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

export class Store implements CacheStore {
  readonly layout: Layout
  readonly clock: Clock
  /** Whether the disk takes writes (status reports it). */
  readonly health: DiskHealth
  private readonly log: Logger
  private readonly touchIntervalMs: number
  /** Bounded: a long-running daemon serves more distinct blobs than it should remember. */
  private readonly touched: LRUCache<string, number>
  /** Which repository has which content, from the manifest links (links.ts). */
  private readonly links: LinkIndex

  private constructor(root: string, options: StoreOptions) {
    this.layout = new Layout(root)
    this.clock = options.clock ?? systemClock
    this.log = options.log ?? silentLogger
    this.health = new DiskHealth(this.clock, this.log)
    this.touchIntervalMs = options.touchIntervalMs ?? 60_000
    this.touched = new LRUCache({ max: options.touchMemory ?? TOUCH_MEMORY })
    this.links = new LinkIndex({ linkedManifests: (registry, repository) => this.linkedManifests(registry, repository), getManifest: (d) => this.getManifest(d) })
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

  /** Records that `repository` references manifest `d` (idempotent): it then has what `d` names. */
  async linkManifest(registry: string, repository: string, d: Digest): Promise<void> {
    // In memory first: a disk that refuses the marker does not keep this daemon from serving the image.
    await this.links.addManifest(registry, repository, d)
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

  async isLinked(registry: string, repository: string, d: Digest): Promise<boolean> {
    return this.links.has(registry, repository, d)
  }

  async linkBlob(registry: string, repository: string, d: Digest): Promise<void> {
    await this.links.addBlob(registry, repository, d)
  }

  /** Forgets what was derived for the repository (its manifest links were removed): read again when next asked. */
  forgetLinks(registry: string, repository: string): void {
    this.links.forget(registry, repository)
  }

  /** The manifests the repository's _manifests markers name (invalid names are skipped). */
  private async linkedManifests(registry: string, repository: string): Promise<Digest[]> {
    const dir = this.layout.manifestLinksDir(registry, repository)
    const out: Digest[] = []
    for (const alg of await fs.readdir(dir).catch(emptyWhenMissing)) {
      for (const hex of await fs.readdir(join(dir, alg)).catch(() => [] as string[])) {
        try {
          out.push(parseDigest(`${alg}:${hex}`))
        } catch {
          // Not a name linkManifest writes.
        }
      }
    }
    return out
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

