// What ends a command, as the exit code it ends with: a FatalError carries its
// code (gemini-cli's FatalError does the same), so the program never decides
// an exit code by reading messages or comparing strings. The core throws
// DproxyErrors whose codes mean nothing about processes; the table below is
// the one place that says which of them are the user's mistake (exit 2).
// Everything else that escapes a command is a failure (exit 1).

import { CommanderError } from 'commander'
import { isDproxyError, type ErrorCode } from '../errors.js'

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2
export type ExitCode = typeof EXIT_OK | typeof EXIT_FAILURE | typeof EXIT_USAGE

export class FatalError extends Error {
  override readonly name: string = 'FatalError'

  constructor(
    message: string,
    readonly exitCode: ExitCode,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/** A bad option, argument or setting: exit 2. */
export class UsageError extends FatalError {
  override readonly name = 'UsageError'

  constructor(message: string, options?: ErrorOptions) {
    super(message, EXIT_USAGE, options)
  }
}

/** The core's error codes that mean the user asked for something malformed; every other code is a failure. */
const USAGE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['USAGE', 'CONFIG_INVALID'])

/**
 * Any error a command ends with, as a FatalError. Commander has printed its own
 * message already (help, a bad option): those come with an empty message.
 */
export function toFatal(err: unknown): FatalError {
  if (err instanceof FatalError) return err
  if (err instanceof CommanderError) return new FatalError('', err.exitCode === 0 ? EXIT_OK : EXIT_USAGE, { cause: err })
  if (isDproxyError(err)) return new FatalError(err.message, USAGE_CODES.has(err.code) ? EXIT_USAGE : EXIT_FAILURE, { cause: err })
  return new FatalError(err instanceof Error ? err.message : String(err), EXIT_FAILURE, { cause: err })
}
