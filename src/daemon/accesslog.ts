// The access log: one line per request, from the event seam (events.ts).
// At the default level (info) that is every manifest and blob request; pings,
// tag lists, admin calls and each request sent upstream come at debug; a
// server error or a cut response at warn. Nothing secret can reach it: the
// record holds no header but the user agent, paths lose their query strings
// before they are recorded, and upstream calls are logged by kind, never by URL
// (a signed CDN URL carries its signature in the query).

import { logAt, type Logger, type LogLevel } from '../log.js'
import type { UpstreamCall } from '../upstream/client.js'
import type { DaemonEvents, RequestRecord } from './events.js'

/** Starts logging; returns the function that stops it. */
export function accessLog(events: DaemonEvents, log: Logger): () => void {
  const offRequest = events.on('request', (r) => logAt(log, levelOf(r), requestLine(r), requestFields(r)))
  const offUpstream = events.on('upstream', (c) =>
    logAt(log, 'debug', upstreamLine(c), { registry: c.registry, method: c.method, kind: c.kind, status: c.status ?? null, durationMs: Math.round(c.durationMs) }),
  )
  return () => {
    offRequest()
    offUpstream()
  }
}

function levelOf(r: RequestRecord): LogLevel {
  if (r.status >= 500 || !r.complete) return 'warn'
  return r.route === 'manifest' || r.route === 'blob' ? 'info' : 'debug'
}

/**
 * `127.0.0.1 GET /v2/library/alpine/manifests/latest 200 1532B 12ms miss upstream=200@https://registry-1.docker.io "docker/27.0"`:
 * upstream= is the status and endpoint that answered a miss, the status alone
 * behind an error, `-` when upstream was not asked for this request (a hit).
 * user= names the client's login (a token's name) when it authenticated.
 */
export function requestLine(r: RequestRecord): string {
  return [
    r.client || '-',
    r.method,
    r.path,
    r.complete ? String(r.status) : `${r.status}(cut)`,
    `${r.bytes}B`,
    `${Math.round(r.durationMs)}ms`,
    r.cache ?? '-',
    `upstream=${upstreamText(r)}`,
    ...(r.user !== undefined ? [`user=${r.user}`] : []),
    JSON.stringify(r.userAgent ?? ''),
    ...(r.error !== undefined ? [`error=${JSON.stringify(r.error)}`] : []),
  ].join(' ')
}

function requestFields(r: RequestRecord): Record<string, unknown> {
  return {
    client: r.client,
    method: r.method,
    path: r.path,
    route: r.route,
    status: r.status,
    bytes: r.bytes,
    durationMs: Math.round(r.durationMs),
    complete: r.complete,
    cache: r.cache ?? null,
    upstreamStatus: r.upstreamStatus ?? null,
    upstreamEndpoint: r.upstreamEndpoint ?? null,
    userAgent: r.userAgent ?? null,
    ...(r.image !== undefined ? { image: r.image } : {}),
    ...(r.user !== undefined ? { user: r.user } : {}),
    ...(r.error !== undefined ? { error: r.error } : {}),
  }
}

function upstreamText(r: RequestRecord): string {
  if (r.upstreamStatus === undefined) return '-'
  return r.upstreamEndpoint === undefined ? String(r.upstreamStatus) : `${r.upstreamStatus}@${r.upstreamEndpoint}`
}

function upstreamLine(c: UpstreamCall): string {
  return `upstream ${c.registry} ${c.method} ${c.kind} ${c.status ?? 'error'} ${Math.round(c.durationMs)}ms`
}
