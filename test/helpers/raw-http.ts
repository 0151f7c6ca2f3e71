// What the connection-bound tests (daemon/connections, daemon/tls) do on a raw
// socket, plain or TLS: send one whole request and read its status line.

import { setTimeout as sleep } from 'node:timers/promises'

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
