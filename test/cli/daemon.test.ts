// `dproxy start`, `dproxy serve --detach` and `dproxy stop` as a user runs
// them: the built binary, an isolated HOME/config/cache/state, a real
// background daemon that is always stopped (SIGKILL as a last resort).

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createServer } from 'node:net'
import path from 'node:path'
import { Command } from 'commander'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { forwardedArgs } from '../../src/cli/daemon.js'
import { statePaths } from '../../src/control/lifecycle.js'
import { isProcessAlive } from '../../src/process.js'
import { startUpstream } from '../fixtures/upstream.js'
import { isolatedEnv, runDproxy } from '../helpers/cli.js'

// One upstream for the whole file (a registry and its Hub shim take a while to start); every
// test has its own cache dir, so each pulls from it afresh.
const up = await startUpstream()
t.teardown(() => up.stop())

interface World {
  env: Record<string, string>
  cacheDir: string
  stateDir: string
  /** The log and pid files of the daemon on cacheDir. */
  logFile: string
  pidFile: string
  run(args: string[], extraEnv?: Record<string, string>): Promise<{ code: number | null; out: string; err: string }>
}

function world(t: Test, extraEnv: Record<string, string> = {}): World {
  const env = isolatedEnv(t, extraEnv)
  const cacheDir = env.DPROXY_CACHE_DIR!
  const stateDir = env.DPROXY_STATE_DIR!
  const { logFile, pidFile } = statePaths(stateDir, cacheDir)
  const run = async (args: string[], more: Record<string, string> = {}) => runDproxy(args, { ...env, ...more })
  // Whatever happens in the test, no daemon outlives it.
  t.teardown(() => {
    const others = fs.existsSync(stateDir) ? fs.readdirSync(stateDir).filter((f) => f.endsWith('.pid')).map((f) => path.join(stateDir, f)) : []
    for (const file of [path.join(cacheDir, 'daemon.json'), pidFile, ...others]) {
      try {
        const text = fs.readFileSync(file, 'utf8')
        const pid = file.endsWith('.json') ? (JSON.parse(text) as { pid: number }).pid : Number(text.trim())
        if (pid !== process.pid && isProcessAlive(pid)) process.kill(pid, 'SIGKILL')
      } catch {
        // Not there: nothing to stop.
      }
    }
  })
  return { env, cacheDir, stateDir, logFile, pidFile, run }
}

t.test('start -> answers -> second start refused -> stop -> gone, pid file and lock removed', async (t) => {
  const w = world(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })

  const started = await w.run(['start', '--host', '127.0.0.1', '--port', '0', '--json'])
  t.equal(started.code, 0, started.err)
  const s = JSON.parse(started.out) as { pid: number; url: string; listen: string[]; logFile: string; pidFile: string; cacheDir: string }
  t.match(s, { pid: Number, url: /^http:\/\/127\.0\.0\.1:\d+$/, cacheDir: w.cacheDir, logFile: w.logFile, pidFile: w.pidFile })
  t.equal(fs.readFileSync(w.pidFile, 'utf8').trim(), String(s.pid))
  t.equal(JSON.parse(fs.readFileSync(path.join(w.cacheDir, 'daemon.json'), 'utf8')).pid, s.pid)
  t.ok(isProcessAlive(s.pid))
  const cmdline = fs.readFileSync(`/proc/${s.pid}/cmdline`, 'utf8').split('\0')
  t.ok(cmdline.includes('--max-semi-space-size=1'), 'the daemon runs with a small young generation (memory)')

  const res = await request(`${s.url}/v2/alpine/manifests/latest`)
  t.equal(res.statusCode, 200, 'the background daemon serves pulls')
  await res.body.dump()
  const status = await request(`${s.url}/_dproxy/status`)
  t.equal(((await status.body.json()) as { pid: number }).pid, s.pid)

  const again = await w.run(['start', '--host', '127.0.0.1', '--port', '0'])
  t.equal(again.code, 1)
  t.match(again.err, new RegExp(`already listening on ${s.listen[0]!.replace(/\./g, '\\.')}`))
  t.match(again.err, `pid ${s.pid}`)
  const detached = await w.run(['serve', '--detach', '--host', '127.0.0.1', '--port', '0'])
  t.equal(detached.code, 1, 'serve --detach is refused the same way')
  t.match(detached.err, `pid ${s.pid}`)
  const foreground = await w.run(['serve', '--host', '127.0.0.1', '--port', '0'])
  t.equal(foreground.code, 1, 'so is a foreground serve on the same cache dir')
  t.match(foreground.err, /already listening/)

  const stopped = await w.run(['stop'])
  t.equal(stopped.code, 0, stopped.err)
  t.equal(stopped.out, `dproxy stopped (pid ${s.pid})\n`)
  t.notOk(isProcessAlive(s.pid), 'the daemon is gone')
  t.notOk(fs.existsSync(w.pidFile), 'pid file removed')
  t.notOk(fs.existsSync(path.join(w.cacheDir, 'daemon.json')), 'lock removed')
  t.match(fs.readFileSync(s.logFile, 'utf8'), /SIGTERM: finishing requests in flight[\s\S]*stopped/, 'the log shows a clean stop')

  const twice = await w.run(['stop'])
  t.equal(twice.code, 0, 'stop is idempotent')
  t.equal(twice.out, 'dproxy is not running\n')
  const json = await w.run(['stop', '--json'])
  t.same(JSON.parse(json.out), { running: false, stopped: false, cleaned: [] })
})

t.test('serve --detach is start; a stale lock (dead pid) is taken over; stop finds it through its pid file too', async (t) => {
  const w = world(t)
  const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString())
  fs.writeFileSync(
    path.join(w.cacheDir, 'daemon.json'),
    JSON.stringify({ pid: dead, startedAt: new Date().toISOString(), listen: ['127.0.0.1:1'], url: 'http://127.0.0.1:1', version: '0.0.0' }),
  )
  const started = await w.run(['serve', '--detach', '--host', '127.0.0.1', '--port', '0'])
  t.equal(started.code, 0, started.err)
  const pid = Number(/started \(pid (\d+)\)/.exec(started.out)?.[1])
  t.match(started.out, /listening on http:\/\/127\.0\.0\.1:\d+/)
  t.match(started.out, `log: ${w.logFile}`)
  t.equal(JSON.parse(fs.readFileSync(path.join(w.cacheDir, 'daemon.json'), 'utf8')).pid, pid, 'the stale lock was taken over')

  // A stop that looks at another cache dir leaves it alone: that is another daemon's business.
  const other = path.join(path.dirname(w.cacheDir), 'home', 'other-cache')
  const elsewhere = await w.run(['stop', '--cache-dir', other])
  t.equal(elsewhere.out, 'dproxy is not running\n')
  t.ok(isProcessAlive(pid))
  // With its lock file gone (deleted by hand), stop still finds it through the cache dir's pid file.
  fs.rmSync(path.join(w.cacheDir, 'daemon.json'))
  const stopped = await w.run(['stop'])
  t.equal(stopped.code, 0, stopped.err)
  t.equal(stopped.out, `dproxy stopped (pid ${pid})\n`)
  t.notOk(isProcessAlive(pid))
  t.notOk(fs.existsSync(path.join(w.cacheDir, 'daemon.json')))
})

t.test('two daemons on two cache dirs sharing a state dir keep their own pid and log files', async (t) => {
  const w = world(t)
  const otherCache = path.join(path.dirname(w.cacheDir), 'home', 'cache-b')
  const b = statePaths(w.stateDir, otherCache)
  t.not(b.pidFile, w.pidFile)
  t.not(b.logFile, w.logFile)
  const startA = await w.run(['start', '--host', '127.0.0.1', '--port', '0', '--json'])
  t.equal(startA.code, 0, startA.err)
  const startB = await w.run(['start', '--host', '127.0.0.1', '--port', '0', '--json', '--cache-dir', otherCache])
  t.equal(startB.code, 0, startB.err)
  const a = JSON.parse(startA.out) as { pid: number; pidFile: string; logFile: string }
  const bs = JSON.parse(startB.out) as { pid: number; pidFile: string; logFile: string }
  t.match(a, { pidFile: w.pidFile, logFile: w.logFile })
  t.match(bs, { pidFile: b.pidFile, logFile: b.logFile })
  t.equal(fs.readFileSync(w.pidFile, 'utf8').trim(), String(a.pid))
  t.equal(fs.readFileSync(b.pidFile, 'utf8').trim(), String(bs.pid))

  // After a stop nothing runs: `running` says so, `stopped` says this call did it.
  const stopA = await w.run(['stop', '--json'])
  t.same(JSON.parse(stopA.out), { running: false, stopped: true, pid: a.pid, foundBy: 'lock' })
  t.notOk(fs.existsSync(w.pidFile), "A's pid file is gone")
  t.equal(fs.readFileSync(b.pidFile, 'utf8').trim(), String(bs.pid), "B's pid file is untouched")
  t.ok(isProcessAlive(bs.pid), 'B still runs')
  t.notMatch(fs.readFileSync(b.logFile, 'utf8'), /SIGTERM/, "A's stop is not in B's log")

  const stopB = await w.run(['stop', '--cache-dir', otherCache])
  t.equal(stopB.out, `dproxy stopped (pid ${bs.pid})\n`)
  t.notOk(fs.existsSync(b.pidFile))
})

t.test('start: a daemon that cannot start is reported with its log, and leaves nothing behind', async (t) => {
  const w = world(t)
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => blocker.close())
  const port = String((blocker.address() as { port: number }).port)
  const r = await w.run(['start', '--host', '127.0.0.1', '--port', port])
  t.equal(r.code, 1)
  t.match(r.err, /dproxy exited with status 1 before it answered; the end of .*dproxy-[0-9a-f]{12}\.log:/)
  t.match(r.err, /EADDRINUSE/)
  t.notOk(fs.existsSync(w.pidFile))
  t.notOk(fs.existsSync(path.join(w.cacheDir, 'daemon.json')))
})

t.test('start: a bad setting is a usage error before anything is spawned', async (t) => {
  const w = world(t)
  const r = await w.run(['start', '--max-age', 'soon'])
  t.equal(r.code, 2)
  t.match(r.err, /maxAge|max-age/)
  t.notOk(fs.existsSync(w.logFile), 'no daemon was started')
  const help = await w.run(['start', '--help'])
  t.equal(help.code, 0)
  for (const flag of ['--host', '--port', '--cache-dir', '--upstream', '--max-age', '--json']) t.match(help.out, flag)
  t.notMatch(help.out, /^\s+--(detach|log-file)\b/m, 'serve-only options are not offered')
  const stopHelp = await w.run(['stop', '--help'])
  t.match(stopHelp.out, /--timeout/)
})

t.test('start: bad --refresh* values and an exposed address without --auth fail as serve fails, before anything is started', async (t) => {
  const w = world(t)
  const cases = [
    ['--refresh', 'soon'],
    ['--refresh', '1h', '--refresh-window', 'a while'],
    ['--refresh', '1h', '--refresh-reserve', '150%'],
    ['--host', '0.0.0.0'],
  ]
  for (const args of cases) {
    const serve = await w.run(['serve', '--port', '0', ...args])
    const start = await w.run(['start', '--port', '0', ...args])
    t.equal(serve.code, 2, `serve ${args.join(' ')}: ${serve.err}`)
    t.equal(start.code, 2, `start ${args.join(' ')}`)
    t.equal(start.err, serve.err, `start ${args.join(' ')}: the message of serve`)
    t.notOk(fs.existsSync(w.logFile), `start ${args.join(' ')}: no daemon was started`)
  }
  const exposed = await w.run(['start', '--host', '0.0.0.0', '--port', '0', '--auth', '--refresh', 'soon'])
  t.equal(exposed.code, 2, 'with --auth, the exposed address passes and the refresh is what fails')
  t.match(exposed.err, /refresh/)
  t.notOk(fs.existsSync(w.logFile))
})

t.test('start: log format, level and metrics address from config keys and DPROXY_* reach the background daemon', async (t) => {
  const w = world(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  for (const [key, value] of [['log-format', 'json'], ['log-level', 'debug']]) {
    const set = await w.run(['config', 'set', key!, value!])
    t.equal(set.code, 0, set.err)
  }
  const refused = await w.run(['config', 'set', 'log-level', 'loud'])
  t.equal(refused.code, 2, 'a bad value is refused as the flag refuses it')
  t.match(refused.err, "expected logLevel like 'debug', got 'loud' (one of error, warn, info, debug)")
  const badEnv = await w.run(['start', '--host', '127.0.0.1', '--port', '0'], { DPROXY_METRICS_ADDRESS: 'anywhere' })
  t.equal(badEnv.code, 2, 'a bad DPROXY_METRICS_ADDRESS stops start before anything is spawned')
  t.match(badEnv.err, /metricsAddress.*DPROXY_METRICS_ADDRESS/)
  t.notOk(fs.existsSync(w.logFile))

  const started = await w.run(['start', '--host', '127.0.0.1', '--port', '0', '--json'], { DPROXY_METRICS_ADDRESS: '127.0.0.1:0' })
  t.equal(started.code, 0, started.err)
  const s = JSON.parse(started.out) as { url: string; logFile: string }
  const ping = await request(`${s.url}/v2/`)
  await ping.body.dump()
  const metricsUrl = /^metrics: (http:\/\/127\.0\.0\.1:\d+\/metrics)$/m.exec(fs.readFileSync(s.logFile, 'utf8'))?.[1]
  t.ok(metricsUrl, 'a metrics listener at DPROXY_METRICS_ADDRESS')
  const metrics = await request(metricsUrl!)
  t.equal(metrics.statusCode, 200)
  await metrics.body.dump()
  t.equal((await w.run(['stop'])).code, 0)
  // The daemon's own lines; its stdout (where it listens) shares the file as plain text.
  const records = fs
    .readFileSync(s.logFile, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: string; msg: string; path?: string })
  t.ok(records.some((r) => r.msg === 'stopped'), 'logged as JSON lines: the config file said json')
  t.ok(records.some((r) => r.level === 'debug' && r.path === '/v2/'), 'the ping is logged: the config file said debug')
})

t.test('stop loads none of the daemon: it starts about a quarter faster, and scripts and service units run it', async (t) => {
  const w = world(t)
  // Module hooks that fail the resolution of the daemon's composition root (dist/daemon/daemon.js).
  const hooks = `export async function resolve(specifier, context, next) {
    const found = await next(specifier, context)
    if (/\\/daemon\\/daemon\\.js$/.test(found.url)) throw new Error('FORBIDDEN import of ' + found.url)
    return found
  }`
  const register = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});`
  const forbidDaemon = { nodeArgs: [`--import=data:text/javascript,${encodeURIComponent(register)}`] }
  // The control: start needs the daemon's checks, so the hooks stop it.
  const start = await runDproxy(['start', '--host', '127.0.0.1', '--port', '0'], w.env, forbidDaemon)
  t.not(start.code, 0)
  t.match(start.err, /FORBIDDEN import of .*\/daemon\/daemon\.js/)
  const stop = await runDproxy(['stop'], w.env, forbidDaemon)
  t.equal(stop.code, 0, stop.err)
  t.equal(stop.out, 'dproxy is not running\n')
})

t.test('forwardedArgs: what was typed, as flags again; repeatables repeated; the rest left out', async (t) => {
  const cmd = new Command('serve')
    .exitOverride()
    .option('--host <addr>')
    .option('--port <n>')
    .option('--cache-dir <dir>')
    .option('--upstream <u>', '', (v: string, prev: string[] = []) => [...prev, v])
    .option('--detach')
    .option('--auth')
    .option('--no-probe')
    .option('--max-age <d>', '', '0')
    .action(() => {})
  cmd.parse(['--port', '0', '--upstream', 'a=http://x', '--detach', '--upstream', 'b=http://y', '--cache-dir', 'rel', '--auth', '--no-probe'], {
    from: 'user',
  })
  t.same(forwardedArgs(cmd), ['--port', '0', '--upstream', 'a=http://x', '--upstream', 'b=http://y', '--auth', '--no-probe'])
})
