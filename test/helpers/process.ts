// Pids and directories for the lock and lifecycle tests, which judge real
// processes: a pid that surely names no process, and several fresh
// directories in one test; and a bounded wait for what a process shows.

import { spawnSync } from 'node:child_process'
import path from 'node:path'
import type { Test } from 'tap'

/** The pid of a process that has exited and been reaped: dead, and not reused this soon. */
export function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
  return Number(r.stdout.toString())
}

/** Separate directories for one test (t.testdir() is one directory per test, recreated on every call). */
export function dirs<const N extends string>(t: Pick<Test, 'testdir'>, ...names: N[]): Record<N, string> {
  const root = t.testdir(Object.fromEntries(names.map((n) => [n, {}])))
  return Object.fromEntries(names.map((n) => [n, path.join(root, n)])) as Record<N, string>
}

/**
 * Polls `what` every 50 ms until it holds; throws naming `why` after `tries`
 * polls (600: 30 s, for a loaded CI machine, which is slow, not wrong).
 */
export async function until(what: () => boolean, why: string | (() => string), tries = 600): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (what()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`timed out waiting for ${typeof why === 'function' ? why() : why}`)
}
