// Proves the network-namespace fixture before the team tests rely on it: a
// client inside reaches a server on the root namespace's veth address and
// not the root namespace's loopback, teardown leaves no namespace or link
// behind, and the leftovers of a killed run are swept.

import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { makeNetns, netnsAvailable, sweepLeftovers } from '../fixtures/netns.js'

const avail = netnsAvailable()
const skip = avail.ok ? false : `no network namespaces: ${avail.reason}`
const ip = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8' })

t.test('a client in the namespace reaches the veth address only, and sees its own /etc entries', { skip }, async (t) => {
  const etcDocker = join(t.testdir({ docker: { 'certs.d': {} } }), 'docker')
  writeFileSync(join(etcDocker, 'certs.d', 'mark'), 'this namespace\n')
  const ns = makeNetns(t, { etc: { docker: etcDocker } })
  t.match(ns.hostAddress, /^10\.213\.\d+\.1$/)
  t.equal(ns.nsAddress, ns.hostAddress.replace(/\.1$/, '.2'))
  const server = createServer((_req, res) => res.end('hello from the root namespace\n'))
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as AddressInfo).port
  const across = await ns.run('curl', ['-sS', '--max-time', '10', `http://${ns.hostAddress}:${port}/`])
  t.equal(across.code, 0, across.stderr)
  t.equal(across.stdout, 'hello from the root namespace\n')
  const loop = await ns.run('curl', ['-sS', '--max-time', '5', `http://127.0.0.1:${port}/`])
  t.not(loop.code, 0, "the root namespace's loopback is not reachable from inside")
  const addrs = await ns.run('ip', ['-br', 'addr'])
  t.match(addrs.stdout, ns.nsAddress)
  t.match(addrs.stdout, /^lo\s+UNKNOWN/m, 'lo is up inside')
  const cat = await ns.run('cat', ['/etc/docker/certs.d/mark'])
  t.equal(cat.stdout, 'this namespace\n', "/etc/docker inside is the test's dir")
  t.notOk(existsSync('/etc/docker/certs.d/mark'), "the host's /etc/docker is untouched")

  ns.destroy()
  t.notMatch(ip('netns', 'list').stdout, ns.name, 'the namespace is gone')
  t.notMatch(ip('-br', 'link').stdout, ns.links[0], 'the veth pair is gone')
  t.notOk(existsSync(`/etc/netns/${ns.name}`), 'its /etc/netns entry is gone')
  t.ok(existsSync(join(etcDocker, 'certs.d', 'mark')), 'what it pointed at is not')
  ns.destroy()
})

t.test('leftovers of a killed run are swept, live ones are not', { skip }, async (t) => {
  const live = makeNetns(t)
  // A pid above pid_max is never alive.
  const dead = 'dpt-4999999-0'
  t.ok(ip('netns', 'add', dead).status === 0)
  t.teardown(() => ip('netns', 'del', dead))
  const x = 255 // never chosen by makeNetns (1..254)
  t.ok(ip('link', 'add', `dpt${x}h`, 'type', 'veth', 'peer', 'name', `dpt${x}n`).status === 0)
  t.teardown(() => ip('link', 'del', `dpt${x}h`))
  const orphan = '/etc/netns/dpt-4999999-1'
  mkdirSync(orphan, { recursive: true })
  const removed = sweepLeftovers()
  t.ok(removed.includes(orphan), 'an /etc/netns dir whose namespace is gone')
  t.ok(removed.includes(dead), 'the namespace of a dead pid')
  t.ok(removed.includes(`dpt${x}h`), 'a link whose namespace is gone')
  t.notOk(removed.includes(live.name), 'a live namespace stays')
  t.match(ip('netns', 'list').stdout, live.name)
})
