// The rotating log file and its follower (`dproxy logs -f`): a busy daemon
// rotates several times between two polls, and the follower must still print
// every line once, in order; a path missing for a moment (between the
// writer's rename and its open) is waited out, not an error.

import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { followLines, lastLines, RotatingLogFile } from '../src/logfile.js'
import { until } from './helpers/process.js'

const line = (tag: string) => `${tag} ${'z'.repeat(380)}`

t.test('rotates past the size, keeping the asked number of old files', async (t) => {
  const file = path.join(t.testdir(), 'd.log')
  const log = new RotatingLogFile(file, 1000, 2)
  t.teardown(() => log.close())
  for (let i = 0; i < 12; i++) log.write(`${line(`l${i}`)}\n`)
  t.ok(fs.existsSync(`${file}.1`) && fs.existsSync(`${file}.2`))
  t.notOk(fs.existsSync(`${file}.3`), 'no more than keep')
  t.ok(fs.statSync(file).size <= 1000)
  const { lines } = await lastLines(file, 1)
  t.match(lines[0], /^l11 /)
})

t.test('the last lines come from the rotated files when the current one has fewer', async (t) => {
  const file = path.join(t.testdir(), 'd.log')
  const log = new RotatingLogFile(file, 1000, 2)
  t.teardown(() => log.close())
  // Two lines per file: l0 l1 | l2 l3 | l4 (current)
  for (let i = 0; i < 5; i++) log.write(`${line(`l${i}`)}\n`)
  const tag = (lines: string[]) => lines.map((l) => l.split(' ')[0])
  t.same(tag((await lastLines(file, 2)).lines), ['l3', 'l4'], 'one from .1, one from the current file')
  t.same(tag((await lastLines(file, 4)).lines), ['l1', 'l2', 'l3', 'l4'], 'across two rotated files')
  t.same(tag((await lastLines(file, 100)).lines), ['l0', 'l1', 'l2', 'l3', 'l4'], 'as far as they go')
  const { end } = await lastLines(file, 3)
  t.equal(end, fs.statSync(file).size, "the follower's start is the current file's end")
  t.same(tag((await lastLines(file, 4, 1000)).lines), ['l3', 'l4'], 'maxBytes bounds the rotated files too')
})

t.test('the follower prints every line once, in order, across several rotations between two polls', async (t) => {
  const file = path.join(t.testdir(), 'd.log')
  const log = new RotatingLogFile(file, 3000, 3)
  t.teardown(() => log.close())
  for (let i = 0; i < 5; i++) log.write(`${line(`old${i}`)}\n`)
  const { end } = await lastLines(file, 0)
  const got: string[] = []
  const stop = new AbortController()
  // A long poll: the whole burst below lands between two looks at the file.
  const following = followLines(file, { from: end, onLine: (l) => got.push(l.split(' ')[0]!), signal: stop.signal, pollMs: 300, keep: 3 })
  await new Promise((r) => setTimeout(r, 50))
  // 16 lines of ~400 bytes: three rotations of a 3000-byte file.
  for (let i = 0; i < 16; i++) log.write(`${line(`new${i}`)}\n`)
  await until(() => got.length >= 16, 'line 16', 40)
  stop.abort()
  await following
  t.strictSame(got, Array.from({ length: 16 }, (_, i) => `new${i}`))
})

t.test('a path missing for a moment is waited out', async (t) => {
  const dir = t.testdir()
  const file = path.join(dir, 'd.log')
  fs.writeFileSync(file, 'a\n')
  const got: string[] = []
  const stop = new AbortController()
  const following = followLines(file, { from: 2, onLine: (l) => got.push(l), signal: stop.signal, pollMs: 20 })
  fs.appendFileSync(file, 'b\n')
  await until(() => got.length >= 1, 'line 1', 40)
  fs.renameSync(file, `${file}.1`)
  fs.appendFileSync(`${file}.1`, 'c\n')
  await new Promise((r) => setTimeout(r, 100))
  fs.writeFileSync(file, 'd\n')
  await until(() => got.length >= 3, 'line 3', 40)
  stop.abort()
  await following
  t.strictSame(got, ['b', 'c', 'd'])
})
