// The pid lock both daemon.json and cache.lock use: exclusive while the holder
// lives, a stale file taken over by exactly one of many racing takers (real
// processes), and no window in which a paused taker deletes a live file.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { acquirePidLock, readLockFile, releasePidLock, removeStalePidLock } from '../src/pidlock.js'
import { deadPid } from './helpers/process.js'

const racer = fileURLToPath(new URL('./fixtures/pidlock-racer.ts', import.meta.url))
// The TypeScript loaders this process runs with (test/loader, and tap's): a child runs .ts as it does.
const loaderArgs = process.execArgv.filter((arg) => arg.includes('@tapjs/typescript') || arg.includes('test/loader/'))
const lockText = (pid: number) => JSON.stringify({ pid }) + '\n'

/** Files next to the lock other than the lock itself: takeover guards that should be gone. */
async function leftovers(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((f) => f !== 'x.lock')
}

t.test('held while the holder lives; released only as written; a dead holder is taken over', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'x.lock')
  t.same(await acquirePidLock(path, lockText(process.pid)), { acquired: true })
  const refused = await acquirePidLock(path, lockText(4242), { isAlive: () => true, attempts: 3 })
  t.match(refused, { acquired: false, holder: { pid: process.pid } })
  await releasePidLock(path, lockText(4242))
  t.ok(await readLockFile(path), 'not released by a text it does not hold')
  await releasePidLock(path, lockText(process.pid))
  t.equal(await readLockFile(path), undefined)

  const dead = deadPid()
  await fs.writeFile(path, lockText(dead))
  t.equal(await removeStalePidLock(path, { isAlive: () => true }), false, 'alive (as told): left alone')
  t.same(await acquirePidLock(path, lockText(process.pid)), { acquired: true }, 'dead: taken over')
  t.equal((await readLockFile(path))?.pid, process.pid)
  t.strictSame(await leftovers(dir), [])
})

t.test('a taker paused holding the guard is not robbed, however long the pause: no second holder', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'x.lock')
  const dead = deadPid()
  await fs.writeFile(path, lockText(dead))
  const isAlive = (pid: number) => pid !== dead
  let paused!: () => void
  const isPaused = new Promise<void>((resolve) => (paused = resolve))
  let resume!: () => void
  const gate = new Promise<void>((resolve) => (resume = resolve))
  // B judged the file stale, holds the guard, re-checked it, and stops just before removing it.
  const b = acquirePidLock(path, lockText(910002), {
    isAlive,
    pid: 910002,
    beforeRemove: async () => {
      // As if the pause had lasted a minute: a guard judged by its age would now be taken from B.
      const old = new Date(Date.now() - 60_000)
      for (const f of await leftovers(dir)) await fs.utimes(join(dir, f), old, old)
      paused()
      await gate
    },
  })
  await isPaused
  // A finds the same stale file meanwhile; it must not get in while B is inside.
  const a = await acquirePidLock(path, lockText(910001), { isAlive, pid: 910001, attempts: 10 })
  t.same(a, { acquired: false, holder: undefined }, 'A gave up without taking the lock')
  resume()
  t.same(await b, { acquired: true })
  t.equal((await readLockFile(path))?.pid, 910002, 'the file names the one holder')
  t.strictSame(await leftovers(dir), [], 'no guard left behind')
})

t.test('a guard left by a taker that died is stepped over', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'x.lock')
  const dead = deadPid()
  await fs.writeFile(path, lockText(dead))
  const isAlive = (pid: number) => pid !== dead
  // A first taker got the guard and died there: its guard stays, naming a dead pid.
  let guards: string[] = []
  const died = acquirePidLock(path, lockText(910003), {
    isAlive,
    pid: 910003,
    beforeRemove: async () => {
      guards = await leftovers(dir)
      throw new Error('killed')
    },
  })
  await t.rejects(died, /killed/)
  t.equal(guards.length, 1, 'it held one guard')
  for (const g of guards) await fs.writeFile(join(dir, g), lockText(dead))
  t.equal((await readLockFile(path))?.pid, dead, 'the stale file is still there')
  t.same(await acquirePidLock(path, lockText(910004), { isAlive, pid: 910004 }), { acquired: true })
})

t.test('8 processes race for one stale lock: exactly one wins, the others are refused naming it', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'x.lock')
  await fs.writeFile(path, lockText(deadPid()))
  const children = Array.from({ length: 8 }, () => spawn(process.execPath, [...loaderArgs, racer, path], { stdio: ['pipe', 'pipe', 'inherit'] }))
  t.teardown(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
  })
  const answers = children.map(async (c) => {
    c.stdout.setEncoding('utf8')
    let out = ''
    c.stdout.on('data', (chunk: string) => (out += chunk))
    while (!out.includes('\n')) await once(c.stdout, 'data')
    return JSON.parse(out) as { pid: number; acquired: boolean; holder: number | null }
  })
  // Every racer is loaded and waiting; "go" reaches them within a few milliseconds of each other.
  await Promise.all(children.map((c) => once(c, 'spawn')))
  for (const c of children) c.stdin.write('go\n')
  const results = await Promise.all(answers)
  for (const c of children) c.stdin.end()
  await Promise.all(children.map((c) => (c.exitCode === null ? once(c, 'exit') : undefined)))
  const winners = results.filter((r) => r.acquired)
  t.equal(winners.length, 1, 'one holder')
  for (const r of results) if (!r.acquired) t.equal(r.holder, winners[0]!.pid, `${r.pid} was refused naming the holder`)
  t.equal((await readLockFile(path))?.pid, winners[0]!.pid, 'the file names the winner')
  t.strictSame(await leftovers(dir), [], 'no guard left behind')
})
