// Which URL dproxy contacts for a registry: its API origin (oci/registry-host.ts), unless the user maps it.

import t from 'tap'
import { DOCKER_HUB } from '../../src/oci/registry-host.js'
import { allowedRegistries, upstreamBaseUrl } from '../../src/upstream/registries.js'

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
