// The health of one upstream endpoint that has another behind it, so that a
// dead team mirror costs one timeout and then nothing. A breaker opens at once
// on an answer that never came (refused, reset, timed out, DNS or TLS failure)
// and after FAILURES_TO_OPEN server errors or 429s in a row; while it is open
// the chain skips the endpoint without asking it. It is closed only by a probe
// (GET /v2/ with a short limit) that the chain runs in the background when
// probeDue() says so: the first one BACKOFF_START_MS after opening, each
// failed one doubling the wait up to BACKOFF_CAP_MS, and never before a
// Retry-After the endpoint named. Time is the injected clock's, so tests move
// it instead of sleeping.
//
// The last endpoint of a chain has nobody to fall back to: it is asked
// whatever its breaker says, and its health is kept only for the status.

import type { Clock } from '../clock.js'

export const FAILURES_TO_OPEN = 3
export const BACKOFF_START_MS = 1000
export const BACKOFF_CAP_MS = 60_000

/** How an answer counts: `down` opens the breaker at once, `failing` after FAILURES_TO_OPEN in a row, `alive` resets. */
export type Outcome = 'alive' | 'failing' | 'down'

export interface HealthSnapshot {
  up: boolean
  /** ISO time the breaker opened, while it is open. */
  downSince?: string
  /** The last failure's message, kept after recovery. */
  lastError?: string
  /** ISO time of the next probe, while open. */
  nextProbeAt?: string
  /** While up: server errors or 429s in a row so far (FAILURES_TO_OPEN opens it); absent at 0. */
  failuresInRow?: number
}

export class Breaker {
  private failures = 0
  private openedAt: number | undefined
  private nextProbe = 0
  private backoff = BACKOFF_START_MS
  private last: string | undefined

  constructor(private readonly clock: Clock) {}

  /** True unless the breaker is open. */
  get up(): boolean {
    return this.openedAt === undefined
  }

  /** Records what a request (or a probe) found; `retryAfterMs` delays the next probe. */
  record(outcome: Outcome, reason?: string, retryAfterMs?: number): void {
    if (outcome === 'alive') {
      this.failures = 0
      this.openedAt = undefined
      this.backoff = BACKOFF_START_MS
      return
    }
    this.last = reason ?? this.last
    this.failures++
    const now = this.clock.now()
    if (this.openedAt === undefined) {
      if (outcome === 'failing' && this.failures < FAILURES_TO_OPEN) return
      this.openedAt = now
      this.backoff = BACKOFF_START_MS
    } else {
      this.backoff = Math.min(BACKOFF_CAP_MS, this.backoff * 2)
    }
    this.nextProbe = now + Math.max(this.backoff, Math.min(retryAfterMs ?? 0, BACKOFF_CAP_MS * 60))
  }

  /** Keeps `reason` as the last error without counting it (an answer that refused: the endpoint is up). */
  note(reason: string): void {
    this.last = reason
  }

  /** While open: whether a probe is due now. */
  probeDue(): boolean {
    return this.openedAt !== undefined && this.clock.now() >= this.nextProbe
  }

  /** While open: ms until the next probe is due (0 when due). */
  msToProbe(): number {
    return this.openedAt === undefined ? 0 : Math.max(0, this.nextProbe - this.clock.now())
  }

  snapshot(): HealthSnapshot {
    return {
      up: this.up,
      ...(this.openedAt !== undefined
        ? { downSince: new Date(this.openedAt).toISOString(), nextProbeAt: new Date(this.nextProbe).toISOString() }
        : {}),
      ...(this.openedAt === undefined && this.failures > 0 ? { failuresInRow: this.failures } : {}),
      ...(this.last !== undefined ? { lastError: this.last } : {}),
    }
  }
}
