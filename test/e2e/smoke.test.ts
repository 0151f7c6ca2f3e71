// The runtime smoke test: the built binary on the Node that runs this file, as
// a user runs it. CI runs the whole suite on the default Node and this file
// (with serve's and start/stop's) again on every other supported Node, so it
// checks that the daemon really runs on that Node, then goes through what a
// user does: `dproxy start`, a real skopeo pull through the daemon, `pull`,
// `status`, `cache ls`, `env`, `logs`, `stop`.

import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { statePaths } from '../../src/control/lifecycle.js'
import { isProcessAlive } from '../../src/process.js'
import { makeTempDir, sha256, skopeoCopyAll } from '../fixtures/clients.js'
import { startUpstream } from '../fixtures/upstream.js'
import { isolatedEnv, runDproxy } from '../helpers/cli.js'

t.test(`the CLI and a background daemon on node ${process.version}: start, skopeo pull, CLI commands, stop`, async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` })
  const cacheDir = env.DPROXY_CACHE_DIR!
  const run = (args: string[]) => runDproxy(args, env)

  const started = await run(['start', '--host', '127.0.0.1', '--port', '0', '--json'])
  t.equal(started.code, 0, started.err)
  const daemon = JSON.parse(started.out) as { pid: number; url: string }
  t.teardown(() => {
    if (isProcessAlive(daemon.pid)) process.kill(daemon.pid, 'SIGKILL')
  })
  t.equal(fs.realpathSync(`/proc/${daemon.pid}/exe`), fs.realpathSync(process.execPath), `the daemon runs on this node (${process.version})`)

  const host = new URL(daemon.url).host
  for (const image of [up.images.alpine, up.images.multi]) {
    const dest = makeTempDir('dproxy-smoke-', t)
    await skopeoCopyAll(`${host}/${image.ref}`, dest, { timeoutMs: 120_000 })
    t.ok(fs.readFileSync(path.join(dest, 'manifest.json')).equals(image.manifest), `${image.ref}: skopeo got the manifest byte for byte`)
    for (const blob of image.blobs) {
      t.equal(sha256(fs.readFileSync(path.join(dest, blob.digest.slice('sha256:'.length)))), blob.digest, `${image.ref}: blob ${blob.digest.slice(7, 19)}`)
    }
  }

  const pulled = await run(['pull', 'bitnami/redis:7.2', '--json'])
  t.equal(pulled.code, 0, pulled.err)
  t.match(JSON.parse(pulled.out.trim().split('\n').at(-1)!), { type: 'summary', fetched: 1, failed: [] }, 'pull through the daemon')

  const status = await run(['status', '--json', '--no-probe'])
  t.equal(status.code, 0, status.err)
  const s = JSON.parse(status.out) as { daemon: { running: boolean; pid: number }; cache: { blobs: number } }
  t.match(s.daemon, { running: true, pid: daemon.pid })
  t.ok(s.cache.blobs >= up.images.alpine.blobs.length, 'status counts the cached blobs')

  const ls = await run(['cache', 'ls', '--json'])
  t.equal(ls.code, 0, ls.err)
  const names = (JSON.parse(ls.out) as { images: Array<{ repository: string }> }).images.map((i) => i.repository)
  t.ok(names.some((n) => n.includes('alpine')) && names.some((n) => n.includes('redis')), `cache ls lists what was pulled: ${names.join(', ')}`)

  const password = await run(['env', '--json'])
  t.equal(password.code, 0, password.err)
  t.match(JSON.parse(password.out), { CI_DEPENDENCY_PROXY_SERVER: `localhost:${new URL(daemon.url).port}`, CI_DEPENDENCY_PROXY_PASSWORD: String })

  const logs = await run(['logs'])
  t.equal(logs.code, 0, logs.err)
  t.match(logs.out, /alpine/, 'logs shows the pulls')

  const stopped = await run(['stop'])
  t.equal(stopped.code, 0, stopped.err)
  t.equal(stopped.out, `dproxy stopped (pid ${daemon.pid})\n`)
  t.notOk(isProcessAlive(daemon.pid), 'the daemon is gone')
  t.notOk(fs.existsSync(statePaths(env.DPROXY_STATE_DIR!, cacheDir).pidFile), 'pid file removed')
})
