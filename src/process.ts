// Whether a process recorded in a pid or lock file still runs. Lock files
// (the daemon's per-cache lock, the CLI's cache lock) are taken over when their
// owner is gone, so "gone" must include a zombie: in a container whose init
// does not reap children, an exited daemon still answers kill(pid, 0).

import { readFileSync } from 'node:fs'

/** True when `pid` names a process that exists and is not a zombie. */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  if (process.platform === 'linux') {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      // Format: "pid (comm) S ...": the state follows the last ')', since comm may contain anything.
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
      if (state === 'Z' || state === 'X') return false
    } catch {
      // No /proc (or the process just went): signal 0 said it exists.
    }
  }
  return true
}
