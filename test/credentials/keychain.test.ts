import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import {
  KeychainCredentialStore,
  keychainService,
  loadKeychain,
  loadKeytar,
  loadNapiKeyring,
  probeKeychain,
  type Keytar,
} from '../../src/credentials/keychain.js'
import { DproxyError } from '../../src/errors.js'
import { credentialStoreContract, secret } from './fixtures/contract.js'

/** An in-memory keytar: service -> account -> password. */
function fakeKeytar(): Keytar & { entries: Map<string, Map<string, string>> } {
  const entries = new Map<string, Map<string, string>>()
  const service = (name: string) => {
    let accounts = entries.get(name)
    if (!accounts) entries.set(name, (accounts = new Map()))
    return accounts
  }
  return {
    entries,
    getPassword: async (s, a) => service(s).get(a) ?? null,
    setPassword: async (s, a, p) => {
      service(s).set(a, p)
    },
    deletePassword: async (s, a) => service(s).delete(a),
    findCredentials: async (s) => [...service(s)].map(([account, password]) => ({ account, password })),
  }
}

credentialStoreContract(t, async () => new KeychainCredentialStore(fakeKeytar()))

t.test('one entry per registry: service dproxy, account = registry, password = JSON', async (t) => {
  const keytar = fakeKeytar()
  const store = new KeychainCredentialStore(keytar)
  await store.set('index.docker.io', { username: 'ann', secret })
  t.equal(keychainService, 'dproxy')
  t.same([...(keytar.entries.get('dproxy') ?? [])], [['docker.io', JSON.stringify({ username: 'ann', secret })]])
})

t.test('entries that are not ours are skipped by list and refused by get, without quoting them', async (t) => {
  const keytar = fakeKeytar()
  await keytar.setPassword('dproxy', 'ghcr.io', `not json ${secret}`)
  await keytar.setPassword('dproxy', 'quay.io', JSON.stringify({ username: 'ann', secret }))
  const store = new KeychainCredentialStore(keytar)
  t.same(await store.list(), [{ registry: 'quay.io', username: 'ann' }])
  const err = await store.get('ghcr.io').then(
    () => undefined,
    (e: unknown) => e,
  )
  t.match(err, { code: 'CONFIG_INVALID', message: 'keychain entry dproxy/ghcr.io is not a dproxy credential (not JSON)' })
  t.notMatch(String((err as Error).message), secret)
})

t.test('keychain failures are wrapped with what was being done', async (t) => {
  const keytar = fakeKeytar()
  keytar.setPassword = async () => {
    throw new Error('The name org.freedesktop.secrets was not provided by any .service files')
  }
  await t.rejects(new KeychainCredentialStore(keytar).set('ghcr.io', { username: 'ann', secret }), {
    code: 'INTERNAL',
    message: 'keychain: could not store the credential for ghcr.io: The name org.freedesktop.secrets was not provided by any .service files',
  })
})

t.test('probe', async (t) => {
  await t.resolves(probeKeychain(fakeKeytar(), 1000), 'an answering keychain passes')

  const failing = fakeKeytar()
  failing.findCredentials = async () => {
    throw new Error('Cannot autolaunch D-Bus without X11 $DISPLAY\nmore detail')
  }
  await t.rejects(probeKeychain(failing, 1000), { message: 'Cannot autolaunch D-Bus without X11 $DISPLAY' }, 'first line of the reason')

  const hanging = fakeKeytar()
  hanging.findCredentials = () => new Promise(() => undefined)
  await t.rejects(probeKeychain(hanging, 50), { message: 'no answer within 50ms' })

  const late = fakeKeytar()
  late.findCredentials = () => new Promise((_, reject) => setTimeout(() => reject(new Error('late')), 20))
  await t.rejects(probeKeychain(late, 5), { message: 'no answer within 5ms' })
  await new Promise((resolve) => setTimeout(resolve, 40))
  t.pass('a rejection after the deadline is not unhandled')
})

// keytar is optional; its absence is covered by the fallback tests in index.test.ts.
const loaded = await loadKeytar().then(
  (keytar) => ({ keytar, problem: undefined }),
  (err: unknown) => ({ keytar: undefined, problem: `keytar does not load here: ${(err as Error).message}` }),
)

t.test('loadKeytar finds the CommonJS functions', { skip: loaded.problem ?? false }, async (t) => {
  for (const name of ['getPassword', 'setPassword', 'deletePassword', 'findCredentials'] as const) {
    t.type(loaded.keytar?.[name], 'function', name)
  }
})

const failing = (message: string) => async (): Promise<never> => {
  throw new DproxyError('INTERNAL', message)
}

t.test('loadKeychain: keytar when it loads, else @napi-rs/keyring, else both reasons', async (t) => {
  const napi = await loadKeychain({ keytar: failing('keytar is not installed') })
  t.equal(napi.name, '@napi-rs/keyring', 'keytar missing: the prebuilt module is used')
  for (const name of ['getPassword', 'setPassword', 'deletePassword', 'findCredentials'] as const) {
    t.type(napi.keytar[name], 'function', name)
  }
  t.equal((await loadNapiKeyring()).findCredentials, napi.keytar.findCredentials, 'the real module, not a double')
  const fake = fakeKeytar()
  t.equal((await loadKeychain({ keytar: async () => fake, napi: failing('must not load') })).keytar, fake, 'keytar first')
  await t.rejects(loadKeychain({ keytar: failing('keytar is not installed'), napi: failing('@napi-rs/keyring failed to load: x') }), {
    code: 'INTERNAL',
    message: 'keytar is not installed; @napi-rs/keyring failed to load: x',
  })
})

// --- the real OS keychain, in a child process with its own D-Bus session ---

const child = fileURLToPath(new URL('./fixtures/keychain-child.ts', import.meta.url))
const contractChild = fileURLToPath(new URL('./fixtures/keychain-contract-child.ts', import.meta.url))
// The TypeScript loaders this process runs with (test/loader, and tap's): a child runs .ts as it does.
const loaderArgs = process.execArgv.filter((arg) => arg.includes('@tapjs/typescript') || arg.includes('test/loader/'))

function which(command: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

/**
 * An environment for the child with its own HOME and XDG dirs under `root`, and no D-Bus or display.
 * XDG_RUNTIME_DIR (where gnome-keyring binds its control socket, and where libdbus would look for a
 * user bus) is a short directory under the system temp dir: a socket path inside t.testdir exceeds
 * the 108-byte limit of Unix socket names.
 */
function isolatedEnv(t: Test, root: string, extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const name of ['DBUS_SESSION_BUS_ADDRESS', 'DISPLAY', 'WAYLAND_DISPLAY', 'DPROXY_CREDENTIAL_STORE']) delete env[name]
  const run = fs.mkdtempSync(path.join(os.tmpdir(), 'dproxy-kc-'))
  fs.chmodSync(run, 0o700)
  t.teardown(() => fs.rmSync(run, { recursive: true, force: true }))
  return {
    ...env,
    HOME: path.join(root, 'home'),
    XDG_DATA_HOME: path.join(root, 'data'),
    XDG_CONFIG_HOME: path.join(root, 'xdg-config'),
    XDG_RUNTIME_DIR: run,
    DPROXY_CONFIG_DIR: path.join(root, 'config'),
    CHILD_CONFIG_DIR: path.join(root, 'config'),
    CHILD_SECRET: secret,
    ...extra,
  }
}

function parseReport(t: Test, result: ReturnType<typeof spawnSync>): Record<string, unknown> | undefined {
  const stdout = String(result.stdout)
  const line = stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as Record<string, unknown>
  } catch {
    t.fail('child printed no report', { status: result.status, stdout, stderr: String(result.stderr) })
    return undefined
  }
}

const missing = ['dbus-run-session', 'gnome-keyring-daemon'].filter((command) => which(command) === undefined)
const noKeyring =
  process.platform !== 'linux'
    ? 'gnome-keyring is Linux only'
    : missing.length > 0
      ? `not installed: ${missing.join(', ')} (apt-get install dbus gnome-keyring)`
      : false

/** Runs `script` under its own D-Bus session with an unlocked throw-away gnome-keyring. */
function inKeyring(script: string, env: NodeJS.ProcessEnv): ReturnType<typeof spawnSync> {
  const unlock = `echo -n pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null; exec "$0" "$@"`
  return spawnSync('dbus-run-session', ['--', 'sh', '-c', unlock, process.execPath, ...loaderArgs, script], {
    env,
    encoding: 'utf8',
    timeout: 60_000,
  })
}

for (const backend of ['keytar', '@napi-rs/keyring'] as const) {
  t.test(`the real keychain through ${backend} (gnome-keyring under dbus-run-session)`, { skip: noKeyring }, async (t) => {
    const root = t.testdir({ config: { 'config.json': JSON.stringify({ port: '5001' }) } })
    const env = isolatedEnv(t, root, {
      DPROXY_CREDENTIAL_STORE: 'keychain',
      CHILD_ROUND_TRIP: '1',
      ...(backend === '@napi-rs/keyring' ? { CHILD_NO_KEYTAR: '1' } : {}),
    })
    const report = parseReport(t, inKeyring(child, env))
    if (!report) return
    t.equal(report.kind, 'keychain')
    t.equal(report.backend, backend)
    t.same(report.fallbacks, [])
    t.same(report.get, { username: 'ann', secret })
    t.same(report.list, [
      { registry: 'docker.io', username: 'ann' },
      { registry: 'ghcr.io', username: 'bo' },
    ])
    t.equal(report.deleted, true)
    t.equal(report.deletedAgain, false)
    t.equal(report.afterDelete, null)
    t.same(report.listAfterDelete, [{ registry: 'ghcr.io', username: 'bo' }])

    // Nothing the child could write (config dir, home, the keyring's own files) holds the secret in clear.
    const files = fs.readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((f) => fs.statSync(path.join(root, f)).isFile())
    t.ok(files.some((f) => f.startsWith(path.join('data', 'keyrings'))), 'the keyring wrote its files under the test dir')
    for (const file of files) t.notMatch(fs.readFileSync(path.join(root, file), 'latin1'), secret, `${file} holds no clear secret`)
    t.same(fs.readdirSync(path.join(root, 'config')), ['config.json'], 'no credentials file in the config dir')
  })

  t.test(`the credential store contract against gnome-keyring through ${backend}`, { skip: noKeyring }, async (t) => {
    const root = t.testdir({})
    const env = isolatedEnv(t, root, { CHILD_BACKEND: backend === 'keytar' ? 'keytar' : 'napi' })
    const result = inKeyring(contractChild, env)
    t.equal(result.status, 0, 'every contract case passed', { stdout: String(result.stdout), stderr: String(result.stderr) })
    const stdout = String(result.stdout)
    const plan = Number(/^1\.\.(\d+)$/m.exec(stdout)?.[1] ?? 0)
    t.ok(plan >= 5, `tap ran the ${plan} contract cases`)
    t.equal(stdout.match(/^ok \d+ - /gm)?.length, plan, 'each of them passed')
    t.notMatch(stdout, /^\s*not ok/m)
  })
}

t.test(
  'without D-Bus, keytar fails fast and the store falls back to the file',
  { skip: process.platform !== 'linux' && 'the Secret Service is Linux only' },
  async (t) => {
    const root = t.testdir({})
    const result = spawnSync(process.execPath, [...loaderArgs, child], {
      env: isolatedEnv(t, root, { CHILD_ROUND_TRIP: '1' }),
      encoding: 'utf8',
      timeout: 60_000,
    })
    const report = parseReport(t, result)
    if (!report) return
    t.equal(report.kind, 'file')
    const credentialsFile = path.join(root, 'config', 'credentials.json')
    t.match(report.fallbacks, [
      new RegExp(`^no OS keychain answered \\(.+\\); storing credentials in ${credentialsFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(mode 0600\\)$`),
    ])
    t.equal((report.fallbacks as string[]).length, 1, 'said once, though two credentials were stored')
  },
)
