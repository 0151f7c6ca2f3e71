// The daemon's event seam: every request that finished and every request
// sent upstream is announced here once, and whoever needs them subscribes
// (metrics, the access log, the admin event stream behind `dproxy status
// --watch`). Counting a fact in one place keeps those views in agreement.
//
// Emitting is synchronous and a listener that throws is cut off from the
// others: a broken view must never fail a request.

import type { UpstreamCall } from '../upstream/client.js'
import type { CacheResult, Route } from '../registry/note.js'

export interface RequestRecord {
  /** ms since epoch when the response finished (or was cut). */
  time: number
  /** The client's address. */
  client: string
  method: string
  /** The path without its query (signed and paginated queries stay out of logs), printable, bounded. */
  path: string
  route: Route
  status: number
  /** Bytes sent on the connection for this response, headers included. */
  bytes: number
  durationMs: number
  /** False when the connection closed before the response was complete. */
  complete: boolean
  cache?: CacheResult
  upstreamStatus?: number
  /** The upstream endpoint that answered a miss. */
  upstreamEndpoint?: string
  image?: string
  userAgent?: string
  /** The error message sent, for an error answer. */
  error?: string
  /** Who the client authenticated as (clientauth.ts): a token's name, never its secret. */
  user?: string
}

export interface DaemonEventMap {
  request: RequestRecord
  upstream: UpstreamCall
  /** The daemon is stopping: long-lived subscribers (the event stream) end now. */
  closing: undefined
}

type Listener<T> = (event: T) => void

export class DaemonEvents {
  private readonly listeners: { [K in keyof DaemonEventMap]: Set<Listener<DaemonEventMap[K]>> } = {
    request: new Set(),
    upstream: new Set(),
    closing: new Set(),
  }

  constructor(private readonly onListenerError: (err: unknown) => void = () => {}) {}

  /** Subscribes; returns the unsubscribe function. */
  on<K extends keyof DaemonEventMap>(kind: K, listener: Listener<DaemonEventMap[K]>): () => void {
    this.listeners[kind].add(listener)
    return () => this.listeners[kind].delete(listener)
  }

  emit<K extends keyof DaemonEventMap>(kind: K, event: DaemonEventMap[K]): void {
    for (const listener of this.listeners[kind]) {
      try {
        listener(event)
      } catch (err) {
        this.listeners[kind].delete(listener)
        this.onListenerError(err)
      }
    }
  }
}

/** Client-chosen text made safe for a log line: printable ASCII, cut at `max`. */
export function printable(s: string, max: number): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, max)
}
