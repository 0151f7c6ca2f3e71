// Reads Docker Hub's rate-limit headers. Hub sends them on manifest GET and
// HEAD alike (`ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 76;w=21600`,
// `docker-ratelimit-source: <ip or account id>`); a registry that sends none
// does not limit pulls. Hub has been seen sending the headers with no value, so
// a reading that does not parse is ignored and the last good one kept.

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

/** The last good reading per registry. */
export class RateLimitBook {
  private readonly readings = new Map<string, RateLimitReading>()

  constructor(private readonly clock: Clock) {}

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
