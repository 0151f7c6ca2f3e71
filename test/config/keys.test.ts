import path from 'node:path'
import t from 'tap'
import {
  checkSetting,
  fromSource,
  parseBoolean,
  parseDirectory,
  parseHosts,
  parseListenAddress,
  parseLogFormat,
  parseLogLevel,
  parsePort,
  registriesFrom,
  settingKey,
  unknownSetting,
  upstreamsFrom,
} from '../../src/config/keys.js'
import { DproxyError } from '../../src/errors.js'

const env = { HOME: '/home/ann' }

t.test('setting names are matched however they are written', async (t) => {
  t.equal(settingKey('maxAge'), 'maxAge')
  t.equal(settingKey('max-age'), 'maxAge')
  t.equal(settingKey('MAX_AGE'), 'maxAge')
  t.equal(settingKey('cache-dir'), 'cacheDir')
  t.equal(settingKey('foo'), undefined)
  t.match(unknownSetting('foo'), {
    code: 'USAGE',
    message: "unknown setting 'foo' (known: host, port, cacheDir, upstreams, noOrigin, chainConnectTimeout, chainFirstByteTimeout, maxAge, maxSize, ttl, auth, registries, refresh, refreshWindow, refreshReserve, logFormat, logLevel, logMaxSize, metricsAddress, dockerCredentials, tls, tlsCert, tlsKey, tlsNames, insecureLan)",
  })
})

t.test('hosts', async (t) => {
  t.same(parseHosts('localhost'), ['127.0.0.1', '::1'])
  t.same(parseHosts('LOOPBACK'), ['127.0.0.1', '::1'])
  t.same(parseHosts('0.0.0.0'), ['0.0.0.0'])
  t.same(parseHosts('127.0.0.1, [::1] ,::'), ['127.0.0.1', '::1', '::'])
  t.same(parseHosts('localhost,127.0.0.1'), ['127.0.0.1', '::1'], 'duplicates dropped')
  t.same(parseHosts('my-host.lan'), ['my-host.lan'])
  t.throws(() => parseHosts(''), { code: 'CONFIG_INVALID', message: "expected host like '127.0.0.1', got ''" })
  t.throws(() => parseHosts('127.0.0.1,bad host'), {
    message: "expected host like '127.0.0.1', got '127.0.0.1,bad host' ('bad host' is not an IP address or host name)",
  })
  t.throws(() => parseHosts('http://x'), { code: 'CONFIG_INVALID' })
})

t.test('port', async (t) => {
  t.equal(parsePort('5000'), 5000)
  t.equal(parsePort(' 0 '), 0)
  t.equal(parsePort(65535), 65535)
  for (const bad of ['65536', '-1', 'abc', '', '50.5', '1e3', 70000, 1.5]) {
    t.throws(() => parsePort(bad), { code: 'CONFIG_INVALID' }, `refuses ${JSON.stringify(bad)}`)
  }
  t.throws(() => parsePort('abc'), { message: "expected port like '5000', got 'abc' (0 to 65535)" })
})

t.test('booleans', async (t) => {
  for (const yes of ['true', 'YES', 'on', '1', true]) t.equal(parseBoolean(yes, 'auth'), true)
  for (const no of ['false', 'No', 'off', '0', false]) t.equal(parseBoolean(no, 'auth'), false)
  t.throws(() => parseBoolean('maybe', 'auth'), {
    code: 'CONFIG_INVALID',
    message: "expected auth like 'true', got 'maybe' (true/false, yes/no, on/off, 1/0)",
  })
})

t.test('directories', async (t) => {
  t.equal(parseDirectory('~/c', 'cacheDir', { relativeTo: 'forbidden', env }), '/home/ann/c')
  t.equal(parseDirectory('/a/../b/', 'cacheDir', { relativeTo: 'forbidden', env }), '/b')
  t.equal(parseDirectory('rel', 'cacheDir', { relativeTo: 'cwd', env }), path.resolve('rel'))
  t.throws(() => parseDirectory('rel', 'cacheDir', { relativeTo: 'forbidden', env }), {
    code: 'CONFIG_INVALID',
    message: "expected cacheDir like '~/dproxy-cache', got 'rel' (an absolute path or one starting with ~/)",
  })
  t.throws(() => parseDirectory(' ', 'cacheDir', { relativeTo: 'cwd', env }), { code: 'CONFIG_INVALID' })
})

t.test('upstreams', async (t) => {
  t.strictSame(upstreamsFrom('docker.io=http://127.0.0.1:15000,ghcr.io=https://mirror.example/'), {
    'docker.io': ['http://127.0.0.1:15000'],
    'ghcr.io': ['https://mirror.example'],
  })
  t.strictSame(upstreamsFrom(['index.docker.io=http://a.example', 'Quay.IO=https://q.example/prefix/']), {
    'docker.io': ['http://a.example'],
    'quay.io': ['https://q.example/prefix'],
  })
  t.strictSame(upstreamsFrom({ 'registry-1.docker.io': 'http://[::1]:15000' }), { 'docker.io': ['http://[::1]:15000'] })
  t.strictSame(upstreamsFrom('localhost:5001=http://127.0.0.1:5002'), { 'localhost:5001': ['http://127.0.0.1:5002'] })
  t.strictSame(upstreamsFrom(''), {}, 'empty means none')
  t.strictSame(upstreamsFrom('docker.io=http://a,registry.docker.io=http://a/'), { 'docker.io': ['http://a'] }, 'same URL twice is fine')
  // Lists: an entry without REGISTRY= continues the list of the registry before it.
  t.strictSame(upstreamsFrom('docker.io=https://a.example,https://b.example/group/,ghcr.io=https://c.example'), {
    'docker.io': ['https://a.example', 'https://b.example/group'],
    'ghcr.io': ['https://c.example'],
  })
  t.strictSame(upstreamsFrom(['docker.io=https://a.example,ORIGIN']), { 'docker.io': ['https://a.example', 'origin'] }, 'the word origin')
  t.strictSame(upstreamsFrom({ 'docker.io': ['https://a.example', 'origin'], 'ghcr.io': 'https://c.example,https://d.example' }), {
    'docker.io': ['https://a.example', 'origin'],
    'ghcr.io': ['https://c.example', 'https://d.example'],
  })

  const refused: Array<[Parameters<typeof upstreamsFrom>[0], string]> = [
    ['docker.io', "expected upstreams like 'docker.io=http://127.0.0.1:15000', got 'docker.io' (a list starts with REGISTRY=URL)"],
    ['https://a.example,docker.io=https://b.example', "expected upstreams like 'docker.io=http://127.0.0.1:15000', got 'https://a.example' (a list starts with REGISTRY=URL)"],
    ['docker.io=https://a.example,https://a.example/', "upstream docker.io lists 'https://a.example' twice"],
    [{ 'docker.io': [] }, "expected upstreams like 'docker.io=http://127.0.0.1:15000', got 'docker.io=' (each registry names at least one URL)"],
    ['bad host=http://a', "expected an upstream registry host like 'ghcr.io' or 'localhost:5000', got 'bad host'"],
    ['ghcr.io:99999=http://a', "expected an upstream registry host like 'ghcr.io' or 'localhost:5000', got 'ghcr.io:99999'"],
    ['ghcr.io=mirror', "expected upstream URL for ghcr.io like 'https://mirror.example', got 'mirror'"],
    ['ghcr.io=ftp://m.example', "expected upstream URL for ghcr.io like 'https://mirror.example', got 'ftp://m.example' (http or https only)"],
    [
      'ghcr.io=https://m.example/?x=1',
      "expected upstream URL for ghcr.io like 'https://mirror.example', got 'https://m.example/?x=1' (no query or fragment)",
    ],
    [
      'docker.io=http://a,index.docker.io=http://b',
      "upstream docker.io is given twice ('http://a' and 'http://b')",
    ],
  ]
  for (const [input, message] of refused) {
    t.throws(() => upstreamsFrom(input), { name: 'DproxyError', code: 'CONFIG_INVALID', message }, JSON.stringify(input))
  }
})

t.test('a password in an upstream URL is refused and never echoed', async (t) => {
  const err = t.throws(() => upstreamsFrom('docker.io=https://ann:hunter2@mirror.example')) as DproxyError
  t.equal(
    err.message,
    "expected upstream URL for docker.io like 'https://mirror.example', got 'https://***@mirror.example' (credentials do not belong in a URL; use 'dproxy login')",
  )
  t.notMatch(JSON.stringify({ message: err.message, detail: err.detail }), 'hunter2')
  const noEq = t.throws(() => upstreamsFrom('https://ann:hunter2@mirror.example')) as DproxyError
  t.notMatch(noEq.message, 'hunter2', 'also when the entry has no =')
})

t.test('fromSource says where a bad value came from', async (t) => {
  t.throws(() => fromSource('DPROXY_PORT', () => parsePort('x')), {
    code: 'CONFIG_INVALID',
    message: "expected port like '5000', got 'x' (0 to 65535) (from DPROXY_PORT)",
  })
  const other = new Error('boom')
  t.throws(
    () =>
      fromSource('x', () => {
        throw other
      }),
    other,
    'other errors pass through',
  )
})

t.test('checkSetting uses the same rules as settings', async (t) => {
  t.doesNotThrow(() => checkSetting('maxSize', '20GB', env))
  t.throws(() => checkSetting('maxSize', 'lots', env), { message: "expected maxSize like '20GB', got 'lots'" })
  t.throws(() => checkSetting('maxAge', 'soon', env), { code: 'CONFIG_INVALID' })
  t.throws(() => checkSetting('ttl', 'soon', env), { code: 'CONFIG_INVALID' })
  t.throws(() => checkSetting('port', '99999', env), { code: 'CONFIG_INVALID' })
  t.throws(() => checkSetting('host', '', env), { code: 'CONFIG_INVALID' })
  t.throws(() => checkSetting('cacheDir', 'relative', env), { code: 'CONFIG_INVALID' })
  t.throws(() => checkSetting('upstreams', 'x', env), { code: 'CONFIG_INVALID' })
  t.throws(() => checkSetting('auth', 'perhaps', env), { code: 'CONFIG_INVALID' })
})

t.test('registries', async (t) => {
  t.strictSame(registriesFrom('docker.io,ghcr.io'), ['docker.io', 'ghcr.io'])
  t.strictSame(registriesFrom(['registry-1.docker.io', 'Quay.io', 'docker.io', 'localhost:5000']), ['docker.io', 'quay.io', 'localhost:5000'])
  t.throws(() => registriesFrom(' , '), { code: 'CONFIG_INVALID', message: /expected registries like 'docker.io,ghcr.io'/ })
  t.throws(() => registriesFrom('ghcr.io/owner'), { code: 'CONFIG_INVALID' })
  t.doesNotThrow(() => checkSetting('registries', 'ghcr.io', {}))
  t.throws(() => checkSetting('registries', 'http://ghcr.io', {}), { code: 'CONFIG_INVALID' })
})

t.test('log format and level, log file size, metrics address', async (t) => {
  t.equal(parseLogFormat('json'), 'json')
  t.equal(parseLogFormat(' TEXT '), 'text')
  t.throws(() => parseLogFormat('yaml'), { code: 'CONFIG_INVALID', message: "expected logFormat like 'json', got 'yaml' (one of text, json)" })
  t.equal(parseLogLevel('debug'), 'debug')
  t.equal(parseLogLevel('Warn'), 'warn')
  t.throws(() => parseLogLevel('loud'), { code: 'CONFIG_INVALID', message: "expected logLevel like 'debug', got 'loud' (one of error, warn, info, debug)" })
  t.strictSame(parseListenAddress('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 })
  t.strictSame(parseListenAddress('[::1]:0'), { host: '::1', port: 0 })
  t.strictSame(parseListenAddress('metrics.local:9464'), { host: 'metrics.local', port: 9464 })
  for (const bad of ['9464', '127.0.0.1', '::1:9464', '127.0.0.1:70000', 'a b:1', `${'x'.repeat(300)}:1`]) {
    t.throws(() => parseListenAddress(bad), { code: 'CONFIG_INVALID', message: /^expected metricsAddress like '127\.0\.0\.1:9464'/ }, bad.slice(0, 20))
  }
  t.throws(() => parseListenAddress(`${'x'.repeat(300)}:1`), { message: /^.{0,220}$/ }, 'a long value is not echoed whole')
  t.doesNotThrow(() => checkSetting('logFormat', 'json', env))
  t.doesNotThrow(() => checkSetting('logLevel', 'debug', env))
  t.doesNotThrow(() => checkSetting('logMaxSize', '1MiB', env))
  t.doesNotThrow(() => checkSetting('metricsAddress', '[::1]:9464', env))
  t.throws(() => checkSetting('logFormat', 'xml', env), { code: 'CONFIG_INVALID' })
  t.throws(() => checkSetting('logLevel', 'verbose', env), { code: 'CONFIG_INVALID' })
  t.throws(() => checkSetting('logMaxSize', 'big', env), { message: "expected logMaxSize like '20GB', got 'big'" })
  t.throws(() => checkSetting('metricsAddress', 'anywhere', env), { code: 'CONFIG_INVALID' })
  t.equal(settingKey('log-level'), 'logLevel')
  t.equal(settingKey('METRICS_ADDRESS'), 'metricsAddress')
})
