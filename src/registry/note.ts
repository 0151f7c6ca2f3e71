// What a response did, as the handlers know it: which route it was, whether
// its content came from the cache, and what upstream answered: the endpoint
// and status behind a miss, the status behind a failure.
// The handlers note it on the response; whoever watches requests finish
// (the daemon's access log, metrics and live view) reads it back. A WeakMap
// keyed by the response keeps the note exactly as long as the request lives.

import type { ServerResponse } from 'node:http'

/** The routes requests are counted by; `other` is anything unknown (a bounded label). */
export type Route = 'manifest' | 'blob' | 'tags' | 'ping' | 'admin' | 'other'

/**
 * hit: from the cache; miss: fetched from upstream for this request; stale:
 * from the cache because upstream could not be asked; joined: followed a
 * download another request had started.
 */
export type CacheResult = 'hit' | 'miss' | 'stale' | 'joined'

export interface RequestNote {
  cache?: CacheResult
  /** The upstream status behind an error answer (a 404 upstream, a 429), or that answered a miss. */
  upstreamStatus?: number
  /** The upstream endpoint that answered a miss (`https://registry-1.docker.io`). */
  upstreamEndpoint?: string
  /** `docker.io/library/alpine`, once the name was valid. */
  image?: string
  /** The error message the client was sent (printable, bounded): the access log repeats it. */
  error?: string
  /** The client's user (`dproxy` or a token's name, daemon/clientauth.ts) once it authenticated; never a secret. */
  user?: string
}

const notes = new WeakMap<ServerResponse, RequestNote>()

export function note(res: ServerResponse, fields: RequestNote): void {
  notes.set(res, { ...notes.get(res), ...fields })
}

export function noteOf(res: ServerResponse): RequestNote {
  return notes.get(res) ?? {}
}

const shapes: Array<[RegExp, Route]> = [
  [/^\/v2\/?$/, 'ping'],
  [/^\/v2\/.+\/manifests\/[^/]+$/, 'manifest'],
  [/^\/v2\/.+\/blobs\/[^/]+$/, 'blob'],
  [/^\/v2\/.+\/tags\/list$/, 'tags'],
  [/^\/(_dproxy\/|metrics$)/, 'admin'],
]

/** The route of a path (without its query). */
export function routeOf(path: string): Route {
  for (const [re, route] of shapes) if (re.test(path)) return route
  return 'other'
}
