// The address policy on its own: which URLs a request for a registry may go
// to before anything is resolved, what the connect-time lookup hands the
// socket, how an upstream is classified and which sockets reached dproxy
// itself. The resolver is injected, so no name here is ever looked up.

import t from 'tap'
import type { LookupAddress, LookupOptions } from 'node:dns'
import { AddressPolicy, type Endpoint, type Reach, type Resolver } from '../../src/upstream/policy.js'

function resolverOf(table: Record<string, LookupAddress[]>): Resolver {
  return async (hostname) => {
    const found = table[hostname]
    if (!found) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' })
    return found
  }
}

function lookup(policy: AddressPolicy, hostname: string, options: LookupOptions): Promise<string | LookupAddress[]> {
  return new Promise((resolve, reject) => {
    policy.lookup(hostname, options, (err, address) => (err ? reject(err) : resolve(address)))
  })
}

t.test('check: IP literals and localhost names of a registry nobody configured are refused', async (t) => {
  const policy = new AddressPolicy({ resolve: resolverOf({}) })
  const refused = [
    'https://127.0.0.1:8080/v2/', 'http://localhost:9000/v2/', 'https://10.0.0.5/v2/', 'http://169.254.169.254/latest',
    'http://[::1]:5000/_dproxy/status', 'http://[::ffff:127.0.0.1]/', 'http://0x7f.1/', 'http://2130706433/',
    'http://100.64.1.1/', 'http://224.0.0.1/', 'http://0.0.0.0:5000/', 'http://[fd00::1]/', 'http://api.localhost/',
    'http://localhost./',
  ]
  for (const url of refused) {
    t.throws(() => policy.check(new URL(url), 'evil.test', 'public'), { code: 'DENIED', status: 403 }, url)
  }
  for (const url of ['https://registry.example/v2/', 'https://93.184.215.14/v2/', 'http://[2606:4700::1111]/']) {
    t.doesNotThrow(() => policy.check(new URL(url), 'evil.test', 'public'), url)
  }
})

t.test('check: reach internal may use internal addresses, but every request only http(s)', async (t) => {
  const policy = new AddressPolicy({ resolve: resolverOf({}) })
  t.doesNotThrow(() => policy.check(new URL('http://127.0.0.1:15000/v2/'), 'docker.io', 'internal'))
  t.doesNotThrow(() => policy.check(new URL('http://10.0.0.5/token'), 'docker.io', 'internal'))
  for (const url of ['file:///etc/passwd', 'ftp://registry.example/x', 'data:text/plain,x', 'gopher://127.0.0.1:6379/']) {
    t.throws(() => policy.check(new URL(url), 'docker.io', 'internal'), { code: 'UPSTREAM_INVALID' }, url)
    t.throws(() => policy.check(new URL(url), 'evil.test', 'public'), { code: 'UPSTREAM_INVALID' }, url)
  }
})

t.test('lookup: internal addresses are dropped after resolving; a name with only those is refused', async (t) => {
  const policy = new AddressPolicy({
    resolve: resolverOf({
      'rebind.test': [{ address: '127.0.0.1', family: 4 }],
      'metadata.test': [{ address: '169.254.169.254', family: 4 }, { address: 'fe80::1', family: 6 }],
      'mixed.test': [
        { address: '10.0.0.5', family: 4 },
        { address: '93.184.215.14', family: 4 },
        { address: '::ffff:7f00:1', family: 6 },
        { address: '2606:2800:21f:cb07:6820:80da:af6b:8b2c', family: 6 },
      ],
    }),
  })
  await t.rejects(lookup(policy, 'rebind.test', { all: true }), { code: 'DENIED', message: /rebind\.test: it resolves only to .*internal/ })
  await t.rejects(lookup(policy, 'metadata.test', {}), { code: 'DENIED' })
  t.strictSame(await lookup(policy, 'mixed.test', { all: true }), [
    { address: '93.184.215.14', family: 4 },
    { address: '2606:2800:21f:cb07:6820:80da:af6b:8b2c', family: 6 },
  ])
  t.equal(await lookup(policy, 'mixed.test', {}), '93.184.215.14', 'one address when one is asked for')
  t.equal(await lookup(policy, 'mixed.test', { family: 6 }), '2606:2800:21f:cb07:6820:80da:af6b:8b2c')
  t.equal(await lookup(policy, 'mixed.test', { family: 'IPv6' }), '2606:2800:21f:cb07:6820:80da:af6b:8b2c')
  await t.rejects(lookup(policy, 'nowhere.test', {}), { code: 'ENOTFOUND' }, 'resolver errors pass through')
})

t.test('isInternal is the one seam: narrowing it by an address lets exactly that address through', async (t) => {
  const policy = new AddressPolicy({
    resolve: resolverOf({ 'fixture.test': [{ address: '127.0.0.1', family: 4 }] }),
    isInternal: (a) => a !== '127.0.0.1',
  })
  t.equal(await lookup(policy, 'fixture.test', {}), '127.0.0.1')
  t.throws(() => policy.check(new URL('http://127.0.0.2/'), 'fixture.test', 'public'), { code: 'DENIED' })
})

t.test('lookup judges every resolution: a name that turns internal the second time is refused then', async (t) => {
  const answers = ['93.184.215.14', '127.0.0.1']
  const policy = new AddressPolicy({ resolve: async () => [{ address: answers.shift()!, family: 4 }] })
  t.equal(await lookup(policy, 'flip.test', {}), '93.184.215.14')
  await t.rejects(lookup(policy, 'flip.test', {}), { code: 'DENIED' }, 'the rebound answer never reaches the socket')
})

t.test('check: redirect and realm targets by the reach of the upstream that named them, never dproxy itself', async (t) => {
  const own: Endpoint[] = [{ host: '127.0.0.1', port: 5000 }, { host: '::1', port: 5000 }, { host: '127.0.0.1', port: 9090 }]
  const policy = new AddressPolicy({ resolve: resolverOf({}), ownListeners: () => own })
  // [target, allowed for an upstream on a public address, allowed for one on an internal address]
  const table: Array<[string, boolean, boolean]> = [
    ['https://production.cloudflare.docker.com/registry-v2/x', true, true],
    ['https://93.184.215.14/blob', true, true],
    ['http://127.0.0.1:15001/cdn', false, true],
    ['http://127.0.0.2:8080/', false, true],
    ['http://10.1.2.3:9000/bucket', false, true],
    ['http://192.168.1.20/', false, true],
    ['http://169.254.169.254/latest/meta-data', false, true],
    ['http://[fd12::1]/', false, true],
    ['http://[fe80::1]/', false, true],
    ['http://localhost:15001/', false, true],
    ['http://127.0.0.1:5000/_dproxy/status', false, false],
    ['http://[::1]:5000/_dproxy/status', false, false],
    ['http://127.0.0.2:5000/_dproxy/status', false, false],
    ['http://[::ffff:127.0.0.1]:5000/v2/', false, false],
    ['http://localhost:5000/_dproxy/status', false, false],
    ['http://localhost:9090/metrics', false, false],
  ]
  for (const [target, fromPublic, fromInternal] of table) {
    for (const [reach, allowed] of [['public', fromPublic], ['internal', fromInternal]] as Array<[Reach, boolean]>) {
      const url = new URL(target)
      if (allowed) t.doesNotThrow(() => policy.check(url, 'docker.io', reach), `${reach}: ${target}`)
      else t.throws(() => policy.check(url, 'docker.io', reach), { code: 'DENIED', status: 403 }, `${reach}: ${target}`)
    }
  }
  t.throws(() => policy.check(new URL('http://127.0.0.1:5000/'), 'docker.io', 'internal'), { message: /dproxy's own listener/ })
})

t.test('classify: an upstream is internal when every address it is on is internal', async (t) => {
  const policy = new AddressPolicy({
    resolve: resolverOf({
      'mirror.lan': [{ address: '192.168.1.20', family: 4 }, { address: 'fd00::20', family: 6 }],
      'registry.example': [{ address: '93.184.215.14', family: 4 }],
      'split.example': [{ address: '10.0.0.5', family: 4 }, { address: '93.184.215.14', family: 4 }],
    }),
  })
  const table: Array<[string, Reach]> = [
    ['http://127.0.0.1:15000', 'internal'],
    ['http://[::1]:15000', 'internal'],
    ['http://10.0.0.5:5000', 'internal'],
    ['http://localhost:5000', 'internal'],
    ['https://mirror.lan', 'internal'],
    ['https://93.184.215.14', 'public'],
    ['https://registry.example', 'public'],
    ['https://split.example', 'public'],
    ['https://nowhere.example', 'public'],
  ]
  for (const [base, reach] of table) t.equal(await policy.classify(new URL(base)), reach, base)
})

t.test('isOwn: which connected sockets reached dproxy itself', async (t) => {
  let own: Endpoint[] = [{ host: '127.0.0.1', port: 5000 }]
  const policy = new AddressPolicy({ resolve: resolverOf({}), ownListeners: () => own })
  t.ok(policy.isOwn('127.0.0.1', 5000))
  t.ok(policy.isOwn('::ffff:127.0.0.1', 5000), 'IPv4-mapped')
  t.ok(policy.isOwn('127.0.0.9', 5000), 'a loopback listener: any loopback address')
  t.notOk(policy.isOwn('127.0.0.1', 5001), 'another port')
  t.notOk(policy.isOwn('10.0.0.5', 5000), 'another machine')
  own = [{ host: '0.0.0.0', port: 5000 }]
  t.ok(policy.isOwn('127.0.0.1', 5000), 'a wildcard listener: loopback')
  t.ok(policy.isOwn('10.0.0.5', 5000, '10.0.0.5'), 'a wildcard listener: this machine\'s own address (the socket came from it)')
  t.notOk(policy.isOwn('10.0.0.6', 5000, '10.0.0.5'), 'a wildcard listener: another machine')
  own = [{ host: '10.0.0.5', port: 5000 }]
  t.ok(policy.isOwn('10.0.0.5', 5000))
  t.notOk(policy.isOwn('127.0.0.1', 5000), 'a listener on one address only')
  t.throws(() => policy.guard({ remoteAddress: '10.0.0.5', remotePort: 5000, localAddress: '10.0.0.1' }, 'me.test'), {
    code: 'DENIED',
    message: /me\.test: it is dproxy's own listener/,
  })
  t.doesNotThrow(() => policy.guard({ remoteAddress: '10.0.0.5', remotePort: 443, localAddress: '10.0.0.1' }, 'cdn.test'))
})
