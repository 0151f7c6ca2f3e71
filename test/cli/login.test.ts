// `dproxy login` / `dproxy logout` as users run them: the built binary,
// spawned with an isolated HOME and config dir, against the Hub shim. Covers
// the checked login (good and bad passwords), where the secret ends up (a
// 0600 file, or the OS keychain under a private D-Bus session) and where it
// must never appear, the terminal prompt without echo, and a running
// `dproxy serve` switching to the login and back without a restart.

import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import { bin, isolatedEnv, spawnServe } from '../helpers/cli.js'

const password = 's3cret-Pa55-for-alice'

// One Hub for the whole file (a registry and its shim take a while to start): every test
// makes its own HOME and config, and reads the Hub's counts only after resetting them.
const up = await startUpstream({ hub: { users: { alice: password } } })
t.teardown(() => up.stop())

interface Result {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs the binary with exactly `env` (plus PATH), optional stdin, bounded in time. */
function dproxy(args: string[], env: Record<string, string>, input?: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
    if (input !== undefined) child.stdin!.end(input)
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** A fresh HOME, config, cache and state dir; the file credential store unless `extra` says otherwise. */
function isolated(t: Test, up: Upstream | undefined, extra: Record<string, string> = {}): Record<string, string> {
  return isolatedEnv(t, { ...(up ? { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` } : {}), ...extra })
}

/** Every file under `dir` that contains `needle`. */
function filesContaining(dir: string, needle: string, except: string[] = []): string[] {
  if (!fs.existsSync(dir)) return []
  return fs
    .readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((f) => path.join(dir, f))
    .filter((f) => !except.includes(f) && fs.statSync(f).isFile() && fs.readFileSync(f, 'latin1').includes(needle))
}

t.test('login and logout with the file store', async (t) => {

  t.test('a good password is checked, stored 0600, and printed nowhere', async (t) => {
    const env = isolated(t, undefined)
    const credFile = path.join(env.DPROXY_CONFIG_DIR!, 'credentials.json')
    up.hub.resetCounts()
    const r = await dproxy(['login', '-u', 'alice', '--password-stdin', '--upstream', `docker.io=${up.hubUrl}`], env, `${password}\n`)
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /^Login Succeeded\n/)
    t.match(r.stdout, `alice @ docker.io (checked at ${up.hubUrl}), stored in ${credFile} (mode 0600)`)
    t.equal(up.hub.counts.tokenRequests, 1, 'checked at the token service')
    t.equal(fs.statSync(credFile).mode & 0o777, 0o600)
    t.equal(fs.statSync(env.DPROXY_CONFIG_DIR!).mode & 0o777, 0o700)
    const stored = JSON.parse(fs.readFileSync(credFile, 'utf8')) as { credentials: Record<string, unknown> }
    t.strictSame(stored.credentials['docker.io'], { username: 'alice', secret: password }, 'one trailing newline trimmed')
    t.notMatch(r.stdout + r.stderr, password)
    t.strictSame(filesContaining(path.dirname(env.HOME!), password, [credFile]), [], 'no other file holds the secret')

    const json = await dproxy(['login', 'index.docker.io', '-u', 'alice', '--password-stdin', '--json'], { ...env, DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` }, password)
    t.equal(json.code, 0, json.stderr)
    t.strictSame(JSON.parse(json.stdout), {
      registry: 'docker.io',
      username: 'alice',
      upstream: up.hubUrl,
      scheme: 'bearer',
      store: 'file',
      path: credFile,
    })
    t.notMatch(json.stdout + json.stderr, password)

    const out = await dproxy(['logout'], env)
    t.equal(out.code, 0, out.stderr)
    t.equal(out.stdout, 'Removing login credentials for docker.io\n')
    t.notOk(fs.existsSync(credFile), 'the last logout removes the file')
    const again = await dproxy(['logout', 'docker.io', '--json'], env)
    t.equal(again.code, 0)
    t.strictSame(JSON.parse(again.stdout), { registry: 'docker.io', removed: false, from: [] })
  })

  t.test('a wrong password: exit 1, "incorrect username or password", nothing saved', async (t) => {
    const env = isolated(t, up)
    const wrong = 'wrong-Pa55word'
    const r = await dproxy(['login', '-u', 'alice', '--password-stdin'], env, `${wrong}\n`)
    t.equal(r.code, 1)
    t.equal(r.stderr, 'dproxy: login failed: incorrect username or password\n')
    t.equal(r.stdout, '')
    t.strictSame(fs.readdirSync(env.DPROXY_CONFIG_DIR!), [], 'nothing saved')
  })

  t.test('usage errors exit 2; there is no -p', async (t) => {
    const env = isolated(t, up)
    for (const [args, input, pattern] of [
      [['login', '--password-stdin'], password, /give the user name with -u/],
      [['login', '-u', 'alice'], undefined, /stdin is not a terminal/],
      [['login', '-u', 'alice', '-p', password], undefined, /unknown option '-p'/],
      [['login', 'bad host!', '-u', 'alice', '--password-stdin'], password, /expected REGISTRY/],
      [['login', 'dproxy-client', '-u', 'alice', '--password-stdin'], password, /reserved/],
      [['login', '-u', 'alice', '--password-stdin'], '\n', /expected a password or token/],
      [['login', '-u', 'alice', '--password-stdin'], 'two\nlines\n', /one line/],
    ] as const) {
      const r = await dproxy([...args], env, input)
      t.equal(r.code, 2, args.join(' '))
      t.match(r.stderr, pattern, args.join(' '))
      t.notMatch(r.stderr, password)
    }
    t.strictSame(fs.readdirSync(env.DPROXY_CONFIG_DIR!), [])
  })
})

t.test('on a terminal: asks for the user name, then the password without echo', async (t) => {
  const script = (() => {
    try {
      return execFileSync('sh', ['-c', 'command -v script'], { encoding: 'utf8' }).trim()
    } catch {
      return ''
    }
  })()
  if (script === '') {
    t.plan(0, 'util-linux script(1) is not installed, so there is no pseudo-terminal to test with')
    return
  }
  const env = isolated(t, up)
  const command = [process.execPath, bin, 'login'].map((a) => `'${a}'`).join(' ')
  const child = spawn(script, ['-q', '-e', '-c', command, '/dev/null'], {
    env: { PATH: process.env.PATH ?? '', SHELL: '/bin/sh', TERM: 'dumb', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  let transcript = ''
  child.stdout.on('data', (c: Buffer) => (transcript += c.toString()))
  child.stderr.on('data', (c: Buffer) => (transcript += c.toString()))
  const waitFor = async (text: string) => {
    for (let i = 0; i < 200 && !transcript.includes(text); i++) await new Promise((r) => setTimeout(r, 50))
    if (!transcript.includes(text)) throw new Error(`no ${JSON.stringify(text)} in ${JSON.stringify(transcript)}`)
  }
  await waitFor('Username: ')
  child.stdin.write('alicx\x7fe\r')
  await waitFor('Password: ')
  child.stdin.write(`${password}\r`)
  const [code] = await once(child, 'exit')
  child.stdin.end()
  t.equal(code, 0, transcript)
  t.match(transcript, 'alice', 'the user name is echoed')
  t.match(transcript, 'Login Succeeded')
  t.notMatch(transcript, password, 'the password is not')
  const stored = JSON.parse(fs.readFileSync(path.join(env.DPROXY_CONFIG_DIR!, 'credentials.json'), 'utf8')) as {
    credentials: Record<string, unknown>
  }
  t.strictSame(stored.credentials['docker.io'], { username: 'alice', secret: password }, 'backspace edited the name')
})

t.test('a running daemon uses a new login without restart, and goes anonymous after logout', async (t) => {
  const env = isolated(t, up)
  const serve = await spawnServe(t, ['--host', '127.0.0.1', '--port', '0'], { PATH: process.env.PATH ?? '', ...env })
  const base = serve.base

  /** Pulls alpine's manifest, then reads which Docker-RateLimit-Source the daemon last saw. */
  const source = async (): Promise<string | undefined> => {
    const m = await request(`${base}/v2/alpine/manifests/latest`)
    await m.body.dump()
    t.equal(m.statusCode, 200)
    const status = (await (await request(`${base}/_dproxy/status`)).body.json()) as { rateLimit: Array<{ registry: string; source?: string }> }
    return status.rateLimit.find((r) => r.registry === 'docker.io')?.source
  }
  const until = async (want: string): Promise<string | undefined> => {
    let seen: string | undefined
    for (let i = 0; i < 40 && seen !== want; i++) {
      seen = await source()
      if (seen !== want) await new Promise((r) => setTimeout(r, 250))
    }
    return seen
  }

  t.equal(await source(), up.hub.sourceFor(), 'anonymous before login')
  const login = await dproxy(['login', '-u', 'alice', '--password-stdin'], env, password)
  t.equal(login.code, 0, login.stderr)
  t.equal(await until(up.hub.sourceFor('alice')), up.hub.sourceFor('alice'), 'pulls as alice within seconds')
  const logout = await dproxy(['logout'], env)
  t.equal(logout.code, 0, logout.stderr)
  t.equal(await until(up.hub.sourceFor()), up.hub.sourceFor(), 'anonymous again after logout')

  serve.child.kill('SIGTERM')
  const [code, signal] = await once(serve.child, 'exit')
  t.equal(code, 0, `serve stops cleanly (signal ${signal})`)
  t.notMatch(serve.out() + serve.err(), password, 'the daemon never logs the secret')
  t.strictSame(filesContaining(path.dirname(env.HOME!), password), [], 'and no file keeps it after logout')
})

// --- the OS keychain: gnome-keyring in a private D-Bus session ---

function which(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

const keyringMissing = [
  ...['dbus-run-session', 'gnome-keyring-daemon'].filter((c) => !which(c)),
  ...(fs.existsSync(fileURLToPath(new URL('../../node_modules/keytar/package.json', import.meta.url))) ? [] : ['keytar (npm)']),
]
const keyringRequired = Boolean(process.env.CI || process.env.DPROXY_REQUIRE_KEYRING)

t.test(
  'login stores in the OS keychain when one answers (gnome-keyring under dbus-run-session)',
  {
    skip:
      process.platform !== 'linux'
        ? 'gnome-keyring is Linux only'
        : keyringMissing.length > 0 && !keyringRequired
          ? `not installed: ${keyringMissing.join(', ')} (apt-get install dbus gnome-keyring; npm install keytar)`
          : false,
  },
  async (t) => {
    t.strictSame(keyringMissing, [], 'CI or DPROXY_REQUIRE_KEYRING is set, so the keyring tools must be installed')
    if (keyringMissing.length > 0) return
    const root = t.testdir({ home: {}, config: {}, data: {} })
    // gnome-keyring binds its control socket in XDG_RUNTIME_DIR; a path under t.testdir is too long for a socket.
    const run = fs.mkdtempSync(path.join(os.tmpdir(), 'dproxy-kc-'))
    fs.chmodSync(run, 0o700)
    t.teardown(() => fs.rmSync(run, { recursive: true, force: true }))
    const configDir = path.join(root, 'config')
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: path.join(root, 'home'),
      XDG_DATA_HOME: path.join(root, 'data'),
      XDG_RUNTIME_DIR: run,
      DPROXY_CONFIG_DIR: configDir,
      DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}`,
    }
    const script = [
      'echo -n pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null',
      '"$0" "$1" login -u alice --password-stdin --json',
      'test -e "$DPROXY_CONFIG_DIR/credentials.json" && echo "credentials.json exists"',
      'echo ---',
      '"$0" "$1" logout --json',
    ].join('; ')
    const child = spawn('dbus-run-session', ['--', 'sh', '-c', script, process.execPath, bin], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.stdin.end(`${password}\n`)
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000)
    const [code] = await once(child, 'exit')
    clearTimeout(timer)
    t.equal(code, 0, stderr)
    const [loginOut = '', logoutOut = ''] = stdout.split('---\n')
    t.strictSame(JSON.parse(loginOut), { registry: 'docker.io', username: 'alice', upstream: up.hubUrl, scheme: 'bearer', store: 'keychain' })
    t.notMatch(stderr, /no OS keychain answered/, 'no fallback notice')
    t.strictSame(JSON.parse(logoutOut), { registry: 'docker.io', removed: true, from: ['keychain'] }, 'it was in the keychain')
    t.notMatch(stdout + stderr, password)
    t.strictSame(fs.readdirSync(configDir), [], 'no credentials.json, ever')
  },
)

t.test("login --list: dproxy's own login first, then docker's and podman's, each with its source; never a secret", async (t) => {
  const b64 = (s: string) => Buffer.from(s).toString('base64')
  const env = isolatedEnv(
    t,
    { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` },
    {
      docker: { 'config.json': JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: b64(`hub-docker:${password}`) }, 'ghcr.io': { auth: b64(`gh:${password}`) } } }) },
      podman: { 'auth.json': JSON.stringify({ auths: { 'quay.io': { auth: b64(`qu:${password}`) }, 'ghcr.io': { auth: b64(`gh-podman:${password}`) } } }) },
    },
  )
  const root = path.dirname(env.HOME!)
  const withFiles = { ...env, DOCKER_CONFIG: path.join(root, 'docker'), REGISTRY_AUTH_FILE: path.join(root, 'podman', 'auth.json') }
  t.equal((await dproxy(['login', '-u', 'alice', '--password-stdin'], withFiles, password)).code, 0)

  const listed = await dproxy(['login', '--list'], withFiles)
  t.equal(listed.code, 0, listed.stderr)
  t.equal(
    listed.stdout,
    [
      'REGISTRY   USER   SOURCE',
      'docker.io  alice  dproxy credentials file',
      'ghcr.io    gh     docker config.json auths',
      'quay.io    qu     podman auth.json',
      '',
    ].join('\n'),
  )
  const json = await dproxy(['login', '--list', '--json', 'ghcr.io'], withFiles)
  t.same(JSON.parse(json.stdout), { logins: [{ registry: 'ghcr.io', username: 'gh', source: 'docker config.json auths' }], dockerCredentials: true, problems: [] })
  const off = await dproxy(['login', '--list', '--json'], { ...withFiles, DPROXY_DOCKER_CREDENTIALS: 'off' })
  t.same(JSON.parse(off.stdout).logins, [{ registry: 'docker.io', username: 'alice', source: 'dproxy credentials file' }], 'DPROXY_DOCKER_CREDENTIALS=off')
  for (const r of [listed, json, off]) t.notMatch(r.stdout + r.stderr, password)
})
