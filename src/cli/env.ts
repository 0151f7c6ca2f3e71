// `dproxy env`: prints the client credentials (user dproxy and the generated
// password, created on first use; `--rotate` replaces it) with the server
// address and image prefix, as GitLab's CI_DEPENDENCY_PROXY_* variables in the
// format asked for. The password goes to stdout only, because that is what was
// asked for; never to stderr or a log.
//
// The server is `--host` when given, else where the daemon that owns the
// configured cache dir listens (its lock file), else the configured port on
// localhost.
//
// Scripts call this on every CI job, so it stays cheap: this file imports only
// commander's types and the formatting module; settings and the credential
// store are loaded when the command runs.

import { Option, type Command } from 'commander'
import { clientEnv, ENV_FORMATS, formatEnv, parseEnvFormat, serverAddress, serverFromListen, type EnvFormat } from '../control/clientenv.js'
import type { CliContext } from './program.js'

interface EnvFlags {
  format: EnvFormat
  json?: boolean
  host?: string
  rotate?: boolean
}

export function registerEnvCommand(program: Command, ctx: CliContext): void {
  program
    .command('env')
    .description('print the client login and image prefix as CI_DEPENDENCY_PROXY_* variables (eval "$(dproxy env)")')
    .addOption(new Option('--format <format>', 'output format').choices(ENV_FORMATS).default('shell'))
    .option('--json', 'same as --format json')
    .option('--host <host[:port]>', 'how clients reach the daemon (default: where the running daemon listens, else localhost and the configured port)')
    .option('--rotate', 'replace the client password; the old one (and tokens issued with it) stop working')
    .action(async (flags: EnvFlags) => {
      await env(flags, ctx)
    })
}

export async function env(flags: EnvFlags, ctx: CliContext): Promise<void> {
  const [{ resolveSettings }, { openCredentialStore }, { ensureClientSecret, CLIENT_SECRET_CACHE_MS }, { readDaemonLock }] =
    await Promise.all([
      import('../config/settings.js'),
      import('../credentials/index.js'),
      import('../daemon/clientauth.js'),
      import('../daemon/lifecycle.js'),
    ])
  const format = flags.json ? 'json' : parseEnvFormat(flags.format)
  const settings = resolveSettings({ env: ctx.env })
  const lock = flags.host === undefined ? await readDaemonLock(settings.cacheDir) : undefined
  const running = lock?.alive ? serverFromListen(lock.info.listen) : undefined
  const server = serverAddress(flags.host ?? running, settings.port)
  const store = await openCredentialStore({
    configDir: settings.configDir,
    env: ctx.env,
    onFallback: (reason) => ctx.stderr.write(`dproxy: note: ${reason}\n`),
  })
  const client = await ensureClientSecret(store, { rotate: flags.rotate === true })
  const text = formatEnv(clientEnv({ username: client.username, password: client.secret, server }), format)
  ctx.stdout.write(text)
  if (flags.rotate) {
    ctx.stderr.write(
      `dproxy: new client password stored; a running daemon stops accepting the old one within ${CLIENT_SECRET_CACHE_MS / 1000} s\n`,
    )
  }
}
