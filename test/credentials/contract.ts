// The behaviour every CredentialStore must have, run against each
// implementation (file store, keychain store over a fake keytar). The real OS
// keychain runs the same steps in a child process (keychain-child.ts).

import type { Test } from 'tap'
import { CLIENT_SECRET_KEY, type CredentialStore } from '../../src/credentials/index.js'

export const secret = 's3cr3t-do-not-print'

export function credentialStoreContract(t: Test, make: (t: Test) => Promise<CredentialStore>): void {
  t.test('an empty store', async (t) => {
    const store = await make(t)
    t.equal(await store.get('ghcr.io'), undefined)
    t.same(await store.list(), [])
    t.equal(await store.delete('ghcr.io'), false)
  })

  t.test('round trip, one credential per registry, aliases folded', async (t) => {
    const store = await make(t)
    await store.set('ghcr.io', { username: 'ann', secret })
    await store.set('index.docker.io', { username: 'bo', secret: 'first' })
    await store.set('registry-1.docker.io', { username: 'bo', secret: 'second' })
    t.same(await store.get('ghcr.io'), { username: 'ann', secret })
    t.same(await store.get('docker.io'), { username: 'bo', secret: 'second' }, 'the later set replaced the earlier')
    t.same(await store.get('INDEX.DOCKER.IO'), { username: 'bo', secret: 'second' })
    t.same(await store.list(), [
      { registry: 'docker.io', username: 'bo' },
      { registry: 'ghcr.io', username: 'ann' },
    ])
    t.notMatch(JSON.stringify(await store.list()), secret, 'list never carries secrets')
  })

  t.test('delete', async (t) => {
    const store = await make(t)
    await store.set('quay.io', { username: 'ann', secret })
    await store.set('localhost:5001', { username: 'cy', secret })
    t.equal(await store.delete('quay.io'), true)
    t.equal(await store.delete('quay.io'), false)
    t.equal(await store.get('quay.io'), undefined)
    t.same(await store.list(), [{ registry: 'localhost:5001', username: 'cy' }])
  })

  t.test('the client password lives under the dproxy-client pseudo-registry', async (t) => {
    const store = await make(t)
    await store.set(CLIENT_SECRET_KEY, { username: 'dproxy', secret })
    t.same(await store.get(CLIENT_SECRET_KEY), { username: 'dproxy', secret })
  })

  t.test('bad input is refused without echoing the secret', async (t) => {
    const store = await make(t)
    const badHost = await store.set('not a host', { username: 'ann', secret }).then(
      () => undefined,
      (err: unknown) => err,
    )
    t.match(badHost, { name: 'DproxyError', code: 'CONFIG_INVALID' })
    t.notMatch(String((badHost as Error).message), secret)
    await t.rejects(store.set('ghcr.io', { username: '', secret }), { code: 'USAGE' })
    await t.rejects(store.set('ghcr.io', { username: 'ann', secret: '' }), { code: 'USAGE' })
    const badSecret = await store.set('ghcr.io', { username: 'ann', secret: `${secret}\n` }).then(
      () => undefined,
      (err: unknown) => err,
    )
    t.match(badSecret, { code: 'USAGE' })
    t.notMatch(String((badSecret as Error).message), secret)
    t.same(await store.list(), [], 'nothing stored')
  })
}
