// The commander program: one place that lists the commands and turns failures
// into exit codes (0 ok, 1 failure, 2 usage error: the FatalError each failure
// becomes says which, see fatal.ts). Each command lives in its
// own file and only parses options, calls plain functions and prints; the
// daemon's core never imports anything from here.
//
// Start-up time matters (`dproxy env` and `dproxy status --json` run in CI
// scripts): a command's module graph (undici, the daemon, ink) is loaded only
// when that command runs. Help and unknown commands load them all.

import { Command } from 'commander'
import { VERSION } from '../version.js'
import { EXIT_OK, toFatal } from './fatal.js'
export interface CliContext {
  env: NodeJS.ProcessEnv
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
}

type Register = (program: Command, ctx: CliContext) => void

/** Every command name, with the loader of the file that registers it, in help order. */
const commands: Array<[names: string[], load: () => Promise<Register>]> = [
  [['serve'], async () => (await import('./serve.js')).registerServeCommand],
  // After serve: `start` copies serve's options.
  [['start', 'stop'], async () => (await import('./daemon.js')).registerDaemonCommands],
  [['status', 'top'], async () => (await import('./status.js')).registerStatusCommand],
  [['service'], async () => (await import('./service.js')).registerServiceCommand],
  [['config'], async () => (await import('./config.js')).registerConfigCommand],
  [['cache'], async () => (await import('./cache.js')).registerCacheCommand],
  [['login', 'logout'], async () => (await import('./login.js')).registerLoginCommands],
  [['env'], async () => (await import('./env.js')).registerEnvCommand],
  [['token'], async () => (await import('./token.js')).registerTokenCommand],
  [['setup'], async () => (await import('./setup.js')).registerSetupCommand],
  [['prefetch'], async () => (await import('./prefetch.js')).registerPrefetchCommand],
  [['doctor'], async () => (await import('./doctor.js')).registerDoctorCommand],
  [['pull'], async () => (await import('./pull.js')).registerPullCommand],
  [['logs'], async () => (await import('./logs.js')).registerLogsCommand],
]

/**
 * The program with the commands `argv` needs: the one it names (plus serve
 * for start), none for --version, all of them otherwise (help, typos).
 */
export async function buildProgram(ctx: CliContext, argv: string[] = []): Promise<Command> {
  const program = new Command('dproxy')
    .description('A pull-through cache for container registries that runs on your own machine.')
    .version(VERSION, '-V, --version')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
    })
    .addHelpText(
      'after',
      '\nExit status: 0 success, 1 failure, 2 usage error (bad option or setting).\nSee dproxy(1) and dproxy-<command>(1).',
    )
  const first = argv[0]
  const named = commands.findIndex(([names]) => first !== undefined && names.includes(first))
  const wanted =
    first === '-V' || first === '--version'
      ? []
      : named < 0
        ? commands
        : commands.filter((c, i) => i === named || (first === 'start' && c[0].includes('serve')))
  for (const [, load] of wanted) (await load())(program, ctx)
  return program
}

/** Runs the CLI and returns the exit code. */
export async function runCli(argv: string[], ctx: CliContext): Promise<number> {
  try {
    const program = await buildProgram(ctx, argv)
    await program.parseAsync(argv, { from: 'user' })
    return EXIT_OK
  } catch (err) {
    const fatal = toFatal(err)
    if (fatal.message !== '') ctx.stderr.write(`dproxy: ${fatal.message}\n`)
    return fatal.exitCode
  }
}
