// Filesystem facts every layer asks about: "was it already gone?", "remove
// it if it is there" and "how much room is left?". Here, below the store, so
// that the daemon's lock, the service files, the pid lock, the metrics and
// the doctor need not reach into the store for them.

import { promises as fs } from 'node:fs'

export function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT'
}

/** Unlinks a file; false when it was already gone. */
export async function removeFile(path: string): Promise<boolean> {
  try {
    await fs.unlink(path)
    return true
  } catch (err) {
    if (isNotFound(err)) return false
    throw err
  }
}

/** Bytes this user may still write on the file system of `dir`, and its size; undefined when the system cannot say. */
export async function diskSpace(dir: string): Promise<{ free: number; total: number } | undefined> {
  const st = await fs.statfs(dir).catch(() => undefined)
  return st ? { free: st.bavail * st.bsize, total: st.blocks * st.bsize } : undefined
}
