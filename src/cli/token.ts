// `dproxy token create|ls|revoke`: one login per person or CI runner for a
// daemon that requires client auth (credentials/tokens.ts says how they are
// stored and why). `create` prints the token once: it is stored hashed, so
// nothing can print it again (`dproxy env --for NAME --rotate` makes a new
// one). `ls` never shows a secret. All of it works on the state dir's files,
// with or without a running daemon; a running one sees a change within about
// a second.

import type { Command } from 'commander'
import type { CliContext } from './program.js'

interface CreateFlags {
  expires?: string
  repos?: string
  json?: boolean
}

export function registerTokenCommand(program: Command, ctx: CliContext): void {
  const token = program.command('token').description('client logins per person or CI runner: create, ls, revoke')
  token
    .command('create')
    .description('create a token and print it once (log in with: docker login HOST -u NAME -p TOKEN)')
    .argument('<name>', "the token's name and login user name (letters, digits, '.', '_', '-'; at most 64)")
    .option('--expires <duration>', "refuse the token after this long, e.g. '90d' (default: never)")
    .option('--repos <pattern>', "pull only matching repositories, e.g. 'docker.io/library/*' (comma-separated globs)")
    .option('--json', 'print {"name","token","expires"}')
    .action(async (name: string, flags: CreateFlags) => {
      const { createToken } = await import('../control/tokens.js')
      const created = await createToken(await place(ctx), name, {
        ...(flags.expires !== undefined ? { expires: flags.expires } : {}),
        ...(flags.repos !== undefined ? { repos: flags.repos } : {}),
      })
      if (flags.json) {
        ctx.stdout.write(`${JSON.stringify({ name: created.name, token: created.token, expires: created.expires })}\n`)
        return
      }
      ctx.stdout.write(`${created.token}\n`)
      ctx.stderr.write(
        `dproxy: token ${created.name} created${created.expires ? `, expires ${created.expires}` : ''}; it is shown only now. ` +
          `Log in with: docker login HOST:PORT -u ${created.name} --password-stdin\n`,
      )
    })
  token
    .command('ls')
    .description('list the tokens: name, created, last used, expiry, repositories (never a secret)')
    .option('--json', 'print a JSON array')
    .action(async (flags: { json?: boolean }) => {
      const { listTokens } = await import('../control/tokens.js')
      const tokens = await listTokens(await place(ctx))
      if (flags.json) {
        ctx.stdout.write(`${JSON.stringify(tokens, null, 2)}\n`)
        return
      }
      if (tokens.length === 0) {
        ctx.stdout.write('no tokens (dproxy token create NAME makes one; the built-in user dproxy is dproxy env)\n')
        return
      }
      const rows = [
        ['NAME', 'CREATED', 'LAST USED', 'EXPIRES', 'REPOS'],
        ...tokens.map((t) => [t.name, t.created, t.lastUsed ?? 'never', t.expires ?? 'never', t.repos ?? 'all']),
      ]
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
      for (const r of rows) ctx.stdout.write(`${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}\n`)
    })
  token
    .command('revoke')
    .description('remove a token; a running daemon refuses it (and bearer tokens issued for it) within seconds')
    .argument('<name>', "the token's name")
    .option('--json', 'print {"name","revoked"}')
    .action(async (name: string, flags: { json?: boolean }) => {
      const { revokeToken } = await import('../control/tokens.js')
      const { DproxyError } = await import('../errors.js')
      const revoked = await revokeToken(await place(ctx), name)
      if (flags.json) ctx.stdout.write(`${JSON.stringify({ name, revoked })}\n`)
      if (!revoked) throw new DproxyError('USAGE', `no token named '${name}' (dproxy token ls lists them)`)
      if (!flags.json) ctx.stdout.write(`token ${name} revoked\n`)
    })
}

async function place(ctx: CliContext): Promise<import('../control/tokens.js').TokenPlace> {
  const [{ resolveSettings }, { openCredentialStore }] = await Promise.all([import('../config/settings.js'), import('../credentials/index.js')])
  const settings = resolveSettings({ env: ctx.env })
  return {
    stateDir: settings.stateDir,
    cacheDir: settings.cacheDir,
    credentials: () =>
      openCredentialStore({ configDir: settings.configDir, env: ctx.env, onFallback: (reason) => ctx.stderr.write(`dproxy: note: ${reason}\n`) }),
  }
}
