// The CLI's one client of the daemon's admin endpoints, against a real
// in-process Daemon: finding it through daemon.json, the admin secret on
// mutating requests only, the daemon's errors as DproxyErrors, NDJSON.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import { createServer } from 'node:net'
import path from 'node:path'
import t from 'tap'
import { AdminClient, findDaemon } from '../../src/control/admin-client.js'
import { daemonFile, type DaemonInfo } from '../../src/daemon/lifecycle.js'
import { startDaemon } from '../helpers/daemon.js'
import { deadPid, dirs } from '../helpers/process.js'

function info(pid: number, extra: Partial<DaemonInfo> = {}): DaemonInfo {
  return { pid, startedAt: new Date().toISOString(), listen: [], version: '0.0.0-test', ...extra }
}

t.test('findDaemon: nothing for no file, a dead pid, or a live pid that does not answer as itself', async (t) => {
  const { cacheDir } = dirs(t, 'cacheDir', 'other')
  t.equal(await findDaemon(cacheDir), undefined, 'no file')
  fs.writeFileSync(daemonFile(cacheDir), JSON.stringify(info(deadPid(), { url: 'http://127.0.0.1:1' })))
  t.equal(await findDaemon(cacheDir), undefined, 'dead pid')

  const closed = createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const port = (closed.address() as { port: number }).port
  await new Promise<void>((resolve) => closed.close(() => resolve()))
  fs.writeFileSync(daemonFile(cacheDir), JSON.stringify(info(process.pid, { url: `http://127.0.0.1:${port}` })))
  t.equal(await findDaemon(cacheDir, { timeoutMs: 1000 }), undefined, 'live pid, nothing listening')

  // A live pid whose lock points at a daemon that answers as another pid (this process).
  const other = await startDaemon(t, undefined, { cacheDir: path.join(path.dirname(cacheDir), 'other') })
  const child = spawn('sleep', ['5'])
  t.teardown(() => child.kill('SIGKILL'))
  fs.writeFileSync(daemonFile(cacheDir), JSON.stringify(info(child.pid!, { url: other.url })))
  t.equal(await findDaemon(cacheDir), undefined, 'the endpoint answers for another pid')
})


t.test('the admin secret goes with mutating requests only; the daemon refusing is a DproxyError with its message', async (t) => {
  const { cacheDir, stateDir } = dirs(t, 'cacheDir', 'stateDir')
  const d = await startDaemon(t, undefined, { cacheDir, adminTokenFile: path.join(stateDir, 'admin-token') })
  const found = await findDaemon(cacheDir, { stateDir })
  t.ok(found, 'found through daemon.json')
  const images = await found!.client.call<unknown[]>('GET', '/_dproxy/cache/images')
  t.strictSame(images, [])
  const pruned = await found!.client.call<{ dryRun: boolean }>('POST', '/_dproxy/cache/prune?maxSize=1GB&dryRun=1')
  t.equal(pruned.dryRun, true, 'the token from <stateDir>/admin-token was accepted')

  const tokenless = new AdminClient(d.url)
  await t.rejects(tokenless.call('POST', '/_dproxy/cache/prune?maxSize=1GB&dryRun=1'), { name: 'DproxyError', code: 'INTERNAL', message: /the daemon refused: .*token/i })
  await t.rejects(found!.client.call('DELETE', '/_dproxy/cache?olderthan=1d'), { code: 'USAGE', message: /the daemon refused: .*olderthan/ })
  await t.rejects(new AdminClient('http://127.0.0.1:1').call('GET', '/_dproxy/cache/images'), { code: 'INTERNAL', message: /did not answer/ })
})

t.test('NDJSON answers arrive line by line; status and probe hits answer quietly', async (t) => {
  const { cacheDir } = dirs(t, 'cacheDir')
  const d = await startDaemon(t, undefined, { cacheDir })
  const client = new AdminClient(d.url, { token: d.adminToken })
  const events: Array<{ type: string }> = []
  for await (const e of client.stream<{ type: string }>('POST', '/_dproxy/pull', { body: { images: ['docker.io/library/nothing-here:1'], jobs: 1, dryRun: true } })) {
    events.push(e)
  }
  t.ok(events.length >= 1, 'events came')
  t.match(events.at(-1), { type: /^(summary|refused)$/ })
  t.match(await client.status(), { pid: process.pid, cacheDir })
  t.strictSame(await client.probeHits('never-sent'), [])
  t.equal(await new AdminClient('http://127.0.0.1:1').status({ timeoutMs: 1000 }), undefined)
})

t.test('clearCache and pruneCache send their query with the secret; the event stream is read until its signal aborts', async (t) => {
  const { cacheDir, stateDir } = dirs(t, 'cacheDir', 'stateDir')
  const d = await startDaemon(t, undefined, { cacheDir, adminTokenFile: path.join(stateDir, 'admin-token') })
  const client = new AdminClient(d.url, { stateDir })
  t.match(await client.clearCache({ image: 'alpine', olderThan: '1d', dryRun: true }), { dryRun: true, images: [] })
  t.match(await client.pruneCache({ maxSizeBytes: 1 << 30, ttlMs: 0, dryRun: true }), { dryRun: true, maxSizeBytes: 1 << 30, ttlMs: null })
  await t.rejects(client.clearCache({ olderThan: 'soon' }), { code: 'USAGE', message: /the daemon refused: .*soon/ })

  const controller = new AbortController()
  const body = await client.eventStream(controller.signal)
  const decoder = new TextDecoder()
  let text = ''
  const reading = (async () => {
    for await (const chunk of body) {
      text += decoder.decode(chunk, { stream: true })
      if (text.includes('\n\n')) controller.abort()
    }
  })()
  await t.rejects(reading, { name: 'AbortError' }, 'the abort ends the read')
  t.match(text, /^event: \w+\ndata: \{/, 'Server-Sent Events')
  await t.rejects(new AdminClient('http://127.0.0.1:1').eventStream(AbortSignal.timeout(5000)), { code: 'INTERNAL', message: /did not answer/ })
})
