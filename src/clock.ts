// Time is read through a Clock so that tests can move it (max-age, token
// expiry, last-access throttling) without sleeping.

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }
