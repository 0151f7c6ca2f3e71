// `dproxy serve`: runs the daemon in the foreground until SIGINT or SIGTERM.
// It resolves settings (flags > environment > config file > defaults), starts
// the daemon, says where it listens and where the cache is, and on a signal
// lets in-flight responses finish (bounded) before exiting 0.

import { userInfo } from 'node:os'
import { join } from 'node:path'
import { Option, type Command } from 'commander'
import { resolveSettings } from '../config/settings.js'
import { lazyCredentialStore } from '../credentials/index.js'
import { loginFiles } from '../credentials/docker-config.js'
import { loginLookup } from '../credentials/logins.js'
import { TokenBook, tokenKey } from '../credentials/tokens.js'
import { clientSecretReader, CLIENT_USERNAME, ensureClientSecret } from '../daemon/clientauth.js'
import { Daemon } from '../daemon/daemon.js'
import { tlsConfigOf, trustCommand } from '../daemon/tls-config.js'
import { formatHost } from '../net.js'
import { ADMIN_TOKEN_FILE } from '../daemon/guard.js'
import { tuneHeap } from '../heap.js'
import { LOG_FORMATS, LOG_LEVELS, streamLogger } from '../log.js'
import { RotatingLogFile } from '../logfile.js'
import { storedCredentials } from '../upstream/login.js'
import { detach } from './daemon.js'
import { flagSettings } from './serve-flags.js'
import type { CliContext } from './program.js'

interface ServeFlags {
  host?: string
  port?: string
  cacheDir?: string
  upstream?: string[]
  /** false with --no-origin. */
  origin?: boolean
  chainConnectTimeout?: string
  chainFirstByteTimeout?: string
  maxAge?: string
  auth?: boolean
  detach?: boolean
  logFile?: string
  allowRegistry?: string[]
  refresh?: string
  refreshWindow?: string
  refreshReserve?: string
  logFormat?: string
  logLevel?: string
  logMaxSize?: string
  metricsAddress?: string
  tls?: string
  tlsCert?: string
  tlsKey?: string
  tlsName?: string[]
  insecureLan?: boolean
  /** Commander's value for --no-docker-credentials: false when given, else true. */
  dockerCredentials?: boolean
}

export function registerServeCommand(program: Command, ctx: CliContext): void {
  program
    .command('serve')
    .description('run the registry cache daemon in the foreground')
    .option('--host <addr>', 'address(es) to listen on, comma separated (default: 127.0.0.1 and ::1)')
    .option('--port <n>', 'port to listen on (default: 5000)')
    .option('--cache-dir <dir>', 'where cached blobs and manifests live (default: the user data dir)')
    .option(
      '--upstream <host=urls>',
      'endpoints for a registry host, tried in order: docker.io=https://cache.team.example,https://registry-1.docker.io (repeatable)',
      (value: string, prev: string[] = []) => [...prev, value],
    )
    .option('--no-origin', "a list of endpoints is the only way out: the registry's origin is not asked after it")
    .option('--chain-connect-timeout <duration>', 'connect limit of an upstream endpoint with another behind it (default 2s)')
    .option('--chain-first-byte-timeout <duration>', 'first response byte limit of such an endpoint (default 10s)')
    .option('--max-age <duration>', "serve a tag checked within this long without asking upstream (e.g. '10m'; default 0)")
    .option('--auth', 'require clients to log in (user dproxy, password from dproxy env); required beyond loopback')
    .option(
      '--allow-registry <host>',
      'beyond loopback, a registry clients may use; replaces the built-in list (repeatable)',
      (value: string, prev: string[] = []) => [...prev, value],
    )
    .option('--detach', 'run in the background, like dproxy start')
    .option('--refresh <interval>', "re-check cached tags this often and fetch the ones that moved (e.g. '1h'; default off)")
    .option('--refresh-window <duration>', 'refresh only tags a client pulled within this long (default 14d)')
    .option('--refresh-reserve <share>', "rate-limit headroom the refresh never spends (default '20%')")
    .addOption(new Option('--log-file <path>', 'where this daemon writes its output (set by dproxy start)').hideHelp())
    .addOption(new Option('--log-format <format>', 'log lines as text or JSON lines').choices(LOG_FORMATS))
    .addOption(new Option('--log-level <level>', 'least severe lines logged; info logs every manifest and blob request').choices(LOG_LEVELS))
    .option('--log-max-size <size>', "detached: rotate the log file past this size, keeping 3 old ones (default '10MiB')")
    .option('--metrics-address <addr:port>', 'also serve /metrics there, to anyone who can reach it (default: loopback only)')
    .addOption(new Option('--tls <mode>', "auto: serve HTTPS with dproxy's own CA (kept in the state dir); off: plain HTTP").choices(['auto', 'off']))
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM, chain after it); re-read when it changes')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .option(
      '--tls-name <name>',
      'with --tls auto: another host name or IP address the certificate covers, e.g. host.docker.internal (repeatable)',
      (value: string, prev: string[] = []) => [...prev, value],
    )
    .option('--insecure-lan', 'allow listening beyond loopback without TLS or client auth (anyone on the network can read or use it)')
    .option('--no-docker-credentials', "use only dproxy login's logins, not docker's or podman's (helpers, config.json, auth.json)")
    .action(async (flags: ServeFlags, cmd: Command) => {
      if (flags.detach) await detach(cmd, ctx)
      else await serve(flags, ctx)
    })
}

export async function serve(flags: ServeFlags, ctx: CliContext): Promise<void> {
  // Only the daemon: a small young generation slows a short command's module loading.
  tuneHeap()
  const settings = resolveSettings({ flags: flagSettings(flags), env: ctx.env })
  const logOptions = { level: settings.logLevel, format: settings.logFormat }
  const { metricsAddress } = settings
  // Detached, the daemon writes its log file itself, to rotate it.
  const log = streamLogger(flags.logFile !== undefined ? new RotatingLogFile(flags.logFile, settings.logMaxBytes) : ctx.stderr, logOptions)
  // Upstream logins (dproxy login) and the client password (dproxy env) are read
  // from the store while the daemon runs, through short caches: no restart needed.
  // The store opens on the first lookup (a keychain module costs memory); --auth needs it at once.
  const credentialStore = lazyCredentialStore({ configDir: settings.configDir, env: ctx.env, onFallback: (r) => log.warn(r) })
  if (settings.auth) await ensureClientSecret(await credentialStore.open())
  // Named tokens (dproxy token create): tokens.json in the state dir, its HMAC key in the credential store.
  const tokens = settings.auth
    ? new TokenBook({ stateDir: settings.stateDir, key: async () => tokenKey(await credentialStore.open()), log })
    : undefined
  // After dproxy's own logins, the ones docker and podman keep for this user (this process's HOME, DOCKER_CONFIG, PATH).
  const logins = loginLookup({
    store: { get: (registry) => credentialStore.get(registry), kind: async () => (await credentialStore.open()).kind },
    machine: settings.dockerCredentials,
    find: { env: ctx.env },
    onProblem: (registry, problem) => log.warn(`login for ${registry}: passed over ${problem}`),
  })
  const tls = tlsConfigOf(settings)
  const daemon = await Daemon.start({
    ...(tls !== undefined ? { tls } : {}),
    insecureLan: settings.insecureLan,
    credentials: storedCredentials(logins, { log }),
    ...(settings.auth ? { clientAuth: { secret: clientSecretReader(await credentialStore.open(), { log }), ...(tokens ? { tokens } : {}) } } : {}),
    hosts: settings.hosts,
    port: settings.port,
    cacheDir: settings.cacheDir,
    upstreams: settings.upstreams,
    noOrigin: settings.noOrigin,
    chainTimeouts: {
      ...(settings.chainConnectTimeoutMs !== undefined ? { connectMs: settings.chainConnectTimeoutMs } : {}),
      ...(settings.chainFirstByteTimeoutMs !== undefined ? { firstByteMs: settings.chainFirstByteTimeoutMs } : {}),
    },
    maxAgeMs: settings.maxAgeMs,
    maxSizeBytes: settings.maxSizeBytes,
    ttlMs: settings.ttlMs,
    ...(settings.registries !== undefined ? { registries: settings.registries } : {}),
    ...(settings.refreshMs !== undefined
      ? { refresh: { intervalMs: settings.refreshMs, windowMs: settings.refreshWindowMs, reserve: settings.refreshReserve } }
      : {}),
    log,
    accessLog: true,
    ...(metricsAddress !== undefined ? { metricsAddress } : {}),
    ...(flags.logFile !== undefined ? { logFile: flags.logFile } : {}),
    adminTokenFile: join(settings.stateDir, ADMIN_TOKEN_FILE),
  })
  ctx.stdout.write(`cache: ${settings.cacheDir}\n`)
  for (const registry of Object.keys(settings.upstreams)) {
    const chain = daemon.upstreams.chain(registry).map((e) => e.label)
    ctx.stdout.write(`upstream: ${registry} -> ${chain.join(', then ')}\n`)
  }
  if (settings.dockerCredentials) {
    // The daemon reads the files of the user it runs as: under root (a system service), root's, not the desktop user's.
    const who = userInfo().username
    const root = process.getuid?.() === 0 ? " (running as root: root's files, not a desktop user's)" : ''
    ctx.stdout.write(`logins: dproxy login, then docker's and podman's of ${who}: ${loginFiles(ctx.env).docker}${root}\n`)
  }
  if (settings.auth) ctx.stdout.write(`client auth: required (user ${CLIENT_USERNAME}; dproxy env prints the password); more logins: dproxy token create NAME\n`)
  const scheme = daemon.tls ? 'https' : 'http'
  for (const a of daemon.listening) ctx.stdout.write(`dproxy listening on ${scheme}://${formatHost(a.host)}:${a.port}\n`)
  if (daemon.tls) {
    const t = daemon.tls.status()
    ctx.stdout.write(`tls: ${t.mode === 'auto' ? `own CA ${t.caFingerprint ?? ''}` : `${t.cert ?? ''}`}; certificate for ${(t.names ?? []).join(', ')} until ${t.notAfter ?? '?'}\n`)
    const caFingerprint = daemon.tls.caFingerprint
    const trust = caFingerprint !== undefined ? trustCommand(daemon.listening, caFingerprint) : undefined
    if (trust !== undefined) ctx.stdout.write(`other machines trust this server with: ${trust}\n`)
  }
  if (daemon.insecureLanWarning !== undefined) ctx.stdout.write(`WARNING: ${daemon.insecureLanWarning}\n`)
  const m = daemon.metricsListening
  if (m) ctx.stdout.write(`metrics: http://${formatHost(m.host)}:${m.port}/metrics\n`)
  await new Promise<void>((resolve) => {
    // The handler stays registered (signal handlers keep no process alive): conf's when-exit
    // re-raises the signal it sees, and with no listener of ours left, that re-raised signal
    // can kill the process before or just after the clean stop (it does under tap's signal-exit).
    let stopping = false
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) return
      stopping = true
      log.info(`${signal}: finishing requests in flight, then stopping`)
      void daemon.stop().then(resolve)
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
  log.info('stopped')
}
