// `dproxy logs [-f] [-n N] [--json] [--cache-dir DIR]`: prints the log of the
// background daemon (dproxy start) of a cache dir: the file its daemon.json
// names, else the one `dproxy start` would write. `-f` keeps printing what is
// appended, across a rotation, until interrupted. `--json` prints every line
// as a JSON object: lines the daemon wrote as JSON (--log-format json) pass
// through, text lines become {time, level, msg}.

import { Option, type Command } from 'commander'
import { resolveSettings } from '../config/settings.js'
import { statePaths } from '../control/lifecycle.js'
import { readDaemonLock } from '../daemon/lifecycle.js'
import { DproxyError } from '../errors.js'
import { followLines, lastLines } from '../logfile.js'
import type { CliContext } from './program.js'
import { UsageError } from './fatal.js'

interface LogsFlags {
  follow?: boolean
  lines: string
  json?: boolean
  cacheDir?: string
}

export function registerLogsCommand(program: Command, ctx: CliContext): void {
  program
    .command('logs')
    .description("print the background daemon's log")
    .option('-f, --follow', 'keep printing new lines until interrupted')
    .addOption(new Option('-n, --lines <n>', 'how many of the last lines to print').default('100'))
    .option('--json', 'print each line as a JSON object')
    .option('--cache-dir <dir>', 'the daemon using this cache dir (default: the configured one)')
    .action(async (flags: LogsFlags) => {
      await logs(flags, ctx, abortOnSignals())
    })
}

export async function logs(flags: LogsFlags, ctx: CliContext, signal: AbortSignal): Promise<void> {
  if (!/^\d{1,7}$/.test(flags.lines)) throw new UsageError(`expected --lines to be a number of lines, got '${flags.lines.slice(0, 50)}'`)
  const settings = resolveSettings({ flags: flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {}, env: ctx.env })
  const lock = await readDaemonLock(settings.cacheDir)
  const file = lock?.info.logFile ?? statePaths(settings.stateDir, settings.cacheDir).logFile
  const print = (line: string) => ctx.stdout.write(`${flags.json ? asJson(line) : line}\n`)
  let tail: { lines: string[]; end: number }
  try {
    tail = await lastLines(file, Number(flags.lines))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    throw new DproxyError('LOG_MISSING', `no daemon log at ${file}: dproxy start writes it (a foreground dproxy serve logs to its terminal)`)
  }
  for (const line of tail.lines) print(line)
  if (flags.follow) await followLines(file, { from: tail.end, onLine: print, signal })
}

const textLine = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (error|warn|info|debug) (.*)$/

/** One log line as JSON text. */
export function asJson(line: string): string {
  if (line.startsWith('{')) {
    try {
      JSON.parse(line)
      return line
    } catch {
      // not JSON after all: wrapped below
    }
  }
  const m = textLine.exec(line)
  return JSON.stringify(m ? { time: m[1], level: m[2], msg: m[3] } : { msg: line })
}

function abortOnSignals(): AbortSignal {
  const controller = new AbortController()
  const stop = () => controller.abort()
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  return controller.signal
}
