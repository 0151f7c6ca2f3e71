import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { FileCredentialStore } from '../../src/credentials/file.js'
import { credentialStoreContract, secret } from './fixtures/contract.js'

const posix = process.platform !== 'win32'

credentialStoreContract(t, async (t) => new FileCredentialStore(path.join(t.testdir({}), 'config')))

t.test('the file is 0600 in a 0700 directory, even under a lax umask', { skip: !posix && 'POSIX modes only' }, async (t) => {
  const dir = path.join(t.testdir({}), 'config')
  fs.mkdirSync(dir, { mode: 0o755 })
  fs.chmodSync(dir, 0o755)
  const store = new FileCredentialStore(dir)
  const umask = process.umask(0o000)
  try {
    await store.set('ghcr.io', { username: 'ann', secret })
  } finally {
    process.umask(umask)
  }
  t.equal(store.path, path.join(dir, 'credentials.json'))
  t.equal(fs.statSync(store.path).mode & 0o777, 0o600, 'file mode')
  t.equal(fs.statSync(dir).mode & 0o777, 0o700, 'directory mode')
  t.same(fs.readdirSync(dir), ['credentials.json'], 'no temporary file left behind')
  t.same(JSON.parse(fs.readFileSync(store.path, 'utf8')), {
    version: 1,
    credentials: { 'ghcr.io': { username: 'ann', secret } },
  })
})

t.test('the directory is created 0700 when missing', { skip: !posix && 'POSIX modes only' }, async (t) => {
  const dir = path.join(t.testdir({}), 'a', 'config')
  const store = new FileCredentialStore(dir)
  await store.set('ghcr.io', { username: 'ann', secret })
  t.equal(fs.statSync(dir).mode & 0o777, 0o700)
  t.equal(fs.statSync(store.path).mode & 0o777, 0o600)
})

t.test('reading writes nothing; deleting the last credential removes the file', async (t) => {
  const root = t.testdir({})
  const dir = path.join(root, 'config')
  const store = new FileCredentialStore(dir)
  t.same(await store.list(), [])
  t.notOk(fs.existsSync(dir), 'nothing created by reading')
  await store.set('ghcr.io', { username: 'ann', secret })
  t.ok(fs.existsSync(store.path))
  await store.delete('ghcr.io')
  t.notOk(fs.existsSync(store.path), 'no secrets file kept around empty')
})

t.test('concurrent sets on one store keep every entry', async (t) => {
  const store = new FileCredentialStore(path.join(t.testdir({}), 'config'))
  const registries = ['a.example', 'b.example', 'c.example', 'd.example', 'e.example']
  await Promise.all(registries.map((registry) => store.set(registry, { username: registry, secret })))
  t.same(
    (await store.list()).map((entry) => entry.registry),
    registries,
  )
})

t.test('a damaged file is reported without quoting its secrets', async (t) => {
  const dir = t.testdir({ 'credentials.json': `{"version":1,"credentials":{"ghcr.io":{"username":"ann","secret":"${secret}"` })
  const store = new FileCredentialStore(dir)
  const err = await store.get('ghcr.io').then(
    () => undefined,
    (e: unknown) => e,
  )
  t.match(err, { name: 'DproxyError', code: 'CONFIG_INVALID', message: `credentials file ${store.path} is not valid JSON; fix or remove it` })
  t.notMatch(String((err as Error).message), secret)
  t.equal((err as Error).cause, undefined, 'no cause carrying the parser message')

  const shape = t.testdir({ 'credentials.json': JSON.stringify({ credentials: { 'ghcr.io': { secret } } }) })
  const err2 = await new FileCredentialStore(shape).list().then(
    () => undefined,
    (e: unknown) => e,
  )
  t.match(err2, { code: 'CONFIG_INVALID', message: /the entry for ghcr.io needs username and secret$/ })
  t.notMatch(String((err2 as Error).message), secret)
})

t.test('a failed write leaves the old file and no temporary file', { skip: !posix && 'POSIX modes only' }, async (t) => {
  const dir = path.join(t.testdir({}), 'config')
  const store = new FileCredentialStore(dir)
  await store.set('ghcr.io', { username: 'ann', secret })
  const { FileCredentialStore: Mocked } = await t.mockImport<typeof import('../../src/credentials/file.js')>(
    '../../src/credentials/file.js',
    {
      'node:fs/promises': {
        ...(await import('node:fs/promises')),
        default: {
          ...(await import('node:fs/promises')).default,
          rename: async () => {
            throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })
          },
        },
      },
    },
  )
  const failing = new Mocked(dir)
  await t.rejects(failing.set('quay.io', { username: 'bo', secret }), {
    code: 'INTERNAL',
    message: `cannot write credentials file ${store.path}`,
  })
  t.same(fs.readdirSync(dir), ['credentials.json'], 'temporary file removed')
  t.same(await store.list(), [{ registry: 'ghcr.io', username: 'ann' }], 'old contents intact')
})
