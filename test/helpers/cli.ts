// Running the real `dproxy` binary from tests: an environment that can never
// touch the user's files, `dproxy serve` started in the background with its
// address read from what it prints, and a module loader that proves a command
// never loads the terminal UI.

import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

export const bin = fileURLToPath(new URL('../../bin/dproxy.js', import.meta.url))

type TestDirs = Pick<Test, 'testdir' | 'teardown'>

/**
 * A node option (`--import=...`) whose module hooks fail any resolution of
 * ink, react or a src/ui module with `FORBIDDEN import of ...`: a command run
 * with it that exits 0 never loaded them (scripts start fast, no terminal
 * code on their path).
 */
export const forbidUi = (() => {
  const hooks = `export async function resolve(specifier, context, next) {
    if (/^(ink|react)(\\/|$)/.test(specifier) || /\\/ui\\/[^/]+\\.js$/.test(specifier)) {
      throw new Error('FORBIDDEN import of ' + specifier + ' from ' + context.parentURL)
    }
    return next(specifier, context)
  }`
  const register = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});`
  return `--import=data:text/javascript,${encodeURIComponent(register)}`
})()

/**
 * HOME, config, cache and state dirs of the test's own, and the file credential store.
 * `files` adds more to the same test dir (beside `home`), e.g. a project to run in.
 */
export function isolatedEnv(t: TestDirs, extra: Record<string, string> = {}, files: Record<string, unknown> = {}): Record<string, string> {
  // One testdir call per test: each call empties the same directory.
  const root = t.testdir({ ...files, home: {}, config: {}, cache: {}, state: {} })
  return {
    PATH: process.env.PATH ?? '',
    HOME: path.join(root, 'home'),
    DPROXY_CONFIG_DIR: path.join(root, 'config'),
    DPROXY_CACHE_DIR: path.join(root, 'cache'),
    DPROXY_STATE_DIR: path.join(root, 'state'),
    DPROXY_CREDENTIAL_STORE: 'file',
    ...extra,
  }
}

export interface Serving {
  child: ChildProcess
  /** `http://127.0.0.1:PORT` (https with TLS) */
  base: string
  out(): string
  err(): string
}

/** Spawns `dproxy serve ARGS` and resolves once it prints where it listens (killed at teardown). */
export async function spawnServe(t: TestDirs, args: string[], env: Record<string, string>, nodeFlags: string[] = []): Promise<Serving> {
  const child = spawn(process.execPath, [...nodeFlags, bin, 'serve', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let out = ''
  let err = ''
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
  const base = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start within 15 s: ${err}`)), 15_000)
    const check = () => {
      const m = /listening on (https?:\/\/\S+)/.exec(out)
      if (m) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    }
    child.stdout!.on('data', check)
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`serve exited ${code}: ${err}`))
    })
  })
  return { child, base, out: () => out, err: () => err }
}

export interface Ran {
  code: number | null
  out: string
  err: string
}

/** Runs `dproxy ARGS` to completion (killed after 30 s) and collects its output. */
export async function runDproxy(
  args: string[],
  env: Record<string, string>,
  opts: { nodeArgs?: string[]; cwd?: string; input?: string } = {},
): Promise<Ran> {
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), bin, ...args], {
    env,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
  })
  let out = ''
  let err = ''
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
  if (opts.input !== undefined) child.stdin!.end(opts.input)
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)))
  clearTimeout(timer)
  return { code, out, err }
}

/**
 * Runs the CLI in-process (no build needed) with captured output; `tty` gives
 * it a terminal-like stdin carrying `answer`, for confirmations.
 */
export async function runInProcess(
  args: string[],
  env: Record<string, string>,
  /** `input`: bytes on stdin (an archive for `cache import -`). */
  opts: { tty?: boolean; answer?: string; input?: Buffer } = {},
): Promise<Ran> {
  const { PassThrough, Writable } = await import('node:stream')
  const { runCli } = await import('../../src/cli/program.js')
  let out = ''
  let err = ''
  const sink = (f: (s: string) => void) =>
    new Writable({
      write(chunk: Buffer, _e, done) {
        f(chunk.toString())
        done()
      },
    })
  const stdin = Object.assign(new PassThrough(), { isTTY: opts.tty ?? false })
  if (opts.answer !== undefined) stdin.end(opts.answer)
  else if (opts.input !== undefined) stdin.end(opts.input)
  const code = await runCli(args, { env, stdout: sink((s) => (out += s)), stderr: sink((s) => (err += s)), stdin } as Parameters<typeof runCli>[1])
  return { code, out, err }
}
