// Which URL dproxy contacts for a registry: its API origin (oci/registry-host.ts), unless the user maps it.

import t from 'tap'
import { DOCKER_HUB } from '../../src/oci/registry-host.js'
import { allowedRegistries, upstreamBaseUrl, upstreamChain } from '../../src/upstream/registries.js'

t.test('upstreamBaseUrl: the API origin, or the URL the user mapped the registry to', async (t) => {
  const cases: Array<[string, Record<string, string>, string]> = [
    [DOCKER_HUB, {}, 'https://registry-1.docker.io/'],
    ['ghcr.io', {}, 'https://ghcr.io/'],
    [DOCKER_HUB, { 'docker.io': 'http://127.0.0.1:15000/' }, 'http://127.0.0.1:15000/'],
    ['ghcr.io', { 'docker.io': 'http://127.0.0.1:15000' }, 'https://ghcr.io/'],
    ['team.example', { 'team.example': 'http://[::1]:5001//' }, 'http://[::1]:5001/'],
  ]
  for (const [registry, overrides, href] of cases) t.equal(upstreamBaseUrl(registry, overrides).href, href, `${registry} ${JSON.stringify(overrides)}`)
})

t.test('allowedRegistries: the list or the default, plus every configured upstream', async (t) => {
  t.ok(allowedRegistries(undefined, {}).includes(DOCKER_HUB))
  t.strictSame(allowedRegistries(['ghcr.io'], { 'team.example': 'http://127.0.0.1:1' }), ['ghcr.io', 'team.example'])
})

t.test('upstreamChain: one URL stands in for the registry; a list is a chain with the origin implied last', async (t) => {
  const show = (registry: string, map: Record<string, string | string[]>, noOrigin: boolean | string[] = false) =>
    upstreamChain(registry, map, noOrigin).map((e) => [e.kind, e.label, e.prefix, e.credentialKey, e.rateKey])
  t.strictSame(show('docker.io', {}), [['origin', 'https://registry-1.docker.io', '', 'docker.io', 'docker.io']], 'nothing configured')
  t.strictSame(show('docker.io', { 'docker.io': 'http://127.0.0.1:15000' }), [
    ['origin', 'http://127.0.0.1:15000', '', 'docker.io', 'docker.io'],
  ], 'one URL: the stand-in, with the registry login and rate limit')
  t.strictSame(show('docker.io', { 'docker.io': ['https://cache.team.example', 'https://registry-1.docker.io'] }), [
    ['mirror', 'https://cache.team.example', '', 'cache.team.example', 'https://cache.team.example'],
    ['origin', 'https://registry-1.docker.io', '', 'docker.io', 'docker.io'],
  ], 'a mirror, then the origin as written')
  t.strictSame(show('docker.io', { 'docker.io': ['https://gitlab.example/group/dependency_proxy/containers', 'http://10.0.0.5:5000'] }), [
    ['prefix', 'https://gitlab.example/group/dependency_proxy/containers', 'group/dependency_proxy/containers/', 'gitlab.example', 'https://gitlab.example/group/dependency_proxy/containers'],
    ['mirror', 'http://10.0.0.5:5000', '', '10.0.0.5:5000', 'http://10.0.0.5:5000'],
    ['origin', 'https://registry-1.docker.io', '', 'docker.io', 'docker.io'],
  ], 'the origin implied last')
  t.strictSame(show('ghcr.io', { 'ghcr.io': ['https://harbor.example/ghcr-proxy', 'https://m.example'] }, ['ghcr.io']).map((e) => e[0]), ['prefix', 'mirror'], 'noOrigin names the registry')
  t.strictSame(show('ghcr.io', { 'ghcr.io': ['https://harbor.example/p', 'https://m.example'] }, true).length, 2, 'noOrigin true')
  t.strictSame(show('ghcr.io', { 'ghcr.io': ['https://harbor.example/p', 'https://m.example'] }, ['quay.io']).length, 3, 'noOrigin for another registry')
  t.strictSame(show('ghcr.io', { 'ghcr.io': ['https://m.example', 'origin'] }).map((e) => e[1]), ['https://m.example', 'https://ghcr.io'], 'the word origin')
  t.strictSame(show('ghcr.io', { 'ghcr.io': 'https://m.example,https://n.example' }).map((e) => e[1]), ['https://m.example', 'https://n.example', 'https://ghcr.io'], 'a comma list')
  t.equal(upstreamChain('ghcr.io', { 'ghcr.io': ['https://m.example', 'origin'] })[1]!.configured, false, 'an origin the user did not write is not configured')
})
