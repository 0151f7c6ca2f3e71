// The daemon's young generation stays small without a node flag: a child
// process (fresh heap, plain node on the built module: a TypeScript loader
// would grow the new space before the call) churns through
// short-lived objects that survive a scavenge or two, which makes V8 grow the
// new space, and reports its size.

import { execFile } from 'node:child_process'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

const heapModule = pathToFileURL(new URL('../dist/heap.js', import.meta.url).pathname).href

const MiB = 2 ** 20

const churn = (keepSmall: boolean) => `
import v8 from 'node:v8'
const { tuneHeap } = await import(${JSON.stringify(heapModule)})
if (${keepSmall}) tuneHeap()
let live = []
for (let i = 0; i < 2_000_000; i++) {
  live.push({ i, pair: [i, i + 1] })
  if (live.length > 20_000) live = []
}
process.stdout.write(String(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size))
`

async function newSpaceBytes(keepSmall: boolean): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', churn(keepSmall)], {
    timeout: 60_000,
  })
  return Number(stdout)
}

t.test('tuneHeap holds the new space near its initial size under churn', async (t) => {
  const grown = await newSpaceBytes(false)
  t.ok(grown >= 16 * MiB, `without it the new space grows (${grown} bytes), so the churn proves something`)
  const small = await newSpaceBytes(true)
  t.ok(small <= 4 * MiB, `with it the new space stays within a few MiB (${small} bytes)`)
})

// A child that downloads through undici from a server of its own on loopback
// and reports how much its peak resident memory grew during the download.
const download = (tuned: boolean) => `
import { createServer } from 'node:http'
import { readFileSync } from 'node:fs'
const { tuneHeap } = await import(${JSON.stringify(heapModule)})
if (${tuned}) tuneHeap()
const { request } = await import('undici')
const chunk = Buffer.alloc(256 * 1024, 7)
const chunks = 512
const server = createServer((req, res) => {
  res.setHeader('content-length', chunk.length * chunks)
  let sent = 0
  const pump = () => {
    while (sent < chunks) {
      sent++
      if (!res.write(chunk)) return void res.once('drain', pump)
    }
    res.end()
  }
  pump()
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const peak = () => Number(/^VmHWM:\\s+(\\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024
const before = peak()
const res = await request('http://127.0.0.1:' + server.address().port + '/')
let received = 0
for await (const c of res.body) received += c.length
if (received !== chunk.length * chunks) throw new Error('short body: ' + received)
server.close()
process.stdout.write(String(peak() - before))
`

async function downloadPeakGrowth(tuned: boolean): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--max-semi-space-size=1', '--input-type=module', '-e', download(tuned)], {
    timeout: 120_000,
    // Where undici resolves from: the worktree's node_modules.
    cwd: new URL('..', import.meta.url).pathname,
  })
  return Number(stdout)
}

t.test('tuneHeap keeps undici parser code from the optimizing compiler, whose work costs a download tens of MB', { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  const plain = await downloadPeakGrowth(false)
  const tuned = await downloadPeakGrowth(true)
  t.ok(plain - tuned >= 15 * MiB, `peak grew by ${(plain / MiB).toFixed(1)} MiB without it, ${(tuned / MiB).toFixed(1)} MiB with it`)
})

// A child that drops 16 MiB of buffers and says how much of their memory one
// collectGarbage() gave back before anything else ran.
const dropBuffers = `
const { tuneHeap, collectGarbage } = await import(${JSON.stringify(heapModule)})
tuneHeap()
let buffers = Array.from({ length: 64 }, () => Buffer.allocUnsafeSlow(256 * 1024).fill(1))
collectGarbage()
const held = process.memoryUsage().external
buffers = undefined
collectGarbage()
process.stdout.write(String(held - process.memoryUsage().external))
`

t.test('collectGarbage frees dead buffers at once, not at some later collection', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', dropBuffers], { timeout: 60_000 })
  t.ok(Number(stdout) >= 15 * MiB, `${(Number(stdout) / MiB).toFixed(1)} MiB of 16 given back`)
})
