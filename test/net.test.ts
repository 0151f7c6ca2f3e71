import t from 'tap'
import { exposedHosts, isInternalAddress, isLoopbackHost, isPrivateAddress } from '../src/net.js'

t.test('isLoopbackHost', async (t) => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', 'LOCALHOST', '::ffff:127.0.0.1']) t.ok(isLoopbackHost(h), h)
  for (const h of ['0.0.0.0', '::', '192.0.2.2', 'fd00::2', 'myhost', '128.0.0.1']) t.notOk(isLoopbackHost(h), h)
})

t.test('isLoopbackHost: every spelling the resolver takes for a loopback address', async (t) => {
  const loopback = ['127.1', '127.0.1', '0x7f.1', '0177.0.0.1', '2130706433', '127.0.0.1.', '0:0:0:0:0:0:0:1', '[0:0:0:0:0:0:0:1]',
    '0000::0001', '::ffff:7f00:1', '0:0:0:0:0:ffff:127.0.0.1', '[::FFFF:127.0.0.2]']
  for (const h of loopback) t.ok(isLoopbackHost(h), h)
  const other = ['128.1', '0', '0.0.0.0', '0:0:0:0:0:0:0:0', '::127.0.0.1', '::2', '::ffff:128.0.0.1', '2002:7f00:1::',
    '127.0.0.1.5', '127.1.example', '127.0.0.1@evil.example', '127.0.0.1/x', 'localhost.example', '']
  for (const h of other) t.notOk(isLoopbackHost(h), h)
  t.strictSame(exposedHosts(['127.1', '0:0:0:0:0:0:0:1']), [], 'neither makes the daemon require client auth')
})

t.test('isPrivateAddress', async (t) => {
  for (const h of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '::1', '[::1]', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', 'localhost', '0.0.0.0']) {
    t.ok(isPrivateAddress(h), h)
  }
  for (const h of ['8.8.8.8', 'auth.example', '2001:db8::1', '172.32.0.1']) t.notOk(isPrivateAddress(h), h)
})

t.test('isInternalAddress: every address class that is not public unicast', async (t) => {
  const internal = [
    ['loopback', '127.0.0.1', '127.255.0.9', '::1'],
    ['RFC 1918', '10.0.0.5', '172.16.0.1', '172.31.255.255', '192.168.0.1'],
    ['unique local', 'fc00::1', 'fd12:3456::1'],
    ['link-local', '169.254.169.254', 'fe80::1', 'fe80::1%eth0'],
    ['CGNAT', '100.64.0.1', '100.127.255.254'],
    ['multicast', '224.0.0.1', '239.255.255.250', 'ff02::1', 'ff0e::1'],
    ['unspecified and this-network', '0.0.0.0', '0.1.2.3', '::'],
    ['reserved and broadcast', '240.0.0.1', '255.255.255.255'],
    ['IPv4-mapped, dotted and hex', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.5', '::FFFF:A9FE:A9FE'],
    ['IPv4-compatible', '::127.0.0.1', '::7f00:1'],
    ['NAT64 of an internal address', '64:ff9b::127.0.0.1', '64:ff9b::a00:5'],
    ['6to4 of an internal address', '2002:7f00:1::', '2002:a9fe:a9fe::1'],
  ]
  for (const [what, ...addresses] of internal) for (const a of addresses) t.ok(isInternalAddress(a!), `${what}: ${a}`)
  const external = ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '192.0.2.1', '2001:4860:4860::8888',
    '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::', 'registry.example', 'localhost']
  for (const a of external) t.notOk(isInternalAddress(a), a)
})

t.test('isPrivateAddress: URL host names, brackets and localhost names', async (t) => {
  for (const h of ['[::ffff:7f00:1]', '[fd00::1]', 'localhost.', 'api.localhost', 'LOCALHOST']) t.ok(isPrivateAddress(h), h)
  for (const h of ['[2001:4860::1]', 'localhost.example']) t.notOk(isPrivateAddress(h), h)
})

t.test('exposedHosts: the listen addresses other machines can reach', async (t) => {
  t.strictSame(exposedHosts(['127.0.0.1', '::1']), [])
  t.strictSame(exposedHosts(['localhost', '127.0.0.2']), [])
  t.strictSame(exposedHosts(['127.0.0.1', '0.0.0.0', '::', '192.168.1.5']), ['0.0.0.0', '::', '192.168.1.5'])
})
