import t from 'tap'
import { formatBytes, formatDuration, parseDuration, parseSize } from '../../src/config/units.js'

t.test('parseDuration', async (t) => {
  const cases: Array<[string | number, number]> = [
    ['0', 0],
    ['90s', 90_000],
    ['10m', 600_000],
    ['2h', 7_200_000],
    ['7d', 604_800_000],
    ['1w', 604_800_000],
    ['1h30m', 5_400_000],
    ['1h 30m', 5_400_000],
    ['1.5h', 5_400_000],
    ['250ms', 250],
    ['1m30s500ms', 90_500],
    ['10M', 600_000],
    [' 5m ', 300_000],
    ['90', 90_000],
    ['0.5', 500],
    [30, 30_000],
  ]
  for (const [input, ms] of cases) t.equal(parseDuration(input), ms, `${JSON.stringify(input)} is ${ms}ms`)
})

t.test('parseDuration refuses with the key and an example', async (t) => {
  t.throws(() => parseDuration('soon', 'maxAge'), {
    name: 'DproxyError',
    code: 'CONFIG_INVALID',
    message: "expected maxAge like '10m', got 'soon' (units: ms, s, m, h, d, w)",
  })
  t.throws(() => parseDuration('3mo', 'ttl'), {
    code: 'CONFIG_INVALID',
    message: "expected ttl like '10m', got '3mo' (unknown unit 'mo'; units: ms, s, m, h, d, w)",
  })
  t.throws(() => parseDuration(''), { message: "expected a duration like '10m', got ''" })
  for (const bad of ['-5m', '1h30', 'h', '5 minutes', '1e3s', '9999999999999999w']) {
    t.throws(() => parseDuration(bad, 'maxAge'), { code: 'CONFIG_INVALID' }, `refuses '${bad}'`)
  }
  t.throws(() => parseDuration(-1, 'maxAge'), { message: "expected maxAge like '10m', got -1" })
})

t.test('formatDuration', async (t) => {
  t.equal(formatDuration(0), '0')
  t.equal(formatDuration(5_400_000), '1h30m')
  t.equal(formatDuration(90_500), '1m30s500ms')
  t.equal(formatDuration(604_800_000), '7d')
  t.equal(formatDuration(86_400_000 + 1000), '1d1s')
  t.throws(() => formatDuration(-1), RangeError)
  for (const ms of [0, 1, 999, 1000, 61_000, 3_599_999, 90_061_001, 1e12]) {
    t.equal(parseDuration(formatDuration(ms)), ms, `${ms} round-trips`)
  }
})

t.test('parseSize', async (t) => {
  const cases: Array<[string | number, number]> = [
    ['0', 0],
    ['4096', 4096],
    ['100b', 100],
    ['100k', 100_000],
    ['100kB', 100_000],
    ['20GB', 20e9],
    ['20gb', 20e9],
    ['20 GB', 20e9],
    ['1.5G', 1.5e9],
    ['2T', 2e12],
    ['512MiB', 512 * 2 ** 20],
    ['512mib', 512 * 2 ** 20],
    ['1Gi', 2 ** 30],
    ['1GiB', 2 ** 30],
    ['1.5KiB', 1536],
    ['.5k', 500],
    [1024, 1024],
  ]
  for (const [input, bytes] of cases) t.equal(parseSize(input), bytes, `${JSON.stringify(input)} is ${bytes} bytes`)
})

t.test('parseSize refuses with the key and an example', async (t) => {
  t.throws(() => parseSize('lots', 'maxSize'), {
    name: 'DproxyError',
    code: 'CONFIG_INVALID',
    message: "expected maxSize like '20GB', got 'lots'",
  })
  t.throws(() => parseSize('20XB', 'maxSize'), {
    message: "expected maxSize like '20GB', got '20XB' (unknown unit 'XB'; use B, kB, MB, GB, TB or KiB, MiB, GiB, TiB)",
  })
  t.throws(() => parseSize('lots'), { message: "expected a size like '20GB', got 'lots'" })
  for (const bad of ['', '-1GB', 'GB', '1,5GB', '1 2GB', '1e9']) {
    t.throws(() => parseSize(bad, 'maxSize'), { code: 'CONFIG_INVALID' }, `refuses '${bad}'`)
  }
  t.throws(() => parseSize(1.5, 'maxSize'), { code: 'CONFIG_INVALID' }, 'a fractional number of bytes')
})

t.test('formatBytes', async (t) => {
  t.equal(formatBytes(0), '0B')
  t.equal(formatBytes(999), '999B')
  t.equal(formatBytes(1000), '1kB')
  t.equal(formatBytes(1536), '1.54kB')
  t.equal(formatBytes(20e9), '20GB')
  t.equal(formatBytes(999_950), '1MB', 'rounding carries into the next unit')
  t.equal(formatBytes(123_456_789), '123MB')
  t.equal(formatBytes(5e18), '5000PB')
  t.throws(() => formatBytes(-1), RangeError)
  t.equal(parseSize(formatBytes(20e9)), 20e9, 'output parses back')
})
