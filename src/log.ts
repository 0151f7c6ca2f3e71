// A tiny logger interface: the daemon logs one line per notable event
// (listening, stale serves, upstream failures) and, through the access log,
// one per request. The CLI decides where lines go, at which level, as text or
// as JSON lines; tests pass a logger that collects them.

export interface Logger {
  info(message: string): void
  warn(message: string): void
  error(message: string): void
  debug?(message: string): void
  /** A line with fields (the access log); a logger without it gets `message` at `level`. */
  record?(level: LogLevel, message: string, fields: Record<string, unknown>): void
}

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]
export const LOG_FORMATS = ['text', 'json'] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

export interface StreamLoggerOptions {
  clock?: () => Date
  /** Lines below this level are dropped (default info). */
  level?: LogLevel
  format?: LogFormat
}

/** Where lines go: a stream, or the rotating log file (logfile.ts). */
export interface LineSink {
  write(line: string): unknown
}

export function streamLogger(out: LineSink, opts: StreamLoggerOptions = {}): Logger {
  const clock = opts.clock ?? (() => new Date())
  const max = LOG_LEVELS.indexOf(opts.level ?? 'info')
  const json = opts.format === 'json'
  const line = (level: LogLevel, message: string, fields?: Record<string, unknown>) => {
    if (LOG_LEVELS.indexOf(level) > max) return
    const time = clock().toISOString()
    out.write(json ? `${JSON.stringify({ time, level, msg: message, ...fields })}\n` : `${time} ${level} ${message}\n`)
  }
  return {
    info: (m) => line('info', m),
    warn: (m) => line('warn', m),
    error: (m) => line('error', m),
    debug: (m) => line('debug', m),
    record: (level, m, fields) => line(level, m, fields),
  }
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} }

/** Writes `message` at `level` through whatever the logger offers. */
export function logAt(log: Logger, level: LogLevel, message: string, fields: Record<string, unknown> = {}): void {
  if (log.record) log.record(level, message, fields)
  else if (level === 'debug') log.debug?.(message)
  else log[level](message)
}
