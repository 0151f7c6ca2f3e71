import t from 'tap'
import { checkRealm } from '../../src/upstream/auth.js'

t.test('checkRealm: which realms are called, and which get credentials', async (t) => {
  const hub = new URL('https://registry-1.example.io')
  t.strictSame(checkRealm('https://auth.example.io/token', hub).sendCredentials, true, 'same site')
  t.strictSame(checkRealm('https://elsewhere.test/token', hub).sendCredentials, false, 'other site')
  t.strictSame(checkRealm('http://auth.example.io/token', hub).sendCredentials, false, 'no downgrade to http')
  t.strictSame(checkRealm('http://auth.example.io/token', hub).downgrade, true, 'a downgrade is flagged (refused with credentials)')
  t.strictSame(checkRealm('http://elsewhere.test/token', hub).downgrade, false, 'another site gets no credentials anyway')
  t.strictSame(checkRealm('https://auth.example.io/token', hub).downgrade, false)
  const local = new URL('http://127.0.0.1:15000')
  t.strictSame(checkRealm('http://127.0.0.1:15000/token', local).sendCredentials, true, 'the configured upstream itself')
  t.strictSame(checkRealm('http://127.0.0.2:15000/token', local).sendCredentials, false, 'another address, another site')
  // Internal addresses are the address policy's (policy.ts), applied when the realm is called.
  t.throws(() => checkRealm('file:///etc/passwd', hub), { code: 'UPSTREAM_INVALID' })
  t.throws(() => checkRealm('not a url', hub), { code: 'UPSTREAM_INVALID' })
})
