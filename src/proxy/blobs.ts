// Pull-through policy for blobs. A cached blob is streamed from disk. A
// missing one is fetched from upstream exactly once however many clients ask
// at the same time: the single download writes to a temp file in the cache
// (hashing as it goes), and every client, early or late, follows that file as
// it grows, so nobody waits for the whole blob and memory stays flat whatever
// the clients' speeds. The download does not belong to any client: it keeps
// filling the cache when the client that started it goes away.
//
// Integrity: the last byte of a blob is released to clients only after the
// digest and size have been verified and the file renamed into place. If the
// download fails or the content is wrong, the temp file is removed and every
// client's stream errors, so a client never receives a complete-looking wrong
// body and the cache never keeps one. A range request on a blob still
// downloading is served from the same file once its bytes are there.

import { EventEmitter, once } from 'node:events'
import { constants, promises as fs } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import type { Readable, Writable } from 'node:stream'
import { DproxyError } from '../errors.js'
import type { Logger } from '../log.js'
import type { Digest, ImageName } from '../registry/names.js'
import { isNotFound, type Store, type VerifyingWriter } from '../store/store.js'
import { discard } from '../upstream/auth.js'
import { upstreamError, type Upstreams } from '../upstream/client.js'
import type { Counters } from './counters.js'
import { notCached } from './outage.js'

/** Size of one read when sending, and how many such buffers one response reuses. */
const SEND_CHUNK = 1024 * 1024
const POOL_BUFFERS = 4
/** Bytes a download may queue for the disk before it stops reading upstream. */
const WRITE_QUEUE_BYTES = 4 * 1024 * 1024

export interface BlobProxyOptions {
  store: Store
  upstreams: Upstreams
  counters: Counters
  log: Logger
}

/** A blob ready to be sent: its size and a way to send any byte range of it. */
export interface BlobSource {
  /** -1 when upstream did not say (the response is then sent without Content-Length). */
  size: number
  cached: boolean
  /**
   * Writes bytes [start, end] (inclusive) to `out` and ends it. On a failure
   * (the download broke, the content did not verify) `out` is destroyed, so
   * the client sees a cut connection, and the error is thrown. Call at most
   * once; call close() instead when nothing is sent.
   */
  send(out: Writable, start: number, end: number): Promise<void>
  close(): Promise<void>
}

export class BlobProxy {
  private readonly fetches = new Map<string, Fetch>()

  constructor(private readonly o: BlobProxyOptions) {}

  /** Number of downloads in progress (tests and shutdown use it). */
  get inflight(): number {
    return this.fetches.size
  }

  async open(image: ImageName, d: Digest): Promise<BlobSource> {
    const { store, counters } = this.o
    const running = this.fetches.get(d.value)
    if (!running) {
      const handle = await store.openBlob(d)
      if (handle) {
        counters.cacheHits++
        await store.touchBlob(d)
        return fromFile(handle.fh, handle.size, counters)
      }
    }
    const fetch = this.join(image, d)
    try {
      await fetch.started
    } catch (err) {
      throw notCached(err, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
    }
    return fromFetch(fetch)
  }

  /**
   * Puts a blob in the cache without sending it anywhere (prefetch): joins the
   * download in progress or starts one, and resolves once it is verified and
   * committed. Nothing is read into memory. `onBytes` hears how far it got.
   */
  async ensure(image: ImageName, d: Digest, onBytes?: (written: number) => void): Promise<{ size: number; fetched: boolean }> {
    if (!this.fetches.has(d.value)) {
      const size = await this.o.store.statBlob(d)
      if (size !== undefined) return { size, fetched: false }
    }
    const fetch = this.join(image, d)
    const report = () => onBytes?.(fetch.written)
    if (onBytes) fetch.on('progress', report)
    try {
      await fetch.done
    } finally {
      fetch.off('progress', report)
    }
    if (fetch.error) throw notCached(fetch.error, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
    return { size: fetch.size ?? fetch.written, fetched: true }
  }

  /** The download of `d`, started when none runs. Synchronous, so concurrent misses join one fetch. */
  private join(image: ImageName, d: Digest): Fetch {
    let fetch = this.fetches.get(d.value)
    if (!fetch) {
      this.o.counters.cacheMisses++
      fetch = new Fetch(this.o, image, d)
      this.fetches.set(d.value, fetch)
      void fetch.run().finally(() => this.fetches.delete(d.value))
    } else {
      this.o.counters.cacheHits++
    }
    return fetch
  }

  /** Size of a blob without downloading it. */
  async size(image: ImageName, d: Digest): Promise<number> {
    const cached = await this.o.store.statBlob(d)
    if (cached !== undefined) return cached
    const fetch = this.fetches.get(d.value)
    if (fetch?.size !== undefined) return fetch.size
    const { size } = await this.o.upstreams
      .get(image.registry)
      .headBlob(image.repository, d.value)
      .catch((err: unknown) => {
        throw notCached(err, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
      })
    if (size === undefined || !Number.isSafeInteger(size)) {
      throw new DproxyError('UPSTREAM_INVALID', `upstream did not say the size of blob ${d.value}`)
    }
    return size
  }

  /** Resolves when every download in progress has finished, or `ms` passed (shutdown). */
  async drain(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))
    await Promise.race([Promise.all([...this.fetches.values()].map((f) => f.done)), timeout])
    clearTimeout(timer)
  }

  /** Stops every download in progress; their temp files are removed and their readers fail. */
  async abortAll(): Promise<void> {
    const pending = [...this.fetches.values()]
    for (const f of pending) f.abort()
    await Promise.all(pending.map((f) => f.done))
  }
}

/** One upstream download of one blob into the cache. */
class Fetch extends EventEmitter {
  size: number | undefined
  written = 0
  tempPath: string | undefined
  /** Digest and size checked: every byte may go to clients. */
  verified = false
  /** Renamed into the cache. */
  committed = false
  error: Error | undefined
  readonly finalPath: string
  readonly started: Promise<void>
  readonly done: Promise<void>
  private body: Readable | undefined
  private aborted = false
  private markStarted!: () => void
  private failStart!: (err: Error) => void
  private finish!: () => void

  constructor(
    private readonly o: BlobProxyOptions,
    private readonly image: ImageName,
    private readonly d: Digest,
  ) {
    super()
    this.setMaxListeners(0)
    this.finalPath = o.store.blobPath(d)
    this.started = new Promise((resolve, reject) => {
      this.markStarted = resolve
      this.failStart = reject
    })
    this.started.catch(() => {})
    this.done = new Promise((resolve) => (this.finish = resolve))
  }

  /** Bytes readers may have: everything once verified, all but the last byte before. */
  get available(): number {
    return this.verified ? this.written : Math.max(0, this.written - 1)
  }

  async run(): Promise<void> {
    const { store, upstreams, counters, log } = this.o
    try {
      // Another process (or a fetch that just finished) may have put it there.
      const existing = await store.statBlob(this.d)
      if (existing !== undefined) {
        this.size = this.written = existing
        this.verified = this.committed = true
        this.markStarted()
        return
      }
      const up = await upstreams.get(this.image.registry).getBlob(this.image.repository, this.d.value)
      this.body = up.body
      if (this.aborted) up.body.destroy(new DproxyError('UPSTREAM_UNAVAILABLE', 'dproxy is shutting down'))
      const writer = await store.createBlobWriter(this.d, up.size)
      this.size = up.size
      this.tempPath = writer.tempPath
      this.markStarted()
      try {
        await this.copy(up.body, writer)
      } catch (err) {
        discard(up.body)
        await writer.abort()
        throw upstreamError(err, `GET ${up.url}`)
      }
      await writer.verify()
      this.size = this.written
      this.verified = true
      this.emit('progress')
      await writer.commit()
      this.committed = true
    } catch (err) {
      this.error = err instanceof Error ? err : new Error(String(err))
      this.failStart(this.error)
      log.warn(`blob ${this.d.value} of ${this.image.registry}/${this.image.repository} not cached: ${this.error.message}`)
    } finally {
      this.emit('progress')
      this.finish()
    }
  }

  /**
   * Moves the body into the temp file. Chunks keep arriving while a write is
   * in flight and go out together in the next one, so the upstream socket is
   * never paused by one disk round trip per small chunk; the queue is bounded.
   */
  private async copy(body: Readable, writer: VerifyingWriter): Promise<void> {
    const queue: Buffer[] = []
    let queued = 0
    let failure: unknown
    let flushing: Promise<void> | undefined
    const flush = async () => {
      while (queue.length > 0) {
        const batch = queue.splice(0)
        queued = 0
        await writer.writev(batch)
        this.written = writer.written
        this.emit('progress')
      }
    }
    const kick = () => {
      flushing ??= flush()
        .catch((err: unknown) => {
          failure ??= err
        })
        .finally(() => {
          flushing = undefined
        })
    }
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (failure !== undefined) throw failure
      queue.push(chunk)
      queued += chunk.length
      this.o.counters.bytesFromUpstream += chunk.length
      kick()
      if (queued >= WRITE_QUEUE_BYTES) await flushing
    }
    await flushing
    if (failure !== undefined) throw failure
    await flush()
  }

  abort(): void {
    this.aborted = true
    this.body?.destroy(new DproxyError('UPSTREAM_UNAVAILABLE', 'dproxy is shutting down'))
  }

  /** Resolves at the next change of state. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.once('progress', resolve))
  }

  /** Opens the bytes for reading: the temp file while downloading, the cache file after. */
  async openFile(): Promise<FileHandle> {
    for (;;) {
      const path = this.committed || !this.tempPath ? this.finalPath : this.tempPath
      try {
        return await fs.open(path, constants.O_RDONLY)
      } catch (err) {
        // Renamed between our check and the open: the next round finds it in place.
        if (!isNotFound(err) || (path === this.finalPath && this.committed) || this.error) {
          throw this.error ?? err
        }
        if (!this.committed) await this.changed()
      }
    }
  }
}

/** What pump() reads from: a complete file, or a download in progress. */
interface ByteSource {
  open(): Promise<FileHandle>
  /** Bytes that may be sent now. */
  available(): number
  /** True when no more bytes will come. */
  complete(): boolean
  /** Throws the download's error, if any. */
  check(): void
  /** Resolves at the next change of available/complete/error. */
  changed(): Promise<void>
}

function fromFile(fh: FileHandle, size: number, counters: Counters): BlobSource {
  const file: ByteSource = {
    open: async () => fh,
    available: () => size,
    complete: () => true,
    check: () => {},
    changed: async () => {},
  }
  return {
    size,
    cached: true,
    send: (out, start, end) => pump(file, out, start, end, (n) => (counters.bytesFromCache += n)),
    close: () => fh.close(),
  }
}

function fromFetch(fetch: Fetch): BlobSource {
  const download: ByteSource = {
    open: () => fetch.openFile(),
    available: () => fetch.available,
    complete: () => fetch.verified,
    check: () => {
      if (fetch.error) throw fetch.error
    },
    changed: () => fetch.changed(),
  }
  return {
    size: fetch.size ?? -1,
    cached: fetch.committed,
    send: (out, start, end) => pump(download, out, start, end, () => {}),
    close: async () => {},
  }
}

/**
 * Copies [start, end] of `src` to `out`, waiting for bytes that are not there
 * yet. Reads go into a few reused buffers, each handed back when its socket
 * write completes: a blob of any size is sent without allocating per chunk,
 * which keeps the garbage collector (and RSS) out of the hot path.
 */
async function pump(src: ByteSource, out: Writable, start: number, end: number, sent: (n: number) => void): Promise<void> {
  let closed = out.destroyed
  const gone = new Promise<void>((resolve) => {
    out.once('close', () => {
      closed = true
      resolve()
    })
  })
  const free = Array.from({ length: POOL_BUFFERS }, () => Buffer.allocUnsafe(SEND_CHUNK))
  let bufferFreed: (() => void) | undefined
  let fh: FileHandle | undefined
  let pos = start
  try {
    fh = await src.open()
    for (;;) {
      if (closed) return
      src.check()
      const limit = Math.min(src.available(), end + 1)
      if (pos >= limit) {
        if (src.complete()) break
        await Promise.race([src.changed(), gone])
        continue
      }
      while (free.length === 0 && !closed) await Promise.race([new Promise<void>((r) => (bufferFreed = r)), gone])
      if (closed) return
      const buf = free.pop()!
      const { bytesRead } = await fh.read(buf, 0, Math.min(SEND_CHUNK, limit - pos), pos)
      if (bytesRead === 0) throw new DproxyError('INTERNAL', 'blob file shrank while it was being read')
      pos += bytesRead
      sent(bytesRead)
      const more = out.write(buf.subarray(0, bytesRead), () => {
        free.push(buf)
        bufferFreed?.()
      })
      if (!more) await Promise.race([once(out, 'drain'), gone])
    }
    out.end()
  } catch (err) {
    out.destroy()
    throw err
  } finally {
    await fh?.close().catch(() => {})
  }
}
