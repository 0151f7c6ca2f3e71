// Docker's credential helpers, run the way the docker CLI runs them: the
// program `docker-credential-NAME` found on PATH, one argument (`get` or
// `list`), the server URL on stdin, JSON on stdout. Never through a shell, so
// a helper name from a config file cannot smuggle in a command; names are
// also held to the characters real helpers use, so one cannot point outside
// PATH ('../../bin/x').
//
// What a helper prints holds a password or token: it is parsed and dropped,
// never logged and never quoted in an error, which says only what went wrong
// (not installed, no answer in time, exit status, not JSON). stderr is read
// (and bounded) only so a chatty helper cannot block on a full pipe. A helper
// that does not answer in time (a locked keyring asking its user, a cloud
// helper without network) is killed with whatever it started, so a pull waits
// for it at most that long.

import { spawn } from 'node:child_process'
import { DproxyError } from '../errors.js'

/** How long a helper gets to answer; the docker CLI has no bound, a daemon needs one. */
export const DEFAULT_HELPER_TIMEOUT_MS = 10_000

/** What the protocol prints (with exit 1) when it has nothing for the server URL. */
const NOT_FOUND = 'credentials not found in native keychain'
const OUTPUT_CAP = 64 * 1024

const helperNameRe = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

/** True for a helper name as config files hold it ('secretservice', 'ecr-login'). */
export function isHelperName(name: string): boolean {
  return helperNameRe.test(name)
}

export function helperProgram(name: string): string {
  return `docker-credential-${name}`
}

export interface HelperCredential {
  username: string
  secret: string
  /** The helper answered with an identity token (user name `<token>`): an OAuth refresh token, not a password. */
  identityToken: boolean
}

export interface RunHelperOptions {
  env?: NodeJS.ProcessEnv
  timeoutMs?: number
}

interface Output {
  code: number | null
  stdout: string
}

function runProgram(name: string, action: 'get' | 'list', input: string, opts: RunHelperOptions): Promise<Output> {
  const program = helperProgram(name)
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HELPER_TIMEOUT_MS
  if (!isHelperName(name)) {
    return Promise.reject(new DproxyError('CONFIG_INVALID', `'${name.slice(0, 64)}' is not a credential helper name (letters, digits, '.', '_', '-')`))
  }
  return new Promise((resolve, reject) => {
    // Its own process group (POSIX), so that a timeout kills what the helper started too (a child
    // holding its stdout open). On Windows `detached` would open a console window instead.
    const group = process.platform !== 'win32'
    const child = spawn(program, [action], { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'], shell: false, detached: group })
    const kill = () => {
      try {
        if (group && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
        else child.kill('SIGKILL')
      } catch {
        child.kill('SIGKILL')
      }
      child.stdout.destroy()
      child.stderr.destroy()
    }
    const chunks: Buffer[] = []
    let size = 0
    let settled = false
    const finish = (fn: () => void) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      fn()
    }
    const timer = setTimeout(() => {
      kill()
      finish(() => reject(new DproxyError('UPSTREAM_UNAVAILABLE', `${program} ${action} did not answer within ${timeoutMs / 1000} s (killed)`)))
    }, timeoutMs)
    child.stdout.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > OUTPUT_CAP) {
        kill()
        finish(() => reject(new DproxyError('UPSTREAM_INVALID', `${program} ${action} printed more than ${OUTPUT_CAP} bytes`)))
        return
      }
      chunks.push(chunk)
    })
    child.stderr.resume()
    child.on('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ENOENT' ? `${program} is not installed (not on PATH)` : `${program} cannot be run (${err.code ?? 'error'})`
      finish(() => reject(new DproxyError('CONFIG_INVALID', why)))
    })
    child.on('close', (code) => finish(() => resolve({ code, stdout: Buffer.concat(chunks).toString('utf8') })))
    // A helper that exits without reading stdin makes this write fail with EPIPE: its exit status says more.
    child.stdin.on('error', () => undefined)
    child.stdin.end(input)
  })
}

/** A helper that exited non-zero or was killed; nothing it printed is quoted. */
function failed(program: string, verb: string, code: number | null): DproxyError {
  return new DproxyError('UPSTREAM_UNAVAILABLE', `${program} ${verb} failed (${code === null ? 'killed by a signal' : `exit status ${code}`})`)
}

/** What a helper printed, as JSON; refused (without quoting it) when it is not. */
function printedJson(program: string, verb: string, stdout: string): unknown {
  try {
    return JSON.parse(stdout)
  } catch {
    throw new DproxyError('UPSTREAM_INVALID', `${program} ${verb} printed something that is not JSON`)
  }
}

/**
 * `docker-credential-NAME get` for `serverUrl`. Resolves undefined when the
 * helper has nothing for it; rejects (without any of its output) when it
 * cannot be run, times out, fails or prints something that is not a credential.
 */
export async function helperGet(name: string, serverUrl: string, opts: RunHelperOptions = {}): Promise<HelperCredential | undefined> {
  const program = helperProgram(name)
  const out = await runProgram(name, 'get', serverUrl, opts)
  if (out.code !== 0) {
    if (out.stdout.trim() === NOT_FOUND) return undefined
    throw failed(program, 'get', out.code)
  }
  const value = printedJson(program, 'get', out.stdout)
  const { Username, Secret } = (value ?? {}) as Record<string, unknown>
  if (typeof Username !== 'string' || typeof Secret !== 'string') {
    throw new DproxyError('UPSTREAM_INVALID', `${program} get printed JSON without Username and Secret`)
  }
  if (Secret === '') return undefined
  if (/[\r\n\0]/.test(Username) || /[\r\n\0]/.test(Secret)) {
    throw new DproxyError('UPSTREAM_INVALID', `${program} get printed a user name or secret with a line break`)
  }
  const identityToken = Username === '<token>'
  return { username: Username, secret: Secret, identityToken }
}

/** `docker-credential-NAME list`: server URL -> user name (the protocol prints no secrets here). */
export async function helperList(name: string, opts: RunHelperOptions = {}): Promise<Record<string, string>> {
  const program = helperProgram(name)
  const out = await runProgram(name, 'list', '', opts)
  if (out.code !== 0) {
    throw failed(program, 'list', out.code)
  }
  const value = printedJson(program, 'list', out.stdout)
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new DproxyError('UPSTREAM_INVALID', `${program} list printed JSON that is not an object`)
  }
  const out2: Record<string, string> = {}
  for (const [url, user] of Object.entries(value)) if (typeof user === 'string') out2[url] = user
  return out2
}
