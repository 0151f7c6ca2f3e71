// The one place where errors reach the wire. Whatever went wrong below, the
// client gets the OCI error envelope `{"errors":[{"code","message","detail"}]}`
// with a status that matches the code, so docker, podman and containerd print
// something meaningful instead of "unexpected end of JSON input".

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { DproxyError, isDproxyError, type ErrorCode } from '../errors.js'
import type { Logger } from '../log.js'
import { note } from './note.js'

/** dproxy's internal codes, as the nearest code a registry client knows. */
const wireCode: Partial<Record<ErrorCode, string>> = {
  UPSTREAM_UNAVAILABLE: 'UNAVAILABLE',
  UPSTREAM_INVALID: 'UNAVAILABLE',
  CACHE_UNAVAILABLE: 'UNAVAILABLE',
  CONFIG_INVALID: 'UNKNOWN',
  LISTEN_FAILED: 'UNKNOWN',
  USAGE: 'UNKNOWN',
  INTERNAL: 'UNKNOWN',
}

export interface WireError {
  status: number
  code: string
  message: string
  detail?: unknown
}

export function toWire(err: unknown): WireError {
  if (!isDproxyError(err) || err.code === 'INTERNAL') {
    return { status: 500, code: 'UNKNOWN', message: 'internal error in dproxy (see its log)' }
  }
  const code = wireCode[err.code] ?? err.code
  return {
    status: err.status,
    code,
    message: err.message,
    ...(err.detail === undefined ? {} : { detail: err.detail }),
  }
}

/** Told about every error sent to a client (the daemon keeps the recent ones for `dproxy doctor` and `status`). */
export type ErrorListener = (req: IncomingMessage, wire: WireError) => void

export function sendError(res: ServerResponse, err: unknown, log: Logger, method = 'GET', listener?: ErrorListener): void {
  const wire = toWire(err)
  listener?.(res.req, wire)
  // The same words in the access log as on the wire (and in the failures `doctor` lists).
  note(res, { error: wire.message.replace(/[^\x20-\x7e]/g, '?').slice(0, 500) })
  if (wire.status >= 500) log.error(describe(err))
  if (res.headersSent) {
    // Too late for a status: cut the connection so the client sees a failure, not a short body.
    res.destroy()
    return
  }
  const body = JSON.stringify({
    errors: [{ code: wire.code, message: wire.message, ...(wire.detail === undefined ? {} : { detail: wire.detail }) }],
  })
  res.statusCode = wire.status
  res.setHeader('content-type', 'application/json; charset=utf-8')
  res.setHeader('content-length', Buffer.byteLength(body))
  if (err instanceof DproxyError && err.status === 416 && typeof err.detail === 'object' && err.detail !== null) {
    const size = (err.detail as { size?: number }).size
    if (size !== undefined) res.setHeader('content-range', `bytes */${size}`)
  }
  // A rate-limited upstream said when to come back: so does dproxy (upstream/client.ts puts it in the detail).
  if (err instanceof DproxyError && err.status === 429 && typeof err.detail === 'object' && err.detail !== null) {
    const seconds = (err.detail as { retryAfterSeconds?: unknown }).retryAfterSeconds
    if (typeof seconds === 'number' && Number.isSafeInteger(seconds) && seconds >= 0) res.setHeader('retry-after', String(seconds))
  }
  res.end(method === 'HEAD' ? undefined : body)
}

/**
 * Answers a request Node's HTTP parser refused before any handler saw it (an
 * unknown method, a control character in the target, headers too large) with
 * the same OCI envelope as every other error, then closes the connection. A
 * socket that already carried a response is only closed: bytes written now
 * could land in the middle of it.
 */
export function sendClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  const fresh = socket.writable && (socket as Duplex & { bytesWritten?: number }).bytesWritten === 0
  if (!fresh || err.code === 'ECONNRESET') {
    socket.destroy()
    return
  }
  const [status, reason, code, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', 'UNSUPPORTED', 'the request headers are too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', 'UNKNOWN', 'the request did not arrive in time']
        : [400, 'Bad Request', 'UNSUPPORTED', 'malformed HTTP request']
  const body = JSON.stringify({ errors: [{ code, message }] })
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  )
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.stack ?? err.message
  return String(err)
}
