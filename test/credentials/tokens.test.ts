// The token store: the token text (one reading whatever the name holds), the
// keyed hash (no secret and nothing checkable without the key on disk), the
// 0600 file and its atomic writes, repository patterns, and the daemon's
// reader seeing a revocation, a rotation and an expiry.

import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { FileCredentialStore } from '../../src/credentials/file.js'
import {
  checkTokenName,
  formatToken,
  parseRepoPattern,
  parseToken,
  TOKEN_KEY_ENTRY,
  TokenBook,
  TokenFile,
  tokenHash,
  tokenKey,
  TOKENS_FILE,
  TOKENS_USED_FILE,
} from '../../src/credentials/tokens.js'

const secret43 = 'A'.repeat(21) + '_' + 'b-'.repeat(10) + 'c'

t.test('token text: dpt_<name>_<43 chars>, read back whatever the name and secret hold', async (t) => {
  t.equal(secret43.length, 43)
  for (const name of ['ci', 'ci_runner_1', 'a.b-c', 'x'.repeat(64), 'dpt_x_y']) {
    const text = formatToken(name, secret43)
    t.strictSame(parseToken(text), { name, secret: secret43 }, name)
  }
  for (const bad of ['', 'dpt_', `dpt__${secret43}`, `dpt_ci-${secret43}`, `dpt_ci_${secret43.slice(1)}`, `dpx_ci_${secret43}`, `dpt_c i_${secret43}`, `dpt_ci_${secret43.slice(0, -1)}!`, 'dp1.123.abc']) {
    t.equal(parseToken(bad), undefined, JSON.stringify(bad))
  }
})

t.test('names: bounded charset and length; the built-in name is reserved', async (t) => {
  for (const ok of ['ci', 'CI-1', 'a.b_c', '9'.repeat(64)]) t.doesNotThrow(() => checkTokenName(ok), ok)
  for (const bad of ['', '-x', '.x', 'a b', 'a/b', 'a:b', 'é', '9'.repeat(65), 'a\nb']) {
    t.throws(() => checkTokenName(bad), { code: 'USAGE' }, JSON.stringify(bad))
  }
  t.throws(() => checkTokenName('dproxy'), { code: 'USAGE', message: /built-in user/ })
  t.doesNotThrow(() => checkTokenName('dproxy', { allowBuiltin: true }))
})

t.test('repository patterns: * within a component, ** across, registry included', async (t) => {
  const p = parseRepoPattern('docker.io/library/*, ghcr.io/acme/**')
  t.equal(p.text, 'docker.io/library/*,ghcr.io/acme/**')
  const cases: Array<[string, boolean]> = [
    ['docker.io/library/alpine', true],
    ['docker.io/library/alpine/extra', false],
    ['docker.io/someone/alpine', false],
    ['docker.io/libraryx/alpine', false],
    ['ghcr.io/acme/tool', true],
    ['ghcr.io/acme/team/tool', true],
    ['ghcr.io/acmex/tool', false],
    ['ghcrxio/acme/tool', false],
    ['quay.io/library/alpine', false],
  ]
  for (const [repo, expected] of cases) t.equal(p.matches(repo), expected, repo)
  t.ok(parseRepoPattern('localhost:5000/team/*').matches('localhost:5000/team/x'))
  for (const bad of ['', ',', 'alpine', 'docker.io/Library/*', 'docker.io/a?b', 'docker.io/a/***', 'docker.io/(x)', 'a/'.repeat(300), Array(17).fill('a.io/b').join(',')]) {
    t.throws(() => parseRepoPattern(bad), { code: 'USAGE' }, bad.slice(0, 40))
  }
})

t.test('the key lives in the credential store, never in the tokens file', async (t) => {
  const dir = t.testdir()
  const store = new FileCredentialStore(path.join(dir, 'config'))
  t.equal(await tokenKey(store), undefined, 'not created by a read')
  const key = await tokenKey(store, { create: true })
  t.equal(key?.length, 32)
  t.strictSame(await tokenKey(store, { create: true }), key, 'created once')
  t.equal((await store.get(TOKEN_KEY_ENTRY))?.secret, key!.toString('base64url'))
  await store.set(TOKEN_KEY_ENTRY, { username: 'hmac-sha256', secret: 'short' })
  await t.rejects(tokenKey(store), { code: 'CONFIG_INVALID' })
})

t.test('create, list, rotate, revoke: 0600 file, hashes only, atomic', async (t) => {
  const dir = t.testdir()
  const stateDir = path.join(dir, 'state')
  let now = Date.parse('2030-01-01T00:00:00Z')
  const clock = { now: () => now }
  const key = Buffer.alloc(32, 7)
  const file = new TokenFile(stateDir, { clock })
  const a = await file.create(key, 'ci-1', { expiresMs: 90 * 86_400_000, repos: 'docker.io/library/*' })
  t.equal(a.name, 'ci-1')
  t.equal(a.expires, '2030-04-01T00:00:00.000Z')
  const parsed = parseToken(a.token)!
  t.equal(parsed.name, 'ci-1')
  const b = await file.create(key, 'laptop')
  t.equal(b.expires, null, 'no --expires: never')
  await t.rejects(file.create(key, 'ci-1'), { code: 'USAGE', message: /exists/ })
  await t.rejects(file.create(key, 'x', { repos: 'nope' }), { code: 'USAGE' })

  const text = fs.readFileSync(path.join(stateDir, TOKENS_FILE), 'utf8')
  t.equal(fs.statSync(path.join(stateDir, TOKENS_FILE)).mode & 0o777, 0o600)
  t.equal(fs.statSync(stateDir).mode & 0o777, 0o700)
  t.notMatch(text, parsed.secret, 'the secret is not stored')
  const data = JSON.parse(text) as { tokens: Record<string, { hash: string }> }
  t.equal(data.tokens['ci-1']!.hash, tokenHash(key, 'ci-1', parsed.secret), 'HMAC-SHA-256 with the key')
  t.not(data.tokens['ci-1']!.hash, tokenHash(Buffer.alloc(32, 8), 'ci-1', parsed.secret), 'another key, another hash')
  t.strictSame(
    fs.readdirSync(stateDir).filter((f) => f !== TOKENS_FILE),
    [],
    'no temp file or lock left behind',
  )

  t.strictSame(await file.list(), [
    { name: 'ci-1', created: '2030-01-01T00:00:00.000Z', expires: '2030-04-01T00:00:00.000Z', repos: 'docker.io/library/*', lastUsed: null },
    { name: 'laptop', created: '2030-01-01T00:00:00.000Z', expires: null, repos: null, lastUsed: null },
  ])
  const rotated = await file.rotate(key, 'ci-1')
  t.not(rotated.token, a.token)
  t.equal(rotated.expires, a.expires, 'rotation keeps the expiry')
  t.equal((await file.list())[0]!.repos, 'docker.io/library/*', 'and the repositories')
  await t.rejects(file.rotate(key, 'ghost'), { code: 'USAGE' })
  t.equal(await file.revoke('laptop'), true)
  t.equal(await file.revoke('laptop'), false)
  t.strictSame((await file.list()).map((e) => e.name), ['ci-1'])

  // Two writers at once in one process: both entries survive (the lock serialises read-modify-write).
  await Promise.all([file.create(key, 'p1'), file.create(key, 'p2'), file.create(key, 'p3')])
  t.strictSame((await file.list()).map((e) => e.name), ['ci-1', 'p1', 'p2', 'p3'])
})

t.test('a failed write leaves the old file and no temp file', async (t) => {
  const dir = t.testdir()
  const key = Buffer.alloc(32, 1)
  const real = await import('node:fs')
  let failRename = false
  const { TokenFile: Mocked } = await t.mockImport<typeof import('../../src/credentials/tokens.js')>('../../src/credentials/tokens.js', {
    'node:fs': {
      ...real,
      promises: {
        ...real.promises,
        rename: async (from: string, to: string) => {
          if (failRename) throw Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC' })
          return real.promises.rename(from, to)
        },
      },
    },
  })
  const file = new Mocked(dir)
  await file.create(key, 'one')
  const before = fs.readFileSync(path.join(dir, TOKENS_FILE), 'utf8')
  failRename = true
  await t.rejects(file.create(key, 'two'), { code: 'INTERNAL', message: /cannot write/ })
  t.equal(fs.readFileSync(path.join(dir, TOKENS_FILE), 'utf8'), before)
  t.strictSame(fs.readdirSync(dir).sort(), [TOKENS_FILE])
})

t.test('the daemon\'s book: sees revocation, rotation and expiry within its check interval', async (t) => {
  const stateDir = t.testdir()
  let now = Date.parse('2030-01-01T00:00:00Z')
  const clock = { now: () => now }
  const key = Buffer.alloc(32, 3)
  let keyReads = 0
  const file = new TokenFile(stateDir, { clock })
  const book = new TokenBook({ stateDir, clock, checkEveryMs: 1000, key: async () => (keyReads++, key) })
  t.equal(await book.entry('ci'), undefined, 'no file: no tokens')
  t.equal(keyReads, 0, 'no key asked while there are no tokens')

  const created = await file.create(key, 'ci', { expiresMs: 3_600_000, repos: 'docker.io/library/*' })
  const { secret } = parseToken(created.token)!
  t.equal(await book.check('ci', secret), undefined, 'not looked at again within the interval')
  now += 1000
  const entry = await book.check('ci', secret)
  t.equal(entry?.name, 'ci')
  t.ok(entry?.pattern?.matches('docker.io/library/alpine'))
  t.equal(await book.check('ci', secret.slice(0, -1) + (secret.endsWith('A') ? 'B' : 'A')), undefined, 'wrong secret')
  t.equal(await book.check('other', secret), undefined, 'another name')

  const rotated = parseToken((await file.rotate(key, 'ci')).token)!
  now += 1000
  t.equal(await book.check('ci', secret), undefined, 'the old secret stops working after a rotation')
  t.ok(await book.check('ci', rotated.secret))

  now += 3_600_000
  t.equal(await book.check('ci', rotated.secret), undefined, 'expired')
  t.strictSame(book.names(), ['ci'], 'still known (status lists it)')

  const again = parseToken((await file.create(key, 'ci2')).token)!
  now += 1000
  t.ok(await book.check('ci2', again.secret))
  await file.revoke('ci2')
  now += 1000
  t.equal(await book.check('ci2', again.secret), undefined, 'revoked')

  // A broken file keeps the last good view (and never lets anyone in with it).
  const created3 = parseToken((await file.create(key, 'ci3')).token)!
  now += 1000
  t.ok(await book.check('ci3', created3.secret))
  fs.writeFileSync(path.join(stateDir, TOKENS_FILE), `{"tokens": {"ci3": "${created3.secret}"}}`)
  const warnings: string[] = []
  const book2 = new TokenBook({ stateDir, clock, key: async () => key, log: { info() {}, warn: (m) => warnings.push(m), error() {} } })
  t.equal(await book2.check('ci3', created3.secret), undefined)
  t.match(warnings.join('\n'), /cannot read the client tokens/)
  t.notMatch(warnings.join('\n'), created3.secret, 'the file text is never quoted')
})

t.test('last use: in memory at once, written out at most once a minute, merged with the past', async (t) => {
  const stateDir = t.testdir({ [TOKENS_USED_FILE]: JSON.stringify({ version: 1, lastUsed: { old: '2029-01-01T00:00:00.000Z' } }) })
  let now = Date.parse('2030-01-01T00:00:00Z')
  const clock = { now: () => now }
  const key = Buffer.alloc(32, 4)
  const file = new TokenFile(stateDir, { clock })
  const ci = parseToken((await file.create(key, 'ci')).token)!
  const book = new TokenBook({ stateDir, clock, key: async () => key })
  t.ok(await book.check('ci', ci.secret))
  book.used('ci')
  t.strictSame(book.lastUsed(), { old: '2029-01-01T00:00:00.000Z', ci: '2030-01-01T00:00:00.000Z' })
  await book.flush()
  const usedFile = path.join(stateDir, TOKENS_USED_FILE)
  const read = () => (JSON.parse(fs.readFileSync(usedFile, 'utf8')) as { lastUsed: Record<string, string> }).lastUsed
  t.equal(read().ci, '2030-01-01T00:00:00.000Z')
  t.equal(fs.statSync(usedFile).mode & 0o777, 0o600)
  now += 30_000
  book.used('ci')
  await book.flush()
  t.equal(read().ci, '2030-01-01T00:00:00.000Z', 'not written again within a minute')
  await book.flush({ force: true })
  t.equal(read().ci, '2030-01-01T00:00:30.000Z', 'forced (the daemon stopping)')
  t.equal((await file.list())[0]!.lastUsed, '2030-01-01T00:00:30.000Z', 'token ls reads it')
  await file.revoke('ci')
  now += 1000
  await file.create(key, 'ci')
  t.equal((await file.list())[0]!.lastUsed, null, 'a use of an earlier token of that name is not this one\'s')
})
