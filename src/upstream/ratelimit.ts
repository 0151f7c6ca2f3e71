// Reads Docker Hub's rate-limit headers. Hub sends them on manifest GET and
// HEAD alike (`ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 76;w=21600`,
// `docker-ratelimit-source: <ip or account id>`); a registry that sends none
// does not limit pulls. Hub has been seen sending the headers with no value, so
// a reading that does not parse is ignored and the last good one kept.
//
// A 429 says when to come back (`Retry-After`, in seconds or as a date, or a
// `RateLimit-Reset` in seconds); the book remembers that moment per registry,
// so no further counted GET is spent before it: asking again early only
// burns pulls and gets another 429. A 429 that names no time is waited out
// for a minute.

import type { Clock } from '../clock.js'

/** Docker's documented rate-limit probe: a public repository kept for this purpose (a HEAD does not count). */
export const RATE_LIMIT_PROBE = { repository: 'ratelimitpreview/test', tag: 'latest' } as const

export interface RateLimitReading {
  registry: string
  /** Pulls allowed per window; undefined with `unlimited`. */
  limit?: number
  remaining?: number
  windowSeconds?: number
  source?: string
  /** True when the registry answered without any RateLimit headers. */
  unlimited: boolean
  /** ms since epoch */
  checkedAt: number
}

export interface LimitValue {
  value: number
  windowSeconds?: number
}

/** Parses `100;w=21600` (the `w` part optional). Undefined when malformed. */
export function parseLimitValue(raw: string | undefined): LimitValue | undefined {
  if (raw === undefined) return undefined
  const [count, ...params] = raw.split(';').map((s) => s.trim())
  if (!count || !/^\d+$/.test(count)) return undefined
  const out: LimitValue = { value: Number(count) }
  for (const p of params) {
    const m = /^w\s*=\s*(\d+)$/.exec(p)
    if (m) out.windowSeconds = Number(m[1])
  }
  return out
}

type HeaderGetter = (name: string) => string | undefined

/**
 * The reading carried by one response's headers: undefined when the headers
 * are present but unusable (keep the previous reading), `unlimited` when absent.
 */
export function readRateLimit(registry: string, header: HeaderGetter, now: number): RateLimitReading | undefined {
  const rawLimit = header('ratelimit-limit')
  const rawRemaining = header('ratelimit-remaining')
  if (rawLimit === undefined && rawRemaining === undefined) {
    return { registry, unlimited: true, checkedAt: now }
  }
  const limit = parseLimitValue(rawLimit)
  const remaining = parseLimitValue(rawRemaining)
  if (!limit || !remaining) return undefined
  const source = header('docker-ratelimit-source')
  return {
    registry,
    limit: limit.value,
    remaining: remaining.value,
    windowSeconds: remaining.windowSeconds ?? limit.windowSeconds,
    ...(source ? { source } : {}),
    unlimited: false,
    checkedAt: now,
  }
}

/** How long after a 429 that names no time a registry is left alone. */
export const DEFAULT_RETRY_AFTER_MS = 60_000
/** The longest wait a 429 can impose (Docker Hub's window): a far-off date is not believed further. */
export const MAX_RETRY_AFTER_MS = 6 * 3600_000

/**
 * How long a 429 asks to wait, in ms: `Retry-After` (delta seconds or an
 * HTTP date), else `RateLimit-Reset` (delta seconds), else undefined.
 * Bounded by MAX_RETRY_AFTER_MS; a date in the past is 0.
 */
export function retryAfterMs(header: HeaderGetter, now: number): number | undefined {
  const bound = (ms: number) => Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms))
  const retryAfter = header('retry-after')?.trim()
  if (retryAfter !== undefined && retryAfter !== '') {
    if (/^\d{1,10}$/.test(retryAfter)) return bound(Number(retryAfter) * 1000)
    const date = Date.parse(retryAfter)
    if (/[a-z]/i.test(retryAfter) && !Number.isNaN(date)) return bound(date - now)
  }
  const reset = header('ratelimit-reset')?.trim()
  if (reset !== undefined && /^\d{1,10}$/.test(reset)) return bound(Number(reset) * 1000)
  return undefined
}

/** The last good reading per registry, and until when a registry that answered 429 is left alone. */
export class RateLimitBook {
  private readonly readings = new Map<string, RateLimitReading>()
  private readonly until = new Map<string, number>()

  constructor(private readonly clock: Clock) {}

  /** After a 429: no counted GET goes to `registry` before `at` (ms since epoch). */
  limitUntil(registry: string, at: number): void {
    this.until.set(registry, at)
  }

  /** When `registry` may be asked again, while that is still ahead; undefined when it may be asked now. */
  limitedUntil(registry: string): number | undefined {
    const at = this.until.get(registry)
    if (at === undefined) return undefined
    if (at > this.clock.now()) return at
    this.until.delete(registry)
    return undefined
  }

  record(registry: string, header: HeaderGetter): void {
    const reading = readRateLimit(registry, header, this.clock.now())
    if (reading) this.readings.set(registry, reading)
  }

  get(registry: string): RateLimitReading | undefined {
    return this.readings.get(registry)
  }

  all(): RateLimitReading[] {
    return [...this.readings.values()].sort((a, b) => a.registry.localeCompare(b.registry))
  }
}
