// A tiny logger interface: the daemon logs one line per notable event
// (listening, stale serves, upstream failures). The CLI decides where lines
// go; tests pass a logger that collects them.

export interface Logger {
  info(message: string): void
  warn(message: string): void
  error(message: string): void
}

export function streamLogger(out: NodeJS.WritableStream, clock: () => Date = () => new Date()): Logger {
  const line = (level: string, message: string) => {
    out.write(`${clock().toISOString()} ${level} ${message}\n`)
  }
  return {
    info: (m) => line('info', m),
    warn: (m) => line('warn', m),
    error: (m) => line('error', m),
  }
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} }
