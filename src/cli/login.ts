// `dproxy login [REGISTRY]` and `dproxy logout [REGISTRY]`, shaped like
// `docker login`: the user name and password are asked for on a terminal (the
// password without echo), or the password is read from stdin with
// --password-stdin. There is deliberately no -p: a secret in the arguments is
// visible to every user of the machine in the process list.
//
// The credentials are checked against the registry before they are stored
// (upstream/login.ts); the store is the OS keychain when one answers, else a
// 0600 file, and the output says which. A running daemon picks the change up
// within seconds.

import type { Command } from 'commander'
import type { CliContext } from './program.js'
import { UsageError } from './fatal.js'

interface LoginFlags {
  username?: string
  passwordStdin?: boolean
  upstream?: string[]
  json?: boolean
  list?: boolean
  /** Commander's value for --no-docker-credentials: false when given. */
  dockerCredentials?: boolean
}

interface LogoutFlags {
  json?: boolean
}

/** Where the password comes from; process.stdin unless a test passes another. */
type Input = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown; isRaw?: boolean }

const STDIN_CAP = 64 * 1024

export function registerLoginCommands(program: Command, ctx: CliContext): void {
  program
    .command('login')
    .description('log in to an upstream registry (default: Docker Hub); the daemon uses the login for its pulls')
    .argument('[registry]', 'registry host, e.g. ghcr.io (default: docker.io)')
    .option('-u, --username <user>', 'user name (asked for on a terminal when omitted)')
    .option('--password-stdin', 'read the password or access token from stdin (one line)')
    .option(
      '--upstream <host=url>',
      'contact URL for a registry host, as for dproxy serve (repeatable)',
      (value: string, prev: string[] = []) => [...prev, value],
    )
    .option('--json', 'print the result as JSON (never the password)')
    .option('--list', 'list the logins the daemon uses, per registry: user and where it comes from (never the secret)')
    .option('--no-docker-credentials', "with --list: only dproxy login's logins, not docker's or podman's")
    .action(async (registry: string | undefined, flags: LoginFlags) => {
      if (flags.list) await listLogins(registry, flags, ctx)
      else await loginCommand(registry, flags, ctx, process.stdin)
    })
  program
    .command('logout')
    .description('remove the stored login for an upstream registry (default: Docker Hub)')
    .argument('[registry]', 'registry host (default: docker.io)')
    .option('--json', 'print the result as JSON')
    .action(async (registry: string | undefined, flags: LogoutFlags) => {
      await logoutCommand(registry, flags, ctx)
    })
}

export async function loginCommand(registryArg: string | undefined, flags: LoginFlags, ctx: CliContext, input: Input): Promise<void> {
  const [{ resolveSettings }, credentials, { login, loginRegistry }] = await Promise.all([
    import('../config/settings.js'),
    import('../credentials/index.js'),
    import('../upstream/login.js'),
  ])
  const registry = loginRegistry(registryArg)
  const settings = resolveSettings({ env: ctx.env, flags: flags.upstream ? { upstreams: flags.upstream } : {} })
  if (flags.passwordStdin && flags.username === undefined) {
    throw new UsageError('with --password-stdin, give the user name with -u/--username')
  }
  if (!flags.passwordStdin && !(input.isTTY && input.setRawMode)) {
    throw new UsageError('stdin is not a terminal: pipe the password in and pass --password-stdin with -u USER')
  }
  const store = await credentials.openCredentialStore({
    configDir: settings.configDir,
    env: ctx.env,
    onFallback: (reason) => ctx.stderr.write(`dproxy: note: ${reason}\n`),
  })
  let username = flags.username
  if (username === undefined) {
    const previous = (await store.get(registry).catch(() => undefined))?.username
    const typed = await promptLine(input, ctx.stderr, previous ? `Username (${previous}): ` : 'Username: ', true)
    username = typed === '' && previous ? previous : typed
  }
  const secret = flags.passwordStdin ? await readPassword(input) : await promptLine(input, ctx.stderr, 'Password: ', false)
  const result = await login({ registry, credential: { username, secret }, store, upstreams: settings.upstreams })
  const file = store instanceof credentials.FileCredentialStore ? store.path : undefined
  if (flags.json) {
    ctx.stdout.write(`${JSON.stringify({ ...result, ...(file ? { path: file } : {}) }, null, 2)}\n`)
    return
  }
  const where = file ? `${file} (mode 0600)` : 'the OS keychain'
  ctx.stdout.write(`Login Succeeded\n${result.username} @ ${result.registry} (checked at ${result.upstream}), stored in ${where}\n`)
}

export interface LoginListEntry {
  registry: string
  username: string
  /** "dproxy keychain", "docker credsStore secretservice", "docker config.json auths", "podman auth.json" */
  source: string
}

/**
 * `dproxy login --list`: per registry, the login the daemon would use (dproxy's
 * own first, then docker's and podman's, as the daemon looks them up) and
 * where it is from. Secrets are never read into the output: helpers are asked
 * `list` where the protocol allows, and only user names are kept. Sources that
 * fail are named on stderr, and the list goes on.
 */
export async function listLogins(registryArg: string | undefined, flags: LoginFlags, ctx: CliContext): Promise<void> {
  const [{ resolveSettings }, credentials, { listMachineLogins }, { storeSourceName }, { loginRegistry }] = await Promise.all([
    import('../config/settings.js'),
    import('../credentials/index.js'),
    import('../credentials/docker-config.js'),
    import('../credentials/logins.js'),
    import('../upstream/login.js'),
  ])
  const only = registryArg === undefined ? undefined : loginRegistry(registryArg)
  const settings = resolveSettings({ env: ctx.env, flags: flags.dockerCredentials === false ? { dockerCredentials: false } : {} })
  const problems: string[] = []
  const entries = new Map<string, LoginListEntry>()
  try {
    const store = await credentials.openCredentialStore({ configDir: settings.configDir, env: ctx.env })
    for (const { registry, username } of await store.list()) {
      if (registry !== credentials.CLIENT_SECRET_KEY && registry !== credentials.TOKEN_KEY_ENTRY) entries.set(registry, { registry, username, source: storeSourceName(store.kind) })
    }
  } catch (err) {
    problems.push(`dproxy's credential store: ${(err as Error).message}`)
  }
  if (settings.dockerCredentials) {
    for (const found of await listMachineLogins({ env: ctx.env, onProblem: (p) => problems.push(p) })) {
      if (!entries.has(found.registry)) entries.set(found.registry, { registry: found.registry, username: found.username, source: found.source })
    }
  }
  const logins = [...entries.values()].filter((e) => only === undefined || e.registry === only).sort((a, b) => a.registry.localeCompare(b.registry))
  if (flags.json) {
    ctx.stdout.write(`${JSON.stringify({ logins, dockerCredentials: settings.dockerCredentials, problems }, null, 2)}\n`)
    return
  }
  for (const p of problems) ctx.stderr.write(`dproxy: note: passed over ${p}\n`)
  if (logins.length === 0) {
    ctx.stdout.write(only ? `no login for ${only}\n` : 'no logins\n')
    return
  }
  const rows = [['REGISTRY', 'USER', 'SOURCE'], ...logins.map((e) => [e.registry, e.username, e.source])]
  const widths = [0, 1].map((i) => Math.max(...rows.map((r) => r[i]!.length)) + 2)
  for (const r of rows) ctx.stdout.write(`${r[0]!.padEnd(widths[0]!)}${r[1]!.padEnd(widths[1]!)}${r[2]}\n`)
}

export async function logoutCommand(registryArg: string | undefined, flags: LogoutFlags, ctx: CliContext): Promise<void> {
  const [{ resolveSettings }, credentials, { logout, loginRegistry }] = await Promise.all([
    import('../config/settings.js'),
    import('../credentials/index.js'),
    import('../upstream/login.js'),
  ])
  const registry = loginRegistry(registryArg)
  const settings = resolveSettings({ env: ctx.env })
  const store = await credentials.openCredentialStore({ configDir: settings.configDir, env: ctx.env })
  const stores = [store]
  // A login made while credentials.json did not exist is in the keychain, and the other way round.
  if (store.kind === 'keychain') stores.push(new credentials.FileCredentialStore(settings.configDir))
  let removedFrom = await logout(registry, stores)
  if (removedFrom.length === 0 && store.kind === 'file' && !ctx.env.DPROXY_CREDENTIAL_STORE) {
    const keychain = await credentials
      .openCredentialStore({ configDir: settings.configDir, env: { ...ctx.env, DPROXY_CREDENTIAL_STORE: 'keychain' } })
      .catch(() => undefined)
    if (keychain) removedFrom = await logout(registry, [keychain])
  }
  if (flags.json) {
    ctx.stdout.write(`${JSON.stringify({ registry, removed: removedFrom.length > 0, from: removedFrom }, null, 2)}\n`)
    return
  }
  ctx.stdout.write(removedFrom.length > 0 ? `Removing login credentials for ${registry}\n` : `Not logged in to ${registry}\n`)
}

/** All of stdin (bounded), minus one trailing newline, as `docker login --password-stdin` reads it. */
async function readPassword(input: Input): Promise<string> {
  const chunks: Buffer[] = []
  let total = 0
  for await (const chunk of input) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk)
    total += buf.length
    if (total > STDIN_CAP) throw new UsageError(`the password on stdin is over ${STDIN_CAP} bytes`)
    chunks.push(buf)
  }
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
}

/**
 * Reads one line from a terminal in raw mode, echoing it or not. Handles
 * backspace, ignores other control keys and escape sequences (arrows), and
 * treats Ctrl-C and Ctrl-D on an empty line as "cancelled".
 */
function promptLine(input: Input, output: NodeJS.WritableStream, prompt: string, echo: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let value = ''
    const wasRaw = input.isRaw === true
    input.setRawMode?.(true)
    output.write(prompt)
    const finish = (err?: Error) => {
      input.off('data', onData)
      input.off('end', onEnd)
      input.setRawMode?.(wasRaw)
      input.pause()
      output.write('\n')
      if (err) reject(err)
      else resolve(value)
    }
    const cancelled = () => new UsageError('login cancelled')
    const onEnd = () => finish(cancelled())
    const onData = (chunk: Buffer | string) => {
      const text = chunk.toString()
      for (let i = 0; i < text.length; i++) {
        const ch = text[i]!
        if (ch === '\r' || ch === '\n') return finish()
        if (ch === '\u0003') return finish(cancelled())
        if (ch === '\u0004') return value === '' ? finish(cancelled()) : finish()
        if (ch === '\u007f' || ch === '\b') {
          if (value !== '') {
            value = Array.from(value).slice(0, -1).join('')
            if (echo) output.write('\b \b')
          }
          continue
        }
        if (ch === '\u001b') {
          // CSI sequences (arrows, Home, Delete): ESC [ parameters final-byte.
          if (text[i + 1] === '[') {
            i += 2
            while (i < text.length && !/[@-~]/.test(text[i]!)) i++
          }
          continue
        }
        if (ch < ' ') continue
        value += ch
        if (echo) output.write(ch)
      }
    }
    input.on('data', onData)
    input.on('end', onEnd)
    input.resume()
  })
}
