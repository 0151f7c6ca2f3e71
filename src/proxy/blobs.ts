// Pull-through policy for blobs, over the store's blob interface (store/api.ts)
// in the way distribution's proxy blob store decorates its local one. A cached
// blob is read from the store. A missing one is fetched from upstream exactly
// once however many clients ask at the same time: the single download goes
// into the store's verifying writer, and every client, early or late, follows
// the writer's bytes as they grow, so nobody waits for the whole blob and
// memory stays flat whatever the clients' speeds. The download does not belong
// to any client: it keeps filling the cache when the client that started it
// goes away. This file decides what each client may have and when
// (BlobSource); registry/send.ts writes it to the socket.
//
// Integrity: no response is complete before its blob verified. The last byte
// of a blob is released only after digest and size have been checked, and the
// same holds for a range: a range of a blob still downloading is served from
// the same bytes as they arrive, all but its own last byte, which waits for
// the whole blob to verify. A range that stops short of the blob's end is not
// the blob, but a byte of content that fails its digest is still a wrong byte,
// and a client of a range cannot check it; so ranges on a cold blob wait for
// the download (on a cached blob they are immediate). If the download fails or
// the content is wrong, the writer throws the bytes away and every client's response
// is cut (a Content-Length response short of its length; a chunked one without
// its terminating chunk), so a client never receives a complete-looking wrong
// body and the cache never keeps one. A blob whose upstream sends no
// Content-Length goes out chunked under the same rule. A cached file is always
// a verified one: it is renamed into place only after verification.
//
// When the disk refuses the blob (full, read-only, permissions: a
// CACHE_UNAVAILABLE error from the store), a client that has not been sent a
// byte yet gets the blob streamed from upstream past the cache, verified the
// same way (the past() source). That stream is its own: concurrent clients of such a
// blob each cause one upstream GET, and the download that met the full disk
// costs one more. Clients already following the download when the disk fills
// up mid-way are cut, and retry.
//
// A registry with a chain of endpoints (upstream/client.ts): when the bytes one
// endpoint sent fail their digest, that endpoint is not asked for the blob
// again, and a client that has not been sent a byte yet is given a new
// download from the next endpoint within its request; one that has is cut as
// above, and its retry goes elsewhere. So that a team cache's wrong bytes cost
// no client its pull, a blob from an endpoint with another behind it is held
// back until it verified (the team cache is near: the wait is short); a blob
// from the last endpoint streams as it arrives.

import { EventEmitter } from 'node:events'
import type { Readable } from 'node:stream'
import { DproxyError, isDproxyError } from '../errors.js'
import type { Logger } from '../log.js'
import type { BlobReader, BlobStore, BlobWriter, StoredBlob } from '../store/api.js'
import { discard } from '../upstream/auth.js'
import { upstreamError, type BlobBody, type UpstreamAnswer, type UpstreamClient } from '../upstream/client.js'
import type { Counters } from './counters.js'
import { notCached } from './outage.js'
import { type Digest, ContentCheck } from '../oci/digest.js'
import type { ImageName } from '../oci/reference.js'

/** Bytes a download may queue for the disk before it stops reading upstream. */
const WRITE_QUEUE_BYTES = 4 * 1024 * 1024

/** What the blob proxy asks of upstream (the Upstreams class, or a test's double). */
export interface BlobUpstreams {
  get(registry: string): Pick<UpstreamClient, 'getBlob' | 'headBlob'>
}

export interface BlobProxyOptions {
  store: BlobStore
  upstreams: BlobUpstreams
  counters: Counters
  log: Logger
}

/**
 * A blob ready to be sent, as registry/send.ts sends it: where its bytes are,
 * and when each of them may go. close() once its response is over, whatever
 * happened (sent, cut, the client gone, nothing sent): sendBlob() does it.
 */
export type BlobSource = FollowedBlob | StreamedBlob | HeldBlob

interface SourceBase {
  /** -1 when upstream did not say (the response is then sent without Content-Length). */
  size: number
  cached: boolean
  /** Follows a download another request started (for the access log and metrics). */
  joined?: boolean
  /** The upstream endpoint that answered this request's download, and its status (a miss). */
  upstream?: UpstreamAnswer
  close(): Promise<void>
}

/** A stored blob, or one still downloading: readable at any position up to what arrived. */
export interface FollowedBlob extends SourceBase {
  kind: 'follow'
  open(): Promise<BlobReader>
  /** Bytes there so far. */
  written(): number
  /** True when every byte is there and verified: no more will come. */
  verified(): boolean
  /** Throws the download's error, if any (none once verified: those bytes are good whatever happens next). */
  check(): void
  /** Resolves at the next change of written/verified/error. */
  changed(): Promise<void>
  /** Hears how many bytes went out. */
  sent(n: number): void
  /** When reading failed before any byte went out: the same blob from elsewhere, or undefined to fail. */
  fallback?(err: unknown): Promise<BlobSource | undefined>
}

/** An upstream body for one client, past the cache: each chunk goes through accept() before it is sent. */
export interface StreamedBlob extends SourceBase {
  kind: 'stream'
  body: AsyncIterable<Buffer>
  /** Hashes a chunk; throws when the body is already longer than announced. */
  accept(chunk: Buffer): void
  /** Throws when the whole body is not the blob. */
  finish(): void
  /** Stops the body after `err` and says what to report. */
  failed(err: unknown): unknown
  /** Stops the body (the client went away). */
  discard(): void
}

/** A small blob held in memory (the doctor's probe image). */
export interface HeldBlob extends SourceBase {
  kind: 'bytes'
  bytes: Buffer
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
      // A cached file the disk will not give back is fetched again like a missing one.
      const handle = await store.openBlob(d).catch((err: unknown) => {
        if (isCacheUnavailable(err)) return undefined
        throw err
      })
      if (handle) {
        counters.cacheHits++
        await store.touchBlob(d)
        return fromFile(handle, counters)
      }
    }
    const joined = this.fetches.has(d.value)
    const fetch = this.join(image, d)
    try {
      await fetch.started
    } catch (err) {
      if (isCacheUnavailable(err)) return this.past(image, d)
      // The endpoint failed the blob before a byte came through, and another one is left.
      if (fetch.another) {
        await fetch.finished
        return this.open(image, d)
      }
      throw notCached(err, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
    }
    // Clients reading from the download now: the live view shows them per download; close() lets go.
    fetch.clients++
    const again = async () => {
      await fetch.finished
      return this.open(image, d)
    }
    return { ...fromFetch(fetch, () => this.past(image, d), again), joined, ...(!joined && fetch.answer ? { upstream: fetch.answer } : {}) }
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
    return streamed(up, d, this.o.counters)
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
      const started = new Fetch(this.o, image, d)
      this.fetches.set(d.value, started)
      started.finished = started.run().finally(() => this.fetches.delete(d.value))
      fetch = started
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
    if (size !== undefined && Number.isSafeInteger(size)) return size
    // Upstream says the size neither on a HEAD nor on a ranged GET: answer as a GET would, once the blob is here.
    return (await this.ensure(image, d)).size
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
  /** Digest and size checked: every byte may go to clients. */
  verified = false
  /** Renamed into the cache. */
  committed = false
  error: Error | undefined
  /** Who answered the download (undefined when the blob was found in the store after all). */
  answer: UpstreamAnswer | undefined
  /**
   * The endpoint failed this blob (wrong bytes, or a held download broken
   * off) and another one is left to ask: a client sent nothing yet may try again.
   */
  another = false
  /** From an endpoint with another behind it: no byte goes to a client before the blob verified. */
  held = false
  /** Resolves once the download is over and no longer the one a new client would join. */
  finished: Promise<void> = Promise.resolve()
  readonly started: Promise<void>
  readonly done: Promise<void>
  private body: Readable | undefined
  private writer: BlobWriter | undefined
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
      this.answer = up.answer
      this.held = up.chained === true
      if (this.aborted) up.body.destroy(new DproxyError('UPSTREAM_UNAVAILABLE', 'dproxy is shutting down'))
      let writer: BlobWriter
      try {
        writer = await store.createBlobWriter(this.d, up.size)
      } catch (err) {
        discard(up.body)
        throw err
      }
      this.size = up.size
      this.writer = writer
      try {
        await this.copy(up.body, writer)
      } catch (err) {
        discard(up.body)
        await writer.abort()
        // A held download broken off sent no client a byte: the next endpoint may have it whole.
        if (isWrongContent(err) || (this.held && !this.aborted && !isCacheUnavailable(err))) this.another = up.rejected?.() ?? false
        throw upstreamError(err, `GET ${up.url}`)
      }
      // Clients are let in once the disk took the first bytes (or there were none).
      this.markStarted()
      await writer.verify().catch((err: unknown) => {
        if (isWrongContent(err)) this.another = up.rejected?.() ?? false
        throw err
      })
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
  private async copy(body: Readable, writer: BlobWriter): Promise<void> {
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

  /** Opens the bytes for reading: following the writer while downloading, the stored blob after. */
  async openReader(): Promise<BlobReader> {
    try {
      const reader = this.writer ? await this.writer.follow() : await this.o.store.openBlob(this.d)
      if (reader) return reader
    } catch (err) {
      throw this.error ?? err
    }
    throw this.error ?? new DproxyError('BLOB_UNKNOWN', `blob ${this.d.value} left the cache while it was being sent`)
  }
}

function fromFile(reader: StoredBlob, counters: Counters): FollowedBlob {
  return {
    kind: 'follow',
    size: reader.size,
    cached: true,
    open: async () => reader,
    written: () => reader.size,
    verified: () => true,
    check: () => {},
    changed: async () => {},
    sent: (n) => (counters.bytesFromCache += n),
    close: () => reader.close(),
  }
}

function fromFetch(fetch: Fetch, past: () => Promise<BlobSource>, again: () => Promise<BlobSource>): FollowedBlob {
  let reading = true
  return {
    kind: 'follow',
    size: fetch.size ?? -1,
    cached: fetch.committed,
    open: () => fetch.openReader(),
    written: () => (fetch.held && !fetch.verified ? 0 : fetch.written),
    verified: () => fetch.verified,
    check: () => {
      if (fetch.error && !fetch.verified) throw fetch.error
    },
    changed: () => fetch.changed(),
    sent: () => {},
    // The disk refused the blob before this client got a byte: it gets the blob past the cache.
    // The endpoint failed the blob and another one is left: a new download from there.
    fallback: async (err) => (isCacheUnavailable(err) ? past() : fetch.another ? again() : undefined),
    close: async () => {
      if (reading) fetch.clients--
      reading = false
    },
  }
}

/** An upstream body for one client, checked against its digest as it passes. */
function streamed(up: BlobBody, d: Digest, counters: Counters): StreamedBlob {
  const check = new ContentCheck(d, up.size)
  return {
    kind: 'stream',
    size: up.size ?? -1,
    cached: false,
    ...(up.answer ? { upstream: up.answer } : {}),
    body: up.body as AsyncIterable<Buffer>,
    accept: (chunk) => {
      check.update([chunk])
      counters.bytesFromUpstream += chunk.length
    },
    finish: () => check.finish(),
    failed: (err) => {
      discard(up.body)
      if (isWrongContent(err)) up.rejected?.()
      return upstreamError(err, `GET ${up.url}`)
    },
    discard: () => discard(up.body),
    close: async () => discard(up.body),
  }
}

/** The bytes are not the blob: they fail its digest or its size. */
function isWrongContent(err: unknown): boolean {
  return isDproxyError(err, 'DIGEST_INVALID') || isDproxyError(err, 'SIZE_INVALID')
}

function isCacheUnavailable(err: unknown): boolean {
  return isDproxyError(err, 'CACHE_UNAVAILABLE')
}
