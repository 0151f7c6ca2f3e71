import t from 'tap'
import { isLoopbackHost, isPrivateAddress } from '../src/net.js'

t.test('isLoopbackHost', async (t) => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', 'LOCALHOST', '::ffff:127.0.0.1']) t.ok(isLoopbackHost(h), h)
  for (const h of ['0.0.0.0', '::', '192.0.2.2', 'fd00::2', 'myhost', '128.0.0.1']) t.notOk(isLoopbackHost(h), h)
})

t.test('isPrivateAddress', async (t) => {
  for (const h of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '::1', '[::1]', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', 'localhost', '0.0.0.0']) {
    t.ok(isPrivateAddress(h), h)
  }
  for (const h of ['8.8.8.8', 'auth.example', '2001:db8::1', '172.32.0.1']) t.notOk(isPrivateAddress(h), h)
})
