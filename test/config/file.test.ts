import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openConfig } from '../../src/config/file.js'

/** Paths and env for a config dir inside `root` (a t.testdir whose 'config' folder holds any fixture files). */
function setup(root: string) {
  const dir = path.join(root, 'config')
  const env = { HOME: path.join(root, 'home'), DPROXY_CONFIG_DIR: dir }
  return { root, dir, env, file: path.join(dir, 'config.json') }
}

t.test('reading a missing file writes nothing, not even the directory', async (t) => {
  const root = t.testdir({})
  const dir = path.join(root, 'nested', 'config')
  const config = openConfig({ DPROXY_CONFIG_DIR: dir })
  t.equal(config.path, path.join(dir, 'config.json'))
  t.equal(config.get('port'), undefined)
  t.same(config.list(), {})
  t.equal(await config.unset('port'), false)
  t.notOk(fs.existsSync(path.join(root, 'nested')), 'no directory created')
})

t.test('set stores the string the user typed; get prints it back', async (t) => {
  const { env, file } = setup(t.testdir({ config: {} }))
  const config = openConfig(env)
  t.equal(await config.set('maxAge', '10m'), 'maxAge')
  t.equal(await config.set('max-size', ' 20GB '), 'maxSize', 'kebab-case names and surrounding spaces are accepted')
  await config.set('upstreams', 'index.docker.io=http://127.0.0.1:15000')
  await config.set('port', '0')
  t.equal(config.get('maxAge'), '10m')
  t.equal(config.get('MAX_SIZE'), '20GB')
  t.equal(config.get('upstreams'), 'index.docker.io=http://127.0.0.1:15000')
  t.same(JSON.parse(fs.readFileSync(file, 'utf8')), {
    maxAge: '10m',
    maxSize: '20GB',
    upstreams: 'index.docker.io=http://127.0.0.1:15000',
    port: '0',
  })
  t.same(openConfig(env).list(), { maxAge: '10m', maxSize: '20GB', upstreams: 'index.docker.io=http://127.0.0.1:15000', port: '0' })
})

t.test('bad keys and values are refused precisely and nothing is written', async (t) => {
  const { env, file, dir } = setup(t.testdir({ config: {} }))
  const config = openConfig(env)
  await t.rejects(config.set('maxSize', 'lots'), {
    name: 'DproxyError',
    code: 'CONFIG_INVALID',
    message: "expected maxSize like '20GB', got 'lots'",
  })
  await t.rejects(config.set('foo', '1'), {
    code: 'USAGE',
    message: "unknown setting 'foo' (known: host, port, cacheDir, upstreams, noOrigin, chainConnectTimeout, chainFirstByteTimeout, maxAge, maxSize, ttl, auth, registries, refresh, refreshWindow, refreshReserve, logFormat, logLevel, logMaxSize, metricsAddress, dockerCredentials, tls, tlsCert, tlsKey, tlsNames, insecureLan)",
  })
  t.throws(() => config.get('foo'), { code: 'USAGE' })
  await t.rejects(config.unset('foo'), { code: 'USAGE' })
  await t.rejects(config.set('cacheDir', 'relative/dir'), { code: 'CONFIG_INVALID' })
  await t.rejects(config.set('upstreams', 'docker.io=https://u:pw@m.example'), { code: 'CONFIG_INVALID' }, 'no secrets in the file')
  t.notOk(fs.existsSync(file), 'no file written')
  t.same(fs.readdirSync(dir), [])
})

t.test('every key accepts a good value', async (t) => {
  const { env } = setup(t.testdir({ config: {} }))
  const config = openConfig(env)
  const good = {
    host: 'localhost',
    port: '5001',
    cacheDir: '~/dproxy-cache',
    upstreams: 'docker.io=http://127.0.0.1:15000,ghcr.io=https://m.example',
    maxAge: '1h30m',
    maxSize: '512MiB',
    ttl: '30d',
    auth: 'true',
  }
  for (const [key, value] of Object.entries(good)) await config.set(key, value)
  t.same(config.list(), good)
})

t.test('unset', async (t) => {
  const { env } = setup(t.testdir({ config: { 'config.json': JSON.stringify({ port: '5001', maxage: '1m' }) } }))
  const config = openConfig(env)
  t.equal(await config.unset('port'), true)
  t.equal(await config.unset('port'), false, 'already unset')
  t.equal(config.get('port'), undefined)
  t.equal(await config.unset('maxage'), true, 'a key this version does not know can be removed when it is in the file')
  t.same(config.list(), {})
})

t.test('hand-edited values are read as strings; reading leaves the file alone', async (t) => {
  const text = JSON.stringify({ port: 5001, auth: true, upstreams: { 'docker.io': 'http://a' }, extra: 'x' }, null, 1)
  const { env, file } = setup(t.testdir({ config: { 'config.json': text } }))
  const before = fs.statSync(file).mtimeMs
  const config = openConfig(env)
  t.equal(config.get('port'), '5001')
  t.equal(config.get('auth'), 'true')
  t.equal(config.get('upstreams'), 'docker.io=http://a')
  t.same(config.list(), { port: '5001', auth: 'true', upstreams: 'docker.io=http://a', extra: 'x' })
  t.equal(fs.readFileSync(file, 'utf8'), text, 'contents unchanged')
  t.equal(fs.statSync(file).mtimeMs, before, 'not rewritten')
})

t.test('a broken file is reported with its path', async (t) => {
  const { env, file } = setup(t.testdir({ config: { 'config.json': '{"port": ' } }))
  const config = openConfig(env)
  t.throws(() => config.list(), { code: 'CONFIG_INVALID', message: new RegExp(`^cannot read config file ${file}: `) })
  await t.rejects(config.set('port', '1'), { code: 'CONFIG_INVALID' })
  t.equal(fs.readFileSync(file, 'utf8'), '{"port": ', 'left as it was')
})
