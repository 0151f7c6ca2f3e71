// Bounds on the connections the daemon's listeners hold open, so that a
// client cannot pin its file descriptors by connecting and then sending
// nothing, half a request line, or headers one byte at a time.
//
// Node bounds the time to a complete request head with headersTimeout, and
// only as often as its connectionsCheckingInterval (30 s by default) looks.
// The daemon turns requestTimeout off (a body has its own bound per request,
// body-deadline.ts, lifted for an accepted import); left alone, Node then
// derives headersTimeout 0 too and checks nothing at all. So the daemon sets
// headersTimeout itself, and an interval short enough for the bound to hold. A keep-alive connection between
// requests is Node's keepAliveTimeout's business.
//
// The gate counts open connections per source address and in total; one
// over either bound is closed as soon as it is accepted. A source is the
// peer's address as the socket reports it (an IPv4-mapped IPv6 peer counts
// as its IPv4 address), so every client behind one NAT address shares its
// bound.

import type { ServerOptions } from 'node:http'
import type { Socket } from 'node:net'
import { DproxyError } from '../errors.js'
import type { Logger } from '../log.js'

/** How long a client has from connecting (or starting its next request) to the end of the request head. */
export const HEADERS_TIMEOUT_MS = 30_000
/** The connections one source address may hold open at once. */
export const MAX_CONNECTIONS_PER_CLIENT = 64
/** The connections all listeners together hold open at once (each may also hold a cache file open). */
export const MAX_CONNECTIONS = 512
/** How long after answering a client error the connection is cut, should the client keep its side open. */
const LINGER_MS = 1000

export interface ConnectionLimits {
  headersTimeoutMs: number
  perClient: number
  total: number
}

/** The limits with their defaults, each checked to be a positive whole number. */
export function connectionLimits(opts: { headersTimeoutMs?: number | undefined; maxConnectionsPerClient?: number | undefined; maxConnections?: number | undefined }): ConnectionLimits {
  const check = (name: string, value: number) => {
    if (!Number.isInteger(value) || value < 1) throw new DproxyError('CONFIG_INVALID', `expected ${name} to be a whole number above 0, got ${value}`)
    return value
  }
  return {
    headersTimeoutMs: check('headersTimeoutMs', opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS),
    perClient: check('maxConnectionsPerClient', opts.maxConnectionsPerClient ?? MAX_CONNECTIONS_PER_CLIENT),
    total: check('maxConnections', opts.maxConnections ?? MAX_CONNECTIONS),
  }
}

/** Node's timing options for a listener whose request bodies are bounded per request (body-deadline.ts). */
export function serverTimeouts(limits: ConnectionLimits): Pick<ServerOptions, 'headersTimeout' | 'requestTimeout' | 'connectionsCheckingInterval'> {
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: 0,
    // Node cuts a late head only when it next looks: look a few times per bound, at least once a second.
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
  }
}

/**
 * After a client error (a head that did not arrive in time, a malformed
 * request) the answer only ends the daemon's side (registry/errors.ts
 * sendClientError); a client that keeps its own side open would still hold the
 * socket. Cut it shortly after, once the answer had a chance to leave.
 */
export function cutAfterClientError(socket: { destroyed: boolean; destroy(): void }): void {
  setTimeout(() => {
    if (!socket.destroyed) socket.destroy()
  }, LINGER_MS).unref()
}

export class ConnectionGate {
  private readonly bySource = new Map<string, number>()
  private open = 0
  /** Sources (and '*' for the total) whose refusals were logged since they last went below their bound. */
  private readonly warned = new Set<string>()

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly log: Logger,
  ) {}

  /** Counts `socket` in until it closes, or closes it now when its source or the daemon is at its bound. */
  admit(socket: Socket): boolean {
    const address = socket.remoteAddress
    if (address === undefined) {
      socket.destroy()
      return false
    }
    const source = address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '')
    const held = this.bySource.get(source) ?? 0
    if (held >= this.limits.perClient) return this.refuse(socket, source, `${source} already holds ${held} connections (the bound per client)`)
    if (this.open >= this.limits.total) return this.refuse(socket, '*', `the daemon already holds ${this.open} connections (the bound in total)`)
    this.bySource.set(source, held + 1)
    this.open++
    socket.once('close', () => {
      const left = (this.bySource.get(source) ?? 1) - 1
      if (left === 0) this.bySource.delete(source)
      else this.bySource.set(source, left)
      this.open--
      if (left < this.limits.perClient) this.warned.delete(source)
      if (this.open < this.limits.total) this.warned.delete('*')
    })
    return true
  }

  private refuse(socket: Socket, key: string, why: string): false {
    socket.destroy()
    if (!this.warned.has(key)) {
      this.warned.add(key)
      this.log.warn(`refusing new connections: ${why}`)
    }
    return false
  }
}
