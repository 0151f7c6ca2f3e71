// What the connection-bound tests (daemon/connections, daemon/tls) do on a raw
// socket, plain or TLS: send one whole request and read its status line, or trickle a head.

import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { TLSSocket } from 'node:tls'

/** A raw connection to a daemon: its socket and the bytes it received so far. */
export interface RawConnection {
  socket: { write(data: string): unknown; destroyed: boolean; readableEnded: boolean }
  received(): string
}

/** Sends a whole GET /v2/ on `raw` and resolves with the status line of the answer ('' when the connection went). */
export async function pingV2(raw: RawConnection, port: number): Promise<string> {
  const before = raw.received().length
  raw.socket.write(`GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
  for (let i = 0; i < 500; i++) {
    const text = raw.received().slice(before)
    const line = /^HTTP\/1\.1 \d{3}[^\r]*\r\n/.exec(text)
    if (line && text.includes('\r\n\r\n')) return line[0].trim()
    if (raw.socket.destroyed || raw.socket.readableEnded) return ''
    await sleep(10)
  }
  return ''
}

/** How long a test gives the daemon to let go of a connection it should close. */
export const CLOSED_WITHIN_MS = 10_000

/** What the daemon did with a raw connection: closed it, let go of it, and what it sent. */
export interface Watched {
  /** Resolves true when the connection closed (end, close or error) within `ms`. */
  closedByServer(ms?: number): Promise<boolean>
  /**
   * Resolves true when the daemon let go of the socket within `ms`, though this
   * side kept its half open: a byte sent now and then on `tcp` is then refused (a reset).
   */
  releasedByServer(ms?: number): Promise<boolean>
  /** Everything the daemon sent so far. */
  received(): string
}

/**
 * Watches `socket` (plain, or TLS over `tcp`) from now on. Bytes for the
 * release check go to `tcp`, under any TLS layer, since a TLS socket the
 * daemon dropped may not say so itself.
 */
export function watchRaw(socket: Socket | TLSSocket, tcp: Socket = socket as Socket): Watched {
  const chunks: Buffer[] = []
  let closed = false
  let reset = false
  const ended = new Promise<void>((resolve) => {
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('end', () => ((closed = true), resolve()))
    socket.on('close', () => ((closed = true), resolve()))
    socket.on('error', () => ((closed = true), (reset = true), resolve()))
    if (tcp !== socket) tcp.on('error', () => ((closed = true), (reset = true), resolve()))
  })
  return {
    async closedByServer(ms = CLOSED_WITHIN_MS) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([ended, new Promise((r) => (timer = setTimeout(r, ms)))])
      clearTimeout(timer)
      return closed
    },
    async releasedByServer(ms = CLOSED_WITHIN_MS) {
      for (let waited = 0; waited < ms && !reset && !tcp.destroyed; waited += 100) {
        tcp.write('x')
        await sleep(100)
      }
      return reset || tcp.destroyed
    },
    received: () => Buffer.concat(chunks).toString('latin1'),
  }
}

/**
 * Sends the rest of a request head on `raw` one byte a second, far slower than
 * a head timeout allows, until the head is sent or the daemon closed the
 * connection. Resolves with the bytes sent and the head's length.
 */
export async function trickleHead(raw: RawConnection, port: number): Promise<{ sent: number; length: number }> {
  const header = `Host: 127.0.0.1:${port}\r\nX-Slow: ${'a'.repeat(60)}\r\n\r\n`
  let sent = 0
  for (; sent < header.length && !raw.socket.destroyed && !raw.socket.readableEnded; sent++) {
    raw.socket.write(header[sent]!)
    await sleep(1000)
  }
  return { sent, length: header.length }
}
