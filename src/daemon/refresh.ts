// `dproxy serve --refresh INTERVAL`: keeps what people use current, so that
// going offline leaves the latest versions. Every interval, each cached tag
// that a client pulled within the window is re-checked with a HEAD (free under
// Docker Hub's rate limit); a tag whose digest moved is fetched again through
// the Warmer, with the platforms that were cached before, layers included.
//
// It stays out of the way: an image is only started while no client request
// is in flight (it waits between images otherwise), a registry whose
// rate-limit headroom is under the reserve is skipped until the next run, and
// re-checking never marks an image as used (so the window means "used by a
// client"). A tag whose upstream is down keeps its cached version: the proxy
// serves the cached manifest and the tag record is left alone.

import type { Clock } from '../clock.js'
import type { Logger } from '../log.js'
import { hostPlatform } from '../oci/platform.js'
import type { Warmer } from '../proxy/warm.js'
import { inventory } from '../store/inventory.js'
import type { Store } from '../store/store.js'
import type { RateLimitBook } from '../upstream/ratelimit.js'

export interface RefreshOptions {
  intervalMs: number
  /** Tags pulled by a client within this long are kept fresh. */
  windowMs: number
  /** Fraction of a registry's limit never spent by refreshing (0.2: stop at 20% left). */
  reserve: number
}

export interface RefreshRun {
  startedAt: string
  finishedAt: string | null
  /** Tags re-checked. */
  checked: number
  refreshed: number
  upToDate: number
  failed: number
  /** Tags left for the next run because their registry's headroom is under the reserve. */
  paused: number
}

export interface RefreshStatus {
  intervalSeconds: number
  windowSeconds: number
  reserve: number
  running: boolean
  lastRun: RefreshRun | null
  nextRun: string | null
}

export interface RefresherDeps {
  store: Store
  warmer: Warmer
  rateLimits: RateLimitBook
  clock: Clock
  log: Logger
  /** True while a client request is in flight. */
  busy: () => boolean
}

/** How often to look again while clients are being served. */
const IDLE_POLL_MS = 50

export class Refresher {
  private timer: NodeJS.Timeout | undefined
  private current: Promise<void> | undefined
  private stopped = false
  private last: RefreshRun | null = null
  private next: number | null = null

  constructor(
    private readonly deps: RefresherDeps,
    private readonly options: RefreshOptions,
  ) {}

  start(): void {
    this.schedule()
  }

  status(): RefreshStatus {
    return {
      intervalSeconds: this.options.intervalMs / 1000,
      windowSeconds: this.options.windowMs / 1000,
      reserve: this.options.reserve,
      running: this.current !== undefined,
      lastRun: this.last,
      nextRun: this.next === null ? null : new Date(this.next).toISOString(),
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    this.next = null
    await this.current
  }

  private schedule(): void {
    if (this.stopped) return
    this.next = this.deps.clock.now() + this.options.intervalMs
    this.timer = setTimeout(() => {
      this.next = null
      this.current = this.runOnce()
        .then(() => undefined)
        .catch((err: unknown) => this.deps.log.warn(`refresh: ${err instanceof Error ? err.message : String(err)}`))
        .finally(() => {
          this.current = undefined
          this.schedule()
        })
    }, this.options.intervalMs)
    this.timer.unref()
  }

  /** One pass over the tags used within the window. */
  async runOnce(): Promise<RefreshRun> {
    const { store, warmer, rateLimits, clock, log } = this.deps
    const run: RefreshRun = { startedAt: new Date(clock.now()).toISOString(), finishedAt: null, checked: 0, refreshed: 0, upToDate: 0, failed: 0, paused: 0 }
    this.last = run
    const since = clock.now() - this.options.windowMs
    const tags = (await inventory(store)).units.filter((u) => u.kind === 'image' && u.tag !== null && u.lastUsedMs >= since)
    for (const u of tags) {
      if (!(await this.idle())) break
      const r = rateLimits.get(u.registry)
      if (r?.limit !== undefined && r.remaining !== undefined && r.remaining < r.limit * this.options.reserve) {
        run.paused++
        continue
      }
      run.checked++
      const ref = `${u.registry}/${u.repository}:${u.tag}`
      const result = await warmer.run(
        [{ ref, image: { registry: u.registry, repository: u.repository }, reference: { kind: 'tag', tag: u.tag! } }],
        { platforms: { kind: 'cached', fallback: [hostPlatform()] }, jobs: 1, touch: false, reserve: this.options.reserve },
        () => {},
      )
      if (result.type === 'refused') {
        run.paused++
        run.checked--
      } else if (result.failed.length > 0) {
        run.failed++
        log.warn(`refresh: ${ref}: ${result.failed[0]!.reason}`)
      } else if (result.refreshed + result.fetched > 0) {
        run.refreshed++
        log.info(`refresh: ${ref} updated`)
      } else {
        run.upToDate++
      }
    }
    run.finishedAt = new Date(clock.now()).toISOString()
    return run
  }

  /** Waits until no client request is in flight; false when stopped meanwhile. */
  private async idle(): Promise<boolean> {
    while (!this.stopped && this.deps.busy()) await new Promise((r) => setTimeout(r, IDLE_POLL_MS))
    return !this.stopped
  }
}
