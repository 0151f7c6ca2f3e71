// `dproxy env` and `dproxy serve --auth` as users run them: the built binary
// with an isolated HOME and config dir. The password `env` prints must be the
// one a running `serve --auth` accepts, `--rotate` must replace it in that
// running daemon, and the password must appear on env's stdout and nowhere
// else (stderr, the daemon's output, the config file).

import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { bin, isolatedEnv, spawnServe } from '../helpers/cli.js'
import { startDaemon } from '../helpers/daemon.js'


interface Result {
  code: number | null
  stdout: string
  stderr: string
}

function dproxy(args: string[], env: Record<string, string>): Result {
  const r = spawnSync(process.execPath, [bin, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

const isolated = isolatedEnv

function storedSecret(env: Record<string, string>): string | undefined {
  const file = path.join(env.DPROXY_CONFIG_DIR!, 'credentials.json')
  const data = JSON.parse(fs.readFileSync(file, 'utf8')) as { credentials: Record<string, { secret: string }> }
  return data.credentials['dproxy-client']?.secret
}

const basic = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`

t.test('env: creates the password once, prints it in every format, rotates it', async (t) => {
  const env = isolated(t, { DPROXY_PORT: '5123' })
  const shell = dproxy(['env'], env)
  t.equal(shell.code, 0, shell.stderr)
  t.equal(shell.stderr, '')
  const secret = storedSecret(env)!
  t.match(secret, /^[A-Za-z0-9_-]{43}$/)
  t.equal(
    shell.stdout,
    [
      "export CI_DEPENDENCY_PROXY_USER='dproxy'",
      `export CI_DEPENDENCY_PROXY_PASSWORD='${secret}'`,
      "export CI_DEPENDENCY_PROXY_SERVER='localhost:5123'",
      "export CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX='localhost:5123/dproxy/dependency_proxy/containers'",
      "export CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX='localhost:5123/dproxy/dependency_proxy/containers'",
      '',
    ].join('\n'),
  )

  // The round trip scripts do: eval, then use the variables.
  const script = 'eval "$("$0" "$1" env)"; printf "%s|%s|%s" "$CI_DEPENDENCY_PROXY_USER" "$CI_DEPENDENCY_PROXY_PASSWORD" "$CI_DEPENDENCY_PROXY_SERVER"'
  const sh = spawnSync('sh', ['-c', script, process.execPath, bin], {
    env: { PATH: process.env.PATH ?? '', ...env },
    encoding: 'utf8',
  })
  t.equal(sh.stdout, `dproxy|${secret}|localhost:5123`)

  const json = dproxy(['env', '--json', '--host', 'ci-cache.example'], env)
  t.equal(json.code, 0)
  t.strictSame(JSON.parse(json.stdout), {
    CI_DEPENDENCY_PROXY_USER: 'dproxy',
    CI_DEPENDENCY_PROXY_PASSWORD: secret,
    CI_DEPENDENCY_PROXY_SERVER: 'ci-cache.example:5123',
    CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX: 'ci-cache.example:5123/dproxy/dependency_proxy/containers',
    CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX: 'ci-cache.example:5123/dproxy/dependency_proxy/containers',
  })
  t.equal(dproxy(['env', '--format', 'json'], env).stdout, dproxy(['env', '--json'], env).stdout)
  const auth = dproxy(['env', '--format', 'docker-auth-config', '--host', '10.0.0.5:6000'], env)
  t.strictSame(JSON.parse(auth.stdout), {
    auths: { '10.0.0.5:6000': { auth: Buffer.from(`dproxy:${secret}`).toString('base64') } },
  })
  t.match(dproxy(['env', '--format', 'dotenv'], env).stdout, `CI_DEPENDENCY_PROXY_PASSWORD=${secret}\n`)
  t.match(dproxy(['env', '--format', 'gitlab-ci'], env).stdout, `variables:\n  CI_DEPENDENCY_PROXY_USER: "dproxy"\n  CI_DEPENDENCY_PROXY_PASSWORD: "${secret}"\n`)

  const rotated = dproxy(['env', '--rotate', '--json'], env)
  t.equal(rotated.code, 0)
  const fresh = (JSON.parse(rotated.stdout) as { CI_DEPENDENCY_PROXY_PASSWORD: string }).CI_DEPENDENCY_PROXY_PASSWORD
  t.not(fresh, secret)
  t.equal(storedSecret(env), fresh)
  t.match(rotated.stderr, /new client password stored; a running daemon stops accepting the old one within 5 s/)
  t.notMatch(rotated.stderr, fresh)
  t.equal(fs.statSync(path.join(env.DPROXY_CONFIG_DIR!, 'credentials.json')).mode & 0o777, 0o600)
})

t.test('env: usage errors exit 2', async (t) => {
  const env = isolated(t)
  for (const [args, pattern] of [
    [['env', '--format', 'yaml'], /argument 'yaml' is invalid/],
    [['env', '--host', 'not a host'], /expected --host/],
    [['env', '-p'], /unknown option/],
  ] as const) {
    const r = dproxy([...args], env)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, pattern)
    t.equal(r.stdout, '')
  }
  const zero = dproxy(['env'], { ...env, DPROXY_PORT: '0' })
  t.equal(zero.code, 2)
  t.match(zero.stderr, /port is 0/)
})

t.test('serve refuses a non-loopback address without --auth (exit 2)', async (t) => {
  const env = isolated(t)
  const r = dproxy(['serve', '--host', '0.0.0.0', '--port', '0'], env)
  t.equal(r.code, 2)
  t.match(r.stderr, /listening on 0\.0\.0\.0 lets other machines use this cache, so clients must authenticate: pass --auth/)
  t.notOk(fs.existsSync(path.join(env.DPROXY_CONFIG_DIR!, 'credentials.json')), 'no password was created for a daemon that did not start')
})

t.test('serve --auth accepts the password env prints, and a rotation without restart', async (t) => {
  const env = isolated(t)
  const serve = await spawnServe(t, ['--auth', '--host', '127.0.0.1', '--port', '0'], { PATH: process.env.PATH ?? '', ...env })
  const base = serve.base
  t.match(serve.out(), 'client auth: required (user dproxy; dproxy env prints the password)')
  const server = new URL(base).host

  const read = (args: string[] = []) => {
    const r = dproxy(['env', '--json', '--host', server, ...args], env)
    t.equal(r.code, 0, r.stderr)
    return JSON.parse(r.stdout) as Record<string, string>
  }
  const vars = read()
  t.equal(vars.CI_DEPENDENCY_PROXY_SERVER, server)
  const password = vars.CI_DEPENDENCY_PROXY_PASSWORD!
  t.equal(password, storedSecret(env), 'serve created the password at start; env printed that one')

  const status = async (path: string, headers: Record<string, string> = {}) => {
    const res = await request(`${base}${path}`, { headers })
    await res.body.dump()
    return res.statusCode
  }
  t.equal(await status('/v2/'), 401)
  t.equal(await status('/_dproxy/token?service=dproxy', { authorization: basic('dproxy', password) }), 200)
  t.equal(await status('/v2/', { authorization: basic('dproxy', password) }), 200)

  const fresh = read(['--rotate']).CI_DEPENDENCY_PROXY_PASSWORD!
  let old = 200
  for (let i = 0; i < 40 && old !== 401; i++) {
    old = await status('/v2/', { authorization: basic('dproxy', password) })
    if (old !== 401) await new Promise((r) => setTimeout(r, 250))
  }
  t.equal(old, 401, 'the old password stops working within seconds')
  t.equal(await status('/_dproxy/token', { authorization: basic('dproxy', fresh) }), 200, 'the new one works')

  serve.child.kill('SIGTERM')
  await once(serve.child, 'exit')
  for (const secret of [password, fresh]) {
    t.notMatch(serve.out() + serve.err(), secret, 'the daemon never prints the password')
    const config = path.join(env.DPROXY_CONFIG_DIR!, 'config.json')
    if (fs.existsSync(config)) t.notMatch(fs.readFileSync(config, 'utf8'), secret)
  }
})

t.test('env loads neither ink nor react (it runs on every CI job); its wall time is reported', async (t) => {
  const env = isolated(t)
  const dir = env.HOME!
  const files: Record<string, string> = {
    'hooks.mjs': [
      "import { appendFileSync } from 'node:fs'",
      'export async function resolve(specifier, context, next) {',
      '  const result = await next(specifier, context)',
      "  appendFileSync(process.env.DPROXY_TEST_LOADED, result.url + '\\n')",
      '  return result',
      '}',
      '',
    ].join('\n'),
    'register.mjs': "import { register } from 'node:module'\nregister('./hooks.mjs', import.meta.url)\n",
  }
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text)
  const loaded = path.join(dir, 'loaded.txt')
  const r = spawnSync(process.execPath, ['--import', path.join(dir, 'register.mjs'), bin, 'env'], {
    env: { PATH: process.env.PATH ?? '', ...env, DPROXY_TEST_LOADED: loaded },
    encoding: 'utf8',
    timeout: 60_000,
  })
  t.equal(r.status, 0, r.stderr)
  const urls = fs.readFileSync(loaded, 'utf8').trim().split('\n')
  t.ok(urls.some((u) => u.endsWith('/dist/cli/env.js')), 'the hook saw the modules env loads')
  t.strictSame(urls.filter((u) => /\/node_modules\/(ink|react|react-reconciler)\//.test(u)), [])

  const times: number[] = []
  for (let i = 0; i < 5; i++) {
    const started = performance.now()
    const run = spawnSync(process.execPath, [bin, 'env'], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 })
    times.push(performance.now() - started)
    t.equal(run.status, 0)
  }
  times.sort((a, b) => a - b)
  t.comment(`dproxy env: median ${Math.round(times[2]!)} ms of 5 runs (min ${Math.round(times[0]!)} ms)`)
})

t.test('env: the running daemon\'s address first, then the configured port', async (t) => {
  const env = isolated(t, { DPROXY_PORT: '5123' })
  const server = () => (JSON.parse(dproxy(['env', '--json'], env).stdout) as { CI_DEPENDENCY_PROXY_SERVER: string }).CI_DEPENDENCY_PROXY_SERVER
  t.equal(server(), 'localhost:5123', 'no daemon: the configured port')
  const d = await startDaemon(t, undefined, { cacheDir: env.DPROXY_CACHE_DIR!, port: 0 })
  t.not(d.port, 5123)
  t.equal(server(), `localhost:${d.port}`, 'the port the daemon on this cache dir listens on')
  t.equal(
    (JSON.parse(dproxy(['env', '--json', '--host', 'ci-cache:5000'], env).stdout) as { CI_DEPENDENCY_PROXY_SERVER: string }).CI_DEPENDENCY_PROXY_SERVER,
    'ci-cache:5000',
    '--host still wins',
  )
  await d.stop(0)
  t.equal(server(), 'localhost:5123', 'stopped: the configured port again')
})
