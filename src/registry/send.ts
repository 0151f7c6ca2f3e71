// Writing a blob's bytes to a client. proxy/ says where the bytes are and
// when they may go (a stored blob, a download in progress, an upstream body
// streamed past the cache); this file moves them, from any byte range, with
// the daemon's shared buffers (buffers.ts), waiting for bytes that have not
// arrived and for a slow socket to drain.
//
// The one rule it keeps whatever the source: the last byte of a response
// leaves only once the whole blob verified. Until then the last byte there
// and the range's own last byte are held back; if the source fails instead,
// the response is cut (destroyed: a Content-Length response short of its
// length, a chunked one without its terminating chunk), so a client never
// sees a complete-looking wrong body. The one exception: a read that failed
// before a single byte went out leaves the response untouched, so the proxy
// may offer the same blob from elsewhere (its fallback past a failing disk,
// or the next endpoint of a chain after wrong bytes), of the same size, since
// the response's Content-Length is already set. A source the proxy marks
// `whole` sends nothing before the blob verified, so that this is the case.

import type { Writable } from 'node:stream'
import { DproxyError } from '../errors.js'
import type { BlobSource, FollowedBlob, StreamedBlob } from '../proxy/blobs.js'
import type { BlobReader } from '../store/api.js'
import type { SendBuffers } from './buffers.js'

/**
 * Writes bytes [start, end] of `source` (inclusive; `end` Infinity for "to
 * the end, whatever the size") to `out` and ends it. On a failure `out` is
 * destroyed, so the client sees a cut connection, and the error is thrown.
 * The source is closed once this response no longer reads from it, however
 * it ended (the live view counts the clients of a download by that).
 * `onFallback` hears of the source the proxy offered instead of a failed one.
 */
export async function sendBlob(
  source: BlobSource,
  out: Writable,
  start: number,
  end: number,
  buffers: SendBuffers,
  onFallback?: (other: BlobSource) => void,
): Promise<void> {
  let other: BlobSource | undefined
  try {
    switch (source.kind) {
      case 'bytes':
        out.end(source.bytes.subarray(start, end + 1))
        return
      case 'stream':
        return await stream(source, out, start, end)
      case 'follow':
        try {
          await pump(source, out, start, end, buffers)
        } catch (err) {
          // pump leaves `out` untouched only when nothing was sent yet.
          other = out.destroyed ? undefined : await offered(source, err, out)
          if (!other) {
            out.destroy()
            throw err
          }
        }
    }
  } finally {
    await source.close().catch(() => {})
  }
  if (other) {
    onFallback?.(other)
    await sendBlob(other, out, start, end, buffers, onFallback)
  }
}

async function offered(source: FollowedBlob, err: unknown, out: Writable): Promise<BlobSource | undefined> {
  let other: BlobSource | undefined
  try {
    other = await source.fallback?.(err)
  } catch (fallbackErr) {
    out.destroy()
    throw fallbackErr
  }
  // The response's length is set from the first source (an endpoint that announced a wrong size): it cannot change now.
  if (other && other.size !== source.size) {
    await other.close().catch(() => {})
    return undefined
  }
  return other
}

/**
 * Copies [start, end] of a stored or growing blob to `out`. Reads go into
 * buffers of the daemon's pool, each handed back when its socket write
 * completes: a blob of any size is sent without allocating per chunk, and
 * the number of clients does not multiply megabytes. A read of a stored blob
 * is as large as the pool can spare this response now (buffers.ts share()).
 */
async function pump(src: FollowedBlob, out: Writable, start: number, end: number, buffers: SendBuffers): Promise<void> {
  const waits = new Waits(out)
  /** Buffers handed to socket writes that have not completed (each goes back to the pool when it does). */
  let writing = 0
  let bufferFreed: (() => void) | undefined
  let reader: BlobReader | undefined
  let pos = start
  // A download being followed gives its bytes as they come: one chunk a read,
  // as ever (bench: larger ones for the 16 followers of one download kept
  // 9 MB more resident after the load).
  // Over TLS too: node encrypts a write whole, and 1 MiB ones kept 60 MB more
  // resident with 64 TLS clients (bench), for no gain in throughput.
  const large = src.cached && !encrypted(out)
  buffers.enter()
  try {
    reader = await src.open()
    for (;;) {
      if (waits.closed) return
      src.check()
      // Until the blob verified, the last byte there and the range's own last byte stay back (every byte when `whole`).
      const verified = src.verified()
      const limit = verified ? Math.min(src.written(), end + 1) : src.whole === true ? pos : Math.min(src.written() - 1, end)
      if (pos >= limit) {
        if (verified) break
        await waits.until((done) => void src.changed().then(done))
        continue
      }
      // One read out at a time: a read ahead while the socket writes the last
      // one kept 8 MB more resident after the load (bench), for a few percent.
      while (writing > 0 && !waits.closed) await waits.until((done) => (bufferFreed = done))
      if (waits.closed) return
      const buf = buffers.acquire(large ? buffers.share() : 1)
      const bytesRead = await reader.read(buf, 0, Math.min(buf.length, limit - pos), pos).catch((err: unknown) => {
        buffers.release(buf)
        throw err
      })
      if (bytesRead === 0) {
        buffers.release(buf)
        throw new DproxyError('INTERNAL', 'blob file shrank while it was being read')
      }
      pos += bytesRead
      src.sent(bytesRead)
      writing++
      // No wait for 'drain': the write's callback hands the buffer back, which the next read waits for.
      out.write(buf.subarray(0, bytesRead), () => {
        writing--
        buffers.release(buf)
        bufferFreed?.()
      })
    }
    out.end()
    // Done when the socket has taken the last bytes.
    while (writing > 0 && !waits.closed) await waits.until((done) => (bufferFreed = done))
  } catch (err) {
    if (pos > start) out.destroy()
    throw err
  } finally {
    buffers.leave()
    await reader?.close().catch(() => {})
  }
}

/** Whether `out` is a response on a TLS connection. */
function encrypted(out: Writable): boolean {
  const socket = (out as { socket?: unknown }).socket
  return typeof socket === 'object' && socket !== null && (socket as { encrypted?: unknown }).encrypted === true
}

/**
 * Streams [start, end] of an upstream body to `out` as it passes the
 * source's check, holding back the last piece of the range until the whole
 * blob verified; on a mismatch or a broken body `out` is cut instead.
 */
async function stream(src: StreamedBlob, out: Writable, start: number, end: number): Promise<void> {
  const waits = new Waits(out)
  let at = 0
  /** The last piece of the range so far: written only when a next one comes, or the blob verified. */
  let heldBack: Buffer | undefined
  try {
    for await (const chunk of src.body) {
      if (out.destroyed) {
        src.discard()
        return
      }
      src.accept(chunk)
      const piece = chunk.subarray(Math.max(0, start - at), Math.max(0, Math.min(chunk.length, end + 1 - at)))
      at += chunk.length
      if (piece.length === 0) continue
      if (heldBack && !out.write(heldBack)) await waits.until((done) => out.once('drain', done))
      heldBack = piece
    }
    src.finish()
  } catch (err) {
    out.destroy()
    throw src.failed(err)
  }
  if (heldBack) out.write(heldBack)
  out.end()
}

/**
 * One wait at a time for what a send loop waits on (a drain, a buffer, more
 * bytes), cut short when the client goes away. Racing every wait against one
 * promise of the close instead left a reaction on that promise per wait, all
 * alive until the response ended: one per chunk, so over a 512 MiB blob the
 * heap of a daemon sending it to 64 clients grew by 30 MB of them (bench).
 */
class Waits {
  closed: boolean
  private wake: (() => void) | undefined

  constructor(out: Writable) {
    this.closed = out.destroyed
    out.once('close', () => {
      this.closed = true
      this.wake?.()
    })
  }

  /** Resolves when `arm`'s callback is called or the client is gone, whichever is first. */
  until(arm: (done: () => void) => void): Promise<void> {
    if (this.closed) return Promise.resolve()
    return new Promise<void>((resolve) => {
      this.wake = resolve
      arm(resolve)
    })
  }
}
