import t from 'tap'
import { checkRealm } from '../../src/upstream/auth.js'

t.test('checkRealm: which realms are called, and which get credentials', async (t) => {
  const hub = new URL('https://registry-1.example.io')
  t.strictSame(checkRealm('https://auth.example.io/token', hub).sendCredentials, true, 'same site')
  t.strictSame(checkRealm('https://elsewhere.test/token', hub).sendCredentials, false, 'other site')
  t.strictSame(checkRealm('http://auth.example.io/token', hub).sendCredentials, false, 'no downgrade to http')
  const local = new URL('http://127.0.0.1:15000')
  t.strictSame(checkRealm('http://127.0.0.1:15000/token', local).sendCredentials, true, 'the configured upstream itself')
  t.throws(() => checkRealm('http://169.254.169.254/latest/meta-data', hub), { code: 'UPSTREAM_INVALID' })
  t.throws(() => checkRealm('http://10.0.0.5/token', local), { code: 'UPSTREAM_INVALID' })
  t.throws(() => checkRealm('file:///etc/passwd', hub), { code: 'UPSTREAM_INVALID' })
  t.throws(() => checkRealm('not a url', hub), { code: 'UPSTREAM_INVALID' })
})
