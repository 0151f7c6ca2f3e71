// `dproxy token` and `dproxy env --for` as users run them (the built binary,
// an isolated HOME, the file credential store), against `dproxy serve --auth`
// as the daemon: a token logs in with Basic and with skopeo's token dance, a
// revocation made by the CLI reaches the running daemon within seconds,
// `token ls` and `status` show the last use, and no secret lands anywhere but
// the stdout of the command that made it.

import { once } from 'node:events'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { run, SKOPEO } from '../fixtures/clients.js'
import { startUpstream } from '../fixtures/upstream.js'
import { isolatedEnv, runDproxy, spawnServe } from '../helpers/cli.js'

const basic = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('token create, ls, revoke without a daemon', async (t) => {
  const env = isolatedEnv(t)
  const created = await runDproxy(['token', 'create', 'ci-1', '--expires', '90d', '--repos', 'docker.io/library/*'], env)
  t.equal(created.code, 0, created.err)
  const token = created.out.trim()
  t.match(token, /^dpt_ci-1_[A-Za-z0-9_-]{43}$/, 'printed once, on stdout')
  t.match(created.err, /shown only now/)
  t.notMatch(created.err, token.slice(-43), 'stderr does not repeat it')
  const json = await runDproxy(['token', 'create', 'laptop', '--json'], env)
  const parsed = JSON.parse(json.out) as { name: string; token: string; expires: string | null }
  t.strictSame(Object.keys(parsed), ['name', 'token', 'expires'])
  t.equal(parsed.name, 'laptop')
  t.equal(parsed.expires, null)

  const ls = await runDproxy(['token', 'ls', '--json'], env)
  t.equal(ls.code, 0, ls.err)
  const list = JSON.parse(ls.out) as Array<Record<string, unknown>>
  t.match(list, [
    { name: 'ci-1', repos: 'docker.io/library/*', lastUsed: null, expires: /^\d{4}-/ },
    { name: 'laptop', repos: null, lastUsed: null, expires: null },
  ])
  const text = await runDproxy(['token', 'ls'], env)
  t.match(text.out, /^NAME +CREATED +LAST USED +EXPIRES +REPOS\nci-1 .* never .*docker\.io\/library\/\*\nlaptop .* never +never +all\n$/)
  const stateDir = env.DPROXY_STATE_DIR!
  const files = fs.readFileSync(path.join(stateDir, 'tokens.json'), 'utf8')
  for (const secret of [token, parsed.token]) {
    t.notMatch(ls.out + text.out + files, secret.slice(-43), 'ls and the file hold no secret')
  }
  t.equal(fs.statSync(path.join(stateDir, 'tokens.json')).mode & 0o777, 0o600)
  t.notMatch(fs.readFileSync(path.join(env.DPROXY_CONFIG_DIR!, 'credentials.json'), 'utf8'), token.slice(-43))

  for (const [args, pattern] of [
    [['token', 'create', 'ci-1'], /exists/],
    [['token', 'create', 'dproxy'], /built-in user/],
    [['token', 'create', 'a b'], /expected a token name/],
    [['token', 'create', 'x', '--expires', 'soon'], /expected expires/],
    [['token', 'create', 'x', '--repos', 'alpine'], /expected --repos/],
    [['token', 'revoke', 'ghost'], /no token named 'ghost'/],
  ] as const) {
    const r = await runDproxy([...args], env)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.err, pattern)
  }
  const logins = await runDproxy(['login', '--list', '--json', '--no-docker-credentials'], env)
  t.notMatch(logins.out, /dproxy-tokens/, "the token key is not one of dproxy login's logins")
  const revoked = await runDproxy(['token', 'revoke', 'laptop'], env)
  t.equal(revoked.code, 0)
  t.strictSame((JSON.parse((await runDproxy(['token', 'ls', '--json'], env)).out) as Array<{ name: string }>).map((e) => e.name), ['ci-1'])
})

t.test('env --for NAME: creates the token once; an existing one needs --rotate', async (t) => {
  const env = isolatedEnv(t, { DPROXY_PORT: '5123' })
  const first = await runDproxy(['env', '--for', 'runner-7', '--json'], env)
  t.equal(first.code, 0, first.err)
  const vars = JSON.parse(first.out) as Record<string, string>
  t.equal(vars.CI_DEPENDENCY_PROXY_USER, 'runner-7')
  t.match(vars.CI_DEPENDENCY_PROXY_PASSWORD, /^dpt_runner-7_[A-Za-z0-9_-]{43}$/)
  t.equal(vars.CI_DEPENDENCY_PROXY_SERVER, 'localhost:5123')
  t.equal(vars.CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX, 'localhost:5123/dproxy/dependency_proxy/containers')
  t.equal(vars.CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX, 'localhost:5123/dproxy/dependency_proxy/containers')
  t.match(first.err, /token runner-7 created/)
  const again = await runDproxy(['env', '--for', 'runner-7'], env)
  t.equal(again.code, 2)
  t.match(again.err, /exists, and its secret is stored hashed: it cannot be printed again\. Pass --rotate/)
  t.equal(again.out, '')
  const rotated = await runDproxy(['env', '--for', 'runner-7', '--rotate', '--format', 'dotenv'], env)
  t.equal(rotated.code, 0, rotated.err)
  const fresh = /CI_DEPENDENCY_PROXY_PASSWORD=(\S+)/.exec(rotated.out)?.[1]
  t.match(fresh, /^dpt_runner-7_/)
  t.not(fresh, vars.CI_DEPENDENCY_PROXY_PASSWORD)
  t.notMatch(rotated.err, fresh!.slice(-43))
  const builtin = await runDproxy(['env', '--for', 'dproxy', '--json'], env)
  t.equal((JSON.parse(builtin.out) as Record<string, string>).CI_DEPENDENCY_PROXY_USER, 'dproxy', '--for dproxy is the built-in user')
  const wrong = await runDproxy(['env', '--expires', '1d'], env)
  t.equal(wrong.code, 2)
  t.match(wrong.err, /go with --for NAME/)
})

t.test('serve --auth: a token logs in (curl-like and skopeo), shows in ls and status, and a revocation applies within seconds', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  const created = await runDproxy(['token', 'create', 'ci', '--json'], env)
  const token = (JSON.parse(created.out) as { token: string }).token
  const limited = (JSON.parse((await runDproxy(['token', 'create', 'lib', '--repos', 'docker.io/library/*', '--json'], env)).out) as { token: string }).token
  const serve = await spawnServe(t, ['--auth', '--host', '127.0.0.1', '--port', '0'], env)
  const base = serve.base
  const server = new URL(base).host
  const status = async (p: string, authorization?: string) => {
    const res = await request(`${base}${p}`, { headers: authorization ? { authorization } : {} })
    await res.body.dump()
    return res.statusCode
  }
  t.equal(await status('/v2/'), 401)
  t.equal(await status('/v2/', basic('ci', token)), 200, 'Basic NAME:TOKEN')

  const skopeoInspect = async (ref: string, creds: string) => {
    const authFile = path.join(env.HOME!, 'auth.json')
    fs.writeFileSync(authFile, '{"auths":{}}')
    return run(SKOPEO, ['inspect', '--raw', '--tls-verify=false', '--authfile', authFile, '--creds', creds, '--retry-times', '0', `docker://${server}/${ref}`], {
      env: { PATH: process.env.PATH ?? '', HOME: env.HOME!, REGISTRY_AUTH_FILE: authFile },
      timeoutMs: 60_000,
    })
  }
  if (fs.existsSync(SKOPEO)) {
    const inspected = await skopeoInspect('library/alpine:latest', `ci:${token}`)
    t.equal(inspected.code, 0, 'skopeo --creds NAME:TOKEN (the bearer dance)', { stderr: inspected.stderr })
    t.match(inspected.stdout, /"mediaType"|"manifests"|"layers"/)
    const denied = await skopeoInspect('someone/alpine:latest', `lib:${limited}`)
    t.not(denied.code, 0, 'a --repos token cannot read another repository')
    t.match(denied.stderr, /denied|403/i)
    const allowed = await skopeoInspect('library/alpine:latest', `lib:${limited}`)
    t.equal(allowed.code, 0, 'but can read a matching one', { stderr: allowed.stderr })
  } else {
    t.comment('skopeo is not installed: the skopeo part is skipped')
  }

  const ls = JSON.parse((await runDproxy(['token', 'ls', '--json'], env)).out) as Array<{ name: string; lastUsed: string | null }>
  t.match(ls.find((e) => e.name === 'ci')?.lastUsed, /^\d{4}-\d\d-\d\dT/, 'token ls shows the last use the daemon knows')
  const st = await runDproxy(['status', '--json', '--no-probe'], env)
  const snapshot = JSON.parse(st.out) as { clients?: Array<{ name: string; lastUsed: string | null }> }
  t.match(snapshot.clients, [{ name: 'dproxy', lastUsed: null }, { name: 'ci', lastUsed: /^\d{4}-/ }, { name: 'lib' }])
  const human = await runDproxy(['status', '--no-probe'], env)
  t.match(human.out, /client logins \(last use\)\n  dproxy +never\n  ci +\d{4}-\d\d-\d\dT[^\n]*\n  lib /)

  const revoked = await runDproxy(['token', 'revoke', 'ci'], env)
  t.equal(revoked.code, 0, revoked.err)
  let after = await status('/v2/', basic('ci', token))
  for (let i = 0; i < 60 && after !== 401; i++) {
    await sleep(250)
    after = await status('/v2/', basic('ci', token))
  }
  t.equal(after, 401, 'refused after the revocation (polled for at most 15 s)')

  serve.child.kill('SIGTERM')
  await once(serve.child, 'exit')
  for (const secret of [token, limited]) t.notMatch(serve.out() + serve.err(), secret.slice(-43), 'the daemon never prints a secret')
  t.match(serve.err() + serve.out(), /user=ci/, 'its access log names the token')
  const used = JSON.parse(fs.readFileSync(path.join(env.DPROXY_STATE_DIR!, 'tokens-used.json'), 'utf8')) as { lastUsed: Record<string, string> }
  t.match(used.lastUsed, { ci: /^\d{4}-/, lib: /^\d{4}-/ }, 'written when the daemon stopped')
})
