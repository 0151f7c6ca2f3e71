// `dproxy serve` as a user runs it: the built binary, spawned, configured by
// flags and environment, stopped by a signal.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { startUpstream } from '../fixtures/upstream.js'
import { bin, isolatedEnv, spawnServe } from '../helpers/cli.js'

/** Runs `dproxy serve ARGS` expecting it to fail; returns the exit code and stderr. */
async function failingServe(args: string[], env: Record<string, string>): Promise<{ code: number | null; err: string }> {
  const child = spawn(process.execPath, [bin, 'serve', ...args], { env })
  let err = ''
  child.stderr.on('data', (c: Buffer) => (err += c.toString()))
  const [code] = (await once(child, 'exit')) as [number | null]
  return { code, err }
}

t.test('serve: flags over environment, prints where it listens and the cache; SIGTERM exits 0', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  const cacheDir = path.join(env.HOME!, 'flag-cache')
  const s = await spawnServe(t, ['--host', '127.0.0.1', '--port', '0', '--cache-dir', cacheDir], {
    ...env,
    DPROXY_CACHE_DIR: '/nonexistent/should-be-overridden',
  })
  t.match(s.out(), `cache: ${cacheDir}`)
  const res = await request(`${s.base}/v2/alpine/manifests/latest`)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['docker-content-digest'], up.images.alpine.digest)
  await res.body.dump()
  s.child.kill('SIGTERM')
  const [code] = await once(s.child, 'exit')
  t.equal(code, 0)
})

t.test('serve: an endpoint list with --no-origin and the chain limits; a refused first endpoint costs the pull nothing', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const env = isolatedEnv(t)
  const s = await spawnServe(t, [
    '--host', '127.0.0.1', '--port', '0',
    '--upstream', `docker.io=http://127.0.0.1:1,${up.hubUrl}`,
    '--no-origin', '--chain-connect-timeout', '1s', '--chain-first-byte-timeout', '5s',
  ], env)
  t.match(s.out(), `upstream: docker.io -> http://127.0.0.1:1, then ${up.hubUrl}\n`, 'the chain as it will be asked, no origin after it')
  const res = await request(`${s.base}/v2/alpine/manifests/latest`)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['docker-content-digest'], up.images.alpine.digest)
  await res.body.dump()
  s.child.kill('SIGTERM')
  await once(s.child, 'exit')
})

t.test('serve: stopped by SIGTERM after a cold blob pull, it exits by itself, so node --cpu-prof writes its profile', async (t) => {
  // The bench's DPROXY_BENCH_PROFILE relies on it: process.exit() or a kill would leave no profile.
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  const profiles = path.join(env.HOME!, 'profiles')
  const s = await spawnServe(t, ['--host', '127.0.0.1', '--port', '0'], env, ['--cpu-prof', `--cpu-prof-dir=${profiles}`])
  const layer = up.images.alpine.blobs[0]!
  const res = await request(`${s.base}/v2/library/alpine/blobs/${layer.digest}`)
  t.equal(res.statusCode, 200)
  t.equal((await res.body.arrayBuffer()).byteLength, layer.size)
  s.child.kill('SIGTERM')
  t.equal((await once(s.child, 'exit'))[0], 0)
  // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; the main thread is 0 (under tap a loader thread writes one too).
  const main = (await readdir(profiles)).find((f) => f.endsWith('.cpuprofile') && f.split('.')[4] === '0')
  t.ok(main, 'the main thread wrote its profile')
  const profile = JSON.parse(await readFile(path.join(profiles, main!), 'utf8')) as { nodes?: unknown[] }
  t.ok(Array.isArray(profile.nodes) && profile.nodes.length > 0, 'a profile with call frames')
})

t.test('serve: bad settings are usage errors (exit 2) with a precise message', async (t) => {
  const env = isolatedEnv(t)
  for (const [args, extra, pattern] of [
    [['--port', 'abc'], {}, /port/],
    [['--max-age', 'soon'], {}, /maxAge|max-age/],
    [[], { DPROXY_UPSTREAMS: 'docker.io' }, /DPROXY_UPSTREAMS/],
    [['--allow-registry', 'ghcr.io/owner'], {}, /registries.*--allow-registry/],
    [[], { DPROXY_REGISTRIES: 'not a host' }, /DPROXY_REGISTRIES/],
    [['--chain-connect-timeout', 'never'], {}, /chainConnectTimeout.*--chain-connect-timeout/],
    [[], { DPROXY_UPSTREAMS: 'https://a.example,docker.io=https://b.example' }, /a list starts with REGISTRY=URL/],
  ] as const) {
    const { code, err } = await failingServe(['--port', '0', ...args], { ...env, ...extra })
    t.equal(code, 2, `${args.join(' ')} ${JSON.stringify(extra)}`)
    t.match(err, pattern)
  }
})

t.test('serve: a port in use is a failure (exit 1)', async (t) => {
  const env = isolatedEnv(t)
  const first = await spawnServe(t, ['--host', '127.0.0.1', '--port', '0'], env)
  const port = new URL(first.base).port
  const { code, err } = await failingServe(
    ['--host', '127.0.0.1', '--port', port, '--cache-dir', path.join(env.HOME!, 'other-cache')],
    env,
  )
  t.equal(code, 1)
  t.match(err, /EADDRINUSE/)
  first.child.kill('SIGINT')
  t.equal((await once(first.child, 'exit'))[0], 0)
})

t.test('serve: no keychain module is loaded before a login is looked up', { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  const { DPROXY_CREDENTIAL_STORE: _forced, ...env } = isolatedEnv(t)
  const s = await spawnServe(t, ['--host', '127.0.0.1', '--port', '0'], env)
  const res = await request(`${s.base}/v2/`)
  await res.body.dump()
  // A native module stays mapped once loaded: keytar.node or @napi-rs/keyring's keyring.*.node.
  const natives = (await readFile(`/proc/${s.child.pid}/maps`, 'utf8')).split('\n').filter((l) => /keytar|keyring/.test(l))
  t.same(natives, [])
  s.child.kill('SIGTERM')
  t.equal((await once(s.child, 'exit'))[0], 0)
})
