// How long a request's body may take to arrive. Node's own limit
// (server.requestTimeout, 300 s) would cut a large `dproxy cache import`
// upload, so the daemon turns it off and applies the same bound here, per
// request: a client that trickles a body (registry routes take none) loses
// its connection when the bound passes, as with Node's. Only the import
// endpoint lifts it, and only once it has accepted the request (loopback,
// admin token, content type), so that an unauthenticated client gains
// nothing from naming its path. The head is bounded by Node's headersTimeout,
// which the daemon sets itself (connections.ts).

import type { IncomingMessage } from 'node:http'

/** Node's default server.requestTimeout. */
export const REQUEST_TIMEOUT_MS = 300_000

const deadlines = new WeakMap<IncomingMessage, NodeJS.Timeout>()

/** Cuts the connection when `req`'s body is not all there within `ms`. */
export function bodyDeadline(req: IncomingMessage, ms: number): void {
  if (ms <= 0) return
  const timer = setTimeout(() => {
    if (!req.complete) req.socket.destroy()
  }, ms)
  timer.unref()
  deadlines.set(req, timer)
  // After the whole body arrived, or the connection went.
  req.once('close', () => clearTimeout(timer))
}

/** For a request allowed to take as long as its body needs (an accepted import). */
export function liftBodyDeadline(req: IncomingMessage): void {
  clearTimeout(deadlines.get(req))
  deadlines.delete(req)
}
