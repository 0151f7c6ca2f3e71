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

/**
 * The last `n` lines of the log at `path` (fewer when it has fewer), reading
 * at most the last `maxBytes`. A file just rotated may hold fewer than `n`
 * lines: the rest come from the rotated files (`path.1`, `path.2`, ...), as
 * far as they go. `end` is the current file's size, where a follower starts.
 */
export async function lastLines(path: string, n: number, maxBytes = 4 * 1024 * 1024): Promise<{ lines: string[]; end: number }> {
  const current = await tailOf(path, maxBytes)
  let lines = current.lines
  let budget = maxBytes - current.read
  for (let k = 1; lines.length < n && budget > 0 && !current.partial; k++) {
    let older: Awaited<ReturnType<typeof tailOf>>
    try {
      older = await tailOf(`${path}.${k}`, budget)
    } catch (err) {
      if (isNotFound(err)) break
      throw err
    }
    lines = [...older.lines, ...lines]
    budget -= older.read
    if (older.partial) break
  }
  return { lines: n <= 0 ? [] : lines.slice(-n), end: current.size }
}

/** The whole lines in the last `maxBytes` of one file; `partial` when the read began mid-file. */
async function tailOf(path: string, maxBytes: number): Promise<{ lines: string[]; size: number; read: number; partial: boolean }> {
  const fh = await fs.open(path, constants.O_RDONLY)
  try {
    const { size } = await fh.stat()
    const start = Math.max(0, size - maxBytes)
    const buf = Buffer.alloc(size - start)
    await fh.read(buf, 0, buf.length, start)
    // A partial first line (the read began mid-file) and the final newline are not lines.
    let lines = buf.toString('utf8').split('\n')
    if (start > 0) lines = lines.slice(1)
    if (lines.at(-1) === '') lines.pop()
    return { lines, size, read: buf.length, partial: start > 0 }
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
  /** Rotated files the writer keeps (RotatingLogFile's `keep`). */
  keep?: number
}

/**
 * Prints lines appended to `path` until `signal` aborts, across rotations.
 *
 * A busy daemon can rotate several times between two polls, so on a rotation
 * the follower finishes the file it had open (wherever it was renamed to),
 * then reads whole every file rotated after it (`.k-1` down to `.1`), then
 * starts the new current file. While the path is missing (the writer is
 * between its rename and its open) it waits for the next poll.
 */
export async function followLines(path: string, o: FollowOptions): Promise<void> {
  const keep = o.keep ?? LOG_KEEP
  let fh: fs.FileHandle | undefined = await fs.open(path, constants.O_RDONLY)
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
  const chunk = Buffer.alloc(64 * 1024)
  const drain = async (file: fs.FileHandle, from: number): Promise<number> => {
    let at = from
    for (;;) {
      const { bytesRead } = await file.read(chunk, 0, chunk.length, at)
      if (bytesRead === 0) return at
      at += bytesRead
      const lines = (partial + chunk.subarray(0, bytesRead).toString('utf8')).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) o.onLine(line)
    }
  }
  // The rotated files newer than the one with inode `old`, oldest first.
  const rotatedAfter = async (old: number): Promise<string[]> => {
    const newer: string[] = []
    for (let i = 1; i <= keep; i++) {
      const st = await statOrUndefined(`${path}.${i}`)
      if (st === undefined) continue
      if (st.ino === old) break
      newer.unshift(`${path}.${i}`)
    }
    return newer
  }
  try {
    while (!o.signal.aborted) {
      if (fh !== undefined) pos = await drain(fh, pos)
      const now = await statOrUndefined(path)
      if (now !== undefined && (fh === undefined || now.ino !== ino || now.size < pos)) {
        if (fh !== undefined) {
          // Rotated (or truncated): finish the old file, then every file rotated after it.
          pos = await drain(fh, pos)
          await fh.close()
          fh = undefined
          if (now.ino !== ino) {
            for (const older of await rotatedAfter(ino)) {
              const rf = await fs.open(older, constants.O_RDONLY).catch(() => undefined)
              if (rf === undefined) continue
              try {
                await drain(rf, 0)
              } finally {
                await rf.close()
              }
            }
          }
        }
        const opened = await fs.open(path, constants.O_RDONLY).catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)))
        if (opened !== undefined) {
          fh = opened
          ino = (await fh.stat()).ino
          pos = 0
          partial = ''
          continue
        }
      }
      await sleep(o.pollMs ?? 250)
    }
  } finally {
    await fh?.close()
  }
}

const statOrUndefined = (p: string) => fs.stat(p).catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)))
