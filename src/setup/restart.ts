// `dproxy setup --restart` for dockerd: registry-mirrors is one of the
// settings dockerd reloads on SIGHUP, so no container is stopped. The pid
// comes from dockerd's pid file (rootless: under XDG_RUNTIME_DIR).

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { isProcessAlive } from '../process.js'
import { underRoot } from './files.js'
import type { SetupOptions } from './targets.js'

/** Sends SIGHUP to the running dockerd; its pid, or undefined when none runs. */
export async function sendReload(root: string, o: Pick<SetupOptions, 'user'>, env: NodeJS.ProcessEnv = process.env): Promise<number | undefined> {
  const pidFile = o.user
    ? join(env.XDG_RUNTIME_DIR ?? `/run/user/${process.getuid?.() ?? 0}`, 'docker.pid')
    : underRoot(root, '/var/run/docker.pid')
  const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim())
  if (!Number.isSafeInteger(pid) || pid <= 0 || !isProcessAlive(pid)) return undefined
  process.kill(pid, 'SIGHUP')
  return pid
}
