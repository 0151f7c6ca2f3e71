import fs from 'node:fs'
import path from 'node:path'
import { Writable } from 'node:stream'
import { Command } from 'commander'
import t from 'tap'
import { configGet, configList, configPath, configSet, configUnset, registerConfigCommand } from '../../src/cli/config.js'

/** Runs `dproxy <args>` against a config dir under `root`, returning what was printed on stdout. */
async function run(root: string, ...args: string[]): Promise<string> {
  return (await runBoth(root, {}, ...args)).out
}

async function runBoth(root: string, extraEnv: NodeJS.ProcessEnv, ...args: string[]): Promise<{ out: string; err: string }> {
  let out = ''
  let err = ''
  const sink = (f: (s: string) => void) =>
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        f(chunk.toString())
        done()
      },
    })
  const program = new Command('dproxy').exitOverride().configureOutput({ writeOut: (s) => (out += s), writeErr: () => undefined })
  registerConfigCommand(program, { env: { ...envFor(root), ...extraEnv }, stdout: sink((s) => (out += s)), stderr: sink((s) => (err += s)) })
  await program.parseAsync(args, { from: 'user' })
  return { out, err }
}

function envFor(root: string): NodeJS.ProcessEnv {
  return { HOME: path.join(root, 'home'), DPROXY_CONFIG_DIR: path.join(root, 'config') }
}

t.test('set, get, list, unset, path', async (t) => {
  const root = t.testdir({})
  const file = path.join(root, 'config', 'config.json')
  t.equal(await run(root, 'config', 'path'), `${file}\n`)
  t.equal(await run(root, 'config', 'path', '--json'), `${JSON.stringify(file)}\n`)
  t.equal(await run(root, 'config', 'list'), '', 'empty list')
  t.equal(await run(root, 'config', 'get', 'maxAge'), '0\n', 'unset: the default')
  t.same(JSON.parse(await run(root, 'config', 'get', 'maxAge', '--json')), { key: 'maxAge', value: '0', source: 'default' })
  t.notOk(fs.existsSync(path.join(root, 'config')), 'reading created nothing')

  t.equal(await run(root, 'config', 'set', 'maxAge', '10m'), '')
  await run(root, 'config', 'set', 'max-size', '20GB')
  await run(root, 'config', 'set', 'upstreams', 'docker.io=http://127.0.0.1:15000')
  t.equal(await run(root, 'config', 'get', 'maxAge'), '10m\n')
  t.same(JSON.parse(await run(root, 'config', 'get', 'maxSize', '--json')), { key: 'maxSize', value: '20GB', source: 'file', from: file })
  t.equal(await run(root, 'config', 'list'), 'maxAge=10m\nmaxSize=20GB\nupstreams=docker.io=http://127.0.0.1:15000\n')
  t.same(JSON.parse(await run(root, 'config', 'list', '--json')), {
    maxAge: '10m',
    maxSize: '20GB',
    upstreams: 'docker.io=http://127.0.0.1:15000',
  })

  await run(root, 'config', 'unset', 'maxAge')
  await run(root, 'config', 'unset', 'maxAge')
  t.equal(await run(root, 'config', 'get', 'maxAge'), '0\n')
  t.same(JSON.parse(fs.readFileSync(file, 'utf8')), { maxSize: '20GB', upstreams: 'docker.io=http://127.0.0.1:15000' })
})

t.test('get: the effective value on stdout, where it comes from on stderr: environment, file, default', async (t) => {
  const root = t.testdir({})
  const file = path.join(root, 'config', 'config.json')
  t.same(await runBoth(root, {}, 'config', 'get', 'port'), { out: '5000\n', err: '(default)\n' })
  t.same(await runBoth(root, {}, 'config', 'get', 'upstreams'), { out: '\n', err: '(default: none)\n' })
  t.same(await runBoth(root, {}, 'config', 'get', 'host'), { out: '127.0.0.1,::1\n', err: '(default)\n' })
  await run(root, 'config', 'set', 'port', '5001')
  t.same(await runBoth(root, {}, 'config', 'get', 'port'), { out: '5001\n', err: `(from ${file})\n` })
  t.same(await runBoth(root, { DPROXY_PORT: '5002' }, 'config', 'get', 'port'), { out: '5002\n', err: '(from the environment: DPROXY_PORT)\n' })
  t.same(JSON.parse((await runBoth(root, { DPROXY_PORT: '5002' }, 'config', 'get', 'PORT', '--json')).out), {
    key: 'port',
    value: '5002',
    source: 'env',
    from: 'DPROXY_PORT',
  })
  t.same(await runBoth(root, { DPROXY_PORT: '' }, 'config', 'get', 'port'), { out: '5001\n', err: `(from ${file})\n` }, 'an empty variable is unset')
  const cacheDir = JSON.parse((await runBoth(root, {}, 'config', 'get', 'cacheDir', '--json')).out) as { value: string; source: string }
  t.same(cacheDir, { key: 'cacheDir', value: path.join(root, 'home', '.local', 'share', 'dproxy'), source: 'default' })
})

t.test('bad keys and values are DproxyErrors that main.ts maps to exit 2', async (t) => {
  const root = t.testdir({})
  await t.rejects(run(root, 'config', 'set', 'maxSize', 'lots'), {
    name: 'DproxyError',
    code: 'CONFIG_INVALID',
    message: "expected maxSize like '20GB', got 'lots'",
  })
  await t.rejects(run(root, 'config', 'get', 'foo'), {
    code: 'USAGE',
    message: "unknown setting 'foo' (known: host, port, cacheDir, upstreams, noOrigin, chainConnectTimeout, chainFirstByteTimeout, maxAge, maxSize, ttl, auth, registries, refresh, refreshWindow, refreshReserve, logFormat, logLevel, logMaxSize, metricsAddress, dockerCredentials, tls, tlsCert, tlsKey, tlsNames, insecureLan)",
  })
  await t.rejects(run(root, 'config', 'set', 'foo', 'x'), { code: 'USAGE' })
  await t.rejects(run(root, 'config', 'unset', 'foo'), { code: 'USAGE' })
  await t.rejects(run(root, 'config', 'set', 'port'), { code: 'commander.missingArgument' }, 'commander checks arity')
  t.notOk(fs.existsSync(path.join(root, 'config', 'config.json')))
})

t.test('help lists the settings', async (t) => {
  let help = ''
  const program = new Command('dproxy').exitOverride().configureOutput({ writeOut: (s) => (help += s) })
  registerConfigCommand(program, { env: envFor(t.testdir({})), stdout: process.stdout })
  await t.rejects(program.parseAsync(['config', '--help'], { from: 'user' }), { code: 'commander.helpDisplayed' })
  for (const key of ['host', 'port', 'cacheDir', 'upstreams', 'maxAge', 'maxSize', 'ttl', 'auth']) t.match(help, `  ${key} `)
})

t.test('the plain functions', async (t) => {
  const env = envFor(t.testdir({}))
  t.equal(await configSet(env, 'MAX_AGE', '1h'), 'maxAge')
  t.equal(configGet(env, 'maxAge'), '1h')
  t.same(configList(env), { maxAge: '1h' })
  t.equal(await configUnset(env, 'maxAge'), true)
  t.equal(configPath(env), path.join(env.DPROXY_CONFIG_DIR ?? '', 'config.json'))
})
