// The access log and `dproxy logs` as users meet them: the built binary logs
// in to a Hub fixture that requires a password, starts a detached daemon with
// JSON logs and a small rotation size, and pulls through it. The log holds one
// line per manifest and blob request with its cache result, rotates, is
// printed and followed by `dproxy logs`, and never contains the password, a
// bearer token, an Authorization header or a signed CDN URL's query.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { bin, isolatedEnv, runDproxy } from '../helpers/cli.js'
import { blobDigests, get, pull } from '../helpers/daemon.js'

const PASSWORD = 'pw-for-the-access-log-7Qx'

interface Line {
  time: string
  level: string
  msg: string
  path?: string
  status?: number
  cache?: string | null
  method?: string
  client?: string
  userAgent?: string | null
  durationMs?: number
  bytes?: number
}

t.test('a detached daemon logs every pull as JSON lines, rotates, and leaks no secret', async (t) => {
  const up = await startUpstream({ hub: { requireAuth: true, users: { alice: PASSWORD } } })
  t.teardown(() => up.stop())
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  const login = await runDproxy(['login', '-u', 'alice', '--password-stdin'], env, { input: `${PASSWORD}\n` })
  t.equal(login.code, 0, login.err)

  const start = await runDproxy(['start', '--host', '127.0.0.1', '--port', '0', '--json', '--log-format', 'json', '--log-max-size', '3kB'], env)
  t.equal(start.code, 0, start.err)
  t.teardown(() => runDproxy(['stop'], env))
  const started = JSON.parse(start.out) as { listen: string[]; logFile: string }
  const base = `http://${started.listen[0]}`
  const { alpine, redis } = up.images

  await pull(base, 'library/alpine', 'latest')
  await pull(base, 'library/alpine', 'latest')
  await pull(base, 'bitnami/redis', '7.2')

  const ua = await get(`${base}/v2/library/alpine/manifests/latest`, { 'user-agent': 'docker/27.0.3 go/go1.21' })
  t.equal(ua.status, 200)

  const files = [started.logFile, ...[1, 2, 3].map((i) => `${started.logFile}.${i}`)].filter((f) => fs.existsSync(f))
  t.ok(files.includes(`${started.logFile}.1`), `the log rotated past 3kB: ${files.join(', ')}`)
  t.ok(fs.statSync(`${started.logFile}.1`).size <= 3000 + 1000, 'a rotated file is about the size asked for')
  const text = files.reverse().map((f) => fs.readFileSync(f, 'utf8')).join('')
  const lines = text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Line)
  const requests = lines.filter((l) => l.path !== undefined)
  const of = (p: string) => requests.filter((l) => l.path === p).map((l) => `${l.method} ${l.status} ${l.cache}`)
  t.strictSame(of('/v2/library/alpine/manifests/latest'), ['GET 200 miss', 'GET 200 hit', 'GET 200 hit'], 'the tag: fetched, then from cache')
  for (const digest of blobDigests(alpine)) {
    t.strictSame(of(`/v2/library/alpine/blobs/${digest}`), ['GET 200 miss', 'GET 200 hit'], `blob ${digest.slice(7, 19)}`)
  }
  for (const digest of blobDigests(redis)) t.strictSame(of(`/v2/bitnami/redis/blobs/${digest}`), ['GET 200 miss'])
  const one = requests.findLast((l) => l.path === '/v2/library/alpine/manifests/latest')!
  t.equal(one.userAgent, 'docker/27.0.3 go/go1.21', 'the user agent')
  t.equal(one.level, 'info')
  t.equal(one.client, '127.0.0.1')
  t.type(one.durationMs, 'number')
  t.ok((one.bytes ?? 0) > alpine.manifest.length, 'bytes sent, headers included')
  t.equal(requests.filter((l) => l.path === '/v2/').length, 0, 'pings are debug lines, not logged at info')

  // Nothing secret: the password (also as Basic), every token the hub issued, the CDN signatures.
  const secrets = [PASSWORD, Buffer.from(`alice:${PASSWORD}`).toString('base64'), ...up.hub.issuedTokens()]
  for (const r of up.hub.counts.requests) {
    const verify = /[?&]verify=([^&]+)/.exec(r.path)?.[1]
    if (verify) secrets.push(verify)
  }
  t.ok(up.hub.issuedTokens().length > 0 && secrets.length > 3, 'there were tokens and signed URLs to leak')
  for (const s of secrets) t.notOk(text.includes(s), `the log does not contain ${s.slice(0, 4)}...`)
  t.notMatch(text, /authorization|bearer|verify=/i)

  const last = await runDproxy(['logs', '-n', '2', '--json'], env)
  t.equal(last.code, 0, last.err)
  const printed = last.out.trim().split('\n')
  t.equal(printed.length, 2)
  for (const l of printed) t.ok(JSON.parse(l), 'each line is JSON')

  await t.test('-f prints what comes next, across rotations', async (t) => {
    // -f prints what comes next, across rotations, until killed.
    const follow = spawn(process.execPath, [bin, 'logs', '-f', '-n', '1'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    t.teardown(() => {
      if (follow.exitCode === null) process.kill(follow.pid!, 'SIGKILL')
    })
    let followed = ''
    follow.stdout.on('data', (c: Buffer) => (followed += c.toString()))
    // Its one old line says it is running (bounded wait).
    for (let i = 0; i < 150 && followed === ''; i++) await new Promise((r) => setTimeout(r, 100))
    const before = followed.length
    await pull(base, 'bitnami/redis', '7.2')
    await pull(base, 'library/alpine', 'latest')
    const fresh = () => followed.slice(before)
    for (let i = 0; i < 100 && !fresh().includes('/v2/library/alpine/manifests/latest'); i++) await new Promise((r) => setTimeout(r, 100))
    t.match(fresh(), '/v2/bitnami/redis/manifests/7.2', 'followed the first pull')
    t.match(fresh(), '/v2/library/alpine/manifests/latest', 'and the next, after the file rotated')
    t.ok(fs.existsSync(`${started.logFile}.2`), 'the follow crossed a rotation')
  })
})

t.test('dproxy logs without a log file says where it looked', async (t) => {
  const env = isolatedEnv(t)
  const r = await runDproxy(['logs'], env)
  t.equal(r.code, 1)
  t.match(r.err, new RegExp(`no daemon log at ${path.join(env.DPROXY_STATE_DIR!, 'dproxy-')}`))
  t.equal((await runDproxy(['logs', '-n', 'many'], env)).code, 2)
})
