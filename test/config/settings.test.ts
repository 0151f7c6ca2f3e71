import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseUpstreams, resolveSettings, settingEnvVars, type RawSettings } from '../../src/config/settings.js'

/** An isolated home and config dir under `root`; `file` is written as config.json when given. */
function world(root: string, file?: Record<string, unknown>) {
  const configDir = path.join(root, 'config')
  if (file) {
    fs.mkdirSync(configDir, { recursive: true })
    fs.writeFileSync(path.join(configDir, 'config.json'), JSON.stringify(file))
  }
  const env: NodeJS.ProcessEnv = { HOME: path.join(root, 'home'), DPROXY_CONFIG_DIR: configDir }
  return { env, configDir, configFile: path.join(configDir, 'config.json') }
}

t.test('defaults', async (t) => {
  const root = t.testdir({})
  const { env, configDir } = world(root)
  const settings = resolveSettings({ env, platform: 'linux' })
  t.same(settings, {
    hosts: ['127.0.0.1', '::1'],
    port: 5000,
    cacheDir: path.join(root, 'home', '.local', 'share', 'dproxy'),
    upstreams: {},
    noOrigin: false,
    chainConnectTimeoutMs: undefined,
    chainFirstByteTimeoutMs: undefined,
    maxAgeMs: 0,
    maxSizeBytes: undefined,
    ttlMs: undefined,
    auth: false,
    refreshMs: undefined,
    refreshWindowMs: 14 * 24 * 3600 * 1000,
    refreshReserve: 0.2,
    logFormat: 'text',
    logLevel: 'info',
    logMaxBytes: 10 * 1024 * 1024,
    metricsAddress: undefined,
    dockerCredentials: true,
    tls: 'off',
    tlsCert: undefined,
    tlsKey: undefined,
    tlsNames: [],
    insecureLan: false,
    configDir,
    stateDir: path.join(root, 'home', '.local', 'state', 'dproxy'),
  })
  t.notOk(fs.existsSync(configDir), 'resolving settings creates nothing')
})

t.test('tls settings: mode, files (both or neither, not with auto), extra names, insecureLan', async (t) => {
  const { env } = world(t.testdir({}), { tls: 'auto', tlsNames: 'cache.lan,10.0.0.5' })
  const fromFile = resolveSettings({ env, platform: 'linux' })
  t.equal(fromFile.tls, 'auto')
  t.strictSame(fromFile.tlsNames, ['cache.lan', '10.0.0.5'])
  const flags = resolveSettings({ env, platform: 'linux', flags: { tls: 'off', tlsCert: '/etc/c.pem', tlsKey: '/etc/k.pem', tlsNames: ['host.docker.internal', '[::1]'], insecureLan: true } })
  t.equal(flags.tls, 'off', 'the flag over the file')
  t.equal(flags.tlsCert, '/etc/c.pem')
  t.equal(flags.tlsKey, '/etc/k.pem')
  t.strictSame(flags.tlsNames, ['host.docker.internal', '::1'])
  t.equal(flags.insecureLan, true)
  t.equal(resolveSettings({ env: { ...env, DPROXY_INSECURE_LAN: 'yes', DPROXY_TLS: 'off' }, platform: 'linux' }).insecureLan, true)
  t.throws(() => resolveSettings({ env, platform: 'linux', flags: { tls: 'on' } }), { code: 'CONFIG_INVALID', message: /expected tls like 'auto', got 'on' \(one of off, auto\) \(from --tls\)/ })
  t.throws(() => resolveSettings({ env, platform: 'linux', flags: { tls: 'off', tlsCert: '/etc/c.pem' } }), { code: 'CONFIG_INVALID', message: /tlsCert and tlsKey go together/ })
  t.throws(() => resolveSettings({ env, platform: 'linux', flags: { tlsCert: '/etc/c.pem', tlsKey: '/etc/k.pem' } }), { code: 'CONFIG_INVALID', message: /either --tls auto or --tls-cert/ })
  t.throws(() => resolveSettings({ env, platform: 'linux', flags: { tlsNames: ['*.example'] } }), { code: 'CONFIG_INVALID', message: /expected tlsNames/ })
})

t.test('dockerCredentials: on by default; off from the file, DPROXY_DOCKER_CREDENTIALS or --no-docker-credentials', async (t) => {
  const { env } = world(t.testdir({}), { dockerCredentials: 'false' })
  t.equal(resolveSettings({ env, platform: 'linux' }).dockerCredentials, false, 'from the file')
  t.equal(resolveSettings({ env: { ...env, DPROXY_DOCKER_CREDENTIALS: 'yes' }, platform: 'linux' }).dockerCredentials, true, 'environment over file')
  t.equal(resolveSettings({ env: { ...env, DPROXY_DOCKER_CREDENTIALS: 'yes' }, flags: { dockerCredentials: false }, platform: 'linux' }).dockerCredentials, false, 'the flag over both')
  t.throws(() => resolveSettings({ env: { ...env, DPROXY_DOCKER_CREDENTIALS: 'maybe' }, platform: 'linux' }), {
    code: 'CONFIG_INVALID',
    message: /^expected dockerCredentials like 'true', got 'maybe' .*\(from DPROXY_DOCKER_CREDENTIALS\)$/,
  })
})

t.test('refresh settings: interval (0 is off), window, reserve as a percentage or a fraction', async (t) => {
  const root = t.testdir({})
  const { env } = world(root)
  const s = resolveSettings({ env: { ...env, DPROXY_REFRESH: '1h', DPROXY_REFRESH_WINDOW: '7d' }, flags: { refreshReserve: '35%' }, platform: 'linux' })
  t.match(s, { refreshMs: 3_600_000, refreshWindowMs: 7 * 86_400_000, refreshReserve: 0.35 })
  t.equal(resolveSettings({ env, flags: { refresh: '0', refreshReserve: '0.1' }, platform: 'linux' }).refreshMs, undefined)
  t.equal(resolveSettings({ env, flags: { refreshReserve: '0.1' }, platform: 'linux' }).refreshReserve, 0.1)
  t.throws(() => resolveSettings({ env, flags: { refreshReserve: '120%' }, platform: 'linux' }), {
    code: 'CONFIG_INVALID',
    message: "expected refreshReserve like '20%', got '120%' (a percentage, or a fraction from 0 to 1) (from --refresh-reserve)",
  })
})

t.test('flags win over environment, environment over the file, the file over defaults', async (t) => {
  const root = t.testdir({})
  const fileValues = {
    host: '0.0.0.0',
    port: '5001',
    cacheDir: '/file/cache',
    maxAge: '1m',
    maxSize: '1GB',
    ttl: '1d',
    auth: 'false',
  }
  const envValues: RawSettings = {
    host: '::',
    port: '5002',
    cacheDir: '/env/cache',
    maxAge: '2m',
    maxSize: '2GB',
    ttl: '2d',
    auth: 'yes',
  }
  const flagValues: RawSettings = {
    host: 'localhost',
    port: 5003,
    cacheDir: '/flag/cache',
    maxAge: '3m',
    maxSize: '3GB',
    ttl: '3d',
    auth: false,
  }
  const expected = {
    file: { hosts: ['0.0.0.0'], port: 5001, cacheDir: '/file/cache', maxAgeMs: 60_000, maxSizeBytes: 1e9, ttlMs: 86_400_000, auth: false },
    env: { hosts: ['::'], port: 5002, cacheDir: '/env/cache', maxAgeMs: 120_000, maxSizeBytes: 2e9, ttlMs: 172_800_000, auth: true },
    flags: {
      hosts: ['127.0.0.1', '::1'],
      port: 5003,
      cacheDir: '/flag/cache',
      maxAgeMs: 180_000,
      maxSizeBytes: 3e9,
      ttlMs: 259_200_000,
      auth: false,
    },
  }
  const { env } = world(root, fileValues)
  t.match(resolveSettings({ env, platform: 'linux' }), expected.file, 'file over defaults')

  const withEnv = { ...env }
  for (const [key, value] of Object.entries(envValues)) withEnv[settingEnvVars[key as keyof typeof settingEnvVars]] = String(value)
  t.match(resolveSettings({ env: withEnv, platform: 'linux' }), expected.env, 'environment over file')
  t.match(resolveSettings({ env: withEnv, flags: flagValues, platform: 'linux' }), expected.flags, 'flags over environment')
})

t.test('log and metrics settings: a flag over DPROXY_* over the file, each value checked where it came from', async (t) => {
  const { env, configFile } = world(t.testdir({}), { logFormat: 'json', logLevel: 'warn', logMaxSize: '1MiB', metricsAddress: '127.0.0.1:9464' })
  const file = { logFormat: 'json', logLevel: 'warn', logMaxBytes: 1024 * 1024, metricsAddress: { host: '127.0.0.1', port: 9464 } }
  t.match(resolveSettings({ env, platform: 'linux' }), file, 'from the file')
  const withEnv = { ...env, DPROXY_LOG_LEVEL: 'debug', DPROXY_LOG_MAX_SIZE: '2kB', DPROXY_METRICS_ADDRESS: '[::1]:0' }
  t.match(resolveSettings({ env: withEnv, platform: 'linux' }), { ...file, logLevel: 'debug', logMaxBytes: 2000, metricsAddress: { host: '::1', port: 0 } }, 'environment over file')
  const flags: RawSettings = { logFormat: 'text', logLevel: 'error', logMaxSize: '3kB', metricsAddress: '0.0.0.0:9100' }
  t.match(resolveSettings({ env: withEnv, flags, platform: 'linux' }), { logFormat: 'text', logLevel: 'error', logMaxBytes: 3000, metricsAddress: { host: '0.0.0.0', port: 9100 } }, 'flags over environment')
  t.throws(() => resolveSettings({ env: { ...env, DPROXY_LOG_LEVEL: 'loud' }, platform: 'linux' }), {
    code: 'CONFIG_INVALID',
    message: "expected logLevel like 'debug', got 'loud' (one of error, warn, info, debug) (from DPROXY_LOG_LEVEL)",
  })
  t.throws(() => resolveSettings({ env, flags: { metricsAddress: '9464' }, platform: 'linux' }), { message: /^expected metricsAddress .* \(from --metrics-address\)$/ })
  fs.writeFileSync(configFile, JSON.stringify({ logFormat: 'xml' }))
  const fromFile = t.throws(() => resolveSettings({ env, flags: { logFormat: 'json' }, platform: 'linux' }), 'a bad file value is reported even under a flag')
  t.match(fromFile, { message: `expected logFormat like 'json', got 'xml' (one of text, json) (from ${configFile})` })
})

t.test('empty environment variables count as unset', async (t) => {
  const { env } = world(t.testdir({}), { port: '5001' })
  const settings = resolveSettings({ env: { ...env, DPROXY_PORT: '', DPROXY_UPSTREAMS: '', DPROXY_MAX_SIZE: '' }, platform: 'linux' })
  t.equal(settings.port, 5001)
  t.same(settings.upstreams, {})
})

t.test('upstreams merge per registry; higher layers replace the same registry', async (t) => {
  const { env } = world(t.testdir({}), { upstreams: 'docker.io=http://file-hub,ghcr.io=http://file-ghcr' })
  const settings = resolveSettings({
    env: { ...env, DPROXY_UPSTREAMS: 'ghcr.io=http://env-ghcr,quay.io=http://env-quay' },
    flags: { upstreams: ['index.docker.io=http://flag-hub/'] },
    platform: 'linux',
  })
  t.strictSame(settings.upstreams, {
    'docker.io': ['http://flag-hub'],
    'ghcr.io': ['http://env-ghcr'],
    'quay.io': ['http://env-quay'],
  })
})

t.test('parseUpstreams names its source', async (t) => {
  t.strictSame(parseUpstreams(['docker.io=http://127.0.0.1:15000', 'ghcr.io=https://m.example'], '--upstream'), {
    'docker.io': ['http://127.0.0.1:15000'],
    'ghcr.io': ['https://m.example'],
  })
  t.throws(() => parseUpstreams('docker.io', '--upstream'), {
    code: 'CONFIG_INVALID',
    message: "expected upstreams like 'docker.io=http://127.0.0.1:15000', got 'docker.io' (a list starts with REGISTRY=URL) (from --upstream)",
  })
})

t.test('a bad value says which layer it came from', async (t) => {
  const { env, configFile } = world(t.testdir({}))
  t.throws(() => resolveSettings({ env: { ...env, DPROXY_MAX_SIZE: 'lots' } }), {
    name: 'DproxyError',
    code: 'CONFIG_INVALID',
    message: "expected maxSize like '20GB', got 'lots' (from DPROXY_MAX_SIZE)",
  })
  t.throws(() => resolveSettings({ env, flags: { maxAge: 'soon' } }), {
    message: "expected maxAge like '10m', got 'soon' (units: ms, s, m, h, d, w) (from --max-age)",
  })
  t.throws(() => resolveSettings({ env, flags: { port: '99999' } }), { message: /\(from --port\)$/ })
  t.throws(() => resolveSettings({ env: { ...env, DPROXY_UPSTREAMS: 'x' } }), { message: /\(from DPROXY_UPSTREAMS\)$/ })

  fs.mkdirSync(path.dirname(configFile), { recursive: true })
  fs.writeFileSync(configFile, JSON.stringify({ ttl: 'forever' }))
  t.throws(() => resolveSettings({ env }), {
    code: 'CONFIG_INVALID',
    message: `expected ttl like '10m', got 'forever' (units: ms, s, m, h, d, w) (from ${configFile})`,
  })
  t.throws(() => resolveSettings({ env, flags: { ttl: '1d' } }), { code: 'CONFIG_INVALID' }, 'checked even when a flag overrides it')
})

t.test('unknown keys in the file are reported', async (t) => {
  const { env, configFile } = world(t.testdir({}), { maxage: '1m' })
  t.throws(() => resolveSettings({ env }), {
    code: 'CONFIG_INVALID',
    message: `unknown setting 'maxage' in ${configFile} (did you mean 'maxAge'?)`,
  })
  fs.writeFileSync(configFile, JSON.stringify({ colour: 'blue' }))
  t.throws(() => resolveSettings({ env }), {
    message: `unknown setting 'colour' in ${configFile} (known: host, port, cacheDir, upstreams, noOrigin, chainConnectTimeout, chainFirstByteTimeout, maxAge, maxSize, ttl, auth, registries, refresh, refreshWindow, refreshReserve, logFormat, logLevel, logMaxSize, metricsAddress, dockerCredentials, tls, tlsCert, tlsKey, tlsNames, insecureLan)`,
  })
})

t.test('0 turns size and ttl limits off, so a flag can undo the file', async (t) => {
  const { env } = world(t.testdir({}), { maxSize: '20GB', ttl: '30d', maxAge: '5m' })
  t.match(resolveSettings({ env }), { maxSizeBytes: 20e9, ttlMs: 2_592_000_000, maxAgeMs: 300_000 })
  const off = resolveSettings({ env, flags: { maxSize: '0', ttl: '0', maxAge: '0' } })
  t.equal(off.maxSizeBytes, undefined)
  t.equal(off.ttlMs, undefined)
  t.equal(off.maxAgeMs, 0, 'maxAge 0 stays 0')
})

t.test('cache directories', async (t) => {
  const root = t.testdir({})
  const { env, configFile } = world(root, { cacheDir: '~/from-file' })
  t.equal(resolveSettings({ env }).cacheDir, path.join(root, 'home', 'from-file'), '~ expands to HOME from the given env')
  t.equal(resolveSettings({ env, flags: { cacheDir: 'rel' } }).cacheDir, path.resolve('rel'), 'a relative flag is from the cwd')
  t.equal(resolveSettings({ env: { ...env, DPROXY_CACHE_DIR: '/env/c' } }).cacheDir, '/env/c')
  fs.writeFileSync(configFile, JSON.stringify({ cacheDir: 'rel' }))
  t.throws(() => resolveSettings({ env }), { code: 'CONFIG_INVALID', message: /got 'rel' \(an absolute path or one starting with ~\/\)/ })
})

t.test('hosts and port forms', async (t) => {
  const { env } = world(t.testdir({}))
  t.same(resolveSettings({ env, flags: { host: '127.0.0.1,::1,0.0.0.0' } }).hosts, ['127.0.0.1', '::1', '0.0.0.0'])
  t.same(resolveSettings({ env: { ...env, DPROXY_HOST: 'loopback' } }).hosts, ['127.0.0.1', '::1'])
  t.equal(resolveSettings({ env, flags: { port: '0' } }).port, 0, 'ephemeral port allowed')
  t.equal(resolveSettings({ env, flags: { port: 8080 } }).port, 8080)
})

t.test('the config file may hold hand-written JSON types', async (t) => {
  const { env } = world(t.testdir({}), { port: 5001, auth: true, upstreams: { 'registry-1.docker.io': 'http://127.0.0.1:15000/' } })
  t.match(resolveSettings({ env }), { port: 5001, auth: true, upstreams: { 'docker.io': ['http://127.0.0.1:15000'] } })
})

t.test('registries: the allow-list from --allow-registry, DPROXY_REGISTRIES or the file; unset is the default', async (t) => {
  const { env } = world(t.testdir({}), { registries: 'quay.io' })
  t.strictSame(resolveSettings({ env }).registries, ['quay.io'])
  t.strictSame(resolveSettings({ env: { ...env, DPROXY_REGISTRIES: 'index.docker.io, ghcr.io' } }).registries, ['docker.io', 'ghcr.io'])
  t.strictSame(resolveSettings({ env, flags: { registries: ['ghcr.io', 'registry.k8s.io,gcr.io'] } }).registries, [
    'ghcr.io',
    'registry.k8s.io',
    'gcr.io',
  ])
  t.equal(resolveSettings({ env: world(t.testdir({})).env }).registries, undefined)
  t.throws(() => resolveSettings({ env, flags: { registries: ['not a host'] } }), {
    code: 'CONFIG_INVALID',
    message: /registries.*'not a host'.*from --allow-registry/,
  })
})

t.test('noOrigin: --no-origin, DPROXY_NO_ORIGIN or the file; true, false or registries', async (t) => {
  const { env } = world(t.testdir({}), { noOrigin: 'docker.io,ghcr.io' })
  t.strictSame(resolveSettings({ env }).noOrigin, ['docker.io', 'ghcr.io'])
  t.equal(resolveSettings({ env: { ...env, DPROXY_NO_ORIGIN: 'no' } }).noOrigin, false)
  t.equal(resolveSettings({ env, flags: { noOrigin: true } }).noOrigin, true)
  t.throws(() => resolveSettings({ env: { ...env, DPROXY_NO_ORIGIN: 'bad host' } }), {
    code: 'CONFIG_INVALID',
    message: "expected noOrigin like 'docker.io', got 'bad host' (true, false, or registries) (from DPROXY_NO_ORIGIN)",
  })
})

t.test('the limits of an endpoint with another behind it: durations above 0, at most 10m', async (t) => {
  const { env } = world(t.testdir({}), { chainConnectTimeout: '500ms' })
  const s = resolveSettings({ env: { ...env, DPROXY_CHAIN_FIRST_BYTE_TIMEOUT: '30s' } })
  t.equal(s.chainConnectTimeoutMs, 500)
  t.equal(s.chainFirstByteTimeoutMs, 30_000)
  t.throws(() => resolveSettings({ env, flags: { chainConnectTimeout: '0' } }), {
    code: 'CONFIG_INVALID',
    message: "expected chainConnectTimeout like '2s', got '0' (above 0 and at most 10m) (from --chain-connect-timeout)",
  })
})
