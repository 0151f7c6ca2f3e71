import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { DproxyError } from '../../src/errors.js'
import { lazyCredentialStore, openCredentialStore, type KeychainBackend, type Keytar } from '../../src/credentials/index.js'
import { secret } from './fixtures/contract.js'

function memoryKeytar(): Keytar {
  const entries = new Map<string, string>()
  return {
    getPassword: async (_s, a) => entries.get(a) ?? null,
    setPassword: async (_s, a, p) => {
      entries.set(a, p)
    },
    deletePassword: async (_s, a) => entries.delete(a),
    findCredentials: async () => [...entries].map(([account, password]) => ({ account, password })),
  }
}

const memory = async (): Promise<KeychainBackend> => ({ name: 'memory', keytar: memoryKeytar() })
const notInstalled = async (): Promise<KeychainBackend> => {
  throw new DproxyError('INTERNAL', 'keytar is not installed')
}
const hangs = async (): Promise<KeychainBackend> => ({
  name: 'memory',
  keytar: { ...memoryKeytar(), findCredentials: () => new Promise(() => undefined) },
})
const mustNotLoad = async (): Promise<KeychainBackend> => {
  throw new Error('the keychain should not have been tried')
}

function configDirIn(root: string): string {
  return path.join(root, 'config')
}

t.test('an answering keychain is used and nothing is written to the config dir', async (t) => {
  const configDir = configDirIn(t.testdir({}))
  const fallbacks: string[] = []
  const store = await openCredentialStore({
    configDir,
    env: {},
    onFallback: (r) => fallbacks.push(r),
    loadKeychain: memory,
  })
  t.equal(store.kind, 'keychain')
  await store.set('ghcr.io', { username: 'ann', secret })
  t.same(await store.get('ghcr.io'), { username: 'ann', secret })
  t.same(fallbacks, [])
  t.notOk(fs.existsSync(configDir))
})

t.test('falls back to the file, saying why in one line', async (t) => {
  for (const [name, loadKeychain, reason] of [
    ['keytar missing', notInstalled, 'keytar is not installed'],
    ['keychain silent', hangs, 'no answer within 30ms'],
  ] as const) {
    const configDir = configDirIn(t.testdir({}))
    const fallbacks: string[] = []
    const store = await openCredentialStore({
      configDir,
      env: {},
      onFallback: (r) => fallbacks.push(r),
      loadKeychain,
      probeTimeoutMs: 30,
    })
    t.equal(store.kind, 'file', name)
    t.same(fallbacks, [], `${name}: opening the store says nothing yet`)
    await store.get('ghcr.io')
    await store.list()
    t.same(fallbacks, [], `${name}: nor does reading`)
    await store.set('ghcr.io', { username: 'ann', secret })
    const note = `no OS keychain answered (${reason}); storing credentials in ${path.join(configDir, 'credentials.json')} (mode 0600)`
    t.same(fallbacks, [note], `${name}: said once, where a credential is stored`)
    t.ok(fs.existsSync(path.join(configDir, 'credentials.json')), `${name}: stored in the file`)
    await store.set('docker.io', { username: 'bo', secret })
    t.same(fallbacks, [note], `${name}: and only once`)
    const again = await openCredentialStore({ configDir, env: {}, onFallback: (r) => fallbacks.push(r), loadKeychain })
    await again.set('quay.io', { username: 'cy', secret })
    t.same(fallbacks, [note], `${name}: not on the next command either (the file is used directly)`)
  }
})

t.test('a store that fails to write says nothing (a login that fails gets no note)', async (t) => {
  const root = t.testdir({ config: 'a file where the config dir should be' })
  const fallbacks: string[] = []
  const store = await openCredentialStore({ configDir: configDirIn(root), env: {}, onFallback: (r) => fallbacks.push(r), loadKeychain: notInstalled })
  await t.rejects(store.set('ghcr.io', { username: 'ann', secret }))
  t.same(fallbacks, [])
})

t.test('DPROXY_CREDENTIAL_STORE=file forces the file without trying the keychain', async (t) => {
  const configDir = configDirIn(t.testdir({}))
  const fallbacks: string[] = []
  const store = await openCredentialStore({
    configDir,
    env: { DPROXY_CREDENTIAL_STORE: 'file' },
    onFallback: (r) => fallbacks.push(r),
    loadKeychain: mustNotLoad,
  })
  t.equal(store.kind, 'file')
  t.same(fallbacks, [], 'a forced choice is not a fallback')
  await store.set('docker.io', { username: 'ann', secret })
  t.same(await store.list(), [{ registry: 'docker.io', username: 'ann' }])
})

t.test('DPROXY_CREDENTIAL_STORE=keychain fails loudly instead of falling back', async (t) => {
  const configDir = configDirIn(t.testdir({}))
  await t.rejects(
    openCredentialStore({ configDir, env: { DPROXY_CREDENTIAL_STORE: 'keychain' }, loadKeychain: notInstalled }),
    {
      name: 'DproxyError',
      code: 'CONFIG_INVALID',
      message: 'DPROXY_CREDENTIAL_STORE=keychain, but no OS keychain answered (keytar is not installed)',
    },
  )
  const store = await openCredentialStore({
    configDir,
    env: { DPROXY_CREDENTIAL_STORE: 'keychain' },
    loadKeychain: memory,
  })
  t.equal(store.kind, 'keychain')
})

t.test('an unknown DPROXY_CREDENTIAL_STORE is refused', async (t) => {
  await t.rejects(openCredentialStore({ configDir: t.testdir({}), env: { DPROXY_CREDENTIAL_STORE: 'vault' } }), {
    code: 'CONFIG_INVALID',
    message: "expected DPROXY_CREDENTIAL_STORE like 'keychain' or 'file', got 'vault'",
  })
})

t.test('an existing credentials file keeps being used, so earlier logins are not lost', async (t) => {
  const root = t.testdir({})
  const configDir = configDirIn(root)
  const first = await openCredentialStore({ configDir, env: {}, loadKeychain: notInstalled })
  await first.set('ghcr.io', { username: 'ann', secret })
  const later = await openCredentialStore({ configDir, env: {}, loadKeychain: mustNotLoad })
  t.equal(later.kind, 'file')
  t.same(await later.get('ghcr.io'), { username: 'ann', secret })
  await later.delete('ghcr.io')
  const afterLogout = await openCredentialStore({ configDir, env: {}, loadKeychain: memory })
  t.equal(afterLogout.kind, 'keychain', 'once the file is gone the keychain is used again')
})

t.test('the daemon\'s store loads the keychain on the first lookup, once', async (t) => {
  const configDir = configDirIn(t.testdir({}))
  let loads = 0
  const keytar = memoryKeytar()
  await keytar.setPassword('dproxy', 'ghcr.io', JSON.stringify({ username: 'ann', secret }))
  const store = lazyCredentialStore({
    configDir,
    env: {},
    loadKeychain: async () => {
      loads++
      return { name: 'memory', keytar }
    },
  })
  t.equal(loads, 0, 'nothing is loaded before a login is asked for')
  const [a, b] = await Promise.all([store.get('ghcr.io'), store.get('quay.io')])
  t.same(a, { username: 'ann', secret })
  t.equal(b, undefined)
  t.equal((await store.open()).kind, 'keychain')
  t.equal(loads, 1)
})

t.test('the daemon\'s store refuses an unknown DPROXY_CREDENTIAL_STORE at once, a silent forced keychain on lookup', async (t) => {
  const configDir = configDirIn(t.testdir({}))
  t.throws(() => lazyCredentialStore({ configDir, env: { DPROXY_CREDENTIAL_STORE: 'vault' }, loadKeychain: mustNotLoad }), {
    code: 'CONFIG_INVALID',
  })
  const store = lazyCredentialStore({ configDir, env: { DPROXY_CREDENTIAL_STORE: 'keychain' }, loadKeychain: notInstalled })
  await t.rejects(store.get('docker.io'), { code: 'CONFIG_INVALID' })
})
