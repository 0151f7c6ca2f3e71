// The one way the CLI talks to a running daemon: its admin endpoints under
// /_dproxy/ (status, doctor's probe nonces, cache clear, prune and import,
// pull, the event stream). The admin URLs the CLI uses are written here. The daemon is found through the cache dir's daemon.json, which names
// its pid and a loopback base URL; it counts as found only when the status
// endpoint answers as that pid, so a stale file or a reused pid is never
// talked to.
//
// Requests that change state carry the admin secret (<stateDir>/admin-token),
// and only to loopback addresses: the endpoints answer nothing else, so the
// secret never needs to leave the machine. Answers are JSON, or NDJSON for the
// long-running pull; an error answer (OCI JSON) becomes a DproxyError whose
// message is the daemon's, a 400 a usage error.
//
// It uses the runtime's fetch, not undici's API: loading undici costs the
// CLI's start-up (and `dproxy status` is run from prompts and scripts). A
// daemon that speaks HTTPS is the exception: its certificate is pinned (the
// fingerprint daemon.json records), which needs undici's connector, loaded
// then only.

import { join } from 'node:path'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { certificateFingerprint } from '../fingerprint.js'
import { DproxyError, type ErrorCode } from '../errors.js'
import { isLoopbackHost } from '../net.js'
import type { StatusReport } from '../daemon/admin.js'
import type { EvictionSummary, PruneSummary } from '../store/evict.js'
import { ARCHIVE_CONTENT_TYPE } from '../store/oci-archive.js'
import { ADMIN_TOKEN_FILE, ADMIN_TOKEN_HEADER, readAdminToken } from '../daemon/guard.js'
import { readDaemonLock, type DaemonInfo } from '../daemon/lifecycle.js'
import type { ProbeHit } from '../proxy/probe.js'

/** Longest NDJSON line accepted from the daemon. */
const MAX_LINE = 1024 * 1024
/** The daemon's own codes that mean to the CLI what they mean to the daemon (a bad archive, a busy cache). */
const CARRIED_CODES: readonly ErrorCode[] = ['ARCHIVE_INVALID', 'CACHE_LOCKED']
/** How much of an error body becomes the message. */
const MAX_ERROR_TEXT = 2000
/** Scanning a large cache takes a while; the daemon answers when it is done. */
const CACHE_TIMEOUT_MS = 600_000

export interface AdminClientOptions {
  /** The secret for mutating requests, when the caller holds it (a daemon it started itself). */
  token?: string
  /** Where the daemon keeps the secret (<stateDir>/admin-token); read when a mutating request needs it. */
  stateDir?: string
  /** An https daemon's certificate fingerprint (daemon.json's tlsCertificate): trusted as that, whoever signed it. */
  pin?: string
}

export interface CallOptions {
  /** Sent as JSON. */
  body?: unknown
  /** Sent as it is read, with this content type (`dproxy cache import`'s archive). */
  upload?: { content: AsyncIterable<Uint8Array>; contentType: string }
  /** Bound on the whole call; none by default (a prune of a large cache takes a while). */
  timeoutMs?: number
  /** Ends the call (and a body being read) early. */
  signal?: AbortSignal
}

/** What `DELETE /_dproxy/cache` removes: the values as the user typed them (the daemon checks them too). */
export interface ClearQuery {
  image?: string
  olderThan?: string
  unusedFor?: string
  dryRun?: boolean
}

/** What `POST /_dproxy/cache/prune` evicts to: both limits (0 = none), so the daemon's own settings add none. */
export interface PruneQuery {
  maxSizeBytes: number
  ttlMs: number
  dryRun?: boolean
}

export class AdminClient {
  private fetcher: Promise<typeof fetch> | undefined

  constructor(
    readonly base: string,
    private readonly opts: AdminClientOptions = {},
  ) {}

  /** The runtime's fetch for http; for https, undici's with the pinned certificate (or the system's CAs without a pin). */
  private fetch(url: string, init: RequestInit = {}): Promise<Response> {
    if (!this.base.startsWith('https:')) return fetch(url, init)
    this.fetcher ??= pinnedFetch(this.opts.pin)
    return this.fetcher.then((f) => f(url, init))
  }

  /** GET /_dproxy/status (with `probe`: after a fresh rate-limit probe); undefined when it does not answer 200 with JSON. */
  async status(opts: { timeoutMs?: number; probe?: boolean } = {}): Promise<StatusReport | undefined> {
    return this.quietGet<StatusReport>(`/_dproxy/status${opts.probe ? '?probe=1' : ''}`, opts.timeoutMs ?? 3000)
  }

  /** The hits the daemon noted for doctor's probe `nonce`; empty when it never arrived or the daemon cannot be asked. */
  async probeHits(nonce: string, timeoutMs = 5000): Promise<ProbeHit[]> {
    const answer = await this.quietGet<{ hits: ProbeHit[] }>(`/_dproxy/probe/${encodeURIComponent(nonce)}`, timeoutMs)
    return answer?.hits ?? []
  }

  /** DELETE /_dproxy/cache: clears what `q` selects (everything when it selects nothing). */
  async clearCache(q: ClearQuery): Promise<EvictionSummary> {
    const params = new URLSearchParams()
    if (q.image !== undefined) params.set('image', q.image)
    if (q.olderThan !== undefined) params.set('olderThan', q.olderThan)
    if (q.unusedFor !== undefined) params.set('unusedFor', q.unusedFor)
    if (q.dryRun) params.set('dryRun', '1')
    return this.call<EvictionSummary>('DELETE', `/_dproxy/cache?${params}`, { timeoutMs: CACHE_TIMEOUT_MS })
  }

  /** POST /_dproxy/cache/prune: evicts least recently used images until the cache fits `q`. */
  async pruneCache(q: PruneQuery): Promise<PruneSummary> {
    const params = new URLSearchParams({ maxSize: String(q.maxSizeBytes), ttl: `${q.ttlMs}ms` })
    if (q.dryRun) params.set('dryRun', '1')
    return this.call<PruneSummary>('POST', `/_dproxy/cache/prune?${params}`, { timeoutMs: CACHE_TIMEOUT_MS })
  }

  /** POST /_dproxy/pull (daemon/pull-endpoint.ts): the run's events, as the daemon sends them. */
  pull<T>(body: unknown): AsyncGenerator<T> {
    return this.stream<T>('POST', '/_dproxy/pull', { body })
  }

  /** POST /_dproxy/cache/import (daemon/import-endpoint.ts): the archive streamed as it is read. */
  async importArchive<T>(content: AsyncIterable<Uint8Array>, force: boolean): Promise<T> {
    return this.call<T>('POST', `/_dproxy/cache/import${force ? '?force=1' : ''}`, { upload: { content, contentType: ARCHIVE_CONTENT_TYPE } })
  }

  /** GET /_dproxy/events: the body of the Server-Sent Events stream (control/events.ts reads it), until `signal` aborts. */
  async eventStream(signal: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const res = await this.send('GET', '/_dproxy/events', 'text/event-stream', { signal })
    if (!res.body) throw new DproxyError('INTERNAL', `the daemon at ${this.base} sent no body for its events`)
    return res.body as unknown as AsyncIterable<Uint8Array>
  }

  /** One request answered with JSON; anything but a 200 throws with the daemon's message. */
  async call<T>(method: string, path: string, opts: CallOptions = {}): Promise<T> {
    const res = await this.send(method, path, 'application/json', opts)
    return JSON.parse(await res.text()) as T
  }

  /** One request answered with NDJSON: each line parsed, as it arrives. */
  async *stream<T>(method: string, path: string, opts: CallOptions = {}): AsyncGenerator<T> {
    const res = await this.send(method, path, 'application/x-ndjson', opts)
    if (!res.body) return
    for await (const line of lines(res.body)) yield JSON.parse(line) as T
  }

  private async quietGet<T>(path: string, timeoutMs: number): Promise<T | undefined> {
    try {
      const res = await this.fetch(`${this.base}${path}`, { signal: AbortSignal.timeout(timeoutMs) })
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => {})
        return undefined
      }
      return (await res.json()) as T
    } catch {
      return undefined
    }
  }

  private async send(method: string, path: string, accept: string, opts: CallOptions): Promise<Response> {
    const headers: Record<string, string> = { accept }
    if (method !== 'GET' && method !== 'HEAD') {
      const token = await this.token()
      if (token !== undefined) headers[ADMIN_TOKEN_HEADER] = token
    }
    if (opts.body !== undefined) headers['content-type'] = 'application/json'
    if (opts.upload !== undefined) headers['content-type'] = opts.upload.contentType
    const signal = signalOf(opts)
    let res: Response
    try {
      res = await this.fetch(`${this.base}${path}`, {
        method,
        headers,
        ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
        ...(opts.upload !== undefined ? { body: ReadableStream.from(opts.upload.content), duplex: 'half' } : {}),
        ...(signal !== undefined ? { signal } : {}),
      })
    } catch (err) {
      throw new DproxyError('INTERNAL', `the daemon at ${this.base} did not answer: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      })
    }
    if (res.status === 200) return res
    const text = (await res.text()).slice(0, MAX_ERROR_TEXT)
    let message = text
    let code: string | undefined
    try {
      const first = (JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> }).errors?.[0]
      message = first?.message ?? text
      code = first?.code
    } catch {
      // not the error envelope: show the start of the body
    }
    const kept = CARRIED_CODES.find((c) => c === code)
    throw new DproxyError(kept ?? (res.status === 400 ? 'USAGE' : 'INTERNAL'), `the daemon refused: ${message}`)
  }

  private async token(): Promise<string | undefined> {
    if (this.opts.token !== undefined) return this.opts.token
    if (this.opts.stateDir === undefined || !isLoopbackHost(new URL(this.base).hostname)) return undefined
    return readAdminToken(join(this.opts.stateDir, ADMIN_TOKEN_FILE))
  }
}

export interface RunningDaemon {
  info: DaemonInfo
  status: StatusReport
  client: AdminClient
}

export interface FindOptions extends AdminClientOptions {
  timeoutMs?: number
  isAlive?: (pid: number) => boolean
  /** Ask for a fresh rate-limit probe with the status. */
  probe?: boolean
}

/**
 * The daemon serving `cacheDir`, when there is one that is alive and answers
 * its status endpoint as the pid its lock file names; otherwise undefined.
 */
export async function findDaemon(cacheDir: string, opts: FindOptions = {}): Promise<RunningDaemon | undefined> {
  const lock = await readDaemonLock(cacheDir, opts)
  if (!lock?.alive || lock.info.url === undefined) return undefined
  const client = new AdminClient(lock.info.url, {
    ...(lock.info.tlsCertificate !== undefined ? { pin: lock.info.tlsCertificate } : {}),
    ...(opts.token !== undefined ? { token: opts.token } : {}),
    ...(opts.stateDir !== undefined ? { stateDir: opts.stateDir } : {}),
  })
  const status = await client.status({ ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}), probe: Boolean(opts.probe) })
  if (!status || status.pid !== lock.info.pid) return undefined
  return { info: lock.info, status, client }
}

/**
 * The daemon serving `cacheDir`, or undefined when none runs. A daemon that
 * holds the cache dir but does not answer (busy, starting, stopping) is an
 * error, never a reason to change the directory under its feet: its pulls in
 * progress would lose files.
 */
export async function owningDaemon(cacheDir: string, stateDir: string | undefined): Promise<RunningDaemon | undefined> {
  const daemon = await findDaemon(cacheDir, stateDir !== undefined ? { stateDir } : {})
  if (daemon) return daemon
  const lock = await readDaemonLock(cacheDir)
  if (lock?.alive) {
    throw new DproxyError(
      'CACHE_LOCKED',
      `a dproxy daemon (pid ${lock.info.pid}) serves ${cacheDir} but did not answer; nothing was changed: try again, or stop it first`,
    )
  }
  return undefined
}

function signalOf(opts: CallOptions): AbortSignal | undefined {
  const timeout = opts.timeoutMs !== undefined ? AbortSignal.timeout(opts.timeoutMs) : undefined
  if (timeout && opts.signal) return AbortSignal.any([timeout, opts.signal])
  return timeout ?? opts.signal
}

async function* lines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder()
  let buffered = ''
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true })
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      if (line.trim() !== '') yield line
    }
    if (buffered.length > MAX_LINE) throw new DproxyError('INTERNAL', 'the daemon sent a line longer than 1 MiB')
  }
  if (buffered.trim() !== '') yield buffered
}

/**
 * undici's fetch through connections that accept exactly the certificate
 * `pin` names (its chain and host name are not asked: the daemon's own lock
 * file vouches for it). Without a pin, the system's CAs decide as usual.
 */
async function pinnedFetch(pin: string | undefined): Promise<typeof fetch> {
  const undici = await import('undici')
  if (pin === undefined) return undici.fetch as unknown as typeof fetch
  const dispatcher = new undici.Agent({
    connect: (o, callback) => {
      let done = false
      const finish = (err: Error | null, socket: TLSSocket | null) => {
        if (done) return
        done = true
        if (err !== null || socket === null) callback(err ?? new Error('no connection'), null)
        else callback(null, socket)
      }
      const socket = tlsConnect({ host: o.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(o.port), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
      socket.once('secureConnect', () => {
        const seen = certificateFingerprint(socket.getPeerCertificate().raw)
        if (seen === pin) return finish(null, socket)
        socket.destroy()
        finish(new DproxyError('INTERNAL', `the daemon's certificate (${seen}) is not the one its daemon.json names (${pin})`), null)
      })
      socket.once('error', (err) => finish(err, null))
    },
  })
  return ((url: string, init: RequestInit = {}) => undici.fetch(url, { ...(init as object), dispatcher })) as unknown as typeof fetch
}
