// `dproxy status [--json] [--no-probe] [--cache-dir DIR]`: is the daemon
// running, what is in the cache, how much of Docker Hub's rate limit is left.
// The numbers come from collectStatus (src/control/status.ts); this file only
// chooses how to print them:
//
//   --json                    one JSON object (StatusSnapshot)
//   a terminal, CI unset      the ink view (src/ui/StatusView.tsx)
//   piped, or CI set          aligned plain text, no escape codes
//
// ink and react are imported only on the terminal path, with a dynamic
// import, so `status --json` in scripts and the plain path start fast and
// never load them (test/cli/status.test.ts checks this).
//
// Exit status is 0 whether or not the daemon runs (that is what the report
// says; see daemon.running in --json), 1 when the status cannot be gathered.

import type { Command } from 'commander'
import { resolveSettings } from '../config/settings.js'
import { formatBytes } from '../config/units.js'
import { openCredentialStore, type CredentialStore } from '../credentials/index.js'
import { loginLookup } from '../credentials/logins.js'
import { silentLogger } from '../log.js'
import {
  collectStatus,
  describeEndpoints,
  describeFailures,
  describeLimit,
  describeReading,
  formatAge,
  type StatusSnapshot,
} from '../control/status.js'
import type { CredentialSource } from '../upstream/auth.js'
import { storedCredentials } from '../upstream/login.js'
import type { CliContext } from './program.js'
import { DproxyError } from '../errors.js'
import { requestLine } from '../daemon/accesslog.js'
import type { RequestRecord } from '../daemon/events.js'
import type { Snapshot } from '../daemon/event-stream.js'
import type { StreamEvent } from '../control/events.js'

/**
 * The credential store is opened only if the probe really needs a token (it
 * may ask a keychain); docker's and podman's logins come after it, as in the
 * daemon, unless `machine` is false (dockerCredentials).
 */
export function lazyCredentials(configDir: string, env: NodeJS.ProcessEnv, machine = true): CredentialSource {
  let store: Promise<CredentialStore> | undefined
  const open = () => (store ??= openCredentialStore({ configDir, env }))
  return storedCredentials(
    loginLookup({ store: { get: async (registry) => (await open()).get(registry), kind: async () => (await open()).kind }, machine, find: { env } }),
    { log: silentLogger },
  )
}

const percent = (ratio: number) => `${Math.round(ratio * 100)}%`

/** The TLS lines of the text report: the certificate, a failed reload, the trust command, an --insecure-lan warning. */
function describeTls(s: StatusSnapshot): Array<[string, string]> {
  const lines: Array<[string, string]> = []
  const t = s.tls
  if (t !== undefined && t.mode !== 'off') {
    const source = t.mode === 'auto' ? `own CA ${t.caFingerprint ?? ''}` : (t.cert ?? '')
    lines.push(['tls', `${source}; certificate for ${(t.names ?? []).join(', ')} until ${t.notAfter ?? '?'}`])
    if (t.lastError !== undefined) lines.push(['', `reload failed at ${t.lastError.at}: ${t.lastError.message}`])
  }
  if (s.trustCommand !== undefined) lines.push(['trust it', s.trustCommand])
  if (s.insecureLan !== undefined) lines.push(['WARNING', s.insecureLan])
  return lines
}

/** The report as aligned plain text (no colours, no escape codes). */
export function formatStatusText(s: StatusSnapshot): string {
  const lines: Array<[string, string]> = []
  const d = s.daemon
  if (d.running) {
    const up = d.uptimeSeconds === null ? '' : `, up ${formatAge(d.uptimeSeconds)}`
    lines.push(['dproxy', `running (pid ${d.pid}, version ${d.version}${up})`])
    const scheme = s.tls !== undefined && s.tls.mode !== 'off' ? 'https' : 'http'
    lines.push(['listening', d.listen.map((a) => `${scheme}://${a}`).join(', ')])
    for (const line of describeTls(s)) lines.push(line)
  } else {
    lines.push(['dproxy', 'not running'])
  }
  lines.push(['cache dir', s.cacheDir])
  if (d.logFile !== null) lines.push(['log', d.logFile])
  lines.push(['', ''])
  const c = s.cache
  lines.push(['cache', `${formatBytes(c.bytes)} in ${c.blobs} blobs, ${c.manifests} manifests, ${c.tags} tags`])
  if (c.notWritable !== undefined) lines.push(['', `cache not writable: ${c.notWritable}`])
  if (c.tempFiles > 0) lines.push(['temp files', `${formatBytes(c.tempBytes)} in ${c.tempFiles} (downloads in progress, or left by a crash)`])
  if (c.cacheHits === null || c.cacheMisses === null) {
    lines.push(['traffic', 'unknown (counted by the running daemon)'])
  } else {
    const ratio = c.hitRatio === null ? 'no requests yet' : percent(c.hitRatio)
    lines.push(['hit ratio', `${ratio} (${c.cacheHits} hits, ${c.cacheMisses} misses)`])
    lines.push(['served', `${formatBytes(c.bytesFromCache ?? 0)} from cache, ${formatBytes(c.bytesFromUpstream ?? 0)} from upstream`])
    lines.push([
      'manifests',
      `${c.upstreamManifestGets} upstream GETs, ${c.upstreamManifestHeads} HEADs, ${c.manifestGetsAvoided} GETs avoided`,
    ])
  }
  if (s.refresh) {
    const r = s.refresh
    const last = r.lastRun
      ? `last ${r.lastRun.startedAt}: ${r.lastRun.checked} checked, ${r.lastRun.refreshed} refreshed, ${r.lastRun.failed} failed, ${r.lastRun.paused} paused`
      : 'not run yet'
    const next = r.running ? 'running now' : r.nextRun ? `next ${r.nextRun}` : ''
    lines.push(['refresh', `every ${formatAge(r.intervalSeconds)}; ${last}${next ? `; ${next}` : ''}`])
  }
  lines.push(['', ''])
  const labelWidth = Math.max(12, ...lines.map(([label]) => label.length + 2))
  const out = lines.map(([label, value]) => (label || value ? `${label.padEnd(labelWidth)}${value}`.trimEnd() : ''))
  out.push('rate limits')
  const width = Math.max(...s.rateLimit.map((r) => r.registry.length))
  for (const r of s.rateLimit) {
    const reading = describeReading(r)
    out.push(`  ${r.registry.padEnd(width)}  ${describeLimit(r)}${reading ? `  (${reading})` : ''}`)
  }
  const chains = describeEndpoints(s.endpoints ?? [])
  if (chains.length > 0) {
    out.push('', 'upstream endpoints (asked in this order)')
    for (const line of chains) out.push(`  ${line}`)
  }
  if (s.clients !== undefined && s.clients.length > 0) {
    out.push('', 'client logins (last use)')
    const nameWidth = Math.max(...s.clients.map((c) => c.name.length))
    for (const c of s.clients) out.push(`  ${c.name.padEnd(nameWidth)}  ${c.lastUsed ?? 'never'}`)
  }
  if (s.recentFailures.length > 0) {
    out.push('', 'recent failures (what clients asked and why dproxy could not serve it)')
    for (const line of describeFailures(s.recentFailures)) out.push(`  ${line}`)
  }
  return out.join('\n') + '\n'
}

/**
 * Whether to draw the ink view: a terminal with a known width, and not CI (CI
 * logs keep escape codes as noise). A pseudo-terminal of width 0 (`script`
 * without a size) would make ink wrap every character.
 */
export function wantsInteractive(stdout: NodeJS.WritableStream, env: NodeJS.ProcessEnv): boolean {
  const tty = stdout as { isTTY?: boolean; columns?: number }
  const ci = env.CI !== undefined && env.CI !== '' && env.CI !== 'false'
  return tty.isTTY === true && (tty.columns ?? 0) > 0 && !ci
}

interface StatusFlags {
  json?: boolean
  probe: boolean
  cacheDir?: string
  watch?: boolean
}

export function registerStatusCommand(program: Command, ctx: CliContext): void {
  program
    .command('top')
    .description('watch the daemon work: same as dproxy status --watch')
    .option('--json', 'print the events as JSON lines')
    .option('--cache-dir <dir>', 'the daemon to watch (default: the one of the configured cache dir)')
    .action(async (flags: Omit<StatusFlags, 'probe'>) => watchDaemon(flags, ctx))
  program
    .command('status')
    .description("show whether the daemon runs, what the cache holds, and Docker Hub's rate limit")
    .option('--json', 'print one JSON object')
    .option('--no-probe', "don't ask Docker Hub; show the daemon's last rate-limit reading")
    .option('--cache-dir <dir>', 'the cache (and daemon) to report on (default: the configured one)')
    .option('-w, --watch', 'follow what the daemon does, live (on a terminal: a view that q quits; with --json: events as JSON lines)')
    .addHelpText('after', '\nExit status: 0 (running or not; see daemon.running in --json), 1 on failure. See dproxy-status(1).')
    .action(async (flags: StatusFlags) => {
      if (flags.watch) return watchDaemon(flags, ctx)
      const settings = resolveSettings({
        flags: flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {},
        env: ctx.env,
      })
      const snapshot = await collectStatus({
        cacheDir: settings.cacheDir,
        upstreams: settings.upstreams,
        credentials: lazyCredentials(settings.configDir, ctx.env, settings.dockerCredentials),
        probe: flags.probe,
      })
      if (flags.json) {
        ctx.stdout.write(JSON.stringify(snapshot, null, 2) + '\n')
      } else if (wantsInteractive(ctx.stdout, ctx.env)) {
        const { renderStatus } = await import('../ui/StatusView.js')
        await renderStatus(snapshot, ctx.stdout)
      } else {
        ctx.stdout.write(formatStatusText(snapshot))
      }
    })
}

/**
 * `status --watch` and `top`: the daemon's event stream, as JSON lines
 * (--json), as the live ink view (a terminal, CI unset), or as plain lines:
 * one per request and, while downloads run, one per download a second.
 */
async function watchDaemon(flags: Pick<StatusFlags, 'json' | 'cacheDir'>, ctx: CliContext): Promise<void> {
  const settings = resolveSettings({ flags: flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {}, env: ctx.env })
  const { readDaemonLock } = await import('../daemon/lifecycle.js')
  const lock = await readDaemonLock(settings.cacheDir)
  if (!lock?.alive || lock.info.url === undefined) {
    throw new DproxyError('START_FAILED', `dproxy is not running with cache dir ${settings.cacheDir} (dproxy start runs it)`)
  }
  const controller = new AbortController()
  const stop = () => controller.abort()
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  const { daemonEvents } = await import('../control/events.js')
  const { AdminClient } = await import('../control/admin-client.js')
  const client = new AdminClient(lock.info.url, lock.info.tlsCertificate !== undefined ? { pin: lock.info.tlsCertificate } : {})
  try {
    if (!flags.json && wantsInteractive(ctx.stdout, ctx.env)) {
      const { watchLive } = await import('../ui/WatchView.js')
      const stdin = (ctx as CliContext & { stdin?: NodeJS.ReadableStream }).stdin ?? process.stdin
      await watchLive({ events: daemonEvents(client, controller.signal), source: lock.info.url, onQuit: stop, stdout: ctx.stdout, stdin })
      return
    }
    for await (const e of daemonEvents(client, controller.signal)) {
      if (flags.json) ctx.stdout.write(`${JSON.stringify(e)}\n`)
      else for (const line of describeEvent(e)) ctx.stdout.write(`${line}\n`)
    }
  } finally {
    process.off('SIGINT', stop)
    process.off('SIGTERM', stop)
  }
}

/** Plain lines for one event: requests as the access log writes them, downloads in progress with their progress. */
export function describeEvent(e: StreamEvent): string[] {
  if (e.event === 'request') return [requestLine(e.data as RequestRecord)]
  if (e.event !== 'snapshot') return []
  const snap = e.data as Snapshot
  return snap.downloads.map((d) => {
    const total = d.size === undefined ? '?' : formatBytes(d.size)
    return `downloading ${d.image} ${d.digest.slice(7, 19)} ${formatBytes(d.written)}/${total}, ${d.clients} waiting`
  })
}
