// What the daemon has done since it started, as plain numbers: the status
// endpoint reports them, tests assert on them, and nothing else depends on
// them. Upstream request counts live with the upstream client.

export interface Counters {
  requests: number
  cacheHits: number
  cacheMisses: number
  bytesFromCache: number
  bytesFromUpstream: number
  /** Tag requests answered from cache after a HEAD showed the digest unchanged (a counted GET saved). */
  manifestGetsAvoided: number
  /** Times an outage was covered by serving a cached tag. */
  staleServed: number
}

export function newCounters(): Counters {
  return {
    requests: 0,
    cacheHits: 0,
    cacheMisses: 0,
    bytesFromCache: 0,
    bytesFromUpstream: 0,
    manifestGetsAvoided: 0,
    staleServed: 0,
  }
}
