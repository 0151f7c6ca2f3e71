// The buffers blob bytes are read into on their way to a socket, shared by
// every response of one daemon. Each response used to allocate four 1 MiB
// buffers of its own, so memory grew by megabytes per client and stayed with
// the allocator after they left. One pool with a global cap bounds what
// sending costs: a response takes a buffer for one read and gives it back when
// the socket has written it.
//
// When every pooled buffer is out, a response gets a small one of its own
// instead of waiting: a client that stops reading holds its buffer until its
// socket drains, and waiting would let a few such clients stall everyone else.
// Memory then grows by the small size per extra client, not by megabytes.
//
// A response may read several buffers at once (one readv, one writev): a
// read and a socket write cost about the same however many bytes they move,
// so on a quiet daemon fewer, larger ones halve the CPU a byte costs. How
// many it may take is the pool's cap shared evenly among the responses
// sending (share()), so a crowd gets one buffer a read, as before, and no
// single response takes the pool from the others.
//
// Pooled buffers are kept while anything is being sent (allocating one per
// read puts the garbage collector in the hot path) and dropped once the pool
// has been idle for a while, so a daemon that was busy shrinks back: a full
// collection then frees them (heap.ts).

import { collectGarbage } from '../heap.js'

export interface SendBufferOptions {
  /** Bytes of one pooled buffer: the most one read and one socket write move. */
  chunkSize?: number
  /** Pooled buffers in existence at most, over all responses. */
  maxBuffers?: number
  /** Bytes of a buffer handed out when the pool is exhausted (not kept). */
  overflowSize?: number
  /** Free buffers are dropped after the pool was idle this long. */
  idleMs?: number
}

export const SEND_CHUNK_SIZE = 256 * 1024
export const SEND_MAX_BUFFERS = 64
export const SEND_OVERFLOW_SIZE = 64 * 1024

export class SendBuffers {
  readonly chunkSize: number
  readonly maxBuffers: number
  readonly overflowSize: number
  private readonly idleMs: number
  private readonly pooled = new WeakSet<Buffer>()
  private readonly free: Buffer[] = []
  private allocated = 0
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
  }

  /** Pooled buffers handed out and not yet released. */
  get outstanding(): number {
    return this.allocated - this.free.length
  }

  /** Pooled buffers that exist, free or out. */
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
   * Buffers one read of a sending response may take now: the pool's cap split
   * evenly among the responses sending, each with `reads` reads out at once;
   * at least 1 and at most `most`.
   */
  share(reads: number, most: number): number {
    return Math.max(1, Math.min(most, Math.floor(this.maxBuffers / (reads * Math.max(1, this.senders)))))
  }

  /** A pooled buffer, or undefined when the pool is exhausted (never an overflow one). */
  tryAcquire(): Buffer | undefined {
    if (this.free.length === 0 && this.allocated >= this.maxBuffers) return undefined
    return this.acquire()
  }

  /** A buffer to read into; give it back with release() once nothing uses it. */
  acquire(): Buffer {
    clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    const reused = this.free.pop()
    if (reused) return reused
    if (this.allocated >= this.maxBuffers) {
      this.overflows++
      return Buffer.allocUnsafeSlow(this.overflowSize)
    }
    const buf = Buffer.allocUnsafeSlow(this.chunkSize)
    this.pooled.add(buf)
    this.allocated++
    return buf
  }

  release(buf: Buffer): void {
    if (!this.pooled.has(buf)) return
    this.free.push(buf)
    if (this.outstanding === 0 && this.idleTimer === undefined) {
      this.idleTimer = setTimeout(() => this.shrink(), this.idleMs)
      this.idleTimer.unref()
    }
  }

  /** Drops the free buffers; the garbage collector returns their memory. */
  private shrink(): void {
    this.idleTimer = undefined
    this.allocated -= this.free.length
    this.free.length = 0
    collectGarbage()
  }
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`expected ${name} to be a positive integer, got ${value}`)
  return value
}
