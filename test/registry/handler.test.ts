import t from 'tap'
import { parseRange } from '../../src/registry/handler.js'
import { toWire } from '../../src/registry/errors.js'
import { DproxyError } from '../../src/errors.js'

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
