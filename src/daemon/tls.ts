// The daemon's certificate and key when it speaks HTTPS, and keeping them
// current while it runs. Two sources:
//
//   files  --tls-cert/--tls-key: the user's pair, re-read when either file
//          changes (fs.watch on their directories, since a rotation usually
//          renames a new file into place, plus an mtime poll for the file
//          systems where watching says nothing). A new pair that cannot be
//          read, or whose key does not match its certificate, is refused:
//          the old one keeps serving, and the log and `status` say why.
//   auto   --tls auto: dproxy's own CA, made once, and a server certificate
//          for every name and address the daemon listens on, plus
//          --tls-name extras, renewed when less than a third of its life is
//          left (checked at start and twice a day on the injectable clock).
//          Their files live in the state dir:
//
//            <stateDir>/tls/
//              ca.pem            the CA certificate clients trust
//                                (GET /_dproxy/ca.crt serves it)
//              ca-key.pem        its key (0600; never leaves this machine)
//              server.pem        the server certificate, then the CA
//              server-key.pem    its key (0600)
//
// Making a certificate loads @peculiar/x509 (tls-issue.ts); a start that
// finds a valid certificate for its names only reads files (node:crypto).
//
// The listener asks `current` for its secure context and subscribes to
// changes, which it applies with setSecureContext: connections already open
// keep their handshake, new ones get the new certificate.
//
// The context also says which cipher wins. Node servers pick by their own
// order, and node's order starts with AES-256-GCM; AES-128-GCM is as safe
// for this and, with AES instructions, half again as fast (`openssl speed
// -evp`: 4.4 against 2.8 GB/s here), which is most of what a cached blob GET
// over TLS costs. A client that lists ChaCha20 first (no AES instructions)
// still gets ChaCha20.

import { constants as cryptoConstants, X509Certificate } from 'node:crypto'
import { createSecureContext, DEFAULT_CIPHERS, type Server as TlsServer } from 'node:tls'
import { promises as fs, watch, type FSWatcher } from 'node:fs'
import { hostname, networkInterfaces } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { isIP, type Socket } from 'node:net'
import type { Clock } from '../clock.js'
import { DproxyError } from '../errors.js'
import { certificateFingerprint } from '../fingerprint.js'
import type { Logger } from '../log.js'
import { isLoopbackHost } from '../net.js'
import type { TlsConfig, TlsStatus } from './tls-config.js'


export const CA_DAYS = 3650
export const SERVER_DAYS = 90
/** How often the files of --tls-cert/--tls-key are looked at when no watch event came. */
export const POLL_MS = 10_000
/** How often --tls auto checks whether its server certificate is due for renewal. */
export const RENEW_CHECK_MS = 12 * 3600_000

/** What every secure context of the listener gets besides its pair: the cipher preference (above). */
export const CIPHER_PREFERENCE = {
  ciphers: ['TLS_AES_128_GCM_SHA256', ...DEFAULT_CIPHERS.split(':').filter((c) => c !== 'TLS_AES_128_GCM_SHA256')].join(':'),
  honorCipherOrder: true,
  secureOptions: cryptoConstants.SSL_OP_PRIORITIZE_CHACHA,
} as const

/** A secure context's options: the pair and the cipher preference. */
export interface ListenerContext {
  cert: string
  key: string
  ciphers: string
  honorCipherOrder: boolean
  secureOptions: number
}

export interface TlsFiles {
  ca: string
  caKey: string
  server: string
  serverKey: string
}

export function tlsFiles(dir: string): TlsFiles {
  return { ca: join(dir, 'ca.pem'), caKey: join(dir, 'ca-key.pem'), server: join(dir, 'server.pem'), serverKey: join(dir, 'server-key.pem') }
}


interface Pair {
  cert: string
  key: string
  x509: X509Certificate
}

/** The names a certificate covers, from its subjectAltName ("DNS:a, IP Address:1.2.3.4"). */
export function certificateNames(cert: X509Certificate): string[] {
  const san = cert.subjectAltName
  if (san === undefined) return []
  return san
    .split(/,\s*/)
    .map((entry) => /^(?:DNS|IP Address):(.*)$/.exec(entry)?.[1]?.toLowerCase())
    .filter((n): n is string => n !== undefined)
    .map((n) => (isIP(n) === 6 ? canonicalV6(n) : n))
}

/** IPv6 as the certificate prints it (node prints the long form without zero compression in some versions): compare parsed. */
function sameName(a: string, b: string): boolean {
  if (isIP(a) === 6 && isIP(b) === 6) return canonicalV6(a) === canonicalV6(b)
  return a.toLowerCase() === b.toLowerCase()
}

/** The short form of an IPv6 address, without brackets. */
function canonicalV6(a: string): string {
  return new URL(`http://[${a}]/`).hostname.slice(1, -1)
}

/**
 * The names the certificate of `--tls auto` must cover for these listen
 * addresses: a wildcard address stands for every address of this machine's
 * interfaces (link-local ones aside: they need a zone to be used) and
 * localhost; loopback for localhost and both loopback addresses. Extras last.
 */
export function certificateNamesFor(hosts: readonly string[], extras: readonly string[] = [], interfaces = networkInterfaces()): string[] {
  const out: string[] = []
  const add = (name: string) => {
    const n = name.toLowerCase()
    if (!out.some((o) => sameName(o, n))) out.push(n)
  }
  const loopback = () => ['localhost', '127.0.0.1', '::1'].forEach(add)
  for (const host of hosts) {
    if (host === '0.0.0.0' || host === '::') {
      loopback()
      for (const list of Object.values(interfaces)) {
        for (const i of list ?? []) if (!(i.family === 'IPv6' && /^fe80:/i.test(i.address))) add(i.address)
      }
    } else if (isLoopbackHost(host)) {
      loopback()
    } else {
      add(host)
    }
  }
  extras.forEach(add)
  return out
}

function loadPair(cert: string, key: string, what: string): Pair {
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(cert)
  } catch (err) {
    throw new DproxyError('CONFIG_INVALID', `${what}: not a PEM certificate (${(err as Error).message})`, { cause: err })
  }
  try {
    // Refuses a key that does not belong to the certificate ("key values mismatch") and unreadable PEM.
    createSecureContext({ cert, key })
  } catch (err) {
    throw new DproxyError('CONFIG_INVALID', `${what}: the key does not go with the certificate (${(err as Error).message})`, { cause: err })
  }
  return { cert, key, x509 }
}

export interface TlsDeps {
  clock: Clock
  log: Logger
  /** The listen addresses (auto: what the certificate must cover). */
  hosts: readonly string[]
  /** Files mode: how often to look at the files besides watching them (tests: short). */
  pollMs?: number
}

export class TlsCertificates {
  private pair: Pair
  private caPem: string | undefined
  private lastError: { message: string; at: string } | undefined
  private readonly listeners: Array<(context: ListenerContext) => void> = []
  private readonly watchers: FSWatcher[] = []
  private timers: NodeJS.Timeout[] = []
  private settle: NodeJS.Timeout | undefined
  private reloading: Promise<void> | undefined
  private again = false
  private mtimes = ''

  private constructor(
    readonly config: TlsConfig,
    private readonly deps: TlsDeps,
    pair: Pair,
  ) {
    this.pair = pair
  }

  /** Reads (auto: makes, when missing or due) the certificate; a files pair that does not load is an error at start. */
  static async load(config: TlsConfig, deps: TlsDeps): Promise<TlsCertificates> {
    if (config.mode === 'files') {
      const pair = await readFilesPair(config.cert, config.key)
      const tls = new TlsCertificates(config, deps, pair)
      tls.mtimes = await mtimesOf([config.cert, config.key])
      return tls
    }
    const { pair, caPem } = await ensureAuto(config, deps)
    const tls = new TlsCertificates(config, deps, pair)
    tls.caPem = caPem
    return tls
  }

  /** The secure context new connections get: the pair, and the cipher preference. */
  get current(): ListenerContext {
    return { cert: this.pair.cert, key: this.pair.key, ...CIPHER_PREFERENCE }
  }

  /** --tls auto: the CA certificate (PEM) clients are to trust; undefined with the user's files. */
  get ca(): string | undefined {
    return this.caPem
  }

  get fingerprint(): string {
    return certificateFingerprint(this.pair.x509.raw)
  }

  get caFingerprint(): string | undefined {
    return this.caPem === undefined ? undefined : certificateFingerprint(this.caPem)
  }

  onChange(listener: (context: ListenerContext) => void): void {
    this.listeners.push(listener)
  }

  status(): TlsStatus {
    const c = this.pair.x509
    return {
      mode: this.config.mode,
      subject: c.subject,
      names: certificateNames(c),
      notAfter: new Date(c.validTo).toISOString(),
      fingerprint: this.fingerprint,
      ...(this.caPem !== undefined ? { caFingerprint: certificateFingerprint(this.caPem) } : {}),
      ...(this.config.mode === 'files' ? { cert: this.config.cert, key: this.config.key } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
    }
  }

  /** Starts watching the files (files) or the renewal check (auto). */
  start(): void {
    if (this.config.mode === 'files') {
      const { cert, key } = this.config
      for (const dir of new Set([dirname(cert), dirname(key)])) {
        try {
          const w = watch(dir, { persistent: false }, (_event, name) => {
            if (name === null || name === basename(cert) || name === basename(key)) this.scheduleReload()
          })
          w.on('error', () => w.close())
          this.watchers.push(w)
        } catch (err) {
          this.deps.log.debug?.(`not watching ${dir} for certificate changes (${(err as Error).message}): polling only`)
        }
      }
      const poll = setInterval(() => {
        void mtimesOf([cert, key]).then((m) => {
          if (m !== this.mtimes) this.scheduleReload()
        })
      }, this.deps.pollMs ?? POLL_MS)
      poll.unref()
      this.timers.push(poll)
    } else {
      const check = setInterval(() => void this.renewIfDue(), RENEW_CHECK_MS)
      check.unref()
      this.timers.push(check)
    }
  }

  stop(): void {
    for (const w of this.watchers) w.close()
    for (const t of this.timers) clearTimeout(t)
    clearTimeout(this.settle)
    this.timers = []
  }

  /** Re-reads the files now (files mode); a bad pair keeps the old one and is recorded. */
  reload(): Promise<void> {
    if (this.reloading) {
      this.again = true
      return this.reloading
    }
    this.reloading = (async () => {
      do {
        this.again = false
        await this.reloadOnce()
      } while (this.again)
    })().finally(() => (this.reloading = undefined))
    return this.reloading
  }

  /**
   * --tls auto: renews the server certificate when due, or when this machine
   * gained an address a wildcard listener answers on (tests call this after
   * moving the clock).
   */
  async renewIfDue(): Promise<void> {
    if (this.config.mode !== 'auto') return
    const names = certificateNamesFor(this.deps.hosts, this.config.names ?? [])
    if (!dueForRenewal(this.pair.x509, this.deps.clock.now()) && coversAll(this.pair.x509, names)) return
    try {
      const { pair, caPem } = await ensureAuto(this.config, this.deps)
      this.caPem = caPem
      this.apply(pair)
      this.deps.log.info(`renewed the server certificate; valid until ${new Date(pair.x509.validTo).toISOString()}`)
    } catch (err) {
      this.fail(`renewing the server certificate failed, the current one serves on: ${(err as Error).message}`)
    }
  }

  private scheduleReload(): void {
    // A rotation writes two files, often in several steps: look a moment after the first sign
    // (not after the last: the poll keeps signalling until a reload records the new times).
    if (this.settle !== undefined) return
    this.settle = setTimeout(() => {
      this.settle = undefined
      void this.reload()
    }, 200)
    this.settle.unref()
  }

  private async reloadOnce(): Promise<void> {
    if (this.config.mode !== 'files') return
    const { cert, key } = this.config
    const mtimes = await mtimesOf([cert, key])
    let pair: Pair
    try {
      pair = await readFilesPair(cert, key)
    } catch (err) {
      this.mtimes = mtimes
      this.fail(`the new certificate was refused, the previous one serves on: ${(err as Error).message}`)
      return
    }
    this.mtimes = mtimes
    if (pair.cert === this.pair.cert && pair.key === this.pair.key) {
      this.lastError = undefined
      return
    }
    this.apply(pair)
    this.deps.log.info(`loaded the new certificate from ${cert} (${pair.x509.subject.replace(/\n/g, ', ')}, valid until ${new Date(pair.x509.validTo).toISOString()})`)
  }

  private apply(pair: Pair): void {
    this.pair = pair
    this.lastError = undefined
    for (const l of this.listeners) l(this.current)
  }

  private fail(message: string): void {
    this.lastError = { message, at: new Date(this.deps.clock.now()).toISOString() }
    this.deps.log.warn(message)
  }
}

/** Temp file in the same directory, then rename: a reader never sees half a key. */
async function writeFileAtomic(file: string, text: string, opts: { mode: number }): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`
  try {
    await fs.writeFile(tmp, text, { mode: opts.mode })
    await fs.chmod(tmp, opts.mode)
    await fs.rename(tmp, file)
  } catch (err) {
    await fs.rm(tmp, { force: true })
    throw err
  }
}

async function mtimesOf(files: string[]): Promise<string> {
  const parts = await Promise.all(files.map((f) => fs.stat(f).then((s) => `${s.mtimeMs}:${s.size}:${s.ino}`, () => 'missing')))
  return parts.join('|')
}

async function readFilesPair(certFile: string, keyFile: string): Promise<Pair> {
  const read = async (file: string, what: string) => {
    try {
      return await fs.readFile(file, 'utf8')
    } catch (err) {
      throw new DproxyError('CONFIG_INVALID', `cannot read the TLS ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
        cause: err,
      })
    }
  }
  const [cert, key] = await Promise.all([read(certFile, 'certificate'), read(keyFile, 'key')])
  return loadPair(cert, key, `${certFile} and ${keyFile}`)
}

function coversAll(cert: X509Certificate, names: readonly string[]): boolean {
  const covered = certificateNames(cert)
  return names.every((n) => covered.some((c) => sameName(c, n)))
}

/** True when less than a third of the certificate's life is left (or it is not yet or no longer valid). */
export function dueForRenewal(cert: X509Certificate, now: number): boolean {
  const from = Date.parse(cert.validFrom)
  const to = Date.parse(cert.validTo)
  return now < from || now > to - (to - from) / 3
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new DproxyError('INTERNAL', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
}

/**
 * --tls auto: the CA (made when missing) and a server certificate for the
 * names, reused while it is signed by that CA, covers every name and is not
 * due; otherwise a new one is made and written.
 */
async function ensureAuto(config: Extract<TlsConfig, { mode: 'auto' }>, deps: TlsDeps): Promise<{ pair: Pair; caPem: string }> {
  const files = tlsFiles(config.dir)
  const now = deps.clock.now()
  await fs.mkdir(config.dir, { recursive: true, mode: 0o700 })
  let caPem = await readOptional(files.ca)
  let caKey = await readOptional(files.caKey)
  if (caPem === undefined || caKey === undefined) {
    const { issueCa } = await import('./tls-issue.js')
    const ca = await issueCa({ now, days: CA_DAYS, machine: hostname() })
    // The key first: a CA certificate without its key could sign nothing.
    await writeFileAtomic(files.caKey, ca.keyPem, { mode: 0o600 })
    await writeFileAtomic(files.ca, ca.certPem, { mode: 0o644 })
    ;[caPem, caKey] = [ca.certPem, ca.keyPem]
    deps.log.info(`made a new CA for --tls auto: ${files.ca} (${certificateFingerprint(caPem)})`)
  }
  const caCert = new X509Certificate(caPem)
  const names = certificateNamesFor(deps.hosts, config.names ?? [])
  const serverPem = await readOptional(files.server)
  const serverKey = await readOptional(files.serverKey)
  if (serverPem !== undefined && serverKey !== undefined) {
    try {
      const pair = loadPair(serverPem, serverKey, files.server)
      if (pair.x509.checkIssued(caCert) && pair.x509.verify(caCert.publicKey) && !dueForRenewal(pair.x509, now) && coversAll(pair.x509, names)) {
        return { pair, caPem }
      }
    } catch (err) {
      deps.log.warn(`replacing ${files.server}: ${(err as Error).message}`)
    }
  }
  const { issueServer } = await import('./tls-issue.js')
  const issued = await issueServer({ ca: { certPem: caPem, keyPem: caKey }, names, now, days: SERVER_DAYS })
  // The chain a client needs beyond its trusted CA is empty, but sending the CA too helps tools that show it.
  const chain = issued.certPem + caPem
  await writeFileAtomic(files.serverKey, issued.keyPem, { mode: 0o600 })
  await writeFileAtomic(files.server, chain, { mode: 0o644 })
  const pair = loadPair(chain, issued.keyPem, files.server)
  deps.log.info(`made a server certificate for ${names.join(', ')}, valid until ${new Date(pair.x509.validTo).toISOString()}`)
  return { pair, caPem }
}

/**
 * Lets a TLS listener answer a client that speaks plain HTTP to it: the
 * first byte of a TLS connection is a handshake record (0x16); anything else
 * gets `400` saying to use https:// and the connection closes, instead of a
 * handshake error the client shows as a hang or gibberish. A client that
 * sends nothing at all is cut after `timeoutMs` (the handshake's own bound,
 * handshakeTimeout, applies from the first byte on).
 */
export function answerPlainHttp(server: TlsServer, timeoutMs: number): void {
  const inner = server.listeners('connection') as Array<(socket: Socket) => void>
  server.removeAllListeners('connection')
  server.on('connection', (socket: Socket) => {
    // Until the TLS socket takes it over, a reset would be an unhandled error on the raw one.
    socket.on('error', () => socket.destroy())
    const timer = setTimeout(() => socket.destroy(), timeoutMs)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
    socket.once('data', (chunk: Buffer) => {
      clearTimeout(timer)
      if (chunk[0] === 0x16) {
        socket.pause()
        socket.unshift(chunk)
        for (const listener of inner) listener.call(server, socket)
        return
      }
      // Read and drop what else comes: closing with unread bytes would reset the connection before the answer arrives.
      socket.on('data', () => {})
      const host = (socket.localAddress ?? 'localhost').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '')
      const body = `This port speaks HTTPS, not plain HTTP: use https://${host.includes(':') ? `[${host}]` : host}:${socket.localPort ?? ''}/\n`
      socket.end(
        `HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      )
      setTimeout(() => socket.destroy(), 1000).unref()
    })
  })
}


