// The cache dir lock (daemon.json) and liveness, with real files, real
// processes and a real in-process Daemon. Finding and stopping a daemon from
// the CLI's side is test/control/; spawning the built binary (`dproxy
// start/stop`) is test/cli/daemon.test.ts.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import { createServer } from 'node:net'
import path from 'node:path'
import t from 'tap'
import { Daemon } from '../../src/daemon/daemon.js'
import { findDaemon } from '../../src/control/admin-client.js'
import { adminUrl, DaemonLock, daemonFile, formatListen, readDaemonLock, type DaemonInfo } from '../../src/daemon/lifecycle.js'
import { isProcessAlive } from '../../src/process.js'
import { startDaemon } from '../helpers/daemon.js'
import { deadPid, dirs } from '../helpers/process.js'

function info(pid: number, extra: Partial<DaemonInfo> = {}): DaemonInfo {
  return { pid, startedAt: new Date().toISOString(), listen: [], version: '0.0.0-test', ...extra }
}

t.test('isProcessAlive: this process yes; an exited one, nonsense and zombies no', async (t) => {
  t.equal(isProcessAlive(process.pid), true)
  t.equal(isProcessAlive(deadPid()), false)
  for (const bad of [0, -1, NaN, 1.5, Number.MAX_SAFE_INTEGER + 2]) t.equal(isProcessAlive(bad), false, String(bad))

  t.test('a zombie answers signal 0 but counts as dead', { skip: process.platform !== 'linux' && 'Linux /proc only' }, async (t) => {
    // `sleep 0` exits at once; its parent execs into `sleep 3`, which never reaps it.
    const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 3'], { stdio: ['ignore', 'pipe', 'ignore'] })
    t.teardown(() => parent.kill('SIGKILL'))
    const [line] = (await once(parent.stdout, 'data')) as [Buffer]
    const zombie = Number(line.toString().trim())
    let state = ''
    for (let i = 0; i < 100 && state !== 'Z'; i++) {
      await new Promise((r) => setTimeout(r, 20))
      const stat = fs.readFileSync(`/proc/${zombie}/stat`, 'utf8')
      state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    }
    t.equal(state, 'Z', 'the child became a zombie')
    t.doesNotThrow(() => process.kill(zombie, 0), 'signal 0 still succeeds')
    t.equal(isProcessAlive(zombie), false)
  })
})

t.test('DaemonLock: exclusive while the owner lives, updated atomically, released by its owner only', async (t) => {
  const cacheDir = t.testdir()
  const lock = await DaemonLock.acquire(cacheDir, info(process.pid))
  t.equal(lock.path, path.join(cacheDir, 'daemon.json'))
  t.equal(JSON.parse(fs.readFileSync(lock.path, 'utf8')).pid, process.pid)

  await lock.update({ listen: ['127.0.0.1:5999'], url: 'http://127.0.0.1:5999' })
  t.match(JSON.parse(fs.readFileSync(lock.path, 'utf8')), { pid: process.pid, listen: ['127.0.0.1:5999'], url: 'http://127.0.0.1:5999' })
  t.same(
    fs.readdirSync(cacheDir).filter((f) => f !== 'daemon.json'),
    [],
    'no temp file left behind',
  )

  await t.rejects(DaemonLock.acquire(cacheDir, info(process.pid)), {
    code: 'ALREADY_RUNNING',
    message: new RegExp(`pid ${process.pid}\\).*listening on 127\\.0\\.0\\.1:5999.*${cacheDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
  })
  t.equal((await readDaemonLock(cacheDir))?.alive, true)

  await lock.release()
  t.notOk(fs.existsSync(lock.path), 'released')
  await lock.release()

  // A lock whose file was taken over by someone else does not remove theirs.
  const a = await DaemonLock.acquire(cacheDir, info(process.pid, { startedAt: 'a' }))
  fs.writeFileSync(a.path, JSON.stringify(info(deadPid())))
  const b = await DaemonLock.acquire(cacheDir, info(process.pid, { startedAt: 'b' }))
  await a.release()
  t.ok(fs.existsSync(b.path), "the old owner's release left the new owner's file")
  await b.release()
  t.notOk(fs.existsSync(b.path))
})

t.test('a stale lock (dead pid, or unreadable and old) is taken over; a fresh unreadable one only after the grace', async (t) => {
  const cacheDir = t.testdir()
  const file = daemonFile(cacheDir)
  fs.writeFileSync(file, JSON.stringify(info(deadPid(), { listen: ['127.0.0.1:1'] })))
  t.equal((await readDaemonLock(cacheDir))?.alive, false)
  const lock = await DaemonLock.acquire(cacheDir, info(process.pid))
  t.equal(JSON.parse(fs.readFileSync(file, 'utf8')).pid, process.pid)
  await lock.release()

  fs.writeFileSync(file, '{"pid": ')
  const old = new Date(Date.now() - 60_000)
  fs.utimesSync(file, old, old)
  await (await DaemonLock.acquire(cacheDir, info(process.pid))).release()

  fs.writeFileSync(file, '')
  const started = Date.now()
  const l = await DaemonLock.acquire(cacheDir, info(process.pid), { partialGraceMs: 300 })
  t.ok(Date.now() - started >= 250, 'waited for a writer that might be about to fill it')
  await l.release()
})

t.test('racing takers of one stale lock: exactly one wins', async (t) => {
  const cacheDir = t.testdir()
  const dead = deadPid()
  fs.writeFileSync(daemonFile(cacheDir), JSON.stringify(info(dead)))
  // Every contender counts as alive, so whoever holds the file must be refused.
  const isAlive = (pid: number) => pid !== dead
  const pids = [910001, 910002, 910003, 910004, 910005, 910006, 910007, 910008]
  const results = await Promise.allSettled(pids.map((pid) => DaemonLock.acquire(cacheDir, info(pid), { isAlive })))
  const won = results.filter((r) => r.status === 'fulfilled')
  t.equal(won.length, 1, 'one lock')
  for (const r of results) if (r.status === 'rejected') t.match(r.reason, { code: 'ALREADY_RUNNING' })
  const owner = JSON.parse(fs.readFileSync(daemonFile(cacheDir), 'utf8')).pid
  t.equal((won[0] as PromiseFulfilledResult<DaemonLock>).value.info.pid, owner, 'the file names the winner')
  t.strictSame(fs.readdirSync(cacheDir), ['daemon.json'], 'no takeover guard left')
})

t.test('adminUrl prefers loopback, maps wildcards to loopback; formatListen brackets IPv6', async (t) => {
  const cases: Array<[Array<{ host: string; port: number }>, string | undefined]> = [
    [[{ host: '127.0.0.1', port: 5000 }, { host: '::1', port: 5000 }], 'http://127.0.0.1:5000'],
    [[{ host: '192.168.1.2', port: 5000 }, { host: '::1', port: 5000 }], 'http://[::1]:5000'],
    [[{ host: '0.0.0.0', port: 5001 }], 'http://127.0.0.1:5001'],
    [[{ host: '::', port: 5002 }], 'http://[::1]:5002'],
    [[{ host: '192.168.1.2', port: 5003 }], 'http://192.168.1.2:5003'],
    [[], undefined],
  ]
  for (const [addresses, want] of cases) t.equal(adminUrl(addresses), want, JSON.stringify(addresses))
  t.same(formatListen([{ host: '127.0.0.1', port: 1 }, { host: '::1', port: 2 }]), ['127.0.0.1:1', '[::1]:2'])
})

t.test('Daemon.start holds the lock; a second daemon on the cache dir is refused; stop releases it', async (t) => {
  const { cacheDir } = dirs(t, 'cacheDir')
  const d = await startDaemon(t, undefined, { cacheDir, logFile: '/var/log/dproxy-test.log' })
  const lock = await readDaemonLock(cacheDir)
  t.match(lock, {
    alive: true,
    info: { pid: process.pid, listen: [`127.0.0.1:${d.port}`], url: d.url, version: String, logFile: '/var/log/dproxy-test.log' },
  })

  const found = await findDaemon(cacheDir)
  t.match(found, { info: { pid: process.pid, url: d.url }, status: { pid: process.pid, cacheDir } })

  await t.rejects(startDaemon(t, undefined, { cacheDir }), { code: 'ALREADY_RUNNING', message: new RegExp(`127\\.0\\.0\\.1:${d.port}`) })
  t.ok(await findDaemon(cacheDir), 'the first daemon still answers and still owns the lock')

  await d.stop(0)
  t.notOk(fs.existsSync(daemonFile(cacheDir)), 'lock removed on stop')
  t.equal(await findDaemon(cacheDir), undefined)

  const again = await startDaemon(t, undefined, { cacheDir })
  t.equal((await findDaemon(cacheDir))?.info.url, again.url, 'a new daemon takes the cache dir')
})

t.test('a daemon that cannot listen leaves no lock behind', async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => blocker.close())
  const port = (blocker.address() as { port: number }).port
  const cacheDir = t.testdir()
  await t.rejects(Daemon.start({ hosts: ['127.0.0.1'], port, cacheDir }), { code: 'LISTEN_FAILED' })
  t.notOk(fs.existsSync(daemonFile(cacheDir)))
})
