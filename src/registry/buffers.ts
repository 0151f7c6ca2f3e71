// The buffers blob bytes are read into on their way to a socket, shared by
// every response of one daemon. Each response used to allocate four 1 MiB
// buffers of its own, so memory grew by megabytes per client and stayed with
// the allocator after they left. One pool with a global cap bounds what
// sending costs: a response takes a buffer for one read and gives it back when
// the socket has written it.
//
// A read and a socket write cost about the same however many bytes they move
// (on this project's VM, 256 KiB reads took twice the CPU a byte of 1 MiB
// reads took), so a response reads as much at once as the pool can spare it:
// a part of the cap (largeChunks, 2 MiB) split evenly among the responses
// sending (share()), in buffers of 1, 2 or 4 chunks. One or two clients get 4
// chunks a read, a crowd one, as before; no response takes the pool from the
// others, and a few clients do not keep the whole cap resident. The cap counts chunks,
// whatever the sizes; at the cap a read takes a free buffer of another size
// rather than have one dropped (its memory would wait for a collection).
//
// When the cap is reached, a response gets a small buffer of its own instead
// of waiting: a client that stops reading holds its buffer until its socket
// drains, and waiting would let a few such clients stall everyone else.
// Memory then grows by the small size per extra client, not by megabytes.
//
// Pooled buffers are kept while anything is being sent (allocating one per
// read puts the garbage collector in the hot path) and dropped once the pool
// has been idle for a while, so a daemon that was busy shrinks back: a full
// collection then frees them (heap.ts).

import { collectGarbage } from '../heap.js'

export interface SendBufferOptions {
  /** Bytes of one chunk: the smallest pooled buffer (a pooled buffer is 1, 2 or 4 chunks). */
  chunkSize?: number
  /** Chunks in pooled buffers at most, over all responses and sizes. */
  maxBuffers?: number
  /** Bytes of a buffer handed out when the pool is exhausted (not kept). */
  overflowSize?: number
  /** Free buffers are dropped after the pool was idle this long. */
  idleMs?: number
  /** Chunks the responses sending share for reads larger than one chunk (share()). */
  largeChunks?: number
}

export const SEND_CHUNK_SIZE = 256 * 1024
export const SEND_MAX_BUFFERS = 64
export const SEND_OVERFLOW_SIZE = 64 * 1024
/** 2 MiB: one or two clients read 1 MiB at a time, three or four 512 KiB, more one chunk (bench: sharing all 16 MiB kept 8 MB more RSS after 8 clients). */
export const SEND_LARGE_CHUNKS = 8

/** Buffer sizes the pool hands out, in chunks: a response's share rounded down to one of these. */
const SIZES = [4, 2, 1]

export class SendBuffers {
  readonly chunkSize: number
  /** The cap, in chunks: pooled buffers of every size together hold at most this many. */
  readonly maxBuffers: number
  readonly overflowSize: number
  private readonly idleMs: number
  private readonly largeChunks: number
  /** Chunks each pooled buffer counts for. */
  private readonly pooled = new WeakMap<Buffer, number>()
  /** Free pooled buffers by size in chunks. */
  private readonly free = new Map<number, Buffer[]>(SIZES.map((n) => [n, []]))
  /** Chunks in pooled buffers, free or out. */
  private allocated = 0
  /** Chunks in free pooled buffers. */
  private idle = 0
  private idleTimer: NodeJS.Timeout | undefined
  /** Buffers handed out because the pool was exhausted. */
  overflows = 0
  /** Responses sending now (between enter() and leave()). */
  private senders = 0

  constructor(o: SendBufferOptions = {}) {
    this.chunkSize = positive('chunkSize', o.chunkSize ?? SEND_CHUNK_SIZE)
    this.maxBuffers = positive('maxBuffers', o.maxBuffers ?? SEND_MAX_BUFFERS)
    this.overflowSize = positive('overflowSize', o.overflowSize ?? SEND_OVERFLOW_SIZE)
    this.idleMs = positive('idleMs', o.idleMs ?? 5000)
    this.largeChunks = positive('largeChunks', o.largeChunks ?? SEND_LARGE_CHUNKS)
  }

  /** Chunks of pooled buffers handed out and not yet released. */
  get outstanding(): number {
    return this.allocated - this.idle
  }

  /** Chunks of pooled buffers that exist, free or out. */
  get size(): number {
    return this.allocated
  }

  /** A response starts sending: from now on it shares the pool with the others (share()). */
  enter(): void {
    this.senders++
  }

  leave(): void {
    this.senders = Math.max(0, this.senders - 1)
  }

  /**
   * Chunks one read of a sending response may take now: `largeChunks` (at
   * most the cap) split evenly among the responses sending; 4, 2 or 1.
   */
  share(): number {
    const even = Math.floor(Math.min(this.largeChunks, this.maxBuffers) / Math.max(1, this.senders))
    return SIZES.find((n) => n <= even) ?? 1
  }

  /**
   * A buffer to read into, of `chunks` chunks (1, 2 or 4) when the cap
   * allows, else of fewer, else a free one of more (it exists anyway), else a
   * small one of its own; give it back with release() once nothing uses it.
   * Pooled buffers are never dropped before the pool goes idle: garbage
   * waiting for a collection would be memory over the cap.
   */
  acquire(chunks = 1): Buffer {
    clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    for (const n of SIZES) {
      if (n > chunks) continue
      const reused = this.take(n)
      if (reused) return reused
      if (this.allocated + n <= this.maxBuffers) {
        const buf = Buffer.allocUnsafeSlow(n * this.chunkSize)
        this.pooled.set(buf, n)
        this.allocated += n
        return buf
      }
    }
    for (const n of [...SIZES].reverse()) {
      const larger = n > chunks ? this.take(n) : undefined
      if (larger) return larger
    }
    this.overflows++
    return Buffer.allocUnsafeSlow(this.overflowSize)
  }

  private take(n: number): Buffer | undefined {
    const buf = this.free.get(n)!.pop()
    if (buf) this.idle -= n
    return buf
  }

  release(buf: Buffer): void {
    const n = this.pooled.get(buf)
    if (n === undefined) return
    this.free.get(n)!.push(buf)
    this.idle += n
    if (this.outstanding === 0 && this.idleTimer === undefined) {
      this.idleTimer = setTimeout(() => this.shrink(), this.idleMs)
      this.idleTimer.unref()
    }
  }

  /** Drops the free buffers; the garbage collector returns their memory. */
  private shrink(): void {
    this.idleTimer = undefined
    for (const [n, list] of this.free) {
      this.allocated -= n * list.length
      list.length = 0
    }
    this.idle = 0
    collectGarbage()
  }
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`expected ${name} to be a positive integer, got ${value}`)
  return value
}
