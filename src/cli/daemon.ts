// `dproxy start` (= `dproxy serve --detach`) and `dproxy stop`: the daemon in
// the background. Both are adapters over startDetached / stopDaemon in
// src/daemon/lifecycle.ts, which find the daemon through its cache dir's
// daemon.json and its pid file in the state dir (one per cache dir).
//
// `start` takes exactly the options of `serve` (copied from the serve command,
// so registerDaemonCommands must run after registerServeCommand). The options
// given on the command line are passed on to the background `serve` as they
// were typed, except --cache-dir, which is passed resolved (absolute), so the
// child uses exactly the cache dir that was checked for a running daemon.
//
// `stop` when nothing runs says "dproxy is not running" and exits 0, like
// `systemctl stop` of a stopped unit: scripts can stop unconditionally.

import { fileURLToPath } from 'node:url'
import type { Command } from 'commander'
import { resolveSettings } from '../config/settings.js'
import { parseDuration } from '../config/units.js'
import { startDetached, stopDaemon, type Started } from '../control/lifecycle.js'
import type { CliContext } from './program.js'
import { flagSettings } from './serve-flags.js'

/** bin/dproxy.js, from dist/cli (the binary) and src/cli (tests) alike. */
export const binPath = fileURLToPath(new URL('../../bin/dproxy.js', import.meta.url))

/** Options of `serve` that `start` does not take or that are not passed on as typed. */
const NOT_FORWARDED = new Set(['detach', 'logFile', 'json', 'cacheDir'])

/** The options given on the command line, as flags again (repeatable options repeated). */
export function forwardedArgs(cmd: Command, skip: ReadonlySet<string> = NOT_FORWARDED): string[] {
  const out: string[] = []
  for (const opt of cmd.options) {
    const key = opt.attributeName()
    if (skip.has(key) || cmd.getOptionValueSource(key) !== 'cli') continue
    const flag = opt.long ?? opt.short
    if (flag === undefined) continue
    const value: unknown = cmd.getOptionValue(key)
    if (typeof value === 'boolean') {
      // `--x` sets true, `--no-x` sets false: either way, the flag as declared.
      if (value === !opt.negate) out.push(flag)
    } else if (Array.isArray(value)) {
      for (const v of value) out.push(flag, String(v))
    } else if (value !== undefined) {
      out.push(flag, String(value))
    }
  }
  return out
}

function printStarted(s: Started, ctx: CliContext, json: boolean): void {
  if (json) {
    ctx.stdout.write(JSON.stringify(s, null, 2) + '\n')
    return
  }
  const scheme = s.url.startsWith('https:') ? 'https' : 'http'
  const urls = s.listen.map((a) => `${scheme}://${a}`)
  ctx.stdout.write(
    [
      `dproxy started (pid ${s.pid})`,
      `listening on ${urls.join(', ')}`,
      `cache: ${s.cacheDir}`,
      `log: ${s.logFile}`,
      'stop it with: dproxy stop',
      '',
    ].join('\n'),
  )
}

/**
 * `serve --detach` and `start`: checks the settings here, as `serve` would (so a bad one is exit 2 with
 * serve's message, and no daemon is started), then starts `serve` in the background.
 */
export async function detach(cmd: Command, ctx: CliContext, opts: { json?: boolean } = {}): Promise<void> {
  // Loaded here: `stop` shares this file and needs none of the daemon.
  const [{ refuseExposureWithoutAuth }, { tlsConfigOf }] = await Promise.all([import('../daemon/daemon.js'), import('../daemon/tls-config.js')])
  const settings = resolveSettings({ flags: flagSettings(cmd.opts()), env: ctx.env })
  refuseExposureWithoutAuth(settings.hosts, settings.auth, { tls: tlsConfigOf(settings) !== undefined, insecureLan: settings.insecureLan })
  const started = await startDetached({
    cacheDir: settings.cacheDir,
    stateDir: settings.stateDir,
    binPath,
    serveArgs: forwardedArgs(cmd),
    env: ctx.env,
  })
  printStarted(started, ctx, opts.json === true)
}

export function registerDaemonCommands(program: Command, ctx: CliContext): void {
  const serve = program.commands.find((c) => c.name() === 'serve')
  const start = program
    .command('start')
    .description('run the registry cache daemon in the background (same as serve --detach)')
    .addHelpText('after', '\nThe output goes to <stateDir>/dproxy-<key>.log, the pid to <stateDir>/dproxy-<key>.pid (key: a hash of the cache dir). See dproxy-start(1).')
  for (const opt of serve?.options ?? []) {
    if (opt.attributeName() !== 'detach' && opt.attributeName() !== 'logFile') start.addOption(opt)
  }
  start.option('--json', 'print pid, addresses, cache dir and log file as JSON').action(async (flags: { json?: boolean }, cmd: Command) => {
    await detach(cmd, ctx, { json: flags.json === true })
  })

  program
    .command('stop')
    .description('stop the background daemon (SIGTERM, then wait for it to exit)')
    .option('--cache-dir <dir>', 'stop the daemon using this cache dir (default: the configured one)')
    .option('--timeout <duration>', 'how long to wait for it to exit', '15s')
    .option('--json', 'print the outcome as JSON')
    .action(async (flags: { cacheDir?: string; timeout: string; json?: boolean }) => {
      const settings = resolveSettings({ flags: flagSettings(flags), env: ctx.env })
      const timeoutMs = parseDuration(flags.timeout, 'timeout')
      const result = await stopDaemon({ cacheDir: settings.cacheDir, stateDir: settings.stateDir, timeoutMs })
      if (flags.json) {
        ctx.stdout.write(JSON.stringify(result, null, 2) + '\n')
        return
      }
      if (!result.stopped) {
        ctx.stdout.write('dproxy is not running\n')
        for (const file of result.cleaned) ctx.stdout.write(`removed stale ${file}\n`)
        return
      }
      ctx.stdout.write(`dproxy stopped (pid ${result.pid})\n`)
    })
}
