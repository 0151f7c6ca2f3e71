import t from 'tap'
import { MAX_RETRY_AFTER_MS, parseLimitValue, RateLimitBook, readRateLimit, retryAfterMs } from '../../src/upstream/ratelimit.js'

t.test('parseLimitValue reads count and window', async (t) => {
  t.strictSame(parseLimitValue('100;w=21600'), { value: 100, windowSeconds: 21600 })
  t.strictSame(parseLimitValue(' 76 ; w=21600 '), { value: 76, windowSeconds: 21600 })
  t.strictSame(parseLimitValue('10'), { value: 10 })
  for (const bad of [undefined, '', ';w=21600', 'abc', '-1;w=5', '1.5']) t.equal(parseLimitValue(bad), undefined, String(bad))
})

t.test('readRateLimit: headers, none (unlimited), or unusable', async (t) => {
  const h = (o: Record<string, string>) => (n: string) => o[n]
  t.strictSame(
    readRateLimit('docker.io', h({ 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '20;w=21600', 'docker-ratelimit-source': '192.0.2.1' }), 5),
    { registry: 'docker.io', limit: 100, remaining: 20, windowSeconds: 21600, source: '192.0.2.1', unlimited: false, checkedAt: 5 },
  )
  t.strictSame(readRateLimit('ghcr.io', h({}), 7), { registry: 'ghcr.io', unlimited: true, checkedAt: 7 })
  t.equal(readRateLimit('docker.io', h({ 'ratelimit-limit': '', 'ratelimit-remaining': '' }), 1), undefined)
})

t.test('RateLimitBook keeps the last good reading', async (t) => {
  let now = 1000
  const book = new RateLimitBook({ now: () => now })
  book.record('docker.io', (n) => ({ 'ratelimit-limit': '100;w=60', 'ratelimit-remaining': '99;w=60' })[n])
  now = 2000
  book.record('docker.io', (n) => ({ 'ratelimit-limit': '', 'ratelimit-remaining': 'garbage' })[n])
  t.equal(book.get('docker.io')?.remaining, 99)
  t.equal(book.get('docker.io')?.checkedAt, 1000)
  book.record('docker.io', (n) => ({ 'ratelimit-limit': '100;w=60', 'ratelimit-remaining': '98;w=60' })[n])
  t.equal(book.get('docker.io')?.remaining, 98)
  t.equal(book.get('docker.io')?.checkedAt, 2000)
  t.equal(book.all().length, 1)
})

t.test('retryAfterMs: Retry-After in seconds or as a date, else RateLimit-Reset, bounded', async (t) => {
  const now = Date.parse('2026-12-07T12:00:00Z')
  const h = (o: Record<string, string>) => (n: string) => o[n]
  const table: Array<[Record<string, string>, number | undefined]> = [
    [{ 'retry-after': '120' }, 120_000],
    [{ 'retry-after': ' 0 ' }, 0],
    [{ 'retry-after': 'Mon, 07 Dec 2026 12:02:00 GMT' }, 120_000],
    [{ 'retry-after': 'Mon, 07 Dec 2026 11:00:00 GMT' }, 0],
    [{ 'retry-after': '99999999' }, MAX_RETRY_AFTER_MS],
    [{ 'ratelimit-reset': '30' }, 30_000],
    [{ 'retry-after': '5', 'ratelimit-reset': '30' }, 5_000],
    [{ 'retry-after': 'soon', 'ratelimit-reset': '30' }, 30_000],
    [{ 'retry-after': '-5' }, undefined],
    [{ 'retry-after': '1.5' }, undefined],
    [{ 'ratelimit-reset': '' }, undefined],
    [{}, undefined],
  ]
  for (const [headers, ms] of table) t.equal(retryAfterMs(h(headers), now), ms, JSON.stringify(headers))
})

t.test('RateLimitBook: a registry is limited until the time it named, then asked again', async (t) => {
  let now = 1000
  const book = new RateLimitBook({ now: () => now })
  t.equal(book.limitedUntil('docker.io'), undefined)
  book.limitUntil('docker.io', 61_000)
  t.equal(book.limitedUntil('docker.io'), 61_000)
  t.equal(book.limitedUntil('ghcr.io'), undefined, 'per registry')
  now = 61_000
  t.equal(book.limitedUntil('docker.io'), undefined, 'over once the time came')
})
