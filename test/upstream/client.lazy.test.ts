// undici costs the daemon about 20 MB of RSS once loaded, so it is loaded on
// the first upstream request, not at startup. This file runs in a process of
// its own that must not import undici itself (test/helpers/daemon.ts does):
// undici is CommonJS, so whether it was loaded shows in the require cache.

import { createRequire } from 'node:module'
import { request, type IncomingMessage } from 'node:http'
import { createServer } from 'node:net'
import { sep } from 'node:path'
import t from 'tap'
import { Daemon } from '../../src/daemon/daemon.js'

const requireCache = createRequire(import.meta.url).cache
const undiciLoaded = () => Object.keys(requireCache).some((k) => k.includes(`${sep}node_modules${sep}undici${sep}`))

function get(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    request(url, (res: IncomingMessage) => {
      res.resume()
      res.once('end', () => resolve(res.statusCode ?? 0))
    })
      .once('error', reject)
      .end()
  })
}

/** A loopback port nothing listens on: connections to it are refused at once. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

t.test('a daemon loads undici on its first upstream request, not before', async (t) => {
  const upstream = `http://127.0.0.1:${await closedPort()}`
  const d = await Daemon.start({ hosts: ['127.0.0.1'], port: 0, cacheDir: t.testdir(), upstreams: { 'docker.io': upstream } })
  t.teardown(() => d.stop(0))
  t.equal(await get(`${d.url}/v2/`), 200)
  t.notOk(undiciLoaded(), 'started and answered /v2/ without undici')

  const status = await get(`${d.url}/v2/library/alpine/manifests/latest`)
  t.equal(status, 404, 'upstream refused and nothing cached')
  t.ok(undiciLoaded(), 'the upstream request loaded it')
})
