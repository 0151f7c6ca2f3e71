// The address policy on its own: which URLs a request for a registry may go
// to before anything is resolved, and what the connect-time lookup hands the
// socket. The resolver is injected, so no name here is ever looked up.

import t from 'tap'
import type { LookupAddress, LookupOptions } from 'node:dns'
import { AddressPolicy, type Resolver } from '../../src/upstream/policy.js'

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
    t.throws(() => policy.check(new URL(url), 'evil.test', false), { code: 'DENIED', status: 403 }, url)
  }
  for (const url of ['https://registry.example/v2/', 'https://93.184.215.14/v2/', 'http://[2606:4700::1111]/']) {
    t.doesNotThrow(() => policy.check(new URL(url), 'evil.test', false), url)
  }
})

t.test('check: a trusted registry may use internal addresses, but every registry only http(s)', async (t) => {
  const policy = new AddressPolicy({ resolve: resolverOf({}) })
  t.doesNotThrow(() => policy.check(new URL('http://127.0.0.1:15000/v2/'), 'docker.io', true))
  t.doesNotThrow(() => policy.check(new URL('http://10.0.0.5/token'), 'docker.io', true))
  for (const url of ['file:///etc/passwd', 'ftp://registry.example/x', 'data:text/plain,x', 'gopher://127.0.0.1:6379/']) {
    t.throws(() => policy.check(new URL(url), 'docker.io', true), { code: 'UPSTREAM_INVALID' }, url)
    t.throws(() => policy.check(new URL(url), 'evil.test', false), { code: 'UPSTREAM_INVALID' }, url)
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
  t.throws(() => policy.check(new URL('http://127.0.0.2/'), 'fixture.test', false), { code: 'DENIED' })
})

t.test('lookup judges every resolution: a name that turns internal the second time is refused then', async (t) => {
  const answers = ['93.184.215.14', '127.0.0.1']
  const policy = new AddressPolicy({ resolve: async () => [{ address: answers.shift()!, family: 4 }] })
  t.equal(await lookup(policy, 'flip.test', {}), '93.184.215.14')
  await t.rejects(lookup(policy, 'flip.test', {}), { code: 'DENIED' }, 'the rebound answer never reaches the socket')
})
