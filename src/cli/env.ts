// `dproxy env`: prints the client credentials (user dproxy and the generated
// password, created on first use; `--rotate` replaces it) with the server
// address and image prefix, as GitLab's CI_DEPENDENCY_PROXY_* variables in the
// format asked for. `--for NAME` prints them for a token (dproxy token) of
// that name instead: made now, because a stored token's secret cannot be read
// back (only its hash is kept); `--for NAME --rotate` replaces its secret. The password goes to stdout only, because that is what was
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
  for?: string
  expires?: string
  repos?: string
}

export function registerEnvCommand(program: Command, ctx: CliContext): void {
  program
    .command('env')
    .description('print the client login and image prefix as CI_DEPENDENCY_PROXY_* variables (eval "$(dproxy env)")')
    .addOption(new Option('--format <format>', 'output format').choices(ENV_FORMATS).default('shell'))
    .option('--json', 'same as --format json')
    .option('--host <host[:port]>', 'how clients reach the daemon (default: where the running daemon listens, else localhost and the configured port)')
    .option('--rotate', 'replace the client password (or with --for, that token\'s secret); the old one stops working')
    .option('--for <name>', 'the variables for the token NAME (dproxy token): created now when missing; an existing one needs --rotate')
    .option('--expires <duration>', "with --for, when creating: refuse the token after this long (e.g. '90d')")
    .option('--repos <pattern>', "with --for, when creating: pull only matching repositories (e.g. 'docker.io/library/*')")
    .action(async (flags: EnvFlags) => {
      await env(flags, ctx)
    })
}

export async function env(flags: EnvFlags, ctx: CliContext): Promise<void> {
  const [{ resolveSettings }, { openCredentialStore }, { ensureClientSecret, CLIENT_SECRET_CACHE_MS, CLIENT_USERNAME }, { readDaemonLock }, { DproxyError }] =
    await Promise.all([
      import('../config/settings.js'),
      import('../credentials/index.js'),
      import('../daemon/clientauth.js'),
      import('../daemon/lifecycle.js'),
      import('../errors.js'),
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
  if (flags.for !== undefined && flags.for !== CLIENT_USERNAME) {
    await tokenEnv(flags, flags.for, { stateDir: settings.stateDir, cacheDir: settings.cacheDir, credentials: async () => store }, server, format, ctx)
    return
  }
  if (flags.expires !== undefined || flags.repos !== undefined) {
    throw new DproxyError('USAGE', `--expires and --repos go with --for NAME (the built-in user ${CLIENT_USERNAME} never expires and may pull everything)`)
  }
  const client = await ensureClientSecret(store, { rotate: flags.rotate === true })
  const text = formatEnv(clientEnv({ username: client.username, password: client.secret, server }), format)
  ctx.stdout.write(text)
  if (flags.rotate) {
    ctx.stderr.write(
      `dproxy: new client password stored; a running daemon stops accepting the old one within ${CLIENT_SECRET_CACHE_MS / 1000} s\n`,
    )
  }
}

/**
 * `env --for NAME`: a token's secret is stored hashed, so it can be printed
 * only when it is made. A missing NAME is created now; an existing one is
 * refused unless --rotate, which gives it a new secret (the old one stops
 * working within seconds).
 */
async function tokenEnv(
  flags: EnvFlags,
  name: string,
  place: import('../control/tokens.js').TokenPlace,
  server: string,
  format: EnvFormat,
  ctx: CliContext,
): Promise<void> {
  const [tokens, { checkTokenName }, { DproxyError }] = await Promise.all([
    import('../control/tokens.js'),
    import('../credentials/tokens.js'),
    import('../errors.js'),
  ])
  checkTokenName(name)
  const exists = await tokens.tokenExists(place, name)
  let made: { name: string; token: string }
  if (exists) {
    if (!flags.rotate) {
      throw new DproxyError(
        'USAGE',
        `token ${name} exists, and its secret is stored hashed: it cannot be printed again. ` +
          `Pass --rotate to give it a new secret (the old one stops working), or use another name`,
      )
    }
    if (flags.expires !== undefined || flags.repos !== undefined) {
      throw new DproxyError('USAGE', `--expires and --repos apply when env --for creates a token; ${name} exists (revoke and create it to change them)`)
    }
    made = await tokens.rotateToken(place, name)
  } else {
    made = await tokens.createToken(place, name, {
      ...(flags.expires !== undefined ? { expires: flags.expires } : {}),
      ...(flags.repos !== undefined ? { repos: flags.repos } : {}),
    })
  }
  ctx.stdout.write(formatEnv(clientEnv({ username: made.name, password: made.token, server }), format))
  ctx.stderr.write(
    exists
      ? `dproxy: token ${name} has a new secret, shown only now; a running daemon refuses the old one within seconds\n`
      : `dproxy: token ${name} created; its secret is shown only now (dproxy env --for ${name} --rotate makes a new one)\n`,
  )
}
