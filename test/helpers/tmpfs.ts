// A real small file system for tests of a full disk: a tmpfs of a given size,
// mounted at a fresh dir outside tap's fixtures (tap could not remove a mount
// point) and unmounted and removed in the test's teardown, after whatever
// `before` stops (nothing may hold a file on the mount when it goes).

import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'

/** Why this machine cannot mount one (for t.plan(0, why)), or undefined when it can. */
export const TMPFS_NEEDS = 'needs root and tmpfs to mount a small file system'

/**
 * Mounts a tmpfs of `size` (`8m`); undefined when this machine cannot (not
 * root, no tmpfs, mount refused). `before` runs first in the teardown.
 */
export async function mountTmpfs(t: Pick<Test, 'teardown'>, size: string, before?: () => Promise<void>): Promise<string | undefined> {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return undefined
  const dir = await fs.mkdtemp(join(tmpdir(), 'dproxy-tmpfs-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' })
  } catch {
    await fs.rmdir(dir)
    return undefined
  }
  t.teardown(async () => {
    await before?.()
    execFileSync('umount', ['-l', dir], { stdio: 'ignore' })
    await fs.rmdir(dir)
  })
  return dir
}

/** Fills the file system of `dir` until `leave` bytes are free (about: it counts in blocks); returns the filler. */
export async function fillUntil(dir: string, leave: number): Promise<string> {
  const st = await fs.statfs(dir)
  const free = st.bavail * st.bsize
  if (free < leave) throw new Error(`only ${free} bytes free in ${dir}, wanted to leave ${leave}`)
  const filler = join(dir, `filler-${randomBytes(4).toString('hex')}`)
  await fs.writeFile(filler, Buffer.alloc(free - leave, 1))
  return filler
}
