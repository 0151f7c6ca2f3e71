// The machine's logins as docker and podman keep them: config.json (credHelpers,
// credsStore, auths), podman's auth.json in its lookup order, and the
// credential-helper protocol with helpers that fail in every way a real one
// can (here small scripts on PATH in the test dir; the real
// docker-credential-secretservice is in test/e2e/docker-credentials.test.ts).
// No secret may appear in any error or problem text.

import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import {
  checkHelpers,
  DOCKER_HUB_LEGACY_KEY,
  findMachineLogin,
  listMachineLogins,
  loginFiles,
  registryOfKey,
} from '../../src/credentials/docker-config.js'
import { helperGet, helperList } from '../../src/credentials/helper.js'
import { loginLookup } from '../../src/credentials/logins.js'

const secret = 'm4chine-s3cret-never-print'
const b64 = (s: string) => Buffer.from(s).toString('base64')

/** A helper script answering `get` for the server URLs in `answers` (url -> [user, secret]), `list` with their users. */
function helperScript(answers: Record<string, [string, string]>, opts: { count?: string } = {}): string {
  const cases = Object.entries(answers)
    .map(([url, [user, pw]]) => `  '${url}') printf '%s' '${JSON.stringify({ ServerURL: url, Username: user, Secret: pw })}' ;;`)
    .join('\n')
  const list = JSON.stringify(Object.fromEntries(Object.entries(answers).map(([url, [user]]) => [url, user])))
  return [
    '#!/bin/sh',
    opts.count ? `echo x >> '${opts.count}'` : '',
    'if [ "$1" = list ]; then printf \'%s\' \'' + list + "'; exit 0; fi",
    'read -r url',
    'case "$url" in',
    cases,
    "  *) echo 'credentials not found in native keychain'; exit 1 ;;",
    'esac',
    '',
  ].join('\n')
}

interface World {
  root: string
  env: NodeJS.ProcessEnv
  bin: string
  dockerConfig: string
  helper(name: string, body: string): void
  docker(config: unknown): void
  file(rel: string, config: unknown): string
}

function world(t: Test): World {
  const root = t.testdir({ bin: {}, home: {}, docker: {}, run: {} })
  const bin = path.join(root, 'bin')
  const env: NodeJS.ProcessEnv = {
    PATH: `${bin}:/usr/bin:/bin`,
    HOME: path.join(root, 'home'),
    DOCKER_CONFIG: path.join(root, 'docker'),
    XDG_RUNTIME_DIR: path.join(root, 'run'),
  }
  return {
    root,
    env,
    bin,
    dockerConfig: path.join(root, 'docker', 'config.json'),
    helper(name, body) {
      const file = path.join(bin, `docker-credential-${name}`)
      fs.writeFileSync(file, body, { mode: 0o755 })
    },
    docker(config) {
      fs.writeFileSync(path.join(root, 'docker', 'config.json'), JSON.stringify(config))
    },
    file(rel, config) {
      const file = path.join(root, rel)
      fs.mkdirSync(path.dirname(file), { recursive: true })
      fs.writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config))
      return file
    },
  }
}

t.test('registryOfKey: hosts in any spelling; the legacy Hub key is docker.io; namespaces are not registries', async (t) => {
  t.equal(registryOfKey(DOCKER_HUB_LEGACY_KEY), 'docker.io')
  t.equal(registryOfKey('https://index.docker.io/v1'), 'docker.io')
  t.equal(registryOfKey('index.docker.io'), 'docker.io')
  t.equal(registryOfKey('registry-1.docker.io'), 'docker.io')
  t.equal(registryOfKey('https://GHCR.io/'), 'ghcr.io')
  t.equal(registryOfKey('localhost:5000'), 'localhost:5000')
  t.equal(registryOfKey('quay.io/org'), undefined, 'a podman namespace entry')
  t.equal(registryOfKey('ghcr.io/v1/'), undefined, 'only Hub has the legacy /v1/')
  t.equal(registryOfKey('not a host'), undefined)
})

t.test('loginFiles: DOCKER_CONFIG or ~/.docker; podman: REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR, ~/.config', async (t) => {
  t.same(loginFiles({ HOME: '/h' }), { docker: '/h/.docker/config.json', podman: ['/h/.config/containers/auth.json'] })
  t.same(loginFiles({ HOME: '/h', DOCKER_CONFIG: '/d', REGISTRY_AUTH_FILE: '/a.json', XDG_RUNTIME_DIR: '/run/user/1', XDG_CONFIG_HOME: '/x' }), {
    docker: '/d/config.json',
    podman: ['/a.json', '/run/user/1/containers/auth.json', '/x/containers/auth.json'],
  })
})

t.test('auths: base64 user:password, plain fields, identitytoken; the legacy Hub key counts for docker.io', async (t) => {
  const w = world(t)
  w.docker({
    auths: {
      [DOCKER_HUB_LEGACY_KEY]: { auth: b64(`hubber:${secret}`) },
      'https://ghcr.io': { username: 'gh', password: secret },
      'acr.example.io': { auth: b64('00000000-0000-0000-0000-000000000000:'), identitytoken: secret },
      'empty.example.io': {},
    },
  })
  t.match(await findMachineLogin('docker.io', { env: w.env }), {
    username: 'hubber',
    secret,
    identityToken: false,
    kind: 'docker-auths',
    source: 'docker config.json auths',
    file: w.dockerConfig,
  })
  t.match(await findMachineLogin('ghcr.io', { env: w.env }), { username: 'gh', secret, source: 'docker config.json auths' })
  t.match(await findMachineLogin('acr.example.io', { env: w.env }), { secret, identityToken: true })
  t.equal(await findMachineLogin('empty.example.io', { env: w.env }), undefined, 'an entry without a secret is no login')
  t.equal(await findMachineLogin('quay.io', { env: w.env }), undefined)
})

t.test('credHelpers for one host beside a credsStore for the rest; then auths', async (t) => {
  const w = world(t)
  w.helper('store', helperScript({ [DOCKER_HUB_LEGACY_KEY]: ['hub-from-store', secret], 'quay.io': ['quay-from-store', secret] }))
  w.helper('gh', helperScript({ 'ghcr.io': ['gh-from-helper', secret] }))
  w.docker({ credsStore: 'store', credHelpers: { 'ghcr.io': 'gh' }, auths: { 'ghcr.io': {}, 'quay.io': {}, 'local.example.io': { auth: b64(`plain:${secret}`) } } })
  t.match(await findMachineLogin('ghcr.io', { env: w.env }), { username: 'gh-from-helper', kind: 'docker-helper', source: 'docker credHelpers gh' })
  t.match(await findMachineLogin('docker.io', { env: w.env }), { username: 'hub-from-store', kind: 'docker-store', source: 'docker credsStore store' })
  t.match(await findMachineLogin('quay.io', { env: w.env }), { username: 'quay-from-store', source: 'docker credsStore store' })
  t.match(await findMachineLogin('local.example.io', { env: w.env }), { username: 'plain', source: 'docker config.json auths' }, 'the store has none: auths')

  const problems: string[] = []
  const listed = await listMachineLogins({ env: w.env, onProblem: (p) => problems.push(p) })
  t.same(listed.map(({ registry, username, source }) => ({ registry, username, source })), [
    { registry: 'docker.io', username: 'hub-from-store', source: 'docker credsStore store' },
    { registry: 'ghcr.io', username: 'gh-from-helper', source: 'docker credHelpers gh' },
    { registry: 'local.example.io', username: 'plain', source: 'docker config.json auths' },
    { registry: 'quay.io', username: 'quay-from-store', source: 'docker credsStore store' },
  ])
  t.same(problems, [])
  t.notMatch(JSON.stringify(listed), secret, 'the list holds no secret')
})

t.test("podman's auth.json: REGISTRY_AUTH_FILE, then XDG_RUNTIME_DIR, then ~/.config; docker's config first", async (t) => {
  const w = world(t)
  const auth = (user: string) => ({ auths: { 'quay.io': { auth: b64(`${user}:${secret}`) } } })
  w.file('run/containers/auth.json', auth('from-runtime'))
  w.file('home/.config/containers/auth.json', { auths: { 'quay.io': { auth: b64(`from-home:${secret}`) }, 'ghcr.io': { auth: b64(`gh-home:${secret}`) } } })
  t.match(await findMachineLogin('quay.io', { env: w.env }), { username: 'from-runtime', kind: 'podman-auths', source: 'podman auth.json' })
  t.match(await findMachineLogin('ghcr.io', { env: w.env }), { username: 'gh-home' }, 'the next file when the first has no entry')
  const authFile = w.file('elsewhere.json', auth('from-env'))
  t.match(await findMachineLogin('quay.io', { env: { ...w.env, REGISTRY_AUTH_FILE: authFile } }), { username: 'from-env', file: authFile })
  w.file('home/.config/containers/auth.json', { auths: { 'quay.io/org': { auth: b64(`namespaced:${secret}`) } } })
  fs.rmSync(path.join(w.root, 'run', 'containers', 'auth.json'))
  t.equal(await findMachineLogin('quay.io', { env: w.env }), undefined, 'a namespace entry is not a registry login')
  w.docker({ auths: { 'quay.io': { auth: b64(`docker-user:${secret}`) } } })
  w.file('run/containers/auth.json', auth('from-runtime'))
  t.match(await findMachineLogin('quay.io', { env: w.env }), { username: 'docker-user' }, "docker's config comes first")
})

t.test('helpers that fail: missing, hanging (killed at the timeout), non-zero exit, garbage; never their output', async (t) => {
  const w = world(t)
  w.helper('hang', '#!/bin/sh\nsleep 30\n')
  w.helper('fail', `#!/bin/sh\necho '${secret}'\necho '${secret}' >&2\nexit 3\n`)
  w.helper('garbage', `#!/bin/sh\necho 'not json ${secret}'\n`)
  w.helper('nofields', `#!/bin/sh\necho '{"Secret":"${secret}"}'\n`)
  const opts = { env: w.env, timeoutMs: 300 }
  const cases: Array<[string, RegExp]> = [
    ['missing', /^docker-credential-missing is not installed \(not on PATH\)$/],
    ['hang', /^docker-credential-hang get did not answer within 0\.3 s \(killed\)$/],
    ['fail', /^docker-credential-fail get failed \(exit status 3\)$/],
    ['garbage', /^docker-credential-garbage get printed something that is not JSON$/],
    ['nofields', /^docker-credential-nofields get printed JSON without Username and Secret$/],
    ['../../bin/sh', /is not a credential helper name/],
  ]
  for (const [name, message] of cases) {
    const err = await helperGet(name, 'ghcr.io', opts).then(
      () => undefined,
      (e: unknown) => e as Error,
    )
    t.match(err?.message, message, name)
    t.notMatch(String(err?.message), secret, `${name}: the output is not in the message`)
  }

  // In a lookup, a failing helper is passed over (told as a problem) and the next source answers.
  w.docker({ credsStore: 'hang', credHelpers: { 'ghcr.io': 'fail' }, auths: { 'ghcr.io': { auth: b64(`fallback:${secret}`) } } })
  const problems: string[] = []
  const found = await findMachineLogin('ghcr.io', { ...opts, onProblem: (p) => problems.push(p) })
  t.match(found, { username: 'fallback', source: 'docker config.json auths' })
  t.same(problems, [
    `docker credHelpers fail (${w.dockerConfig}): docker-credential-fail get failed (exit status 3)`,
    `docker credsStore hang (${w.dockerConfig}): docker-credential-hang get did not answer within 0.3 s (killed)`,
  ])

  const checked = await checkHelpers(opts)
  t.equal(checked.helpers, 2)
  t.match(checked.problems, [
    { helper: 'hang', source: 'docker credsStore hang', problem: /did not answer/, fix: /docker-credential-hang list/ },
    { helper: 'fail', source: 'docker credHelpers fail (for ghcr.io)', problem: /exit status 3/ },
  ])
  w.docker({ credsStore: 'nothere' })
  t.match((await checkHelpers(opts)).problems, [{ problem: 'docker-credential-nothere is not installed (not on PATH)', fix: /^install docker-credential-nothere/ }])
  t.notMatch(JSON.stringify(checked), secret)
})

t.test('a broken config file is named, never quoted, and podman is still asked', async (t) => {
  const w = world(t)
  w.file('docker/config.json', `{"auths": {"ghcr.io": {"auth": "${secret}"`)
  w.file('home/.config/containers/auth.json', { auths: { 'ghcr.io': { auth: b64(`podman-user:${secret}`) } } })
  const problems: string[] = []
  t.match(await findMachineLogin('ghcr.io', { env: w.env, onProblem: (p) => problems.push(p) }), { username: 'podman-user' })
  t.same(problems, [`${w.dockerConfig} is not valid JSON; fix or remove it`])
})

t.test('helperList: url -> user', async (t) => {
  const w = world(t)
  w.helper('s', helperScript({ 'ghcr.io': ['u', secret] }))
  t.same(await helperList('s', { env: w.env }), { 'ghcr.io': 'u' })
})

t.test("loginLookup: dproxy's own login first; answers cached until refresh(); off with machine: false", async (t) => {
  const w = world(t)
  const count = path.join(w.root, 'count')
  const secretFile = path.join(w.root, 'current')
  fs.writeFileSync(secretFile, 'first')
  w.helper('rot', `#!/bin/sh\necho x >> '${count}'\nread -r url\nprintf '{"ServerURL":"%s","Username":"rot","Secret":"%s"}' "$url" "$(cat '${secretFile}')"\n`)
  const noneCount = path.join(w.root, 'none-count')
  w.helper('none', `#!/bin/sh\necho x >> '${noneCount}'\necho 'credentials not found in native keychain'\nexit 1\n`)
  w.docker({ credHelpers: { 'ghcr.io': 'rot' }, credsStore: 'none' })
  let now = 0
  const own = new Map([['quay.io', { username: 'mine', secret }]])
  const lookup = loginLookup({
    store: { get: async (r) => own.get(r), kind: async () => 'keychain' },
    find: { env: w.env },
    clock: { now: () => now },
    cacheMs: 60_000,
  })
  t.match(await lookup('quay.io'), { username: 'mine', source: 'dproxy keychain' })
  t.match(await lookup('ghcr.io'), { username: 'rot', secret: 'first', source: 'docker credHelpers rot' })
  fs.writeFileSync(secretFile, 'second')
  t.match(await lookup('ghcr.io'), { secret: 'first' }, 'cached')
  const runs = () => fs.readFileSync(count, 'utf8').split('\n').filter(Boolean).length
  t.equal(runs(), 1, 'the helper ran once')
  lookup.refresh('ghcr.io')
  t.match(await lookup('ghcr.io'), { secret: 'first' }, 'a refusal right after the answer does not run the helper again')
  now += 1000
  lookup.refresh('ghcr.io')
  t.match(await lookup('ghcr.io'), { secret: 'second' }, 'a second later, refresh asks the helper again')
  fs.writeFileSync(secretFile, 'third')
  lookup.refresh('ghcr.io', true)
  t.match(await lookup('ghcr.io'), { secret: 'third' }, 'a login the token service refused is asked again at once')
  now += 60_000
  await lookup('ghcr.io')
  t.equal(runs(), 4, 'and so does the end of the cache time')
  const noneRuns = () => fs.readFileSync(noneCount, 'utf8').split('\n').filter(Boolean).length
  t.equal(await lookup('nothing.example.io'), undefined)
  t.equal(noneRuns(), 1)
  now += 29_999
  lookup.refresh('nothing.example.io')
  await lookup('nothing.example.io')
  t.equal(noneRuns(), 1, '"no login" is not asked again by a refusal within 30 s (a client pulling what does not exist)')
  now += 1
  lookup.refresh('nothing.example.io')
  await lookup('nothing.example.io')
  t.equal(noneRuns(), 2, 'after that, it is')

  const off = loginLookup({ store: { get: async (r) => own.get(r), kind: async () => 'file' }, machine: false, find: { env: w.env } })
  t.match(await off('quay.io'), { source: 'dproxy credentials file' })
  t.equal(await off('ghcr.io'), undefined, "machine: false reads no docker file and runs no helper")
  t.equal(runs(), 4)

  const broken = loginLookup({
    store: {
      get: async () => {
        throw new Error('keychain: could not read')
      },
      kind: async () => 'keychain',
    },
    find: { env: w.env },
  })
  t.match(await broken('ghcr.io'), { username: 'rot' }, "a failing dproxy store does not hide the machine's logins")
})
