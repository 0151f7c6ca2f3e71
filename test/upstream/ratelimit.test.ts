import t from 'tap'
import { parseLimitValue, RateLimitBook, readRateLimit } from '../../src/upstream/ratelimit.js'

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
