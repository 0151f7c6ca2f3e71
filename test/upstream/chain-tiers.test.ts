// Team tiers in front of the origin, driven as users drive them: the built
// `dproxy` binary (serve, login, env) and skopeo. A GitLab Dependency Proxy
// (test/fixtures/gitlab.ts: a group path and a JWT realm that wants a
// personal access token) and another dproxy (--auth, the laptop logs in with
// the password `dproxy env` prints) each stand before the Hub shim, which
// plays the origin. Counters at every tier show who served what.

import { spawn } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { freePort, makeTempDir, skopeoCopyAll } from '../fixtures/clients.js'
import { startGitLab, type GitLab } from '../fixtures/gitlab.js'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import { bin, isolatedEnv, spawnServe, type Serving } from '../helpers/cli.js'
import type { StatusReport } from '../../src/daemon/admin.js'

const PAT = 'glpat-Xy7fake-personal-token'

let up: Upstream
let gitlab: GitLab

t.before(async () => {
  up = await startUpstream()
  gitlab = await startGitLab({ registryUrl: up.registryUrl, group: 'acme', tokens: { alice: PAT } })
})

t.teardown(async () => {
  await gitlab?.stop()
  await up?.stop()
})

interface Result {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs the binary with exactly `env`, optional stdin, bounded in time. */
function dproxy(args: string[], env: Record<string, string>, input?: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { env, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] })
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

async function serve(t: Test, env: Record<string, string>, args: string[] = []): Promise<Serving> {
  const port = await freePort()
  return spawnServe(t, ['--host', '127.0.0.1', '--port', String(port), ...args], env)
}

async function skopeo(t: Test, base: string, ref: string): Promise<void> {
  await skopeoCopyAll(`${new URL(base).host}/${ref}`, makeTempDir('dproxy-tiers-', t), { timeoutMs: 60_000 })
}

async function status(base: string): Promise<StatusReport> {
  const res = await request(`${base}/_dproxy/status`)
  return (await res.body.json()) as StatusReport
}

const hubManifests = () => up.hub.counts.manifestGet + up.hub.counts.manifestHead
const hubBlobs = () => Object.values(up.hub.counts.blobGet).reduce((a, b) => a + b, 0)

t.test('GitLab dependency proxy with a JWT realm: dproxy login <its host>, then pulls go through it, library/ images included', async (t) => {
  const gitlabHost = new URL(gitlab.url).host
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${gitlab.prefixUrl},${up.hubUrl}`, DPROXY_NO_ORIGIN: 'docker.io' })

  const wrong = await dproxy(['login', gitlabHost, '-u', 'alice', '--password-stdin'], env, 'not-the-token\n')
  t.not(wrong.code, 0, 'a wrong personal access token is refused at the realm')
  const login = await dproxy(['login', gitlabHost, '-u', 'alice', '--password-stdin', '--json'], env, `${PAT}\n`)
  t.equal(login.code, 0, login.stderr)
  t.match(JSON.parse(login.stdout), { registry: gitlabHost, username: 'alice', scheme: 'bearer' }, 'stored under the endpoint\'s host')

  gitlab.requests.length = 0
  gitlab.tokenRequests.length = 0
  gitlab.served.length = 0
  const hubBefore = { manifests: hubManifests(), blobs: hubBlobs() }
  const laptop = await serve(t, env)
  await skopeo(t, laptop.base, 'alpine:latest')
  await skopeo(t, laptop.base, 'bitnami/redis:7.2')
  t.ok(gitlab.served.some((r) => r.startsWith('GET /v2/acme/dependency_proxy/containers/library/alpine/manifests/')), 'library/ before the group path')
  t.ok(gitlab.served.some((r) => r.includes('/v2/acme/dependency_proxy/containers/bitnami/redis/blobs/')), 'a two-part name under the group path')
  t.notOk(gitlab.requests.some((r) => r.includes('ns=')), 'a path-prefix endpoint is not told the registry')
  const tokens = gitlab.tokenRequests.filter((r) => r.scope !== '')
  t.ok(tokens.length > 0 && tokens.every((r) => r.user === 'alice' && r.status === 200), 'every token asked with alice\'s token')
  t.ok(tokens.some((r) => r.scope === 'repository:acme/dependency_proxy/containers/library/alpine:pull'), 'the scope names the group path')
  t.strictSame({ manifests: hubManifests(), blobs: hubBlobs() }, hubBefore, 'the origin saw nothing')
})

t.test('GitLab without the login: the chain falls through to the origin, and the refusal is kept for status and doctor', async (t) => {
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${gitlab.prefixUrl},${up.hubUrl}`, DPROXY_NO_ORIGIN: 'docker.io' })
  gitlab.requests.length = 0
  gitlab.tokenRequests.length = 0
  gitlab.served.length = 0
  const hubBefore = up.hub.counts.manifestHead + up.hub.counts.manifestGet
  const laptop = await serve(t, env)
  await skopeo(t, laptop.base, 'alpine:latest')
  t.ok(gitlab.tokenRequests.some((r) => r.user === '-' && r.status === 401), 'GitLab was asked first, and refused an anonymous token')
  t.strictSame(gitlab.served, [], 'GitLab served nothing')
  t.ok(up.hub.counts.manifestHead + up.hub.counts.manifestGet > hubBefore, 'the origin answered')
  const first = (await status(laptop.base)).endpoints?.find((e) => e.endpoint === gitlab.prefixUrl)
  t.equal(first?.up, true, 'a refusal is an answer: the endpoint stays up')
  t.match(first?.lastError, /401/, 'the reason is kept')
  t.match(first?.lastError, new RegExp(`dproxy login ${new URL(gitlab.url).host.replace(/\./g, '\\.')}`), 'and names the login to make')
})

/** HOME, config, cache and state dirs of their own, beside the test's (isolatedEnv gives one set per test). */
function machine(t: Test, name: string, extra: Record<string, string>): Record<string, string> {
  const root = makeTempDir(`dproxy-${name}-`, t)
  const dirs: Record<string, string> = {}
  for (const d of ['home', 'config', 'cache', 'state']) {
    dirs[d] = `${root}/${d}`
    mkdirSync(dirs[d]!, { recursive: true })
  }
  return {
    PATH: process.env.PATH ?? '',
    HOME: dirs.home!,
    DPROXY_CONFIG_DIR: dirs.config!,
    DPROXY_CACHE_DIR: dirs.cache!,
    DPROXY_STATE_DIR: dirs.state!,
    DPROXY_CREDENTIAL_STORE: 'file',
    ...extra,
  }
}

t.test('another dproxy as the team tier (--auth): the laptop logs in with its `dproxy env` password; a second laptop is served by the team alone', async (t) => {
  const teamEnv = machine(t, 'team', { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  // A team tier trusts a tag for a while, so a second laptop's pull costs the origin nothing at all (not even a HEAD).
  const team = await serve(t, teamEnv, ['--auth', '--max-age', '1h'])
  const printed = await dproxy(['env', '--json'], teamEnv)
  t.equal(printed.code, 0, printed.stderr)
  const password = (JSON.parse(printed.stdout) as { CI_DEPENDENCY_PROXY_PASSWORD: string }).CI_DEPENDENCY_PROXY_PASSWORD
  const teamHost = new URL(team.base).host
  const teamAuth = { authorization: `Basic ${Buffer.from(`dproxy:${password}`).toString('base64')}` }
  const teamStatus = async () => (await (await request(`${team.base}/_dproxy/status`, { headers: teamAuth })).body.json()) as StatusReport

  const laptopEnv = (name: string) =>
    machine(t, name, { DPROXY_UPSTREAMS: `docker.io=${team.base},${up.hubUrl}`, DPROXY_NO_ORIGIN: 'docker.io' })
  const first = laptopEnv('laptop1')
  const refused = await dproxy(['login', teamHost, '-u', 'dproxy', '--password-stdin'], first, 'wrong\n')
  t.not(refused.code, 0, 'a wrong password is refused by the team daemon')
  const login = await dproxy(['login', teamHost, '-u', 'dproxy', '--password-stdin', '--json'], first, `${password}\n`)
  t.equal(login.code, 0, login.stderr)
  t.match(JSON.parse(login.stdout), { registry: teamHost, scheme: 'bearer' })

  const hubBefore = { manifests: hubManifests(), blobs: hubBlobs() }
  const laptop1 = await serve(t, first)
  await skopeo(t, laptop1.base, 'alpine:latest')
  const afterFirst = await teamStatus()
  t.ok(afterFirst.counters.cacheMisses > 0, 'the team tier fetched on the first pull')
  t.ok(hubManifests() > hubBefore.manifests, 'and asked the origin for it')
  const endpoints1 = (await status(laptop1.base)).endpoints?.filter((e) => e.registry === 'docker.io') ?? []
  t.strictSame(endpoints1.map((e) => [e.endpoint, e.kind, e.up]), [
    [team.base, 'mirror', true],
    [up.hubUrl, 'mirror', true],
  ])
  t.equal(endpoints1[1]?.requests, 0, 'the laptop never asked the origin')

  // A second laptop with a fresh cache: everything from the team tier, nothing reaches the origin.
  const second = laptopEnv('laptop2')
  t.equal((await dproxy(['login', teamHost, '-u', 'dproxy', '--password-stdin'], second, `${password}\n`)).code, 0)
  const hubMid = { manifests: hubManifests(), blobs: hubBlobs() }
  const laptop2 = await serve(t, second)
  await skopeo(t, laptop2.base, 'alpine:latest')
  t.strictSame({ manifests: hubManifests(), blobs: hubBlobs() }, hubMid, 'the origin saw nothing on the second laptop\'s pull')
  const afterSecond = await teamStatus()
  t.ok(afterSecond.counters.cacheHits > afterFirst.counters.cacheHits, 'the team tier served it from its cache')
  t.equal(afterSecond.counters.cacheMisses, afterFirst.counters.cacheMisses, 'with no new miss')
  t.equal((await status(laptop2.base)).counters.cacheMisses > 0, true, 'the second laptop had a cold cache')
})
