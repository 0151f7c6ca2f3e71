// Changing the cache from the CLI (`dproxy cache clear|prune|import`): through the
// running daemon's admin endpoint when one serves the cache dir (found through
// <cacheDir>/daemon.json), so that the change is serialised with the daemon's
// own eviction; with no daemon, on the directory itself under
// <cacheDir>/cache.lock. Either way a pull in progress is not broken (see
// store/evict.ts). A daemon that holds the directory but does not answer is
// an error, never a reason to change the directory under its feet
// (owningDaemon in admin-client.ts).
//
// The admin calls themselves (their URLs, the admin token) are AdminClient's.

import { createReadStream, existsSync, promises as fs } from 'node:fs'
import { parseDuration } from '../config/units.js'
import { DproxyError } from '../errors.js'
import { importArchive, readReusing, type ImportSummary } from '../store/archive-import.js'
import { clearCache, parseImageSelector, prune, type ClearFilter, type EvictionSummary, type PruneSummary } from '../store/evict.js'
import { Layout } from '../store/layout.js'
import { READ_CHUNK, type ArchiveProgress } from '../store/oci-archive.js'
import { withCacheLock } from '../store/lock.js'
import { Store } from '../store/store.js'
import { owningDaemon } from './admin-client.js'

/** How the work was done: through the daemon's admin endpoint, or on the directory. */
export type Via = 'daemon' | 'direct'

/** True when `dir` holds a dproxy cache; anything else is never opened (which would create files in it). */
export function isCacheDir(dir: string): boolean {
  return existsSync(new Layout(dir).versionFile)
}

export interface ClearRequest {
  cacheDir: string
  /** Where the daemon's admin token is (<stateDir>/admin-token). */
  stateDir?: string
  /** The image as the user typed it (`alpine:3`), checked and resolved here and by the daemon. */
  image?: string
  olderThan?: string
  unusedFor?: string
  dryRun?: boolean
}

/** Checks a clear request's values (USAGE / CONFIG_INVALID on a bad one) and builds the filter. */
export function clearFilter(req: Omit<ClearRequest, 'cacheDir' | 'stateDir'>): ClearFilter {
  const filter: ClearFilter = {}
  if (req.image !== undefined) filter.image = parseImageSelector(req.image)
  if (req.olderThan !== undefined) filter.olderThanMs = parseDuration(req.olderThan, '--older-than')
  if (req.unusedFor !== undefined) filter.unusedForMs = parseDuration(req.unusedFor, '--unused-for')
  return filter
}

/** Clears through the daemon when one serves `cacheDir`, else directly under the cache lock. */
export async function clearCacheDir(req: ClearRequest): Promise<EvictionSummary & { via: Via }> {
  const filter = clearFilter(req)
  const daemon = await owningDaemon(req.cacheDir, req.stateDir)
  if (daemon) {
    const summary = await daemon.client.clearCache({
      ...(req.image !== undefined ? { image: req.image } : {}),
      ...(req.olderThan !== undefined ? { olderThan: req.olderThan } : {}),
      ...(req.unusedFor !== undefined ? { unusedFor: req.unusedFor } : {}),
      dryRun: Boolean(req.dryRun),
    })
    return { via: 'daemon', ...summary }
  }
  if (!isCacheDir(req.cacheDir)) return { via: 'direct', ...nothing(Boolean(req.dryRun)) }
  const run = async () => clearCache(await Store.open(req.cacheDir), filter, { dryRun: Boolean(req.dryRun) })
  // A dry run deletes nothing, so it needs no lock (and works while another command holds it).
  const summary = req.dryRun ? await run() : await withCacheLock(req.cacheDir, run)
  return { via: 'direct', ...summary }
}

export interface PruneRequest {
  cacheDir: string
  stateDir?: string
  maxSizeBytes?: number | undefined
  ttlMs?: number | undefined
  dryRun?: boolean
}

/** Evicts through the daemon when one serves `cacheDir`, else directly under the cache lock. */
export async function pruneCacheDir(req: PruneRequest): Promise<PruneSummary & { via: Via }> {
  if (req.maxSizeBytes === undefined && req.ttlMs === undefined) {
    throw new DproxyError('USAGE', 'nothing to prune by: pass --max-size (or --ttl), or set maxSize / ttl with dproxy config set')
  }
  const limits = {
    ...(req.maxSizeBytes !== undefined ? { maxSizeBytes: req.maxSizeBytes } : {}),
    ...(req.ttlMs !== undefined ? { ttlMs: req.ttlMs } : {}),
  }
  const daemon = await owningDaemon(req.cacheDir, req.stateDir)
  if (daemon) {
    // Both limits explicitly (0 = none), so the daemon's own settings do not add one we did not resolve.
    const summary = await daemon.client.pruneCache({ maxSizeBytes: req.maxSizeBytes ?? 0, ttlMs: req.ttlMs ?? 0, dryRun: Boolean(req.dryRun) })
    return { via: 'daemon', ...summary }
  }
  if (!isCacheDir(req.cacheDir)) {
    return { via: 'direct', ...nothing(Boolean(req.dryRun)), maxSizeBytes: req.maxSizeBytes ?? null, ttlMs: req.ttlMs ?? null, fits: true }
  }
  const run = async () => prune(await Store.open(req.cacheDir), { ...limits, dryRun: Boolean(req.dryRun) })
  const summary = req.dryRun ? await run() : await withCacheLock(req.cacheDir, run)
  return { via: 'direct', ...summary }
}

function nothing(dryRun: boolean): EvictionSummary {
  return { dryRun, images: [], orphans: 0, tags: 0, manifests: 0, blobs: 0, bytes: 0, remainingBytes: 0, tempFiles: 0, tempBytes: 0 }
}

export interface ImportRequest {
  cacheDir: string
  /** Where a daemon's admin token is (<stateDir>/admin-token). */
  stateDir?: string
  /** A path, or '-' for `stdin`. */
  file: string
  force?: boolean
  stdin?: AsyncIterable<Buffer>
  onProgress?: (p: ArchiveProgress) => void
}

/** Imports through the daemon serving the cache, or else directly under the cache lock. */
export async function importCache(req: ImportRequest): Promise<ImportSummary> {
  const total = req.file === '-' ? undefined : (await fs.stat(req.file)).size
  const stdin = req.stdin ?? (process.stdin as AsyncIterable<Buffer>)
  const daemon = await owningDaemon(req.cacheDir, req.stateDir)
  if (daemon) {
    // Fresh chunks: fetch may hold one while it asks for the next.
    const input = req.file === '-' ? stdin : createReadStream(req.file, { highWaterMark: READ_CHUNK })
    const progress: ArchiveProgress = { bytes: 0, ...(total !== undefined ? { total } : {}) }
    async function* sent(): AsyncGenerator<Uint8Array> {
      for await (const chunk of input) {
        const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
        progress.bytes += bytes.length
        req.onProgress?.({ ...progress })
        yield bytes
      }
    }
    return daemon.client.importArchive<ImportSummary>(sent(), Boolean(req.force))
  }
  return withCacheLock(req.cacheDir, async () => {
    // A file is read into one reused buffer: the import copies what it keeps.
    const fh = req.file === '-' ? undefined : await fs.open(req.file, 'r')
    try {
      return await importArchive(await Store.open(req.cacheDir), fh ? readReusing(fh) : stdin, {
        force: Boolean(req.force),
        ...(total !== undefined ? { total } : {}),
        ...(req.onProgress ? { onProgress: req.onProgress } : {}),
      })
    } finally {
      await fh?.close()
    }
  })
}
