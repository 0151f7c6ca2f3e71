import t from 'tap'
import { FailureBook } from '../../src/daemon/failures.js'
import { describeFailures } from '../../src/control/status.js'
import { startUpstream } from '../fixtures/upstream.js'
import { runInProcess } from '../helpers/cli.js'
import { get, startDaemon } from '../helpers/daemon.js'

const wire = { status: 404, code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }

t.test('failures are kept per image, latest first, bounded in images and per image', async (t) => {
  let now = 0
  const book = new FailureBook({ now: () => now }, 2, 2)
  for (const tag of ['1', '2', '3']) {
    now += 1000
    book.record({ method: 'GET', url: `/v2/library/alpine/manifests/${tag}` }, wire)
  }
  book.record({ method: 'HEAD', url: '/v2/bitnami/redis/manifests/7?ns=ghcr.io' }, wire)
  book.record({ method: 'GET', url: '/v2/' }, wire)
  book.record({ method: 'GET', url: '/v2/UPPER\u0007/blobs/x' }, wire)
  const recent = book.recent()
  t.same(
    recent.map((r) => r.image),
    ['UPPER?', 'ghcr.io/bitnami/redis'],
    'two images kept (the least recently failed forgotten); /v2/ is no image; a bad name is kept printable',
  )
  const alpine = new FailureBook({ now: () => now }, 2, 2)
  for (const tag of ['1', '2', '3']) alpine.record({ method: 'GET', url: `/v2/alpine/manifests/${tag}` }, wire)
  const [only] = alpine.recent()
  t.match(only, { image: 'docker.io/library/alpine', count: 3 })
  t.same(
    only!.failures.map((f) => f.request),
    ['GET /v2/alpine/manifests/3', 'GET /v2/alpine/manifests/2'],
    'the latest two, latest first',
  )
  t.match(describeFailures(alpine.recent()), ['docker.io/library/alpine: 3 failed requests', /GET \/v2\/alpine\/manifests\/3 -> 404 MANIFEST_UNKNOWN: manifest unknown$/])
})

t.test('a failed pull shows in the status endpoint and in dproxy status (JSON and text)', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const cacheDir = t.testdir()
  const d = await startDaemon(t, up, { cacheDir })
  const res = await get(`${d.url}/v2/library/nope/manifests/1.0`)
  t.equal(res.status, 404)
  const env = { PATH: process.env.PATH ?? '', DPROXY_CACHE_DIR: cacheDir, DPROXY_CONFIG_DIR: cacheDir, DPROXY_STATE_DIR: cacheDir, HOME: cacheDir }
  const json = await runInProcess(['status', '--json', '--no-probe'], env)
  t.equal(json.code, 0, json.err)
  const s = JSON.parse(json.out) as { recentFailures: Array<{ image: string; count: number; failures: Array<{ request: string; status: number; code: string }> }> }
  t.match(s.recentFailures, [{ image: 'docker.io/library/nope', count: 1, failures: [{ request: 'GET /v2/library/nope/manifests/1.0', status: 404, code: 'MANIFEST_UNKNOWN' }] }])
  const text = await runInProcess(['status', '--no-probe'], env)
  t.match(text.out, /recent failures[^\n]*\n {2}docker\.io\/library\/nope: 1 failed request\n.*GET \/v2\/library\/nope\/manifests\/1\.0 -> 404 MANIFEST_UNKNOWN/)
})
