// Client auth with the real Docker engine, exactly as the README tells users
// to do it: `dproxy serve --auth`, the values of `dproxy env`, `docker login
// --password-stdin`, `docker pull "$CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX/alpine:latest"`.
// Without the login the pull fails with an auth error; after `dproxy env
// --rotate` the engine's stored password stops working, and a new login with
// the new one works again; a runner's own token (`dproxy env --for`) logs in and
// pulls, and stops working once revoked. Everything runs on loopback against the Hub shim.

import { once } from 'node:events'
import t from 'tap'
import { run } from '../fixtures/clients.js'
import { dockerOrSkip, startDockerd } from '../fixtures/dockerd.js'
import { startUpstream } from '../fixtures/upstream.js'
import { bin, isolatedEnv, spawnServe } from '../helpers/cli.js'

const authError = /unauthorized|authentication required|no basic auth credentials/i

t.test('docker login and pull with the credentials of dproxy env', async (t) => {
  if (!dockerOrSkip(t)) return
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  const serve = await spawnServe(t, ['--auth', '--host', '127.0.0.1', '--port', '0'], env)
  const base = serve.base
  const port = new URL(base).port

  const dproxyEnv = async (extra: string[] = []) => {
    const r = await run(process.execPath, [bin, 'env', '--format', 'json', '--host', `localhost:${port}`, ...extra], { env })
    t.equal(r.code, 0, `dproxy env ${extra.join(' ')}`, { stderr: r.stderr })
    return JSON.parse(r.stdout) as Record<string, string>
  }
  const vars = await dproxyEnv()
  const user = vars.CI_DEPENDENCY_PROXY_USER!
  const server = vars.CI_DEPENDENCY_PROXY_SERVER!
  const image = `${vars.CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX}/alpine:latest`
  t.equal(server, `localhost:${port}`)

  const engine = await startDockerd(t)
  t.teardown(() => engine.stop())

  const anonymous = await engine.docker(['pull', image], { timeoutMs: 120_000 })
  t.not(anonymous.code, 0, 'without docker login the pull fails')
  t.match(anonymous.stderr, authError)
  t.equal(up.hub.counts.manifestGet + up.hub.counts.manifestHead, 0, 'and nothing went upstream')

  const login = await engine.docker(['login', '-u', user, '--password-stdin', server], { input: vars.CI_DEPENDENCY_PROXY_PASSWORD })
  t.equal(login.code, 0, 'docker login with the values of dproxy env', { stderr: login.stderr })
  t.match(login.stdout, /Login Succeeded/)

  const pulled = await engine.docker(['pull', image], { timeoutMs: 120_000 })
  t.equal(pulled.code, 0, 'then the pull works', { stderr: pulled.stderr, dockerd: pulled.code === 0 ? '' : engine.logTail(20) })
  const digests = await engine.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}', image])
  t.match(digests.stdout, up.images.alpine.digest, 'the image Docker Hub has')

  const rotated = await dproxyEnv(['--rotate'])
  t.not(rotated.CI_DEPENDENCY_PROXY_PASSWORD, vars.CI_DEPENDENCY_PROXY_PASSWORD)
  let stale = await engine.docker(['pull', image], { timeoutMs: 120_000 })
  for (let i = 0; i < 20 && stale.code === 0; i++) {
    await new Promise((r) => setTimeout(r, 500))
    stale = await engine.docker(['pull', image], { timeoutMs: 120_000 })
  }
  t.not(stale.code, 0, 'the old password stops working after --rotate')
  t.match(stale.stderr, authError)

  const relogin = await engine.docker(['login', '-u', user, '--password-stdin', server], { input: rotated.CI_DEPENDENCY_PROXY_PASSWORD })
  t.equal(relogin.code, 0, 'docker login with the new password', { stderr: relogin.stderr })
  const again = await engine.docker(['pull', image], { timeoutMs: 120_000 })
  t.equal(again.code, 0, 'pulls again', { stderr: again.stderr })

  // A runner's own token (dproxy env --for): docker login with it, pull, then revoke it alone.
  const runner = await dproxyEnv(['--for', 'runner-1'])
  t.equal(runner.CI_DEPENDENCY_PROXY_USER, 'runner-1')
  const asRunner = await engine.docker(['login', '-u', 'runner-1', '--password-stdin', server], { input: runner.CI_DEPENDENCY_PROXY_PASSWORD })
  t.equal(asRunner.code, 0, 'docker login -u NAME with the token', { stderr: asRunner.stderr })
  await engine.docker(['image', 'rm', image])
  const runnerPull = await engine.docker(['pull', image], { timeoutMs: 120_000 })
  t.equal(runnerPull.code, 0, 'pulls with the token', { stderr: runnerPull.stderr })
  const revoked = await run(process.execPath, [bin, 'token', 'revoke', 'runner-1'], { env })
  t.equal(revoked.code, 0, 'dproxy token revoke', { stderr: revoked.stderr })
  await engine.docker(['image', 'rm', image])
  let refused = await engine.docker(['pull', image], { timeoutMs: 120_000 })
  for (let i = 0; i < 20 && refused.code === 0; i++) {
    await new Promise((r) => setTimeout(r, 500))
    await engine.docker(['image', 'rm', image])
    refused = await engine.docker(['pull', image], { timeoutMs: 120_000 })
  }
  t.not(refused.code, 0, 'the revoked token stops working (polled for at most ~10 s)')
  t.match(refused.stderr, authError)
  t.match(serve.err() + serve.out(), /user=runner-1/, 'the access log names the token')

  serve.child.kill('SIGTERM')
  await once(serve.child, 'exit')
  for (const secret of [vars.CI_DEPENDENCY_PROXY_PASSWORD!, rotated.CI_DEPENDENCY_PROXY_PASSWORD!, runner.CI_DEPENDENCY_PROXY_PASSWORD!]) {
    t.notMatch(serve.out() + serve.err(), secret, 'the daemon never prints the password')
    t.notMatch(engine.logTail(2000), secret, 'nor does dockerd log it')
  }
})
