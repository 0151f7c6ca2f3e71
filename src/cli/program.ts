// The commander program: one place that lists the commands and turns failures
// into exit codes (0 ok, 1 failure, 2 usage error). Each command lives in its
// own file and only parses options, calls plain functions and prints; the
// daemon's core never imports anything from here.

import { Command, CommanderError } from 'commander'
import { isDproxyError } from '../errors.js'
import { VERSION } from '../version.js'
import { registerCacheCommand } from './cache.js'
import { registerConfigCommand } from './config.js'
import { registerDaemonCommands } from './daemon.js'
import { registerEnvCommand } from './env.js'
import { registerLoginCommands } from './login.js'
import { registerServeCommand } from './serve.js'
import { registerServiceCommand } from './service.js'
import { registerStatusCommand } from './status.js'

export interface CliContext {
  env: NodeJS.ProcessEnv
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
}

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

export function buildProgram(ctx: CliContext): Command {
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
  registerServeCommand(program, ctx)
  registerDaemonCommands(program, ctx) // after serve: start copies its options
  registerStatusCommand(program, ctx)
  registerServiceCommand(program, ctx)
  registerConfigCommand(program, ctx)
  registerCacheCommand(program, ctx)
  registerLoginCommands(program, ctx)
  registerEnvCommand(program, ctx)
  return program
}

/** Runs the CLI and returns the exit code. */
export async function runCli(argv: string[], ctx: CliContext): Promise<number> {
  const program = buildProgram(ctx)
  try {
    await program.parseAsync(argv, { from: 'user' })
    return EXIT_OK
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) return EXIT_OK
      return EXIT_USAGE
    }
    if (isDproxyError(err)) {
      ctx.stderr.write(`dproxy: ${err.message}\n`)
      return err.code === 'USAGE' || err.code === 'CONFIG_INVALID' ? EXIT_USAGE : EXIT_FAILURE
    }
    ctx.stderr.write(`dproxy: ${err instanceof Error ? err.message : String(err)}\n`)
    return EXIT_FAILURE
  }
}
