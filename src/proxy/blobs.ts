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
// costs one more.
//
// When the disk fills up mid-way, the download first asks for room (makeRoom:
// eviction within the configured limits and of unreferenced files) and writes
// on if it got some. Otherwise it stops storing: the temp file goes, and the
// clients already following keep getting the rest from memory (the Relay,
// bounded: upstream is read no faster than the slowest of them, and one that
// reads nothing for a while is left behind and cut). The same rule holds:
// the bytes are still hashed, the last byte waits for the digest, a mismatch
// cuts everyone. The blob is then remembered as too big for the disk now
// (NoRoom): its next requests stream past the cache instead of starting
// another download that would fill the disk again, until some minutes passed
// or the disk has room for it.
//
// A registry with a chain of endpoints (upstream/client.ts): bytes stream to
// clients as they arrive from whichever endpoint answered, as from any
// upstream. When they fail their digest (or an endpoint with another behind
// it breaks the body off), that endpoint is not asked for the blob again, and
// a client that has not been sent a byte yet is given a new download from the
// next endpoint within its request; one that has is cut as above (it never
// gets the last byte of wrong content), and its retry goes elsewhere. So that
// the common case is the first one, a blob of at most WHOLE_FIRST_BYTES from
// an endpoint with another behind it (a config, a small layer) is not sent
// before it verified: holding back all but its last byte would not do, since
// a small body arrives in a read or two and its clients would have every byte
// but one before the digest failed, and be cut. Such a blob costs its clients
// the time it takes to arrive, not the time to send it on, which is local;
// a bigger one keeps streaming, so that a client sees progress.
//
// Which repository may have which blob: the cache holds each blob once, for
// every repository, so that a blob is cached says nothing about whether the
// repository a client names has it. A cached blob (or one downloading) is
// served under a repository only when the repository is linked to it (a
// manifest of it names the blob, or upstream said so: store/links.ts, in
// memory, so a warm GET costs no disk work); otherwise upstream is asked
// first, with a HEAD for the blob in that repository (free under Docker Hub's
// limit), and its 200 links the blob. Its refusal reaches the client as the
// same miss would, with the error of the same cold request (404 BLOB_UNKNOWN,
// or upstream's 401/403, and a 404 "not cached, and upstream is unavailable"
// when it cannot be asked), so the answer never tells whether the cache
// holds the blob, and unlinked bytes are never sent. A blob that is not
// cached takes the usual path: its upstream GET for that repository is the
// proof, and links it.

import { EventEmitter } from 'node:events'
import type { Readable } from 'node:stream'
import { LRUCache } from 'lru-cache'
import { systemClock, type Clock } from '../clock.js'
import { formatBytes } from '../config/units.js'
import { DproxyError, isDproxyError } from '../errors.js'
import type { Logger } from '../log.js'
import type { BlobReader, BlobStore, BlobWriter, LinkStore, StoredBlob } from '../store/api.js'
import { SingleFlight } from '../singleflight.js'
import { discard } from '../upstream/auth.js'
import { upstreamError, type BlobBody, type UpstreamAnswer, type UpstreamClient } from '../upstream/client.js'
import type { Counters } from './counters.js'
import { notCached } from './outage.js'
import { type Digest, ContentCheck } from '../oci/digest.js'
import type { ImageName } from '../oci/reference.js'

/**
 * Largest blob from an endpoint with another behind it that is sent only once
 * verified, so that wrong bytes can be replaced by the next endpoint's within
 * the client's request.
 */
export const WHOLE_FIRST_BYTES = 1024 * 1024
/** Bytes a download may queue for the disk before it stops reading upstream. */
const WRITE_QUEUE_BYTES = 4 * 1024 * 1024
/** Bytes a download past a full disk holds for its clients beyond what the slowest of them read. */
const RELAY_BYTES = 16 * 1024 * 1024
/** How long such a download waits for a client that reads nothing before leaving it behind. */
const RELAY_STALL_MS = 15_000
/** Times one download asks for room before it stops storing. */
const ROOM_ATTEMPTS = 3
/** How long a blob the disk had no room for goes past the cache before caching it is tried again. */
export const NO_ROOM_RETRY_MS = 10 * 60_000
/** Without a known size, caching is tried again once the free space grew by this much. */
const NO_ROOM_GROWTH = 64 * 1024 * 1024

/** What the blob proxy asks of upstream (the Upstreams class, or a test's double). */
export interface BlobUpstreams {
  get(registry: string): Pick<UpstreamClient, 'getBlob' | 'headBlob'>
}

export interface BlobProxyOptions {
  store: BlobStore & LinkStore
  upstreams: BlobUpstreams
  counters: Counters
  log: Logger
  clock?: Clock
  /**
   * When the disk filled up during a download: evicts what may go (the
   * configured limits, unreferenced files) and says how many bytes it freed.
   */
  makeRoom?: () => Promise<number>
  /** Free bytes on the cache's disk, undefined when the system cannot say. */
  freeBytes?: () => Promise<number | undefined>
  /** Default NO_ROOM_RETRY_MS. */
  noRoomRetryMs?: number
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
  /**
   * Nothing may go out before the whole blob verified (not only its last
   * byte): wrong bytes can then still be replaced through `fallback`.
   */
  whole?: boolean
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
  private readonly noRoom: NoRoom
  /** Upstream's word that a repository has a blob, asked once however many clients wait for it. */
  private readonly confirming = new SingleFlight<number | undefined>()

  constructor(private readonly options: BlobProxyOptions) {
    this.noRoom = new NoRoom(options.clock ?? systemClock, options.noRoomRetryMs ?? NO_ROOM_RETRY_MS, options.freeBytes)
  }

  /** Number of downloads in progress (tests and shutdown use it). */
  get inflight(): number {
    return this.fetches.size
  }

  async open(image: ImageName, d: Digest): Promise<BlobSource> {
    const entry = await this.entry(image, d)
    if (entry === 'confirm') await this.confirm(image, d)
    const source = await this.openAdmitted(image, d)
    return entry === 'cold' ? this.proven(image, d, source) : source
  }

  /**
   * Whether the repository may have the blob from the cache: linked (a
   * manifest of it names the blob, or upstream said so), to be confirmed by
   * upstream first (cached or downloading, not linked), or cold (neither:
   * this request's own upstream GET will say).
   */
  private async entry(image: ImageName, d: Digest): Promise<'linked' | 'confirm' | 'cold'> {
    if (await this.options.store.isLinked(image.registry, image.repository, d)) return 'linked'
    if (this.fetches.has(d.value)) return 'confirm'
    const size = await this.options.store.statBlob(d).catch(() => undefined)
    return size === undefined ? 'cold' : 'confirm'
  }

  /** Asks upstream whether the repository has the blob; links it when it does, else throws what a miss would. */
  private confirm(image: ImageName, d: Digest): Promise<number | undefined> {
    return this.confirming.do(`${image.registry}/${image.repository}@${d.value}`, async () => {
      let size: number | undefined
      try {
        ;({ size } = await this.options.upstreams.get(image.registry).headBlob(image.repository, d.value))
      } catch (err) {
        throw notCached(err, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
      }
      await this.options.store.linkBlob(image.registry, image.repository, d)
      return size
    })
  }

  /**
   * A blob that was cold: this request's own upstream answer proves the
   * repository has it. A file or another repository's download that got
   * there first meanwhile does not, and upstream is asked.
   */
  private async proven(image: ImageName, d: Digest, source: BlobSource): Promise<BlobSource> {
    // Its own download (which upstream answered, or which is not in the cache yet), or a stream past the cache.
    const own = source.kind !== 'follow' || (source.joined !== true && (source.upstream !== undefined || !source.cached))
    if (own) {
      await this.options.store.linkBlob(image.registry, image.repository, d)
      return source
    }
    try {
      await this.confirm(image, d)
    } catch (err) {
      await source.close()
      throw err
    }
    return source
  }

  /** open() once the repository may have the blob. */
  private async openAdmitted(image: ImageName, d: Digest): Promise<BlobSource> {
    const { store, counters } = this.options
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
      if (await this.noRoom.skip(d)) {
        counters.cacheMisses++
        return this.past(image, d)
      }
    } else if (running.relay) {
      // Its clients get the rest from memory; a newcomer would need the bytes that are gone.
      counters.cacheMisses++
      return this.past(image, d)
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
      up = await this.options.upstreams.get(image.registry).getBlob(image.repository, d.value)
    } catch (err) {
      throw notCached(err, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
    }
    return streamed(up, d, this.options.counters)
  }

  /**
   * Puts a blob in the cache without sending it anywhere (prefetch): joins the
   * download in progress or starts one, and resolves once it is verified and
   * committed. Nothing is read into memory. `onBytes` hears how far it got.
   */
  async ensure(image: ImageName, d: Digest, onBytes?: (written: number) => void): Promise<{ size: number; fetched: boolean }> {
    if (!this.fetches.has(d.value)) {
      const size = await this.options.store.statBlob(d)
      if (size !== undefined) return { size, fetched: false }
      if (await this.noRoom.skip(d)) throw noRoomError(d)
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
    if (!fetch.committed) throw noRoomError(d)
    return { size: fetch.size ?? fetch.written, fetched: true }
  }

  /** The download of `d`, started when none runs. Synchronous, so concurrent misses join one fetch. */
  private join(image: ImageName, d: Digest): Fetch {
    let fetch = this.fetches.get(d.value)
    if (!fetch) {
      this.options.counters.cacheMisses++
      const started = new Fetch(this.options, this.noRoom, image, d)
      this.fetches.set(d.value, started)
      started.finished = started.run().finally(() => this.fetches.delete(d.value))
      fetch = started
    } else {
      this.options.counters.cacheHits++
    }
    return fetch
  }

  /** Size of a blob without downloading it. */
  async size(image: ImageName, d: Digest): Promise<number> {
    // Not linked: upstream's HEAD first, cached or not, so the answer does not tell whether the cache holds the blob.
    const linked = await this.options.store.isLinked(image.registry, image.repository, d)
    const confirmed = linked ? undefined : { size: await this.confirm(image, d) }
    const cached = await this.options.store.statBlob(d)
    if (cached !== undefined) return cached
    const fetch = this.fetches.get(d.value)
    if (fetch?.size !== undefined) return fetch.size
    const { size } =
      confirmed ??
      (await this.options.upstreams
        .get(image.registry)
        .headBlob(image.repository, d.value)
        .catch((err: unknown) => {
          throw notCached(err, 'BLOB_UNKNOWN', `blob ${d.value}`, image.registry)
        }))
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
  /** The endpoint that answered has another behind it. */
  chained = false
  /**
   * The endpoint failed this blob (wrong bytes, or a body broken off by an
   * endpoint with another behind it) and another one is left to ask: a
   * client sent nothing yet may try again.
   */
  another = false
  /** Resolves once the download is over and no longer the one a new client would join. */
  finished: Promise<void> = Promise.resolve()
  /** Set once the disk filled up and the clients get the rest from memory. */
  relay: Relay | undefined
  /** Where each open reader reads next (undefined before its first read): the relay keeps what they still need. */
  readonly readers = new Map<BlobReader, number | undefined>()
  readonly started: Promise<void>
  readonly done: Promise<void>
  private body: Readable | undefined
  private writer: BlobWriter | undefined
  private aborted = false
  private roomAsked = 0
  private markStarted!: () => void
  private failStart!: (err: Error) => void
  private finish!: () => void

  constructor(
    private readonly options: BlobProxyOptions,
    private readonly noRoom: NoRoom,
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
    const { store, upstreams, counters, log } = this.options
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
      this.chained = up.chained === true
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
        // A team cache that broke the body off may do it again: the next endpoint may have it whole.
        if (isWrongContent(err) || (up.chained === true && !this.aborted && !isCacheUnavailable(err))) this.another = up.rejected?.() ?? false
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
      if (this.relay) {
        this.noRoom.sized(this.d, this.written)
        return
      }
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
      this.relay?.finish()
      this.emit('progress')
      this.finish()
    }
  }

  /** Hands a batch to the writer, or past a full disk to the relay. */
  private async put(batch: Buffer[], writer: BlobWriter): Promise<void> {
    if (this.relay) {
      this.relay.push(batch)
      // Only checked now: the bytes stay in the relay.
      await writer.writev(batch)
      return
    }
    try {
      await writer.writev(batch)
    } catch (err) {
      if (!isCacheUnavailable(err) || !writer.retry || !writer.stopStoring) throw err
      while (this.roomAsked < ROOM_ATTEMPTS) {
        this.roomAsked++
        const freed = await (this.options.makeRoom?.() ?? Promise.resolve(0)).catch(() => 0)
        if (freed <= 0) break
        try {
          return await writer.retry()
        } catch (again) {
          if (!isCacheUnavailable(again)) throw again
        }
      }
      // Refused at the first bytes, nobody follows yet: each client is sent the blob past the cache.
      if (writer.written === 0) throw err
      await this.noRoom.remember(this.d, this.size)
      if (this.clients === 0) throw err
      await this.relayFrom(writer, batch)
    }
  }

  /** The disk is full: stops storing and keeps the clients following from memory. */
  private async relayFrom(writer: BlobWriter, refused: Buffer[]): Promise<void> {
    const stored = writer.written
    const relay = new Relay(stored, await writer.follow(), this.readers)
    this.relay = relay
    relay.push(refused)
    await writer.stopStoring!()
    this.options.log.warn(
      `blob ${this.d.value} of ${this.image.registry}/${this.image.repository} does not fit on the cache disk ` +
        `(full after ${formatBytes(stored)}): its ${this.clients} client(s) get it past the cache, and so do the next ones for now`,
    )
  }

  /** A reader moved to `at` (or left, with undefined): the relay may let go of what every reader passed. */
  moved(reader: BlobReader, at: number | undefined): void {
    if (at === undefined) this.readers.delete(reader)
    else this.readers.set(reader, at)
    this.relay?.emit('moved')
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
        await this.put(batch, writer)
        this.written = writer.written
        this.markStarted()
        this.emit('progress')
        // Past a full disk, upstream is read no faster than the clients take the bytes.
        if (this.relay) await this.relay.room(this)
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
      this.options.counters.bytesFromUpstream += chunk.length
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
    // A relay waiting for its clients stops waiting.
    this.relay?.emit('moved')
  }

  get stopping(): boolean {
    return this.aborted
  }

  /** Resolves at the next change of state. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.once('progress', resolve))
  }

  /**
   * Opens the bytes for reading: following the writer while downloading, the
   * stored blob after; past a full disk, what was stored and then the relay.
   */
  async openReader(): Promise<BlobReader> {
    try {
      if (this.relay) return new FetchReader(this, this.relay.share())
      if (this.writer) return new FetchReader(this, await this.writer.follow())
      const reader = await this.options.store.openBlob(this.d)
      if (reader) return reader
    } catch (err) {
      // The disk filled up while this reader was being opened.
      if (this.relay) return new FetchReader(this, this.relay.share())
      throw this.error ?? err
    }
    throw this.error ?? new DproxyError('BLOB_UNKNOWN', `blob ${this.d.value} left the cache while it was being sent`)
  }
}

/**
 * A client's reader of a download: the temp file, and once the disk filled up,
 * the bytes stored before from the file and the rest from the relay. Reports
 * its position, so that the relay keeps what it still needs.
 */
class FetchReader implements BlobReader {
  constructor(
    private readonly fetch: Fetch,
    private readonly inner: BlobReader,
  ) {
    fetch.readers.set(this, undefined)
  }

  async read(buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const relay = this.fetch.relay
    let n: number
    if (!relay || position + length <= relay.stored) n = await this.inner.read(buf, offset, length, position)
    else if (position < relay.stored) n = await this.inner.read(buf, offset, relay.stored - position, position)
    else n = relay.read(buf, offset, length, position)
    this.fetch.moved(this, position + n)
    return n
  }

  async close(): Promise<void> {
    this.fetch.moved(this, undefined)
    await this.inner.close()
  }
}

/**
 * The bytes of a download past a full disk, from where the disk stopped,
 * held for the clients that were following it. What every reader has passed
 * is let go once more than RELAY_BYTES are held; upstream waits meanwhile,
 * and when no reader moves for RELAY_STALL_MS the oldest bytes go anyway
 * (a reader that still needed them fails, and its client is cut or, with
 * nothing sent yet, streamed the blob past the cache).
 */
class Relay extends EventEmitter {
  /** Position of the first byte held. */
  private start: number
  private readonly chunks: Buffer[] = []
  private held = 0
  /** Readers using `prefix`, which is closed when the last of them is and the download is over. */
  private users = 0
  private finished = false

  constructor(
    /** Bytes the disk took: readable through `prefix` and any reader opened before. */
    readonly stored: number,
    private readonly prefix: BlobReader,
    private readonly readers: Map<BlobReader, number | undefined>,
  ) {
    super()
    this.setMaxListeners(0)
    this.start = stored
  }

  push(batch: Buffer[]): void {
    for (const c of batch) {
      this.chunks.push(c)
      this.held += c.length
    }
  }

  read(buf: Uint8Array, offset: number, length: number, position: number): number {
    if (position < this.start) {
      throw new DproxyError('CACHE_UNAVAILABLE', 'the cache disk is full and this client fell too far behind the download')
    }
    let at = this.start
    let n = 0
    for (const c of this.chunks) {
      if (n >= length) break
      const end = at + c.length
      if (position + n < end) {
        const from = position + n - at
        n += c.copy(buf, offset + n, from, Math.min(c.length, from + length - n))
      }
      at = end
    }
    return n
  }

  /** Resolves once the download may read on; throws when no client is left. */
  async room(fetch: { clients: number; stopping: boolean }): Promise<void> {
    for (;;) {
      if (fetch.stopping) throw new DproxyError('UPSTREAM_UNAVAILABLE', 'dproxy is shutting down')
      if (fetch.clients === 0) throw new DproxyError('CACHE_UNAVAILABLE', 'no client is left for a blob the cache disk cannot hold')
      if (this.held <= RELAY_BYTES) return
      let keep = this.start + this.held
      // A reader that lost bytes already no longer holds anything back.
      const lost = (at: number) => at < this.start && this.start > this.stored
      for (const at of this.readers.values()) if (at !== undefined && !lost(at)) keep = Math.min(keep, at)
      this.drop(keep - this.start)
      if (this.held <= RELAY_BYTES) return
      if (!(await this.moves(RELAY_STALL_MS))) {
        this.drop(this.held - RELAY_BYTES)
        return
      }
    }
  }

  /** Drops whole chunks from the front, at most `bytes`. */
  private drop(bytes: number): void {
    while (this.chunks.length > 0 && this.chunks[0]!.length <= bytes) {
      const c = this.chunks.shift()!
      bytes -= c.length
      this.held -= c.length
      this.start += c.length
    }
  }

  private moves(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const moved = () => {
        clearTimeout(timer)
        resolve(true)
      }
      const timer = setTimeout(() => {
        this.off('moved', moved)
        resolve(false)
      }, ms)
      this.once('moved', moved)
    })
  }

  /** The stored bytes for one more reader. */
  share(): BlobReader {
    this.users++
    let open = true
    return {
      read: (buf, offset, length, position) => this.prefix.read(buf, offset, length, position),
      close: async () => {
        if (!open) return
        open = false
        this.users--
        await this.release()
      },
    }
  }

  /** The download is over: what readers still hold stays until they close. */
  finish(): void {
    this.finished = true
    this.emit('moved')
    void this.release()
  }

  private async release(): Promise<void> {
    if (this.finished && this.users === 0) await this.prefix.close().catch(() => {})
  }
}

/**
 * Blobs the disk filled up on: each is streamed past the cache until
 * `retryMs` passed or the disk has room for it again, so a blob bigger than
 * the free space does not start a download that fills the disk per request.
 */
class NoRoom {
  private readonly blobs = new LRUCache<string, { at: number; size: number | undefined; free: number | undefined }>({ max: 1024 })

  constructor(
    private readonly clock: Clock,
    private readonly retryMs: number,
    private readonly freeBytes: (() => Promise<number | undefined>) | undefined,
  ) {}

  async remember(d: Digest, size: number | undefined): Promise<void> {
    this.blobs.set(d.value, { at: this.clock.now(), size, free: await this.free() })
  }

  /** The verified size, once a download past the disk found it. */
  sized(d: Digest, size: number): void {
    const entry = this.blobs.get(d.value)
    if (entry) entry.size = size
  }

  /** Whether `d` goes past the cache now. */
  async skip(d: Digest): Promise<boolean> {
    const entry = this.blobs.get(d.value)
    if (!entry) return false
    let retry = this.clock.now() - entry.at >= this.retryMs
    if (!retry) {
      const free = await this.free()
      if (free !== undefined) retry = entry.size !== undefined ? free > entry.size : entry.free !== undefined && free > entry.free + NO_ROOM_GROWTH
    }
    if (retry) this.blobs.delete(d.value)
    return !retry
  }

  private free(): Promise<number | undefined> {
    return this.freeBytes ? this.freeBytes().catch(() => undefined) : Promise.resolve(undefined)
  }
}

function noRoomError(d: Digest): DproxyError {
  return new DproxyError('CACHE_UNAVAILABLE', `blob ${d.value} does not fit on the cache disk now`)
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
    written: () => fetch.written,
    verified: () => fetch.verified,
    check: () => {
      if (fetch.error && !fetch.verified) throw fetch.error
    },
    changed: () => fetch.changed(),
    sent: () => {},
    // Small and from an endpoint with another behind it: wrong bytes then cost the client nothing.
    whole: fetch.chained && fetch.size !== undefined && fetch.size <= WHOLE_FIRST_BYTES,
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
