// `dproxy status --watch --json` through the built binary against a daemon
// whose upstream holds a layer half-way: the event stream shows the download
// in progress (bytes so far, the client waiting on it), then the finished
// request with its cache result; and the --json path never loads ink or react.

import { spawn, type ChildProcess } from 'node:child_process'
import t, { type Test } from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { bin, forbidUi, isolatedEnv, runDproxy } from '../helpers/cli.js'
import { get, startDaemon } from '../helpers/daemon.js'
import { until } from '../helpers/process.js'

interface Event {
  event: string
  data: {
    path?: string
    cache?: string
    status?: number
    downloads?: Array<{ image: string; digest: string; written: number; size?: number; clients: number }>
  }
}

function watch(t: Test, args: string[], env: Record<string, string>): { child: ChildProcess; events: () => Event[]; err: () => string } {
  const child = spawn(process.execPath, [forbidUi, bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL')
  })
  let out = ''
  let err = ''
  child.stdout!.setEncoding('utf8')
  child.stdout!.on('data', (c: string) => (out += c))
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
  // Only whole lines: a pipe may hand over a line in two pieces.
  const events = () =>
    out
      .slice(0, out.lastIndexOf('\n') + 1)
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Event)
  return { child, events, err: () => err }
}

t.test('status --watch --json streams a held download, then its request', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const env = isolatedEnv(t)
  const d = await startDaemon(t, up, { cacheDir: env.DPROXY_CACHE_DIR! })
  const layer = up.images.alpine.blobs.find((b) => b.size > 1_000_000)!
  let release!: () => void
  up.hub.inject({ kind: 'length', digest: layer.digest, at: 'cdn', hold: new Promise<void>((r) => (release = r)) })

  const w = watch(t, ['status', '--watch', '--json'], env)
  await until(() => w.events().some((e) => e.event === 'snapshot'), `the first snapshot (${w.err()})`)
  const pulling = get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  const held = () =>
    w.events().find((e) => e.event === 'snapshot' && e.data.downloads?.some((x) => x.digest === layer.digest && x.written > 0 && x.clients === 1))
  await until(() => held() !== undefined, 'a snapshot with the held download')
  const dl = held()!.data.downloads!.find((x) => x.digest === layer.digest)!
  t.equal(dl.image, 'docker.io/library/alpine')
  t.equal(dl.size, layer.size)
  t.ok(dl.written < layer.size, 'part of it so far')

  release()
  t.equal((await pulling).status, 200)
  const path = `/v2/library/alpine/blobs/${layer.digest}`
  await until(() => w.events().some((e) => e.event === 'request' && e.data.path === path), 'the request event')
  const done = w.events().find((e) => e.event === 'request' && e.data.path === path)!
  t.equal(done.data.cache, 'miss')
  t.equal(done.data.status, 200)
  t.notMatch(w.err(), 'FORBIDDEN', 'no ink on the --json path')

  w.child.kill('SIGINT')
  const code = await new Promise((r) => w.child.once('exit', r))
  t.equal(code, 0, 'SIGINT ends it cleanly')
})

t.test('status --watch without a daemon says so', async (t) => {
  const env = isolatedEnv(t)
  const r = await runDproxy(['top', '--json'], env)
  t.equal(r.code, 1)
  t.match(r.err, /dproxy is not running/)
})
