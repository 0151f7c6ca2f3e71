// `dproxy serve`: runs the daemon in the foreground until SIGINT or SIGTERM.
// It resolves settings (flags > environment > config file > defaults), starts
// the daemon, says where it listens and where the cache is, and on a signal
// lets in-flight responses finish (bounded) before exiting 0.

import type { Command } from 'commander'
import { resolveSettings, type RawSettings } from '../config/settings.js'
import { Daemon, formatHost } from '../daemon/daemon.js'
import { streamLogger } from '../log.js'
import type { CliContext } from './program.js'

interface ServeFlags {
  host?: string
  port?: string
  cacheDir?: string
  upstream?: string[]
  maxAge?: string
}

export function registerServeCommand(program: Command, ctx: CliContext): void {
  program
    .command('serve')
    .description('run the registry cache daemon in the foreground')
    .option('--host <addr>', 'address(es) to listen on, comma separated (default: 127.0.0.1 and ::1)')
    .option('--port <n>', 'port to listen on (default: 5000)')
    .option('--cache-dir <dir>', 'where cached blobs and manifests live (default: the user data dir)')
    .option(
      '--upstream <host=url>',
      'contact URL for a registry host, e.g. docker.io=http://127.0.0.1:15000 (repeatable)',
      (value: string, prev: string[] = []) => [...prev, value],
    )
    .option('--max-age <duration>', "serve a tag checked within this long without asking upstream (e.g. '10m'; default 0)")
    .action(async (flags: ServeFlags) => {
      await serve(flags, ctx)
    })
}

export async function serve(flags: ServeFlags, ctx: CliContext): Promise<void> {
  const raw: RawSettings = {
    ...(flags.host !== undefined ? { host: flags.host } : {}),
    ...(flags.port !== undefined ? { port: flags.port } : {}),
    ...(flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {}),
    ...(flags.upstream !== undefined ? { upstreams: flags.upstream } : {}),
    ...(flags.maxAge !== undefined ? { maxAge: flags.maxAge } : {}),
  }
  const settings = resolveSettings({ flags: raw, env: ctx.env })
  const log = streamLogger(ctx.stderr)
  const daemon = await Daemon.start({
    hosts: settings.hosts,
    port: settings.port,
    cacheDir: settings.cacheDir,
    upstreams: settings.upstreams,
    maxAgeMs: settings.maxAgeMs,
    log,
  })
  ctx.stdout.write(`cache: ${settings.cacheDir}\n`)
  for (const [registry, url] of Object.entries(settings.upstreams)) ctx.stdout.write(`upstream: ${registry} -> ${url}\n`)
  for (const a of daemon.listening) ctx.stdout.write(`dproxy listening on http://${formatHost(a.host)}:${a.port}\n`)
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      log.info(`${signal}: finishing requests in flight, then stopping`)
      void daemon.stop().then(resolve)
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
  log.info('stopped')
}
