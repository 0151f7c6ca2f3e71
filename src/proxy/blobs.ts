// Pull-through policy for blobs. A cached blob is streamed from disk. A
// missing one is fetched from upstream exactly once however many clients ask
// at the same time: the single download writes to a temp file in the cache
// (hashing as it goes), and every client, early or late, follows that file as
// it grows, so nobody waits for the whole blob and memory stays flat whatever
// the clients' speeds. The download does not belong to any client: it keeps
// filling the cache when the client that started it goes away.
//
// Integrity: no response is complete before its blob verified. The last byte
// of a blob is released only after digest and size have been checked, and the
// same holds for a range: a range of a blob still downloading is served from
// the same file as its bytes arrive, all but its own last byte, which waits for
// the whole blob to verify. A range that stops short of the blob's end is not
// the blob, but a byte of content that fails its digest is still a wrong byte,
// and a client of a range cannot check it; so ranges on a cold blob wait for
// the download (on a cached blob they are immediate). If the download fails or
// the content is wrong, the temp file is removed and every client's response
// is cut (a Content-Length response short of its length; a chunked one without
// its terminating chunk), so a client never receives a complete-looking wrong
// body and the cache never keeps one. A blob whose upstream sends no
// Content-Length goes out chunked under the same rule. A cached file is always
// a verified one: it is renamed into place only after verification.
//
// When the disk refuses the blob (full, read-only, permissions: a
// CACHE_UNAVAILABLE error from the store), a client that has not been sent a
// byte yet gets the blob streamed from upstream past the cache, verified the
// same way (streamPast). That stream is its own: concurrent clients of such a
// blob each cause one upstream GET, and the download that met the full disk
// costs one more. Clients already following the download when the disk fills
// up mid-way are cut, and retry.

import { EventEmitter, once } from 'node:events'
import { constants, promises as fs } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import type { Readable, Writable } from 'node:stream'
import { DproxyError, isDproxyError } from '../errors.js'
import type { Logger } from '../log.js'
import { isNotFound, type Store, type VerifyingWriter } from '../store/store.js'
import { discard } from '../upstream/auth.js'
import { upstreamError, type BlobBody, type Upstreams } from '../upstream/client.js'
import type { Counters } from './counters.js'
import { notCached } from './outage.js'
import { SendBuffers } from './sendbuffers.js'
import { type Digest, ContentCheck } from '../oci/digest.js'
import type { ImageName } from '../oci/reference.js'

/** Buffers one response may have out at once: one being written while the next is read. */
const BUFFERS_PER_RESPONSE = 2
/** Bytes a download may queue for the disk before it stops reading upstream. */
const WRITE_QUEUE_BYTES = 4 * 1024 * 1024

export interface BlobProxyOptions {
  store: Store
  upstreams: Upstreams
  counters: Counters
  log: Logger
  /** Shared by every response; one per daemon. */
  buffers?: SendBuffers
}

/** A blob ready to be sent: its size and a way to send any byte range of it. */
export interface BlobSource {
  /** -1 when upstream did not say (the response is then sent without Content-Length). */
  size: number
  cached: boolean
  /** Follows a download another request started (for the access log and metrics). */
  joined?: boolean
  /**
   * Writes bytes [start, end] (inclusive; `end` Infinity for "to the end,
   * whatever the size") to `out` and ends it. On a failure
   * (the download broke, the content did not verify) `out` is destroyed, so
   * the client sees a cut connection, and the error is thrown. Call at most
   * once; call close() instead when nothing is sent.
   */
  send(out: Writable, start: number, end: number): Promise<void>
  close(): Promise<void>
}

export class BlobProxy {
  private readonly fetches = new Map<string, Fetch>()
  readonly buffers: SendBuffers

  constructor(private readonly o: BlobProxyOptions) {
    this.buffers = o.buffers ?? new SendBuffers()
  }

  /** Number of downloads in progress (tests and shutdown use it). */
  get inflight(): number {
    return this.fetches.size
  }

  async open(image: ImageName, d: Digest): Promise<BlobSource> {
    const { store, counters } = this.o
    const running = this.fetches.get(d.value)
    if (!running) {
      // A cached file the disk will not give back is fetched again like a missing one.
      const handle = await store.openBlob(d).catch((err: unknown) => {
        if (isCacheUnavailable(err)) return undefined
        throw err
      })
      if (handle) {
        counters.cacheHits++
        await store.touchBlob(d)
        return fromFile(handle.fh, handle.size, counters, this.buffers)
      }
    }
    const joined = this.fetches.has(d.value)
    const fetch = this.join(image, d)
    try {
      await fetch.started
    } catch (err) {
      if (isCacheUnavailable(err)) return this.past(image, d)
      throw notCached(err, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
    }
    const source = fromFetch(fetch, this.buffers, () => this.past(image, d))
    // Clients waiting on the download: the live view shows them per download.
    fetch.clients++
    let left = false
    const leave = () => {
      if (!left) fetch.clients--
      left = true
    }
    return {
      ...source,
      joined,
      send: (out, start, end) => source.send(out, start, end).finally(leave),
      close: () => source.close().finally(leave),
    }
  }

  /** The downloads in progress, for metrics and the live view. */
  downloads(): DownloadProgress[] {
    return [...this.fetches.values()].map((f) => f.progress())
  }

  /** The blob straight from upstream to one client, for when the cache cannot take it. */
  private async past(image: ImageName, d: Digest): Promise<BlobSource> {
    let up: BlobBody
    try {
      up = await this.o.upstreams.get(image.registry).getBlob(image.repository, d.value)
    } catch (err) {
      throw notCached(err, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
    }
    return {
      size: up.size ?? -1,
      cached: false,
      send: (out, start, end) => streamPast(up, d, out, start, end, this.o.counters),
      close: async () => discard(up.body),
    }
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

export interface DownloadProgress {
  /** `docker.io/library/alpine` */
  image: string
  digest: string
  written: number
  /** undefined until upstream said, or when it did not. */
  size: number | undefined
  /** Clients following this download now. */
  clients: number
}

/** One upstream download of one blob into the cache. */
class Fetch extends EventEmitter {
  size: number | undefined
  written = 0
  clients = 0
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
      let writer: VerifyingWriter
      try {
        writer = await store.createBlobWriter(this.d, up.size)
      } catch (err) {
        discard(up.body)
        throw err
      }
      this.size = up.size
      this.tempPath = writer.tempPath
      try {
        await this.copy(up.body, writer)
      } catch (err) {
        discard(up.body)
        await writer.abort()
        throw upstreamError(err, `GET ${up.url}`)
      }
      // Clients are let in once the disk took the first bytes (or there were none).
      this.markStarted()
      await writer.verify()
      this.size = this.written
      this.verified = true
      this.emit('progress')
      await writer.commit()
      this.committed = true
    } catch (err) {
      this.error = err instanceof Error ? err : new Error(String(err))
      this.failStart(this.error)
      // The store logs a failing disk once, not once per blob.
      if (!isCacheUnavailable(err)) {
        log.warn(`blob ${this.d.value} of ${this.image.registry}/${this.image.repository} not cached: ${this.error.message}`)
      }
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
        this.markStarted()
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

  progress(): DownloadProgress {
    const { image, d } = this
    return { image: `${image.registry}/${image.repository}`, digest: d.value, written: this.written, size: this.size, clients: this.clients }
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
  /** Bytes in the file so far. */
  written(): number
  /** True when every byte is there and verified: no more will come. */
  verified(): boolean
  /** Throws the download's error, if any (none once verified: those bytes are good whatever happens next). */
  check(): void
  /** Resolves at the next change of written/verified/error. */
  changed(): Promise<void>
}

function fromFile(fh: FileHandle, size: number, counters: Counters, buffers: SendBuffers): BlobSource {
  const file: ByteSource = {
    open: async () => fh,
    written: () => size,
    verified: () => true,
    check: () => {},
    changed: async () => {},
  }
  return {
    size,
    cached: true,
    send: (out, start, end) =>
      pump(file, out, start, end, buffers, (n) => (counters.bytesFromCache += n)).catch((err: unknown) => {
        out.destroy()
        throw err
      }),
    close: () => fh.close(),
  }
}

function fromFetch(fetch: Fetch, buffers: SendBuffers, past: () => Promise<BlobSource>): BlobSource {
  const download: ByteSource = {
    open: () => fetch.openFile(),
    written: () => fetch.written,
    verified: () => fetch.verified,
    check: () => {
      if (fetch.error && !fetch.verified) throw fetch.error
    },
    changed: () => fetch.changed(),
  }
  return {
    size: fetch.size ?? -1,
    cached: fetch.committed,
    send: async (out, start, end) => {
      try {
        await pump(download, out, start, end, buffers, () => {})
      } catch (err) {
        // pump leaves `out` untouched only when the disk failed before it sent a byte.
        if (out.destroyed) throw err
        let other: BlobSource
        try {
          other = await past()
        } catch (pastErr) {
          out.destroy()
          throw pastErr
        }
        await other.send(out, start, end)
      }
    },
    close: async () => {},
  }
}

/**
 * Copies [start, end] of `src` to `out`, waiting for bytes that are not there
 * yet. Reads go into buffers of the daemon's pool (sendbuffers.ts), each
 * handed back when its socket write completes: a blob of any size is sent
 * without allocating per chunk, and the number of clients no longer
 * multiplies megabytes.
 */
async function pump(
  src: ByteSource,
  out: Writable,
  start: number,
  end: number,
  buffers: SendBuffers,
  sent: (n: number) => void,
): Promise<void> {
  let closed = out.destroyed
  const gone = new Promise<void>((resolve) => {
    out.once('close', () => {
      closed = true
      resolve()
    })
  })
  let held = 0
  let bufferFreed: (() => void) | undefined
  let fh: FileHandle | undefined
  let pos = start
  try {
    fh = await src.open()
    for (;;) {
      if (closed) return
      src.check()
      // Until the blob verified, the last byte there and the range's own last byte stay back.
      const verified = src.verified()
      const limit = verified ? Math.min(src.written(), end + 1) : Math.min(src.written() - 1, end)
      if (pos >= limit) {
        if (verified) break
        await Promise.race([src.changed(), gone])
        continue
      }
      while (held >= BUFFERS_PER_RESPONSE && !closed) await Promise.race([new Promise<void>((r) => (bufferFreed = r)), gone])
      if (closed) return
      const buf = buffers.acquire()
      const bytesRead = await fh.read(buf, 0, Math.min(buf.length, limit - pos), pos).then(
        (r) => r.bytesRead,
        (err: unknown) => {
          buffers.release(buf)
          throw err
        },
      )
      if (bytesRead === 0) {
        buffers.release(buf)
        throw new DproxyError('INTERNAL', 'blob file shrank while it was being read')
      }
      pos += bytesRead
      sent(bytesRead)
      held++
      const more = out.write(buf.subarray(0, bytesRead), () => {
        held--
        buffers.release(buf)
        bufferFreed?.()
      })
      if (!more) await Promise.race([once(out, 'drain'), gone])
    }
    out.end()
  } catch (err) {
    if (pos > start || !isCacheUnavailable(err)) out.destroy()
    throw err
  } finally {
    await fh?.close().catch(() => {})
  }
}

/**
 * Streams [start, end] of an upstream body to `out`, checking it as it
 * passes, and holds back the last piece of the range until the whole blob
 * verified; on a mismatch or a broken body `out` is cut instead.
 */
async function streamPast(up: BlobBody, d: Digest, out: Writable, start: number, end: number, counters: Counters): Promise<void> {
  const check = new ContentCheck(d, up.size)
  const gone = once(out, 'close').then(
    () => {},
    () => {},
  )
  let held: Buffer | undefined
  try {
    for await (const chunk of up.body as AsyncIterable<Buffer>) {
      if (out.destroyed) {
        discard(up.body)
        return
      }
      const at = check.size
      check.update([chunk])
      counters.bytesFromUpstream += chunk.length
      const piece = chunk.subarray(Math.max(0, start - at), Math.max(0, Math.min(chunk.length, end + 1 - at)))
      if (piece.length === 0) continue
      if (held && !out.write(held)) await Promise.race([once(out, 'drain'), gone])
      held = piece
    }
    check.finish()
  } catch (err) {
    discard(up.body)
    out.destroy()
    throw upstreamError(err, `GET ${up.url}`)
  }
  if (held) out.write(held)
  out.end()
}

function isCacheUnavailable(err: unknown): boolean {
  return isDproxyError(err, 'CACHE_UNAVAILABLE')
}
