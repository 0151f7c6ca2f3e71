// The detached daemon's log file, and reading it back (`dproxy logs`).
//
// The daemon writes its own log when it runs detached, so that it can rotate
// by size: past `maxBytes`, `dproxy.log` becomes `dproxy.log.1` (the older
// ones move up to `.KEEP`, the oldest is dropped) and a fresh file starts.
// Writes are synchronous appends of whole lines: ordering holds, and a line is
// never split across two files. The reader follows one path across a
// rotation by noticing that the file at that path is a new one (another inode,
// or shorter than what was read), reading the rest of the old one first.

import { closeSync, openSync, fstatSync, renameSync, writeSync, constants, promises as fs } from 'node:fs'
import { DproxyError } from './errors.js'

export const DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
/** Rotated files kept beside the current one. */
export const LOG_KEEP = 3

export class RotatingLogFile {
  private fd: number
  private size: number

  constructor(
    readonly path: string,
    private readonly maxBytes = DEFAULT_LOG_MAX_BYTES,
    private readonly keep = LOG_KEEP,
  ) {
    this.fd = RotatingLogFile.open(path)
    this.size = fstatSync(this.fd).size
  }

  private static open(path: string): number {
    try {
      return openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600)
    } catch (err) {
      throw new DproxyError('CONFIG_INVALID', `cannot open the log file ${path}: ${(err as Error).message}`, { cause: err })
    }
  }

  write(line: string): boolean {
    const bytes = Buffer.from(line)
    if (this.size > 0 && this.size + bytes.length > this.maxBytes) this.rotate()
    try {
      writeSync(this.fd, bytes)
      this.size += bytes.length
    } catch {
      // A full disk must not take the daemon down for a log line.
    }
    return true
  }

  private rotate(): void {
    try {
      for (let i = this.keep - 1; i >= 1; i--) {
        try {
          renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`)
        } catch (err) {
          if (!isNotFound(err)) throw err
        }
      }
      renameSync(this.path, `${this.path}.1`)
      const fd = RotatingLogFile.open(this.path)
      closeSync(this.fd)
      this.fd = fd
      this.size = 0
    } catch {
      // Could not rotate (permissions, a full disk): keep appending to the current file.
    }
  }

  close(): void {
    closeSync(this.fd)
  }
}

const isNotFound = (err: unknown) => (err as NodeJS.ErrnoException | null)?.code === 'ENOENT'

/** The last `n` lines of `path` (fewer when it has fewer); reads at most the last `maxBytes`. */
export async function lastLines(path: string, n: number, maxBytes = 4 * 1024 * 1024): Promise<{ lines: string[]; end: number }> {
  const fh = await fs.open(path, constants.O_RDONLY)
  try {
    const { size } = await fh.stat()
    const start = Math.max(0, size - maxBytes)
    const buf = Buffer.alloc(size - start)
    await fh.read(buf, 0, buf.length, start)
    const text = buf.toString('utf8')
    // A partial first line (the read began mid-file) and the final newline are not lines.
    let lines = text.split('\n')
    if (start > 0) lines = lines.slice(1)
    if (lines.at(-1) === '') lines.pop()
    return { lines: n <= 0 ? [] : lines.slice(-n), end: size }
  } finally {
    await fh.close()
  }
}

export interface FollowOptions {
  /** Byte offset in the current file to start at (from lastLines). */
  from: number
  onLine(line: string): void
  signal: AbortSignal
  pollMs?: number
}

/** Prints lines appended to `path` until `signal` aborts, across rotations. */
export async function followLines(path: string, o: FollowOptions): Promise<void> {
  let fh = await fs.open(path, constants.O_RDONLY)
  let ino = (await fh.stat()).ino
  let pos = o.from
  let partial = ''
  // One abort listener for the whole follow, however many polls.
  let wake = () => {}
  o.signal.addEventListener('abort', () => wake(), { once: true })
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms)
      wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  const drain = async () => {
    const chunk = Buffer.alloc(64 * 1024)
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos)
      if (bytesRead === 0) return
      pos += bytesRead
      const text = partial + chunk.subarray(0, bytesRead).toString('utf8')
      const lines = text.split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) o.onLine(line)
    }
  }
  try {
    while (!o.signal.aborted) {
      await drain()
      const now = await fs.stat(path).catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)))
      if (now && (now.ino !== ino || now.size < pos)) {
        // Rotated (or truncated): the rest of the old file was read above; start the new one.
        await drain()
        await fh.close()
        fh = await fs.open(path, constants.O_RDONLY)
        ino = (await fh.stat()).ino
        pos = 0
        partial = ''
        continue
      }
      await sleep(o.pollMs ?? 250)
    }
  } finally {
    await fh.close()
  }
}
