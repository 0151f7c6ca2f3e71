// The formats `dproxy env` prints, each read back by the parser it is meant
// for: sh for the shell format, Node's dotenv parser (util.parseEnv) for
// dotenv, JSON.parse for the others. Quoting is exercised
// with the values that break naive quoting. (gitlab-ci output is checked line
// by line: its values are JSON strings, which YAML reads as double-quoted
// scalars with the same escapes.)

import { spawnSync } from 'node:child_process'
import { parseEnv } from 'node:util'
import t from 'tap'
import {
  clientEnv,
  dotenvQuote,
  ENV_FORMATS,
  formatEnv,
  GROUP_IMAGE_PATH,
  parseEnvFormat,
  serverAddress,
  serverFromListen,
  shellQuote,
} from '../../src/control/clientenv.js'
import { resolveImageName } from '../../src/oci/reference.js'

const tricky = [
  '',
  'plain',
  "it's",
  "''",
  'a "quoted" word',
  '$HOME and ${PATH}',
  '`id` $(id)',
  'back\\slash \\n',
  'spaces  and\ttab',
  '# not a comment',
  'ünïcødé ✓',
  `all ' " \` $ \\`,
]

t.test('serverAddress: localhost and the port by default; --host with or without a port', async (t) => {
  t.equal(serverAddress(undefined, 5000), 'localhost:5000')
  t.equal(serverAddress('', 5001), 'localhost:5001')
  t.equal(serverAddress('ci-cache.example', 5000), 'ci-cache.example:5000')
  t.equal(serverAddress('ci-cache.example:6000', 5000), 'ci-cache.example:6000')
  t.equal(serverAddress('10.0.0.5', 5000), '10.0.0.5:5000')
  t.equal(serverAddress('::1', 5000), '[::1]:5000')
  t.equal(serverAddress('[fd00::2]:6000', 5000), '[fd00::2]:6000')
  t.equal(serverAddress('[fd00::2]', 5000), '[fd00::2]:5000')
  for (const bad of ['a b', 'x:y', 'host:70000', "x'; rm -rf /", 'http://x']) {
    t.throws(() => serverAddress(bad, 5000), { code: 'USAGE', message: /expected --host/ }, bad)
  }
  t.throws(() => serverAddress(undefined, 0), { code: 'USAGE', message: /port is 0/ })
})

t.test('clientEnv: GitLab names; the prefix maps to Docker Hub', async (t) => {
  const env = clientEnv({ username: 'dproxy', password: 'pw', server: 'localhost:5000' })
  t.strictSame(env, {
    CI_DEPENDENCY_PROXY_USER: 'dproxy',
    CI_DEPENDENCY_PROXY_PASSWORD: 'pw',
    CI_DEPENDENCY_PROXY_SERVER: 'localhost:5000',
    CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX: `localhost:5000/${GROUP_IMAGE_PATH}`,
    CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX: `localhost:5000/${GROUP_IMAGE_PATH}`,
  })
  // What a client sends after the server part of "$PREFIX/alpine:latest" and "$PREFIX/bitnami/redis".
  t.match(resolveImageName(`${GROUP_IMAGE_PATH}/alpine`), { registry: 'docker.io', repository: 'library/alpine' })
  t.match(resolveImageName(`${GROUP_IMAGE_PATH}/bitnami/redis`), { registry: 'docker.io', repository: 'bitnami/redis' })
})

t.test('shell: sh reads back every value exactly', async (t) => {
  for (const value of tricky) {
    const r = spawnSync('sh', ['-c', 'eval "$1"; printf %s "$X"', 'sh', `export X=${shellQuote(value)}`], { encoding: 'utf8' })
    t.equal(r.status, 0, value)
    t.equal(r.stdout, value, value)
  }
  const text = formatEnv(clientEnv({ username: 'dproxy', password: tricky.at(-1)!, server: 'localhost:5000' }), 'shell')
  t.match(text, /^export CI_DEPENDENCY_PROXY_USER='dproxy'\n/)
  const r = spawnSync('sh', ['-c', 'eval "$1"; printf %s "$CI_DEPENDENCY_PROXY_PASSWORD"', 'sh', text], { encoding: 'utf8' })
  t.equal(r.stdout, tricky.at(-1))
})

t.test('dotenv: Node dotenv parser reads back every value it can carry', async (t) => {
  for (const value of tricky.slice(0, -1)) {
    const line = `X=${dotenvQuote('X', value)}`
    t.equal(parseEnv(line).X ?? '', value, line)
  }
  t.throws(() => dotenvQuote('X', tricky.at(-1)!), { code: 'USAGE', message: /X cannot be written as dotenv/ })
  const text = formatEnv(clientEnv({ username: 'dproxy', password: 'abc-_DEF123', server: '[::1]:5000' }), 'dotenv')
  t.equal(
    text,
    [
      'CI_DEPENDENCY_PROXY_USER=dproxy',
      'CI_DEPENDENCY_PROXY_PASSWORD=abc-_DEF123',
      "CI_DEPENDENCY_PROXY_SERVER='[::1]:5000'",
      `CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX='[::1]:5000/${GROUP_IMAGE_PATH}'`,
      `CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX='[::1]:5000/${GROUP_IMAGE_PATH}'`,
      '',
    ].join('\n'),
  )
  t.strictSame(parseEnv(text), clientEnv({ username: 'dproxy', password: 'abc-_DEF123', server: '[::1]:5000' }))
})

t.test('json, docker-auth-config and gitlab-ci parse back', async (t) => {
  const env = clientEnv({ username: 'dproxy', password: tricky.at(-1)!, server: 'ci.example:5000' })
  t.strictSame(JSON.parse(formatEnv(env, 'json')), env)
  const auth = JSON.parse(formatEnv(env, 'docker-auth-config')) as { auths: Record<string, { auth: string }> }
  t.strictSame(Object.keys(auth.auths), ['ci.example:5000'])
  t.equal(Buffer.from(auth.auths['ci.example:5000']!.auth, 'base64').toString('utf8'), `dproxy:${tricky.at(-1)}`)
  const yaml = formatEnv(env, 'gitlab-ci')
  t.match(yaml, /^variables:\n {2}CI_DEPENDENCY_PROXY_USER: "dproxy"\n/)
  const lines = yaml.trimEnd().split('\n')
  t.equal(lines.shift(), 'variables:')
  const read = Object.fromEntries(
    lines.map((line) => {
      const m = /^ {2}([A-Z_]+): (".*")$/.exec(line)
      t.ok(m, line)
      return [m![1]!, JSON.parse(m![2]!) as string]
    }),
  )
  t.strictSame(read, env)
})

t.test('a value with a line break or NUL is refused in every format, without printing it', async (t) => {
  for (const format of ENV_FORMATS) {
    for (const bad of ['line1\nline2', 'cr\rhere', 'nul\0']) {
      t.throws(
        () => formatEnv(clientEnv({ username: 'dproxy', password: bad, server: 'localhost:5000' }), format),
        { code: 'USAGE', message: 'CI_DEPENDENCY_PROXY_PASSWORD cannot be printed: its value contains a line break or NUL' },
        `${format} ${JSON.stringify(bad)}`,
      )
    }
  }
})

t.test('parseEnvFormat', async (t) => {
  for (const f of ENV_FORMATS) t.equal(parseEnvFormat(f), f)
  t.throws(() => parseEnvFormat('yaml'), { code: 'USAGE', message: /one of shell, dotenv, json, docker-auth-config, gitlab-ci/ })
})

t.test('serverFromListen: localhost for loopback and wildcard listeners, else the first address', async (t) => {
  t.equal(serverFromListen(['127.0.0.1:15420', '[::1]:15420']), 'localhost:15420')
  t.equal(serverFromListen(['[::1]:15421']), 'localhost:15421')
  t.equal(serverFromListen(['0.0.0.0:5000']), 'localhost:5000')
  t.equal(serverFromListen(['[::]:5000']), 'localhost:5000')
  t.equal(serverFromListen(['192.168.1.5:5001', '10.0.0.2:5001']), '192.168.1.5:5001')
  t.equal(serverFromListen(['[fd00::5]:5002']), '[fd00::5]:5002')
  t.equal(serverFromListen([]), undefined, 'not listening yet')
})
