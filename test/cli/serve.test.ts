// `dproxy serve` as a user runs it: the built binary, spawned, configured by
// flags and environment, stopped by a signal.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { request } from 'undici'
import { startUpstream } from '../fixtures/upstream.js'

const bin = fileURLToPath(new URL('../../bin/dproxy.js', import.meta.url))

function startServe(t: Tap.Test, args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, [bin, 'serve', ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: t.testdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  const listening = new Promise<string>((resolve, reject) => {
    const check = () => {
      const m = /listening on (http:\/\/\S+)/.exec(stdout)
      if (m) resolve(m[1]!)
    }
    child.stdout.on('data', check)
    child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${stderr}`)))
  })
  return { child, listening, out: () => stdout, err: () => stderr }
}

t.test('serve: flags over environment, prints where it listens and the cache; SIGTERM exits 0', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const cacheDir = t.testdir()
  const s = startServe(t, ['--host', '127.0.0.1', '--port', '0', '--cache-dir', cacheDir], {
    DPROXY_CONFIG_DIR: t.testdir(),
    DPROXY_CACHE_DIR: '/nonexistent/should-be-overridden',
    DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}`,
  })
  const base = await s.listening
  t.match(s.out(), `cache: ${cacheDir}`)
  const res = await request(`${base}/v2/alpine/manifests/latest`)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['docker-content-digest'], up.images.alpine.digest)
  await res.body.dump()
  s.child.kill('SIGTERM')
  const [code] = await once(s.child, 'exit')
  t.equal(code, 0)
})

t.test('serve: bad settings are usage errors (exit 2) with a precise message', async (t) => {
  for (const [args, env, pattern] of [
    [['--port', 'abc'], {}, /port/],
    [['--max-age', 'soon'], {}, /maxAge|max-age/],
    [[], { DPROXY_UPSTREAMS: 'docker.io' }, /DPROXY_UPSTREAMS/],
  ] as const) {
    const child = spawn(process.execPath, [bin, 'serve', '--port', '0', ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: t.testdir(), DPROXY_CONFIG_DIR: t.testdir(), DPROXY_CACHE_DIR: t.testdir(), ...env },
    })
    let err = ''
    child.stderr.on('data', (c: Buffer) => (err += c.toString()))
    const [code] = await once(child, 'exit')
    t.equal(code, 2, `${args.join(' ')} ${JSON.stringify(env)}`)
    t.match(err, pattern)
  }
})

t.test('serve: a port in use is a failure (exit 1)', async (t) => {
  const first = startServe(t, ['--host', '127.0.0.1', '--port', '0', '--cache-dir', t.testdir()], { DPROXY_CONFIG_DIR: t.testdir() })
  const base = await first.listening
  const port = new URL(base).port
  const child = spawn(process.execPath, [bin, 'serve', '--host', '127.0.0.1', '--port', port, '--cache-dir', t.testdir()], {
    env: { PATH: process.env.PATH ?? '', HOME: t.testdir(), DPROXY_CONFIG_DIR: t.testdir() },
  })
  let err = ''
  child.stderr.on('data', (c: Buffer) => (err += c.toString()))
  const [code] = await once(child, 'exit')
  t.equal(code, 1)
  t.match(err, /EADDRINUSE/)
  first.child.kill('SIGINT')
  t.equal((await once(first.child, 'exit'))[0], 0)
})
