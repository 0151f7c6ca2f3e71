import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { promises as fs } from 'node:fs'
import t from 'tap'
import { Layout } from '../../src/store/layout.js'
import { isProcessAlive } from '../../src/process.js'
import { withCacheLock } from '../../src/store/lock.js'

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await once(child, 'exit')
  return child.pid!
}

t.test('held while the work runs, with our pid; released after, also when the work throws', async (t) => {
  const dir = t.testdir()
  const path = new Layout(dir).cacheLock
  const seen = await withCacheLock(dir, async () => JSON.parse(await fs.readFile(path, 'utf8')) as unknown)
  t.strictSame(seen, { pid: process.pid })
  await t.rejects(fs.stat(path), { code: 'ENOENT' })
  await t.rejects(
    withCacheLock(dir, async () => {
      throw new Error('boom')
    }),
    { message: 'boom' },
  )
  await t.rejects(fs.stat(path), { code: 'ENOENT' })
})

t.test('a live holder is refused with CACHE_LOCKED, naming its pid and the file', async (t) => {
  const dir = t.testdir()
  const path = new Layout(dir).cacheLock
  let ran = false
  await withCacheLock(dir, async () => {
    // Another command (pid 1 is always alive) would be refused while we hold it.
    await t.rejects(withCacheLock(dir, async () => (ran = true), { pid: 1 }), {
      code: 'CACHE_LOCKED',
      message: new RegExp(`pid ${process.pid}.*${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
    })
  })
  t.equal(ran, false)
  t.strictSame(await fs.readdir(dir), [], 'released; nothing left')
})

t.test('a lock left by a dead process is taken over', async (t) => {
  const dir = t.testdir()
  const path = new Layout(dir).cacheLock
  const dead = await deadPid()
  t.equal(isProcessAlive(dead), false)
  await fs.writeFile(path, JSON.stringify({ pid: dead }))
  const holder = await withCacheLock(dir, async () => (JSON.parse(await fs.readFile(path, 'utf8')) as { pid: number }).pid)
  t.equal(holder, process.pid)
  t.strictSame(await fs.readdir(dir), [], 'no stale copy left aside')
})

t.test('an unreadable lock is presumed mid-write while young, stale once old', async (t) => {
  const dir = t.testdir()
  const path = new Layout(dir).cacheLock
  await fs.writeFile(path, '')
  const started = Date.now()
  // Young: retried (50 ms apart) until the attempts run out, never deleted.
  await t.rejects(withCacheLock(dir, async () => {}, { partialGraceMs: 60_000 }), { code: 'CACHE_LOCKED' })
  t.ok(Date.now() - started >= 500, 'it waited before giving up')
  t.equal(await fs.readFile(path, 'utf8'), '')
  const old = new Date(Date.now() - 60_000)
  await fs.utimes(path, old, old)
  t.equal(await withCacheLock(dir, async () => 'ran', { partialGraceMs: 5000 }), 'ran')
})

t.test('isProcessAlive, as the lock uses it', async (t) => {
  t.equal(isProcessAlive(process.pid), true)
  t.equal(isProcessAlive(1), true, 'init: alive, whether signalling it is permitted (EPERM) or not')
  t.equal(isProcessAlive(0), false)
  t.equal(isProcessAlive(-5), false)
  t.equal(isProcessAlive(await deadPid()), false)
})
