// What `dproxy top` (status --watch on a terminal) shows, folded from the
// daemon's event stream (daemon/event-stream.ts) without any terminal
// concerns, so the numbers can be tested without drawing them:
//
//   - downloads in progress, each with a rate: the bytes written between two
//     successive snapshots over the time between them (the daemon's own
//     clock, so a slow terminal does not skew it);
//   - the last few registry requests, latest first (admin calls such as a
//     `dproxy status` beside the view are left out: they are not pulls);
//   - the counters, rate-limit readings, failures and upstream endpoints'
//     health of the latest snapshot.
//
// The stream is our own daemon's (loopback only), so an event whose top-level
// shape is wrong is skipped rather than thrown on; its fields are trusted.

import type { Snapshot } from '../daemon/event-stream.js'
import type { RequestRecord } from '../daemon/events.js'
import type { ImageFailures } from '../daemon/failures.js'
import type { DownloadProgress } from '../proxy/blobs.js'
import type { StreamEvent } from './events.js'
import type { EndpointStatus } from '../upstream/client.js'
import { rateLimitRow, type RateLimitRow } from './status.js'

export const RECENT_REQUESTS = 10

export interface DownloadRow extends DownloadProgress {
  /** Bytes per second since the previous snapshot; undefined the first time this download is seen. */
  rate?: number
}

export interface WatchState {
  /** ms since epoch of the latest snapshot; undefined until the first arrives. */
  at?: number
  downloads: DownloadRow[]
  /** Latest first, at most RECENT_REQUESTS. */
  requests: RequestRecord[]
  counters?: Snapshot['counters']
  rateLimit: RateLimitRow[]
  recentFailures: ImageFailures[]
  /** Upstream endpoints of the configured registries, in the order asked (a daemon without them sends none). */
  endpoints: EndpointStatus[]
  /** The daemon closed the stream (it is stopping). */
  ended: boolean
}

export function initialWatchState(): WatchState {
  return { downloads: [], requests: [], rateLimit: [], recentFailures: [], endpoints: [], ended: false }
}

/** cacheHits / (cacheHits + cacheMisses); null before anything was asked. */
export function hitRatio(c: Pick<Snapshot['counters'], 'cacheHits' | 'cacheMisses'>): number | null {
  const asked = c.cacheHits + c.cacheMisses
  return asked > 0 ? c.cacheHits / asked : null
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null

function isSnapshot(v: unknown): v is Snapshot {
  return (
    isObject(v) &&
    typeof v.at === 'string' &&
    Array.isArray(v.downloads) &&
    isObject(v.counters) &&
    Array.isArray(v.rateLimit) &&
    Array.isArray(v.recentFailures)
  )
}

function isRequest(v: unknown): v is RequestRecord {
  return isObject(v) && typeof v.path === 'string' && typeof v.status === 'number' && typeof v.route === 'string'
}

function foldSnapshot(s: WatchState, snap: Snapshot): WatchState {
  const at = Date.parse(snap.at)
  if (Number.isNaN(at)) return s
  const before = new Map(s.downloads.map((d) => [d.digest, d]))
  const seconds = s.at === undefined ? 0 : (at - s.at) / 1000
  const downloads = snap.downloads.map((d): DownloadRow => {
    const prev = before.get(d.digest)
    if (!prev) return { ...d }
    // Two snapshots with the same time (none should come) keep the last rate rather than divide by zero.
    if (seconds <= 0) return prev.rate === undefined ? { ...d } : { ...d, rate: prev.rate }
    return { ...d, rate: Math.max(0, d.written - prev.written) / seconds }
  })
  return {
    ...s,
    at,
    downloads,
    counters: snap.counters,
    rateLimit: snap.rateLimit.map((r) => rateLimitRow(r, 'daemon', at)),
    recentFailures: snap.recentFailures,
    endpoints: Array.isArray(snap.endpoints) ? snap.endpoints : [],
  }
}

/** The state after one more event from the stream. */
export function foldEvent(s: WatchState, e: StreamEvent, keep = RECENT_REQUESTS): WatchState {
  if (e.event === 'snapshot' && isSnapshot(e.data)) return foldSnapshot(s, e.data)
  if (e.event === 'request' && isRequest(e.data) && e.data.route !== 'admin') {
    return { ...s, requests: [e.data, ...s.requests].slice(0, keep) }
  }
  return s
}
