// What a refused or missing image says, against the Hub shim: which registry
// refused what, with which login (source and user, never the secret), and the
// fix. And the two ways a login from a credential source is kept working: a
// login the token service refuses is asked for again once (a helper's
// short-lived token renewed meanwhile), and an identity token is exchanged by
// POST at the realm.

import { once } from 'node:events'
import fs from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import t from 'tap'
import { loginLookup } from '../../src/credentials/logins.js'
import type { CredentialSource, UpstreamCredential } from '../../src/upstream/auth.js'
import { Upstreams } from '../../src/upstream/client.js'
import { storedCredentials } from '../../src/upstream/login.js'
import { loginRefusedMessage, missingMessage, refusedMessage } from '../../src/upstream/refusal.js'
import { startUpstream } from '../fixtures/upstream.js'

const secret = 'refus4l-s3cret-never-print'

function source(get: (registry: string) => UpstreamCredential | undefined, extra: Partial<CredentialSource> = {}): CredentialSource {
  return Object.assign(async (registry: string) => get(registry), extra)
}

t.test('the words, one by one', async (t) => {
  t.equal(
    refusedMessage({ registry: 'docker.io', subject: 'private/secret:latest', status: 401, login: undefined }),
    'docker.io refused private/secret:latest (401): it is private or does not exist (Docker Hub answers both the same way); log in with `dproxy login docker.io`',
  )
  t.equal(
    refusedMessage({ registry: 'ghcr.io', subject: 'org/x:1', status: 401, login: undefined, problem: 'docker credsStore pass (/h/.docker/config.json): docker-credential-pass get failed (exit status 1)' }),
    'ghcr.io refused org/x:1 (401): it needs a login, or does not exist; log in with `dproxy login ghcr.io` (no login was found: docker credsStore pass (/h/.docker/config.json): docker-credential-pass get failed (exit status 1))',
  )
  t.equal(
    refusedMessage({ registry: 'ghcr.io', subject: 'org/x:1', status: 403, login: { username: 'ann', source: 'docker credsStore secretservice' } }),
    'ghcr.io refused org/x:1 (403) to ann (docker credsStore secretservice): this account may not pull it; log in again with `docker login ghcr.io`, or with `dproxy login ghcr.io` (dproxy asks its own logins first)',
  )
  t.equal(
    loginRefusedMessage('quay.io', 'org/x', 401, { username: 'bo', source: 'podman auth.json' }),
    'quay.io refused the login bo (podman auth.json) for org/x (token service answered 401): the password or token was not accepted (mistyped, revoked or expired); log in again with `podman login quay.io`, or with `dproxy login quay.io` (dproxy asks its own logins first)',
  )
  t.equal(missingMessage('docker.io', 'library/alpine:nope', 'MANIFEST_UNKNOWN'), 'docker.io has no library/alpine:nope (404 manifest unknown)')
})

t.test('through the client: a private repository without a login, a missing tag, a login that is refused', async (t) => {
  const up = await startUpstream({ hub: { users: { alice: secret }, privateRepositories: ['private/secret'] } })
  t.teardown(() => up.stop())
  await up.retag('private/secret', 'latest', up.images.alpine)

  const anon = new Upstreams({ overrides: { 'docker.io': up.hubUrl } })
  t.teardown(() => anon.close())
  await t.rejects(anon.get('docker.io').headManifest('private/secret', 'latest'), {
    code: 'UNAUTHORIZED',
    message:
      'docker.io refused private/secret:latest (401): it is private or does not exist (Docker Hub answers both the same way); log in with `dproxy login docker.io`',
  })
  await t.rejects(anon.get('docker.io').headManifest('library/alpine', 'nope'), {
    code: 'MANIFEST_UNKNOWN',
    message: 'docker.io has no library/alpine:nope (404 manifest unknown)',
  })
  await t.rejects(anon.get('docker.io').getManifest('library/alpine', 'nope'), {
    code: 'MANIFEST_UNKNOWN',
    message: 'docker.io has no library/alpine:nope (404 manifest unknown)',
  })

  const wrong = new Upstreams({
    overrides: { 'docker.io': up.hubUrl },
    credentials: source(() => ({ username: 'alice', secret: `wrong-${secret}`, source: 'docker config.json auths' })),
  })
  t.teardown(() => wrong.close())
  const err = await wrong
    .get('docker.io')
    .headManifest('private/secret', 'latest')
    .then(() => undefined, (e: unknown) => e as Error)
  t.match(err, {
    code: 'UNAUTHORIZED',
    message:
      'docker.io refused the login alice (docker config.json auths) for private/secret (token service answered 401): the password or token was not accepted (mistyped, revoked or expired); log in again with `docker login docker.io`, or with `dproxy login docker.io` (dproxy asks its own logins first)',
  })
  t.notMatch(String(err?.message), secret)

  const right = new Upstreams({ overrides: { 'docker.io': up.hubUrl }, credentials: source(() => ({ username: 'alice', secret, source: 'podman auth.json' })) })
  t.teardown(() => right.close())
  t.equal((await right.get('docker.io').headManifest('private/secret', 'latest')).digest, up.images.alpine.digest, 'the right login pulls it')
})

t.test('a login the token service refuses is asked for again once; the renewed one is used', async (t) => {
  const users: Record<string, string> = { alice: 'token-1' }
  const up = await startUpstream({ hub: { users, privateRepositories: ['private/secret'] } })
  t.teardown(() => up.stop())
  await up.retag('private/secret', 'latest', up.images.alpine)
  let current = 'token-1'
  let cached = current
  let refreshes = 0
  const creds = source(() => ({ username: 'alice', secret: cached, source: 'docker credHelpers rot' }), {
    refresh: () => {
      refreshes++
      cached = current
    },
  })
  const u = new Upstreams({ overrides: { 'docker.io': up.hubUrl }, credentials: creds })
  t.teardown(() => u.close())
  await u.get('docker.io').headManifest('private/secret', 'latest')
  t.equal(refreshes, 0)

  // The helper's token expires: the registry takes only the new one, which the source has not fetched yet.
  current = users.alice = 'token-2'
  await up.retag('private/other', 'latest', up.images.alpine)
  up.hub.resetCounts()
  t.equal((await u.get('docker.io').headManifest('private/other', 'latest')).digest, up.images.alpine.digest)
  t.equal(refreshes, 1, 'asked its source once')
  t.equal(up.hub.counts.tokenRequests, 2, 'refused, then granted with the renewed login')

  // A source that has nothing newer: the refusal stands, after one more question.
  users.alice = 'token-3'
  await t.rejects(u.get('docker.io').headManifest('library/alpine', 'latest'), { code: 'UNAUTHORIZED', message: /refused the login alice \(docker credHelpers rot\)/ })
  t.equal(refreshes, 2)
})

t.test('an identity token is exchanged by POST at the realm (grant_type=refresh_token), never sent as Basic', async (t) => {
  const up = await startUpstream({ hub: { identityTokens: { [secret]: 'carol' }, privateRepositories: ['private/secret'] } })
  t.teardown(() => up.stop())
  await up.retag('private/secret', 'latest', up.images.alpine)
  const u = new Upstreams({
    overrides: { 'docker.io': up.hubUrl },
    credentials: source(() => ({ username: '<token>', secret, identityToken: true, source: 'docker config.json auths' })),
  })
  t.teardown(() => u.close())
  t.equal((await u.get('docker.io').getManifest('private/secret', 'latest')).digest, up.images.alpine.digest)
  const tokenCalls = up.hub.counts.requests.filter((r) => r.path.startsWith('/token'))
  t.same(tokenCalls.map((r) => [r.method, r.path, r.status]), [['POST', '/token', 200]], 'one POST, the token in no URL')
  t.equal(u.rateLimits.get('docker.io')?.source, up.hub.sourceFor('carol'), "pulls count as the account's")
})

t.test('a helper that hangs: killed at its timeout, the pull goes on anonymously and the refusal says why there was no login', async (t) => {
  const root = t.testdir({ bin: {}, docker: { 'config.json': JSON.stringify({ credsStore: 'hang' }) } })
  fs.writeFileSync(path.join(root, 'bin', 'docker-credential-hang'), '#!/bin/sh\nexec /bin/sleep 30\n', { mode: 0o755 })
  const env = { PATH: path.join(root, 'bin'), HOME: root, DOCKER_CONFIG: path.join(root, 'docker') }
  const up = await startUpstream({ hub: { privateRepositories: ['private/secret'] } })
  t.teardown(() => up.stop())
  await up.retag('private/secret', 'latest', up.images.alpine)
  const warnings: string[] = []
  const lookup = loginLookup({ find: { env, timeoutMs: 300 }, onProblem: (_, p) => warnings.push(p) })
  const u = new Upstreams({ overrides: { 'docker.io': up.hubUrl }, credentials: storedCredentials(lookup) })
  t.teardown(() => u.close())
  const file = path.join(root, 'docker', 'config.json')
  const why = `docker credsStore hang (${file}): docker-credential-hang get did not answer within 0.3 s (killed)`
  await t.rejects(u.get('docker.io').headManifest('private/secret', 'latest'), {
    code: 'UNAUTHORIZED',
    message: `docker.io refused private/secret:latest (401): it is private or does not exist (Docker Hub answers both the same way); log in with \`dproxy login docker.io\` (no login was found: ${why})`,
  })
  t.same(warnings, [why], 'told once (the daemon logs it)')
  t.equal((await u.get('docker.io').headManifest('library/alpine', 'latest')).digest, up.images.alpine.digest, 'public images still pull')
})

t.test('a Basic registry (ECR-like) refusing an expired helper token: asked for again at once, the retry pulls', async (t) => {
  let accepted = 'token-1'
  const server = createServer((req, res) => {
    const ok = req.headers.authorization === `Basic ${Buffer.from(`AWS:${accepted}`).toString('base64')}`
    if (!ok) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="ecr"', 'content-type': 'application/json' })
      res.end('{"errors":[{"code":"UNAUTHORIZED","message":"expired"}]}')
      return
    }
    res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': `sha256:${'a'.repeat(64)}`, 'content-length': '2' })
    res.end()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  let cached = 'token-1'
  const forced: boolean[] = []
  const creds = source(() => ({ username: 'AWS', secret: cached, source: 'docker credHelpers ecr-login' }), {
    refresh: (_registry, loginRefused) => {
      forced.push(loginRefused === true)
      cached = accepted
    },
  })
  const u = new Upstreams({ overrides: { 'ecr.example.io': url }, credentials: creds })
  t.teardown(() => u.close())
  await u.get('ecr.example.io').headManifest('app', '1')
  accepted = 'token-2'
  t.match(await u.get('ecr.example.io').headManifest('app', '1'), { digest: `sha256:${'a'.repeat(64)}` })
  t.same(forced, [true], 'one refresh, as a refused login')
})
