import fs from 'node:fs'
import path from 'node:path'
import { Writable } from 'node:stream'
import { Command } from 'commander'
import t from 'tap'
import { configGet, configList, configPath, configSet, configUnset, registerConfigCommand } from '../../src/cli/config.js'

/** Runs `dproxy <args>` against a config dir under `root`, returning what was printed. */
async function run(root: string, ...args: string[]): Promise<string> {
  let out = ''
  const stdout = new Writable({
    write(chunk: Buffer, _encoding, done) {
      out += chunk.toString()
      done()
    },
  })
  const program = new Command('dproxy').exitOverride().configureOutput({ writeOut: (s) => (out += s), writeErr: () => undefined })
  registerConfigCommand(program, { env: envFor(root), stdout })
  await program.parseAsync(args, { from: 'user' })
  return out
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
  t.equal(await run(root, 'config', 'get', 'maxAge'), '', 'unset prints nothing')
  t.equal(await run(root, 'config', 'get', 'maxAge', '--json'), 'null\n')
  t.notOk(fs.existsSync(path.join(root, 'config')), 'reading created nothing')

  t.equal(await run(root, 'config', 'set', 'maxAge', '10m'), '')
  await run(root, 'config', 'set', 'max-size', '20GB')
  await run(root, 'config', 'set', 'upstreams', 'docker.io=http://127.0.0.1:15000')
  t.equal(await run(root, 'config', 'get', 'maxAge'), '10m\n')
  t.equal(await run(root, 'config', 'get', 'maxSize', '--json'), '"20GB"\n')
  t.equal(await run(root, 'config', 'list'), 'maxAge=10m\nmaxSize=20GB\nupstreams=docker.io=http://127.0.0.1:15000\n')
  t.same(JSON.parse(await run(root, 'config', 'list', '--json')), {
    maxAge: '10m',
    maxSize: '20GB',
    upstreams: 'docker.io=http://127.0.0.1:15000',
  })

  await run(root, 'config', 'unset', 'maxAge')
  await run(root, 'config', 'unset', 'maxAge')
  t.equal(await run(root, 'config', 'get', 'maxAge'), '')
  t.same(JSON.parse(fs.readFileSync(file, 'utf8')), { maxSize: '20GB', upstreams: 'docker.io=http://127.0.0.1:15000' })
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
    message: "unknown setting 'foo' (known: host, port, cacheDir, upstreams, maxAge, maxSize, ttl, auth, refresh, refreshWindow, refreshReserve)",
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
