// Small helpers for undici response bodies and headers, shared by the token
// auth and the upstream client: an error or unwanted body must be drained or
// destroyed (or the connection is not reused), and one read on error is
// capped (a hostile upstream could send gigabytes).

import type { Readable } from 'node:stream'

export function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}

/** Drops a response body we won't read; undici reports that as an error nobody needs to see. */
export function discard(body: { on(event: 'error', fn: () => void): unknown; destroy(): unknown }): void {
  body.on('error', () => {})
  body.destroy()
}

/** Reads at most `cap` bytes of a body as text and discards the rest. */
export async function readCapped(body: Readable, cap: number): Promise<string> {
  const chunks: Buffer[] = []
  let total = 0
  for await (const chunk of body) {
    const room = cap - total
    if (room <= 0) break
    const buf = Buffer.from(chunk)
    chunks.push(room < buf.length ? buf.subarray(0, room) : buf)
    total += Math.min(room, buf.length)
  }
  discard(body)
  return Buffer.concat(chunks).toString('utf8')
}
