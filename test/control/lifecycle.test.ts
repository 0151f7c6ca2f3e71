// Stopping the daemon of a cache dir from the CLI's side, with real files and
// real processes; spawning the built binary (`dproxy start/stop`) is in
// test/cli/daemon.test.ts.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import t from 'tap'
import { findDaemon } from '../../src/control/admin-client.js'
import { statePaths, stopDaemon, waitForExit } from '../../src/control/lifecycle.js'
import { clearStaleLock, daemonFile, type DaemonInfo } from '../../src/daemon/lifecycle.js'
import { isProcessAlive } from '../../src/process.js'
import { startDaemon } from '../helpers/daemon.js'
import { deadPid, dirs } from '../helpers/process.js'

function info(pid: number, extra: Partial<DaemonInfo> = {}): DaemonInfo {
  return { pid, startedAt: new Date().toISOString(), listen: [], version: '0.0.0-test', ...extra }
}

t.test('stopDaemon when nothing runs: not an error; stale pid and lock files are cleaned', async (t) => {
  const { cacheDir, stateDir } = dirs(t, 'cacheDir', 'stateDir')
  const { pidFile } = statePaths(stateDir, cacheDir)
  t.same(await stopDaemon({ cacheDir, stateDir }), { running: false, stopped: false, cleaned: [] })

  const dead = deadPid()
  fs.writeFileSync(pidFile, `${dead}\n`)
  fs.writeFileSync(daemonFile(cacheDir), JSON.stringify(info(dead)))
  t.same(await stopDaemon({ cacheDir, stateDir }), { running: false, stopped: false, cleaned: [pidFile, daemonFile(cacheDir)] })
  t.notOk(fs.existsSync(pidFile))
  t.notOk(fs.existsSync(daemonFile(cacheDir)))
  t.equal(await clearStaleLock(cacheDir), false, 'nothing left to clear')
})

t.test('stopDaemon never signals a live process that a stale pid file names but that is not dproxy', { skip: process.platform !== 'linux' && 'Linux /proc only' }, async (t) => {
  const { cacheDir, stateDir } = dirs(t, 'cacheDir', 'stateDir')
  const bystander = spawn('sleep', ['30'])
  t.teardown(() => bystander.kill('SIGKILL'))
  await once(bystander, 'spawn')
  fs.writeFileSync(statePaths(stateDir, cacheDir).pidFile, `${bystander.pid}\n`)
  const result = await stopDaemon({ cacheDir, stateDir })
  t.equal(result.stopped, false)
  t.equal(isProcessAlive(bystander.pid!), true, 'sleep was left alone')
})

t.test('stopDaemon refuses to signal its own process', async (t) => {
  const { cacheDir, stateDir } = dirs(t, 'cacheDir', 'stateDir')
  const d = await startDaemon(t, undefined, { cacheDir })
  await t.rejects(stopDaemon({ cacheDir: d.store.root, stateDir }), { code: 'STOP_FAILED', message: /this very process/ })
  t.ok(await findDaemon(d.store.root), 'still running')
})

t.test('waitForExit: true once the process is gone, false at the deadline', async (t) => {
  const child = spawn('sleep', ['30'])
  await once(child, 'spawn')
  const started = Date.now()
  t.equal(await waitForExit(child.pid!, 200), false)
  t.ok(Date.now() - started >= 200)
  child.kill('SIGTERM')
  await once(child, 'exit')
  t.equal(await waitForExit(child.pid!, 2000), true)
})
