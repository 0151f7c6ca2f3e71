// How `dproxy setup` touches a client's files: read what is there, write the
// new text atomically (a temp file in the same directory, then rename, so a
// client never reads half a config), keep the mode of the file it replaces,
// and turn the two failures a user can act on into precise errors: a file that
// does not parse (refused with file:line, nothing written) and a file this user
// may not write (suggest sudo, or --user).
//
// dproxy's text inside a file the user owns is fenced by two comment lines, so
// that it can be found and removed again exactly, whatever the user changed
// around it since.

import { promises as fs } from 'node:fs'
import { dirname, join, basename } from 'node:path'
import { DproxyError } from '../errors.js'

export const BEGIN = '# BEGIN dproxy setup (dproxy setup --undo removes this block)'
export const END = '# END dproxy setup'

/** A path as the user means it (`/etc/docker/daemon.json`), placed under `root` (`--root DIR`). */
export function underRoot(root: string, path: string): string {
  return root === '/' ? path : join(root, path)
}

/** The file's text, or undefined when it does not exist. */
export async function readText(path: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw denied(err, path) ?? err
  }
}

export async function exists(path: string): Promise<boolean> {
  return fs.stat(path).then(
    () => true,
    () => false,
  )
}

/** A permission failure as the error the user can act on; undefined for other failures. */
export function denied(err: unknown, path: string): DproxyError | undefined {
  const code = (err as NodeJS.ErrnoException).code
  if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') return undefined
  return new DproxyError(
    'SETUP_DENIED',
    `permission denied writing ${path} (${code}): run it with sudo, or pass --user to configure only your own user's clients`,
    { detail: { path, code }, cause: err },
  )
}

/** Writes `data` to `path` through a temp file and a rename; creates the directory; keeps an existing file's mode. */
export async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.dproxy-${process.pid}.tmp`)
  try {
    await fs.mkdir(dirname(path), { recursive: true })
    const mode = await fs.stat(path).then(
      (s) => s.mode & 0o7777,
      () => 0o644,
    )
    await fs.writeFile(tmp, data, { mode })
    await fs.chmod(tmp, mode)
    await fs.rename(tmp, path)
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => {})
    throw denied(err, path) ?? err
  }
}

/** Removes a file dproxy created; a file already gone is fine. */
export async function removeCreated(path: string): Promise<void> {
  try {
    await fs.rm(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw denied(err, path) ?? err
  }
}

/** The refusal for a file that does not parse: where, and that nothing was changed. */
export function invalidFile(path: string, line: number, column: number, why: string): DproxyError {
  return new DproxyError(
    'SETUP_FILE_INVALID',
    `${path}:${line}:${column}: ${why}; fix or move the file and run dproxy setup again (nothing was changed)`,
    { detail: { path, line, column } },
  )
}

/** 1-based line and column of a character offset. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, offset)
  const line = before.split('\n').length
  return { line, column: offset - before.lastIndexOf('\n') }
}

/** `body` between the BEGIN and END lines, each line ending in '\n'. */
export function fenced(body: string): string {
  return `${BEGIN}\n${body.endsWith('\n') ? body : `${body}\n`}${END}\n`
}

/** Where dproxy's fenced block is in `text`: [start, end) character offsets, or undefined. */
export function findFence(text: string): [number, number] | undefined {
  const start = text.indexOf(`${BEGIN}\n`)
  if (start < 0 || (start > 0 && text[start - 1] !== '\n')) return undefined
  const endAt = text.indexOf(`${END}\n`, start)
  if (endAt < 0) return undefined
  return [start, endAt + END.length + 1]
}

/** `text` without dproxy's fenced block (and the blank line setup put after it). */
export function removeFence(text: string): string {
  const at = findFence(text)
  if (!at) return text
  let [start, end] = at
  if (text.slice(end, end + 1) === '\n') end++
  return text.slice(0, start) + text.slice(end)
}
