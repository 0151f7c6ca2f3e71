import t from 'tap'
import { parseRange } from '../../src/registry/handler.js'
import { toWire } from '../../src/registry/errors.js'
import { DproxyError } from '../../src/errors.js'
import { startUpstream } from '../fixtures/upstream.js'
import { get, settled, startDaemon } from '../helpers/daemon.js'

t.test('parseRange', async (t) => {
  const size = 1000
  const cases: Array<[string | undefined, ReturnType<typeof parseRange>]> = [
    [undefined, undefined],
    ['bytes=0-99', [0, 99]],
    ['bytes=100-', [100, 999]],
    ['bytes=-10', [990, 999]],
    ['bytes=-2000', [0, 999]],
    ['bytes=900-5000', [900, 999]],
    ['bytes=1000-', 'unsatisfiable'],
    ['bytes=-0', 'unsatisfiable'],
    ['bytes=5-1', undefined],
    ['bytes=0-1,5-6', undefined],
    ['items=0-1', undefined],
    ['bytes=-', undefined],
  ]
  for (const [h, want] of cases) t.strictSame(parseRange(h, size), want, String(h))
})

t.test('toWire maps internal codes to codes clients know', async (t) => {
  t.strictSame(toWire(new DproxyError('MANIFEST_UNKNOWN', 'nope')), { status: 404, code: 'MANIFEST_UNKNOWN', message: 'nope' })
  t.strictSame(toWire(new DproxyError('TOOMANYREQUESTS', 'slow down')), { status: 429, code: 'TOOMANYREQUESTS', message: 'slow down' })
  t.match(toWire(new DproxyError('UPSTREAM_UNAVAILABLE', 'down')), { status: 502, code: 'UNAVAILABLE' })
  t.match(toWire(new Error('secret path /x')), { status: 500, code: 'UNKNOWN', message: 'internal error in dproxy (see its log)' })
})

t.test('error messages quote at most 80 characters of what the client sent', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  const layer = up.images.alpine.blobs[0]!
  const url = `${d.url}/v2/library/alpine/blobs/${layer.digest}`
  t.equal((await get(url)).status, 200, 'the blob is cached')
  await settled(d)

  const long = `bytes=${'9'.repeat(5000)}-`
  const cases: Array<[string, Record<string, string>, number]> = [
    [url, { range: long }, 416],
    [`${d.url}/x${'y'.repeat(5000)}`, {}, 404],
    [`${d.url}/v2/library/alpine/manifests/${'v'.repeat(5000)}`, {}, 400],
    [`${d.url}/v2/${'a'.repeat(5000)}/manifests/latest`, {}, 400],
  ]
  for (const [target, headers, status] of cases) {
    const res = await get(target, headers)
    t.equal(res.status, status, `${status}`)
    const { message, detail } = JSON.parse(res.body.toString()).errors[0]
    t.ok(message.length < 200, `${status}: a message of ${message.length} characters`)
    t.notOk(message.includes('9'.repeat(81)) || message.includes('y'.repeat(81)), `${status}: no long echo`)
    t.ok(JSON.stringify(detail ?? null).length < 200, `${status}: a short detail`)
  }
  const res = await get(url, { range: long })
  t.equal(res.headers['content-range'], `bytes */${layer.size}`)
})
