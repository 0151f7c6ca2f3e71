import t from 'tap'
import { checkCredential, decodeCredential, encodeCredential, parseSecretJson } from '../../src/credentials/credential.js'

const secret = 'p4ss-w0rd-not-for-logs'

t.test('encode and decode round trip', async (t) => {
  const cred = { username: 'ann', secret }
  t.same(decodeCredential(encodeCredential(cred), 'entry'), cred)
  t.same(JSON.parse(encodeCredential({ ...cred, extra: 'dropped' } as typeof cred)), cred, 'only the two fields are stored')
})

t.test('decoding failures never quote the text', async (t) => {
  for (const text of [`{"username":"ann","secret":"${secret}"`, JSON.stringify({ secret }), JSON.stringify({ username: 'ann', secret: 5 })]) {
    const err = t.throws(() => decodeCredential(text, 'keychain entry dproxy/ghcr.io')) as Error
    t.match(err, { code: 'CONFIG_INVALID', message: /^keychain entry dproxy\/ghcr.io is not a dproxy credential/ })
    t.notMatch(err.message, secret)
    t.equal(err.cause, undefined)
  }
  const err = t.throws(() => parseSecretJson(`{"secret": "${secret}" oops`, 'credentials file /x')) as Error
  t.equal(err.message, 'credentials file /x is not valid JSON; fix or remove it')
  t.equal(err.cause, undefined)
})

t.test('unusable credentials are refused without naming the secret', async (t) => {
  t.doesNotThrow(() => checkCredential('ghcr.io', { username: 'ann', secret }))
  const bad = [
    [{ username: '', secret }, 'expected a user name for ghcr.io (non-empty, one line)'],
    [{ username: 'a\nb', secret }, 'expected a user name for ghcr.io (non-empty, one line)'],
    [{ username: 'ann', secret: '' }, 'expected a password or token for ghcr.io (non-empty, one line)'],
    [{ username: 'ann', secret: `${secret}\r\n` }, 'expected a password or token for ghcr.io (non-empty, one line)'],
  ] as const
  for (const [cred, message] of bad) t.throws(() => checkCredential('ghcr.io', cred), { code: 'USAGE', message })
})
