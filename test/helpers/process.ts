// Pids and directories for the lock and lifecycle tests, which judge real
// processes: a pid that surely names no process, and several fresh
// directories in one test.

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
