// The daemon's side of cache eviction: it runs `clear` and `prune` for the
// admin endpoints one at a time (two plans never race each other's deletions),
// and enforces the configured limits by itself: `ttlMs` (evict what was not
// pulled for that long) and `maxSizeBytes` (evict least recently used images
// until the cache fits).
//
// When: once at start, then every `intervalMs` (10 minutes), and after a
// response when the cache may have grown past the size limit. That last check
// is cheap: the size seen by the last prune plus the bytes downloaded from
// upstream since, compared in memory. A prune that ran while downloads were in
// flight did not see their bytes (they were still in tmp/), so until a prune
// runs with none in flight the estimate keeps counting everything downloaded
// since the last exact one: it errs towards one scan too many, never towards a
// cache left over its limit. Size-triggered prunes are at least `minGapMs`
// apart, and the gap doubles (up to `intervalMs`) while they find nothing to
// evict. Images used within `keepUsedWithinMs` are never evicted for size, so a
// pull in progress does not lose the layers it just fetched to its own next
// layer. Timers are unref'd and cleared on stop().
//
// An import through the daemon (`dproxy cache import`) takes its turn in the
// same queue: it writes verified blobs first and records the tags that use
// them last, and in between those blobs are orphans that a clear or prune
// would remove. Queued behind it, a clear sees the imported images whole.
// One import at a time: a second is refused (CACHE_LOCKED) rather than queued
// with its request body waiting.

import type { Clock } from '../clock.js'
import { formatBytes } from '../config/units.js'
import { DproxyError } from '../errors.js'
import type { Logger } from '../log.js'
import type { Counters } from '../proxy/counters.js'
import { clearCache, prune, type ClearFilter, type EvictionSummary, type PruneSummary } from '../store/evict.js'
import { importArchive, type ImportOptions, type ImportSummary } from '../store/archive-import.js'
import type { Store } from '../store/store.js'

export interface MaintenanceOptions {
  store: Store
  clock: Clock
  log: Logger
  counters: Pick<Counters, 'bytesFromUpstream'>
  /** Downloads in progress (the daemon's BlobProxy.inflight). */
  downloading?: () => number
  maxSizeBytes?: number | undefined
  ttlMs?: number | undefined
  /** Default 10 minutes. */
  intervalMs?: number
  /** Default 10 minutes. */
  keepUsedWithinMs?: number
  /** Default 30 seconds. */
  minGapMs?: number
}

export const PRUNE_INTERVAL_MS = 10 * 60_000

export class CacheMaintenance {
  private queue: Promise<unknown> = Promise.resolve()
  private timer: NodeJS.Timeout | undefined
  private running: Promise<PruneSummary | undefined> | undefined
  private stopped = false
  /** Cache bytes after the last prune, and the upstream byte counter then. */
  private known: { bytes: number; upstream: number } | undefined
  private lastSizePrune = Number.NEGATIVE_INFINITY
  private gap: number
  private importing = false
  private makingRoom: Promise<number> | undefined
  /** What the configured limits evicted since the start (metrics). */
  readonly evicted = { images: 0, bytes: 0 }

  constructor(private readonly options: MaintenanceOptions) {
    this.gap = options.minGapMs ?? 30_000
  }

  get limited(): boolean {
    return this.options.maxSizeBytes !== undefined || this.options.ttlMs !== undefined
  }

  /** Starts enforcing the limits (nothing to do without any). */
  start(): void {
    if (!this.limited || this.stopped) return
    void this.autoPrune()
    this.timer = setInterval(() => void this.autoPrune(), this.options.intervalMs ?? PRUNE_INTERVAL_MS)
    this.timer.unref()
  }

  /** Cheap, synchronous: prunes in the background when downloads may have pushed the cache over its size. */
  check(): void {
    const max = this.options.maxSizeBytes
    if (max === undefined || this.stopped || this.running || !this.known) return
    const estimate = this.known.bytes + (this.options.counters.bytesFromUpstream - this.known.upstream)
    if (estimate <= max || this.options.clock.now() - this.lastSizePrune < this.gap) return
    this.lastSizePrune = this.options.clock.now()
    void this.autoPrune()
  }

  /** Applies the configured limits now; resolves to what was evicted (undefined without limits, or after stop). */
  autoPrune(): Promise<PruneSummary | undefined> {
    if (!this.limited || this.stopped) return Promise.resolve(undefined)
    this.running ??= this.exclusive(async () => {
      const upstream = this.options.counters.bytesFromUpstream
      const downloading = () => (this.options.downloading?.() ?? 0) > 0
      const busy = downloading()
      const summary = await prune(this.options.store, {
        ...(this.options.maxSizeBytes !== undefined ? { maxSizeBytes: this.options.maxSizeBytes } : {}),
        ...(this.options.ttlMs !== undefined ? { ttlMs: this.options.ttlMs } : {}),
        keepUsedWithinMs: this.options.keepUsedWithinMs ?? PRUNE_INTERVAL_MS,
      })
      const exact = !busy && !downloading()
      this.known = { bytes: summary.remainingBytes, upstream: exact ? upstream : (this.known?.upstream ?? 0) }
      const minGap = this.options.minGapMs ?? 30_000
      this.gap = summary.bytes > 0 ? minGap : Math.min(this.gap * 2, Math.max(minGap, this.options.intervalMs ?? PRUNE_INTERVAL_MS))
      this.evicted.images += summary.images.length
      this.evicted.bytes += summary.bytes
      if (summary.bytes > 0 || summary.tags > 0) {
        this.options.log.info(
          `evicted ${summary.images.length} image(s), ${summary.orphans} unreferenced file(s): ` +
            `${formatBytes(summary.bytes)} freed, cache now ${formatBytes(summary.remainingBytes)}`,
        )
      }
      return summary
    })
      .catch((err: unknown) => {
        this.options.log.warn(`cache eviction failed: ${err instanceof Error ? err.message : String(err)}`)
        return undefined
      })
      .finally(() => {
        this.running = undefined
      })
    return this.running
  }

  /**
   * A download found the disk full: evicts now what the configured limits
   * allow and every unreferenced file not used within `keepUsedWithinMs`, and
   * resolves to the bytes freed. Concurrent askers share one run; during an
   * import (which may take long, and whose blobs are unreferenced until it
   * ends) it frees nothing.
   */
  makeRoom(): Promise<number> {
    if (this.stopped || this.importing) return Promise.resolve(0)
    this.makingRoom ??= this.exclusive(async () => {
      const summary = await prune(this.options.store, {
        ...(this.options.maxSizeBytes !== undefined ? { maxSizeBytes: this.options.maxSizeBytes } : {}),
        ...(this.options.ttlMs !== undefined ? { ttlMs: this.options.ttlMs } : {}),
        orphans: true,
        keepUsedWithinMs: this.options.keepUsedWithinMs ?? PRUNE_INTERVAL_MS,
      })
      this.evicted.images += summary.images.length
      this.evicted.bytes += summary.bytes
      const freed = summary.bytes + summary.tempBytes
      this.options.log.info(
        `cache disk full: evicted ${summary.images.length} image(s), ${summary.orphans} unreferenced file(s), ` +
          `${summary.tempFiles} abandoned temp file(s): ${formatBytes(freed)} freed`,
      )
      return freed
    })
      .catch((err: unknown) => {
        this.options.log.warn(`making room on the cache disk failed: ${err instanceof Error ? err.message : String(err)}`)
        return 0
      })
      .finally(() => {
        this.makingRoom = undefined
      })
    return this.makingRoom
  }

  /** `dproxy cache clear` through the daemon. */
  clear(filter: ClearFilter, dryRun: boolean): Promise<EvictionSummary> {
    return this.exclusive(() => clearCache(this.options.store, filter, { dryRun }))
  }

  /** `dproxy cache prune` through the daemon: explicit limits, or the configured ones. */
  prune(opts: { maxSizeBytes?: number; ttlMs?: number; dryRun?: boolean }): Promise<PruneSummary> {
    return this.exclusive(() => prune(this.options.store, { ...opts, keepUsedWithinMs: 0 }))
  }

  /** `dproxy cache import` through the daemon: never next to a clear, a prune or another import. */
  async import(input: AsyncIterable<Buffer | Uint8Array | string>, opts: ImportOptions): Promise<ImportSummary> {
    if (this.importing) throw new DproxyError('CACHE_LOCKED', 'another import into this cache is in progress: try again when it is done')
    this.importing = true
    try {
      return await this.exclusive(() => importArchive(this.options.store, input, opts))
    } finally {
      this.importing = false
    }
  }

  /** Clears the timer and waits for work in progress. */
  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
    this.timer = undefined
    await this.queue.catch(() => {})
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.catch(() => {}).then(fn)
    this.queue = next
    return next
  }
}
