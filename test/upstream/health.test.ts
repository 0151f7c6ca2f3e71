// The breaker of an endpoint with another behind it, on a clock the test moves.

import t from 'tap'
import { BACKOFF_CAP_MS, BACKOFF_START_MS, Breaker, FAILURES_TO_OPEN } from '../../src/upstream/health.js'

function fakeClock(start = Date.UTC(2026, 0, 1)) {
  let now = start
  return { now: () => now, advance: (ms: number) => void (now += ms) }
}

t.test('no answer opens it at once; a probe due after the backoff closes it', async (t) => {
  const clock = fakeClock()
  const b = new Breaker(clock)
  t.equal(b.up, true)
  b.record('down', 'GET http://m/v2/: ECONNREFUSED')
  t.equal(b.up, false)
  t.strictSame(b.snapshot(), {
    up: false,
    downSince: new Date(clock.now()).toISOString(),
    nextProbeAt: new Date(clock.now() + BACKOFF_START_MS).toISOString(),
    lastError: 'GET http://m/v2/: ECONNREFUSED',
  })
  t.equal(b.probeDue(), false)
  clock.advance(BACKOFF_START_MS)
  t.equal(b.probeDue(), true)
  b.record('alive')
  t.equal(b.up, true)
  t.equal(b.snapshot().lastError, 'GET http://m/v2/: ECONNREFUSED', 'the last error is kept after recovery')
})

t.test('5xx and 429 open it after three in a row; an answer in between resets the count', async (t) => {
  const b = new Breaker(fakeClock())
  for (let i = 1; i < FAILURES_TO_OPEN; i++) b.record('failing', 'HTTP 500')
  t.equal(b.up, true, 'two in a row: still up')
  t.equal(b.snapshot().failuresInRow, FAILURES_TO_OPEN - 1, 'the status says how close it is to opening')
  b.record('alive')
  t.notOk('failuresInRow' in b.snapshot(), 'an answer resets it')
  for (let i = 1; i < FAILURES_TO_OPEN; i++) b.record('failing', 'HTTP 500')
  t.equal(b.up, true, 'the count started again')
  b.record('failing', 'HTTP 503')
  t.equal(b.up, false, 'three in a row: open')
})

t.test('failed probes double the wait up to the cap; a Retry-After is honoured', async (t) => {
  const clock = fakeClock()
  const b = new Breaker(clock)
  b.record('down')
  const waits: number[] = []
  for (let i = 0; i < 10; i++) {
    waits.push(b.msToProbe())
    clock.advance(b.msToProbe())
    t.equal(b.probeDue(), true)
    b.record('down')
  }
  t.strictSame(waits.slice(0, 4), [1000, 2000, 4000, 8000])
  t.equal(Math.max(...waits), BACKOFF_CAP_MS, 'never beyond the cap')
  b.record('failing', 'HTTP 429', 600_000)
  t.equal(b.msToProbe(), 600_000, 'not probed before the time the endpoint named')
})

t.test('a refusal is noted as the last error without counting toward opening', async (t) => {
  const b = new Breaker(fakeClock())
  for (let i = 1; i < FAILURES_TO_OPEN; i++) b.record('failing', 'HTTP 500')
  b.note('127.0.0.1:5001 refused library/alpine:latest (401)')
  t.strictSame(b.snapshot(), { up: true, failuresInRow: FAILURES_TO_OPEN - 1, lastError: '127.0.0.1:5001 refused library/alpine:latest (401)' })
  b.record('failing', 'HTTP 500')
  t.equal(b.up, false, 'the note did not reset the count either')
})
