// GET /_dproxy/events: what the daemon does, live, as Server-Sent Events, for
// `dproxy status --watch` and any script that wants it. Three events:
//
//   request   one per finished request (the access log's record)
//   upstream  one per request sent upstream
//   snapshot  once a second: downloads in progress, hit counters, rate-limit
//             readings, recent failures per image, upstream endpoints' health
//
// A subscriber never slows the daemon: events are written without waiting
// for the socket, and one whose unsent data passes MAX_BUFFERED_BYTES is cut
// off (it can reconnect). The admin handler's loopback, Host and Origin
// checks apply before this runs.

import type { ServerResponse } from 'node:http'
import type { Counters } from '../proxy/counters.js'
import type { DownloadProgress } from '../proxy/blobs.js'
import type { EndpointStatus, UpstreamCounters } from '../upstream/client.js'
import type { RateLimitReading } from '../upstream/ratelimit.js'
import type { DaemonEvents } from './events.js'
import type { ImageFailures } from './failures.js'

const MAX_BUFFERED_BYTES = 1024 * 1024
const SNAPSHOT_MS = 1000

export interface Snapshot {
  /** ISO 8601 */
  at: string
  downloads: DownloadProgress[]
  counters: Counters & { upstreamManifestGets: number; upstreamBlobGets: number }
  rateLimit: RateLimitReading[]
  recentFailures: ImageFailures[]
  /** Every upstream endpoint of the configured registries, in the order asked: health and requests. */
  endpoints?: EndpointStatus[]
}

export interface EventSources {
  events: DaemonEvents
  snapshot(): Snapshot
}

export function serveEvents(src: EventSources, res: ServerResponse): void {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
  })
  const send = (event: string, data: unknown) => {
    if (res.destroyed) return
    if (res.writableLength > MAX_BUFFERED_BYTES) {
      res.destroy()
      return
    }
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
  }
  send('snapshot', src.snapshot())
  const offRequest = src.events.on('request', (r) => send('request', r))
  const offUpstream = src.events.on('upstream', (c) => send('upstream', c))
  const offClosing = src.events.on('closing', () => res.end())
  const timer = setInterval(() => send('snapshot', src.snapshot()), SNAPSHOT_MS)
  timer.unref()
  res.on('close', () => {
    offRequest()
    offUpstream()
    offClosing()
    clearInterval(timer)
  })
}

/** The counters a snapshot carries, from the daemon's two counter sets. */
export function snapshotCounters(c: Counters, u: UpstreamCounters): Snapshot['counters'] {
  return { ...c, upstreamManifestGets: u.manifestGets, upstreamBlobGets: u.blobGets }
}
