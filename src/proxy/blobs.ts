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

import { EventEmitter } from 'node:events'
import { constants, createReadStream, promises as fs } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { DproxyError } from '../errors.js'
import type { Logger } from '../log.js'
import type { Digest, ImageName } from '../registry/names.js'
import { isNotFound, type Store } from '../store/store.js'
import { upstreamError, type Upstreams } from '../upstream/client.js'
import type { Counters } from './counters.js'
import { notCached } from './outage.js'

const CHUNK = 1 << 20

export interface BlobProxyOptions {
  store: Store
  upstreams: Upstreams
  counters: Counters
  log: Logger
}

/** A blob ready to be sent: its size and a way to read any byte range of it. */
export interface BlobSource {
  size: number
  cached: boolean
  /** Stream bytes [start, end] (inclusive). Must be called at most once; call close() otherwise. */
  read(start: number, end: number): Readable
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
    // Decide synchronously after the last await, so concurrent misses join one fetch.
    let fetch = this.fetches.get(d.value)
    if (!fetch) {
      counters.cacheMisses++
      fetch = new Fetch(this.o, image, d)
      this.fetches.set(d.value, fetch)
      void fetch.run().finally(() => this.fetches.delete(d.value))
    } else {
      counters.cacheHits++
    }
    try {
      await fetch.started
    } catch (err) {
      throw notCached(err, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
    }
    return fromFetch(fetch, counters)
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
        for await (const chunk of up.body as AsyncIterable<Buffer>) {
          await writer.write(chunk)
          this.written = writer.written
          counters.bytesFromUpstream += chunk.length
          this.emit('progress')
        }
      } catch (err) {
        up.body.destroy()
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

function fromFile(fh: FileHandle, size: number, counters: Counters): BlobSource {
  return {
    size,
    cached: true,
    read(start, end) {
      const stream = fh.createReadStream({ start, end, highWaterMark: CHUNK, autoClose: true })
      stream.on('data', (chunk) => {
        counters.bytesFromCache += chunk.length
      })
      return stream
    },
    close: () => fh.close(),
  }
}

function fromFetch(fetch: Fetch, counters: Counters): BlobSource {
  if (fetch.committed) {
    // Already complete: a plain file read is cheapest.
    return {
      size: fetch.size!,
      cached: true,
      read(start, end) {
        const stream = createReadStream(fetch.finalPath, { start, end, highWaterMark: CHUNK })
        stream.on('data', (chunk) => {
          counters.bytesFromCache += chunk.length
        })
        return stream
      },
      close: async () => {},
    }
  }
  return {
    size: fetch.size ?? -1,
    cached: false,
    read: (start, end) => followFetch(fetch, start, end),
    close: async () => {},
  }
}

/** Streams [start, end] of a blob as the fetch writes it, waiting for bytes that are not there yet. */
function followFetch(fetch: Fetch, start: number, end: number): Readable {
  let fh: FileHandle | undefined
  let pos = start
  const last = end < 0 ? Number.POSITIVE_INFINITY : end
  return new Readable({
    highWaterMark: CHUNK,
    async read() {
      try {
        for (;;) {
          if (fetch.verified && (pos > last || pos >= fetch.written)) {
            this.push(null)
            return
          }
          if (fetch.error) throw fetch.error
          const limit = Math.min(fetch.available, last + 1)
          if (pos < limit) {
            fh ??= await fetch.openFile()
            const buf = Buffer.allocUnsafe(Math.min(CHUNK, limit - pos))
            const { bytesRead } = await fh.read(buf, 0, buf.length, pos)
            if (bytesRead === 0) throw new DproxyError('INTERNAL', 'blob file shrank while it was being read')
            pos += bytesRead
            this.push(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))
            return
          }
          await fetch.changed()
        }
      } catch (err) {
        this.destroy(err instanceof Error ? err : new Error(String(err)))
      }
    },
    destroy(err, cb) {
      const closing = fh?.close()
      fh = undefined
      Promise.resolve(closing)
        .catch(() => {})
        .then(() => cb(err))
    },
  })
}
