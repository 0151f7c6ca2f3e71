// Two filesystem facts every layer asks about: "was it already gone?" and
// "remove it if it is there". Here, below the store, so that the daemon's
// lock, the service files and the pid lock need not reach into the store for
// them.

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
