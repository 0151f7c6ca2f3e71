// The composition root: builds the store, the upstream clients, the proxy and
// the HTTP servers from plain options, and owns their lifecycle. Nothing else
// constructs these pieces, so tests start a real daemon exactly as the CLI
// does (on port 0, with a t.testdir cache).
//
// It listens on every requested address with one port (by default 127.0.0.1
// and ::1, because `localhost` resolves to either depending on the client).
// Every listener bounds its connections the same way (connections.ts): the
// time to a whole request head, and how many are open per source and in all.
// Stopping closes the listeners, lets in-flight responses finish within a
// bound, then cuts what is left and aborts downloads nobody waits for.

import { promises as fs } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Server as TlsServer } from 'node:tls'
import { systemClock, type Clock } from '../clock.js'
import { DproxyError } from '../errors.js'
import { silentLogger, type Logger } from '../log.js'
import { diskSpace } from '../fs.js'
import { BlobProxy, type BlobUpstreams } from '../proxy/blobs.js'
import { newCounters, type Counters } from '../proxy/counters.js'
import { ManifestProxy, type ManifestUpstreams } from '../proxy/manifests.js'
import { sendClientError, sendError } from '../registry/errors.js'
import { registryHandler, type Handler } from '../registry/handler.js'
import type { CacheStore } from '../store/api.js'
import { Store } from '../store/store.js'
import type { CredentialSource } from '../upstream/auth.js'
import { Upstreams, type ChainTimeouts, type UpstreamTimeouts } from '../upstream/client.js'
import { allowedRegistries, type UpstreamMap } from '../upstream/registries.js'
import { VERSION } from '../version.js'
import { adminHandler, type StatusReport, buildStatus } from './admin.js'
import { ClientAuth, TOKEN_PATH, type ClientAuthOptions } from './clientauth.js'
import { USED_FLUSH_MS } from '../credentials/tokens.js'
import { ensureAdminToken, newAdminToken, registryHostCheck } from './guard.js'
import { adminUrl, DaemonLock, formatListen } from './lifecycle.js'
import { CacheMaintenance } from './maintenance.js'
import { exposedHosts, formatHost } from '../net.js'
import { FailureBook } from './failures.js'
import { ProbeRepository } from '../proxy/probe.js'
import { Warmer } from '../proxy/warm.js'
import { Refresher, type RefreshOptions } from './refresh.js'
import { SendBuffers } from '../registry/buffers.js'
import { DaemonEvents, printable } from './events.js'
import { isMetricsPath, Metrics, serveMetrics } from './metrics.js'
import { accessLog } from './accesslog.js'
import { noteOf, routeOf } from '../registry/note.js'
import { bodyDeadline, REQUEST_TIMEOUT_MS } from './body-deadline.js'
import type { TlsCertificates } from './tls.js'
import { CA_PATH, type TlsConfig } from './tls-config.js'
import { ConnectionGate, connectionLimits, cutAfterClientError, serverTimeouts, type ConnectionLimits } from './connections.js'

export const DEFAULT_HOSTS = ['127.0.0.1', '::1']
export const DEFAULT_PORT = 5000

export interface DaemonOptions {
  hosts?: string[]
  port?: number
  cacheDir: string
  upstreams?: UpstreamMap
  /** No origin implied after these registries' endpoint lists (true: after every list); `--no-origin`. */
  noOrigin?: boolean | readonly string[]
  /** Tests: where a registry's origin lives (a fixture), so a chain ends at "Docker Hub" on this machine. */
  upstreamOrigins?: Readonly<Record<string, string>>
  /** The limits of upstream endpoints that have another behind them (connect 2 s, first byte 10 s). */
  chainTimeouts?: Partial<ChainTimeouts>
  maxAgeMs?: number
  credentials?: CredentialSource
  /** Require clients to authenticate (clientauth.ts); mandatory when listening beyond loopback. */
  clientAuth?: ClientAuthOptions
  /** Speak HTTPS on every registry listener (tls.ts): the user's files, or dproxy's own CA; required beyond loopback. */
  tls?: TlsConfig
  /** How often the files of `tls` (mode files) are looked at besides watching them (tests: short). */
  tlsPollMs?: number
  /** Listen beyond loopback without TLS or client auth (--insecure-lan); warned about in the log and in status. */
  insecureLan?: boolean
  clock?: Clock
  log?: Logger
  timeouts?: Partial<UpstreamTimeouts>
  /** How long stop() lets in-flight responses run before cutting them. */
  shutdownGraceMs?: number
  /** How long a request body may take to arrive (body-deadline.ts); an accepted import has no such bound. */
  requestTimeoutMs?: number
  /** How long a client has to send a whole request head, from connecting or from starting another request (connections.ts). */
  headersTimeoutMs?: number
  /** The connections one source address may hold open; more are closed at once (connections.ts). */
  maxConnectionsPerClient?: number
  /** The connections all listeners together may hold open. */
  maxConnections?: number
  /**
   * Where the secret that mutating admin requests must carry is kept (guard.ts),
   * normally `<stateDir>/admin-token`; created when missing. Without it the
   * token exists only in memory (tests read `adminToken`).
   */
  adminTokenFile?: string
  /** Where this daemon's output goes; recorded in the cache dir's daemon.json for `dproxy status`. */
  logFile?: string
  /** Evict least recently used images when the cache grows past this (maintenance.ts). */
  maxSizeBytes?: number | undefined
  /** Evict what was not pulled for this long. */
  ttlMs?: number | undefined
  /** Registries clients may use when listening beyond loopback (default: upstream/registries.ts). */
  registries?: string[]
  /** Re-check cached tags in the background this often (refresh.ts); off when undefined. */
  refresh?: RefreshOptions | undefined
  /** A listener that serves only /metrics, to anyone who reaches it (--metrics-address). */
  metricsAddress?: ListenAddress | undefined
  /** Log every request to `log` (accesslog.ts); `dproxy serve` does. */
  accessLog?: boolean
  /** The largest archive POST /_dproxy/cache/import takes (import-endpoint.ts); default: the free disk. */
  maxImportBytes?: number | undefined
  /**
   * The cache the proxies and the refresh pull through, in place of the file
   * store in cacheDir (the daemon's unit tests give a memory store). The cache
   * dir still holds the lock, and status, metrics, maintenance and the admin
   * cache and pull endpoints still work on the file store.
   */
  store?: CacheStore
  /** What the proxies ask upstream, in place of the HTTP clients (unit tests: a counting double). */
  upstream?: BlobUpstreams & ManifestUpstreams
}

export interface ListenAddress {
  host: string
  port: number
}

/**
 * A daemon reachable from other machines must speak TLS and authenticate its
 * clients, unless the user said --insecure-lan (also checked by `dproxy start`
 * before it detaches). Returns the warning to log and show in status when
 * --insecure-lan lets a plain or open listener through, else undefined.
 */
export function refuseExposureWithoutAuth(hosts: readonly string[], clientAuth: boolean, opts: { tls?: boolean; insecureLan?: boolean } = {}): string | undefined {
  const exposed = exposedHosts(hosts)
  if (exposed.length === 0) return undefined
  const where = exposed.map(formatHost).join(', ')
  const missing = [...(opts.tls === true ? [] : ['TLS']), ...(clientAuth ? [] : ['client auth'])]
  if (missing.length === 0) return undefined
  if (opts.insecureLan === true) {
    return `INSECURE: listening on ${where} without ${missing.join(' or ')} (--insecure-lan): anyone on the network can ${clientAuth ? 'read the traffic, passwords included' : 'use this cache'}${opts.tls === true ? '' : ' and read what it serves'}`
  }
  if (!clientAuth) {
    throw new DproxyError(
      'USAGE',
      `listening on ${where} lets other machines use this cache, so clients must authenticate: ` +
        'pass --auth (or dproxy config set auth true) and give clients the values of dproxy env (or --insecure-lan on a network you trust)',
    )
  }
  throw new DproxyError(
    'USAGE',
    `listening on ${where} sends passwords and images over the network, so it must speak TLS: ` +
      'pass --tls auto (or --tls-cert FILE --tls-key FILE), or --insecure-lan on a network you trust',
  )
}

export class Daemon {
  readonly startedAt: number
  private readonly servers: Server[] = []
  private readonly sockets = new Set<Socket>()
  private readonly limits: ConnectionLimits
  /** Open connections per source and in total, over every listener. */
  private readonly gate: ConnectionGate
  private active = 0
  private idle: (() => void) | undefined
  private stopping: Promise<void> | undefined
  /** What DELETE and POST on /_dproxy/ must carry (guard.ts). */
  adminToken = newAdminToken()
  /** The cache dir's daemon.json (lifecycle.ts): one daemon per cache dir. */
  private lock: DaemonLock | undefined
  readonly listening: ListenAddress[] = []
  /** Clearing and eviction, serialised; enforces maxSizeBytes and ttlMs. */
  readonly maintenance: CacheMaintenance
  /** `dproxy doctor`'s probe repository and the nonces that arrived. */
  readonly probe: ProbeRepository
  /** The errors recently sent to clients, per image (status, doctor). */
  readonly failures: FailureBook
  /** Background refresh of used tags, when configured. */
  refresher: Refresher | undefined
  /** What blob bytes are sent through, shared by every response. */
  readonly buffers = new SendBuffers()
  /** /metrics (metrics.ts). */
  readonly metrics: Metrics
  /** Where the metrics address listener ended up (its port may have been 0). */
  metricsListening: ListenAddress | undefined
  /** Client logins (clientauth.ts) when clients must authenticate. */
  readonly clientAuth: ClientAuth | undefined
  /** Writes when tokens were last used, at most once a minute (credentials/tokens.ts). */
  private usedTimer: NodeJS.Timeout | undefined
  /** The certificate the registry listeners serve, when they speak HTTPS. */
  tls: TlsCertificates | undefined
  /** Set when --insecure-lan let a listener beyond loopback go without TLS or client auth (status shows it). */
  insecureLanWarning: string | undefined

  private constructor(
    readonly options: DaemonOptions,
    readonly store: Store,
    readonly upstreams: Upstreams,
    readonly blobs: BlobProxy,
    readonly manifests: ManifestProxy,
    readonly counters: Counters,
    readonly clock: Clock,
    readonly log: Logger,
    /** Every finished request and upstream call (events.ts): metrics, the access log, the event stream. */
    readonly events: DaemonEvents,
  ) {
    this.startedAt = clock.now()
    this.limits = connectionLimits(options)
    this.gate = new ConnectionGate(this.limits, log)
    this.maintenance = new CacheMaintenance({
      store,
      clock,
      log,
      counters,
      downloading: () => blobs.inflight,
      maxSizeBytes: options.maxSizeBytes,
      ttlMs: options.ttlMs,
    })
    this.probe = new ProbeRepository({ clock })
    this.failures = new FailureBook(clock)
    this.clientAuth = options.clientAuth ? new ClientAuth({ clock, log, ...options.clientAuth }) : undefined
    if (options.accessLog === true) accessLog(events, log)
    this.metrics = new Metrics(events, {
      counters,
      upstreamCounters: upstreams.counters,
      rateLimits: () => upstreams.rateLimits.all(),
      endpoints: () => upstreams.endpoints(),
      downloads: () => blobs.downloads(),
      stats: () => store.stats(),
      writable: () => store.health.failure === undefined,
      evicted: () => this.maintenance.evicted,
      cacheDir: options.cacheDir,
      now: () => clock.now(),
    })
  }

  static async start(options: DaemonOptions): Promise<Daemon> {
    const insecure = refuseExposureWithoutAuth(options.hosts ?? DEFAULT_HOSTS, options.clientAuth !== undefined, {
      tls: options.tls !== undefined,
      ...(options.insecureLan !== undefined ? { insecureLan: options.insecureLan } : {}),
    })
    connectionLimits(options) // refused before anything is taken
    const clock = options.clock ?? systemClock
    const log = options.log ?? silentLogger
    const allowRegistries = registryAllowList(options)
    // The lock comes first: only the cache dir's owner may migrate its layout and remove temp files.
    // The dir holds private images: created for this user only, as the store creates it.
    await fs.mkdir(options.cacheDir, { recursive: true, mode: 0o700 })
    const lock = await DaemonLock.acquire(options.cacheDir, {
      pid: process.pid,
      startedAt: new Date(clock.now()).toISOString(),
      listen: [],
      version: VERSION,
      ...(options.logFile !== undefined ? { logFile: options.logFile } : {}),
    })
    let store: Store
    try {
      store = await Store.open(options.cacheDir, { clock, log, migrate: true })
      // Nothing has been written yet, so a temp file under our own pid is a previous life's (a restarted container).
      const orphans = await store.removeOrphanTemps({ ownPidIsDead: true })
      if (orphans.files > 0) log.info(`removed ${orphans.files} temp files (${orphans.bytes} bytes) left by a process that was killed`)
    } catch (err) {
      await lock.release()
      throw err
    }
    const events = new DaemonEvents((err) => log.error(`an event listener failed and was removed: ${String(err)}`))
    const upstreams = new Upstreams({
      observe: (call) => events.emit('upstream', call),
      overrides: options.upstreams ?? {},
      ...(options.noOrigin !== undefined ? { noOrigin: options.noOrigin } : {}),
      ...(options.upstreamOrigins ? { origins: options.upstreamOrigins } : {}),
      ...(options.chainTimeouts ? { chainTimeouts: options.chainTimeouts } : {}),
      onHealth: (e) => {
        if (e.up) log.info(`upstream ${e.endpoint} for ${e.registry} answers again: asking it first again`)
        else log.warn(`upstream ${e.endpoint} for ${e.registry} is down, skipping it until a probe finds it back: ${e.lastError ?? ''}`)
      },
      clock,
      ...(options.credentials ? { credentials: options.credentials } : {}),
      ...(options.timeouts ? { timeouts: options.timeouts } : {}),
      ...(allowRegistries ? { allowRegistries } : {}),
      // No redirect or realm may lead back here, whatever upstream names it (read once listening).
      policy: { ownListeners: (): ListenAddress[] => daemon.ownListeners() },
    })
    const counters = newCounters()
    const cache = options.store ?? store
    const upstream = options.upstream ?? upstreams
    const blobs: BlobProxy = new BlobProxy({
      store: cache,
      upstreams: upstream,
      counters,
      log,
      clock,
      // A disk that fills up mid-download: eviction first, and how much room there is (the file store only).
      ...(cache === store
        ? { makeRoom: (): Promise<number> => daemon.maintenance.makeRoom(), freeBytes: async () => (await diskSpace(store.root))?.free }
        : {}),
    })
    const manifests = new ManifestProxy({ store: cache, upstreams: upstream, counters, clock, log, maxAgeMs: options.maxAgeMs ?? 0 })
    const daemon: Daemon = new Daemon(options, store, upstreams, blobs, manifests, counters, clock, log, events)
    daemon.lock = lock
    daemon.insecureLanWarning = insecure
    if (insecure !== undefined) log.warn(insecure)
    try {
      if (options.adminTokenFile !== undefined) daemon.adminToken = await ensureAdminToken(options.adminTokenFile)
      if (options.tls) {
        // Loaded only here: a plain daemon carries neither node:tls nor the certificate code.
        const { TlsCertificates } = await import('./tls.js')
        daemon.tls = await TlsCertificates.load(options.tls, {
          clock,
          log,
          hosts: options.hosts ?? DEFAULT_HOSTS,
          ...(options.tlsPollMs !== undefined ? { pollMs: options.tlsPollMs } : {}),
        })
      }
      await daemon.listen(options.hosts ?? DEFAULT_HOSTS, options.port ?? DEFAULT_PORT)
      if (options.metricsAddress) await daemon.listenMetrics(options.metricsAddress)
      const url = adminUrl(daemon.listening, daemon.tls ? 'https' : 'http')
      await daemon.lock.update({
        listen: formatListen(daemon.listening),
        ...(url !== undefined ? { url } : {}),
        ...(daemon.tls ? { tlsCertificate: daemon.tls.fingerprint } : {}),
      })
      if (daemon.tls) {
        const tls = daemon.tls
        tls.onChange((pair) => {
          for (const server of daemon.servers) if ('setSecureContext' in server) (server as unknown as TlsServer).setSecureContext(pair)
          void daemon.lock?.update({ tlsCertificate: tls.fingerprint }).catch((err: unknown) => log.warn(`cannot record the new certificate in daemon.json: ${String(err)}`))
        })
        tls.start()
      }
      daemon.maintenance.start()
      const tokens = options.clientAuth?.tokens
      if (tokens?.flush) {
        daemon.usedTimer = setInterval(() => void tokens.flush?.({ force: true }), USED_FLUSH_MS)
        daemon.usedTimer.unref()
      }
      if (options.refresh) {
        const warmer = new Warmer({ store: cache, upstreams, manifests, blobs })
        const busy = () => daemon.active > 0
        daemon.refresher = new Refresher({ store, warmer, rateLimits: upstreams.rateLimits, clock, log, busy }, options.refresh)
        daemon.refresher.start()
      }
    } catch (err) {
      await daemon.stop(0)
      throw err
    }
    return daemon
  }

  /** `http://127.0.0.1:5000`-style base URL of the first address (tests, the CLI). */
  get url(): string {
    const a = this.listening[0]
    if (!a) throw new DproxyError('INTERNAL', 'daemon is not listening')
    return `${this.tls ? 'https' : 'http'}://${formatHost(a.host)}:${a.port}`
  }

  get port(): number {
    return this.listening[0]?.port ?? 0
  }

  /** Every address this daemon answers on (the registry and the metrics listeners). */
  ownListeners(): ListenAddress[] {
    return this.metricsListening ? [...this.listening, this.metricsListening] : this.listening
  }

  async status(): Promise<StatusReport> {
    return buildStatus(this)
  }

  private async listen(hosts: string[], port: number): Promise<void> {
    const registry = registryHandler({
      manifests: this.manifests,
      blobs: this.blobs,
      buffers: this.buffers,
      log: this.log,
      admit: (name) => this.upstreams.admit(name),
      ...(this.clientAuth ? { permit: this.clientAuth.permit.bind(this.clientAuth) } : {}),
      probe: this.probe,
      onError: (req, wire) => this.failures.record(req, wire),
    })
    const admin = adminHandler(this)
    const clientAuth = this.clientAuth
    const guarded = clientAuth ? clientAuth.guard(registry) : registry
    // On a loopback listener only this machine's names pass (DNS rebinding, guard.ts).
    const checkHost = registryHostCheck(hosts)
    const handle: Handler = async (req, res) => {
      const url = req.url ?? '/'
      // The token endpoint answers every client (it is how remote ones get in); the other admin endpoints, loopback only.
      if (clientAuth && (url === TOKEN_PATH || url.startsWith(`${TOKEN_PATH}?`))) return clientAuth.handleToken(req, res)
      // Every client may fetch the CA it is to trust (dproxy setup --server checks its fingerprint).
      if (url === CA_PATH || url.startsWith(`${CA_PATH}?`)) return this.serveCa(req, res)
      if (url.startsWith('/_dproxy/')) return admin(req, res)
      if (isMetricsPath(url)) return serveMetrics(this.metrics, req, res, { loopbackOnly: true, listenHosts: hosts }, this.log)
      try {
        checkHost(req)
      } catch (err) {
        sendError(res, err, this.log, req.method)
        return
      }
      return guarded(req, res)
    }
    const onRequest = (req: IncomingMessage, res: ServerResponse) => {
      this.counters.requests++
      this.active++
      const started = performance.now()
      // Kept: Node lets go of req.socket when it closes the connection after an answer sent mid-upload.
      const socket = req.socket
      const sentBefore = socket.bytesWritten
      bodyDeadline(req, this.options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS)
      res.on('close', () => {
        this.finished(req, res, socket, started, sentBefore)
        this.active--
        if (this.active === 0) this.idle?.()
        this.maintenance.check()
      })
      handle(req, res).catch((err: unknown) => {
        this.log.error(`unhandled: ${err instanceof Error ? err.stack : String(err)}`)
        if (!res.headersSent) res.statusCode = 500
        res.end()
      })
    }
    for (const host of hosts) {
      // Without a Host, Node would answer a bare 400 itself; the handlers answer in OCI JSON instead.
      // The body's time is bounded per request (body-deadline.ts), the head's by Node (connections.ts).
      const common = { keepAliveTimeout: 30_000, requireHostHeader: false, ...serverTimeouts(this.limits) }
      let server: Server
      if (this.tls) {
        const [{ createServer: createHttpsServer }, { answerPlainHttp }] = await Promise.all([import('node:https'), import('./tls.js')])
        // A handshake has the same bound as a request head; a client that sends nothing, answerPlainHttp's.
        const https = createHttpsServer({ ...common, ...this.tls.current, handshakeTimeout: this.limits.headersTimeoutMs }, onRequest)
        https.on('tlsClientError', (err: NodeJS.ErrnoException, socket: Socket) => {
          this.log.debug?.(`TLS handshake with ${socket.remoteAddress ?? '?'} failed: ${err.code ?? err.message}`)
          socket.destroy()
        })
        answerPlainHttp(https, this.limits.headersTimeoutMs)
        server = https as unknown as Server
      } else {
        server = createServer(common, onRequest)
      }
      this.track(server)
      const chosenPort = this.listening[0]?.port ?? port
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject)
          server.listen({ host, port: chosenPort, ipv6Only: host.includes(':') }, () => {
            server.off('error', reject)
            resolve()
          })
        })
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        // No IPv6 on this machine: the loopback pair degrades to IPv4 only.
        if (host === '::1' && this.listening.length > 0 && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) {
          this.log.warn(`not listening on [::1]: ${code}`)
          continue
        }
        throw new DproxyError('LISTEN_FAILED', `cannot listen on ${formatHost(host)}:${chosenPort}: ${code ?? (err as Error).message}`, {
          cause: err,
        })
      }
      this.servers.push(server)
      const addr = server.address() as AddressInfo
      this.listening.push({ host, port: addr.port })
    }
  }

  /** GET /_dproxy/ca.crt: the CA of --tls auto, to anyone (it is public); 404 without one. */
  private serveCa(req: IncomingMessage, res: ServerResponse): void {
    const ca = this.tls?.ca
    if (ca === undefined) {
      sendError(res, new DproxyError('NAME_UNKNOWN', 'this daemon has no CA of its own (it serves one with --tls auto)', { status: 404 }), this.log, req.method)
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD')
      sendError(res, new DproxyError('UNSUPPORTED', `${req.method ?? ''} ${CA_PATH}`, { status: 405 }), this.log, req.method)
      return
    }
    res.writeHead(200, { 'content-type': 'application/x-pem-file', 'content-length': Buffer.byteLength(ca), 'cache-control': 'no-store' })
    res.end(req.method === 'HEAD' ? undefined : ca)
  }

  /** Bounds `server`'s connections (the gate) and keeps them for stop(). */
  private track(server: Server): void {
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      sendClientError(err, socket)
      cutAfterClientError(socket)
    })
    server.on('connection', (socket: Socket) => {
      if (!this.gate.admit(socket)) return
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
  }

  /** Announces a finished (or cut) response on the event seam. */
  private finished(req: IncomingMessage, res: ServerResponse, socket: Socket, started: number, sentBefore: number): void {
    const raw = req.url ?? '/'
    const q = raw.indexOf('?')
    const path = q < 0 ? raw : raw.slice(0, q)
    const ua = req.headers['user-agent']
    this.events.emit('request', {
      time: this.clock.now(),
      client: socket.remoteAddress ?? '',
      method: printable(req.method ?? '', 20),
      path: printable(path, 300),
      route: routeOf(path),
      status: res.statusCode,
      bytes: socket.bytesWritten - sentBefore,
      durationMs: performance.now() - started,
      complete: res.writableFinished,
      ...noteOf(res),
      ...(ua !== undefined ? { userAgent: printable(ua, 200) } : {}),
    })
  }

  /** The --metrics-address listener: /metrics and nothing else. */
  private async listenMetrics(address: ListenAddress): Promise<void> {
    const server = createServer({ requireHostHeader: false, ...serverTimeouts(this.limits) }, (req, res) => {
      if (isMetricsPath(req.url ?? '/')) {
        void serveMetrics(this.metrics, req, res, { loopbackOnly: false, listenHosts: [] }, this.log)
        return
      }
      sendError(res, new DproxyError('NAME_UNKNOWN', 'this listener serves /metrics only', { status: 404 }), this.log, req.method)
    })
    // Its requests have no body: Node's own bound on the whole request (its default) stays.
    server.requestTimeout = Math.max(REQUEST_TIMEOUT_MS, this.limits.headersTimeoutMs)
    this.track(server)
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new DproxyError('LISTEN_FAILED', `cannot listen on ${formatHost(address.host)}:${address.port} for metrics: ${err.code ?? err.message}`, { cause: err })),
      )
      server.listen({ host: address.host, port: address.port }, resolve)
    })
    this.servers.push(server)
    this.metricsListening = { host: address.host, port: (server.address() as AddressInfo).port }
  }

  /** Stops accepting, waits up to `graceMs` for responses in flight, then cuts the rest. */
  stop(graceMs = this.options.shutdownGraceMs ?? 10_000): Promise<void> {
    this.stopping ??= (async () => {
      this.events.emit('closing', undefined)
      const closed = Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
      for (const s of this.servers) s.closeIdleConnections()
      if (this.active > 0) {
        let timer: NodeJS.Timeout | undefined
        await Promise.race([
          new Promise<void>((resolve) => (this.idle = resolve)),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
        ])
        clearTimeout(timer)
      }
      for (const socket of this.sockets) socket.destroy()
      this.tls?.stop()
      await closed
      clearInterval(this.usedTimer)
      await this.options.clientAuth?.tokens?.flush?.({ force: true })
      await this.maintenance.stop()
      await this.refresher?.stop()
      await this.blobs.abortAll()
      await this.upstreams.close()
      await this.lock?.release()
    })()
    return this.stopping
  }
}

/**
 * Clients of a daemon other machines can reach may only use an allow-list of
 * registries: anything else would make it an open proxy to any host.
 */
export function registryAllowList(options: Pick<DaemonOptions, 'hosts' | 'registries' | 'upstreams'>): string[] | undefined {
  if (exposedHosts(options.hosts ?? DEFAULT_HOSTS).length === 0) return undefined
  return allowedRegistries(options.registries, options.upstreams ?? {})
}
