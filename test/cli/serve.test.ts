// `dproxy serve` as a user runs it: the built binary, spawned, configured by
// flags and environment, stopped by a signal.

import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { once } from 'node:events'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { startUpstream } from '../fixtures/upstream.js'
import { bin, isolatedEnv, spawnServe } from '../helpers/cli.js'

const run = promisify(execFile)

// One upstream for the whole file (a registry and its Hub shim take a while to start); every
// test has its own cache dir, so each pulls from it afresh.
const up = await startUpstream()
t.teardown(() => up.stop())

/** Runs `dproxy serve ARGS` expecting it to fail; returns the exit code and stderr. */
async function failingServe(args: string[], env: Record<string, string>): Promise<{ code: number | null; err: string }> {
  const child = spawn(process.execPath, [bin, 'serve', ...args], { env })
  let err = ''
  child.stderr.on('data', (c: Buffer) => (err += c.toString()))
  const [code] = (await once(child, 'exit')) as [number | null]
  return { code, err }
}

t.test('serve: flags over environment, prints where it listens and the cache; SIGTERM exits 0', async (t) => {
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

t.test('serve --tls auto: HTTPS for curl --cacert and skopeo --cert-dir; status (pinned) shows the certificate; start too', async (t) => {
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  const s = await spawnServe(t, ['--host', '127.0.0.1', '--port', '0', '--tls', 'auto', '--tls-name', 'host.docker.internal'], env)
  t.match(s.base, /^https:\/\/127\.0\.0\.1:\d+$/)
  const ca = path.join(env.DPROXY_STATE_DIR!, 'tls', 'ca.pem')
  const caPem = await readFile(ca, 'utf8')
  t.match(s.out(), /tls: own CA sha256:[0-9a-f]{64}; certificate for localhost, 127\.0\.0\.1, ::1, host\.docker\.internal until /)
  t.notMatch(s.out(), /other machines trust/, 'loopback only: no command for other machines')

  const curl = await run('curl', ['-sS', '--cacert', ca, '-o', '/dev/null', '-w', '%{http_code}', `${s.base}/v2/alpine/manifests/latest`])
  t.equal(curl.stdout, '200', 'curl trusting the CA pulls the manifest')
  // Not t.testdir(): it would empty the directory isolatedEnv made.
  const certDir = path.join(env.HOME!, 'certs')
  await mkdir(certDir)
  await writeFile(path.join(certDir, 'ca.crt'), caPem)
  const inspect = await run('skopeo', ['inspect', '--cert-dir', certDir, '--raw', `docker://${s.base.slice('https://'.length)}/library/alpine:latest`]).catch((err: unknown) => {
    throw new Error(`${String(err)}\n${s.err()}`)
  })
  t.match(inspect.stdout, /"schemaVersion"/, 'skopeo with the CA in --cert-dir, no --tls-verify=false')

  const status = await run(process.execPath, [bin, 'status', '--json'], { env })
  const report = JSON.parse(status.stdout) as { tls: { mode: string; names: string[]; caFingerprint: string } }
  t.equal(report.tls.mode, 'auto')
  t.strictSame(report.tls.names, ['localhost', '127.0.0.1', '::1', 'host.docker.internal'])
  const { certificateFingerprint } = await import('../../src/fingerprint.js')
  t.equal(report.tls.caFingerprint, certificateFingerprint(caPem))
  const text = await run(process.execPath, [bin, 'status'], { env })
  t.match(text.stdout, new RegExp(`listening +${s.base.replace(/\./g, '\\.')}`))
  t.match(text.stdout, /tls +own CA sha256:/)
  s.child.kill('SIGTERM')
  await once(s.child, 'exit')

  const started = await run(process.execPath, [bin, 'start', '--host', '127.0.0.1', '--port', '0', '--tls', 'auto', '--json'], { env })
  const info = JSON.parse(started.stdout) as { url: string }
  t.match(info.url, /^https:\/\//, 'start waits for an https daemon it reaches through the pinned certificate')
  t.equal(await readFile(ca, 'utf8'), caPem, 'the same CA')
  const stopped = await run(process.execPath, [bin, 'stop'], { env })
  t.match(stopped.stdout, /stopped/)
})

t.test('serve refuses a plain or half-configured listener beyond loopback, and half a TLS pair (exit 2)', async (t) => {
  const env = isolatedEnv(t)
  const plain = await failingServe(['--host', '0.0.0.0', '--port', '0', '--auth'], env)
  t.equal(plain.code, 2)
  t.match(plain.err, /listening on 0\.0\.0\.0 sends passwords and images over the network, so it must speak TLS: pass --tls auto/)
  const half = await failingServe(['--port', '0', '--tls-cert', '/nonexistent/cert.pem'], env)
  t.equal(half.code, 2)
  t.match(half.err, /tlsCert and tlsKey go together/)
  const missing = await failingServe(['--host', '127.0.0.1', '--port', '0', '--tls-cert', '/nonexistent/cert.pem', '--tls-key', '/nonexistent/key.pem'], env)
  t.equal(missing.code, 2)
  t.match(missing.err, /cannot read the TLS certificate \/nonexistent\/cert\.pem: ENOENT/)
})
