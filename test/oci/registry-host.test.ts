import t from 'tap'
import { CLIENT_SECRET_KEY } from '../../src/credentials/credential.js'
import { DOCKER_HUB, isValidRegistryHost, parseRegistryHost, registryOrigin } from '../../src/oci/registry-host.js'

t.test('Docker Hub aliases fold into docker.io', async (t) => {
  for (const alias of ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.docker.io', ' Index.Docker.IO ']) {
    t.equal(parseRegistryHost(alias), DOCKER_HUB, alias)
  }
})

t.test('other hosts are lower-cased and kept', async (t) => {
  const cases: Array<[string, string]> = [
    ['GHCR.io', 'ghcr.io'],
    ['localhost:5000', 'localhost:5000'],
    ['127.0.0.1:5000', '127.0.0.1:5000'],
    ['[::1]:5000', '[::1]:5000'],
    ['[::1]', '[::1]'],
    ['docker.io:443', 'docker.io:443'],
    [CLIENT_SECRET_KEY, 'dproxy-client'],
  ]
  for (const [input, key] of cases) t.equal(parseRegistryHost(input), key, input)
})

t.test('anything else is refused precisely', async (t) => {
  for (const bad of ['', 'https://ghcr.io', 'ghcr.io/path', 'a b', 'ghcr.io:0', 'ghcr.io:65536', '-bad.io', '::1', '[zz]:1', 'ghcr.io:']) {
    t.equal(isValidRegistryHost(bad), false, `'${bad}' is not a registry host`)
  }
  t.throws(() => parseRegistryHost('https://ghcr.io'), {
    name: 'DproxyError',
    code: 'CONFIG_INVALID',
    message: "expected a registry host like 'ghcr.io' or 'localhost:5000', got 'https://ghcr.io'",
  })
  t.throws(() => parseRegistryHost('x y', 'an upstream registry host'), {
    message: "expected an upstream registry host like 'ghcr.io' or 'localhost:5000', got 'x y'",
  })
})

t.test('one place knows where a registry API lives: Docker Hub\'s is not at docker.io', async (t) => {
  const cases: Array<[string, string]> = [
    [DOCKER_HUB, 'https://registry-1.docker.io'],
    ['ghcr.io', 'https://ghcr.io'],
    ['localhost:5000', 'https://localhost:5000'],
  ]
  for (const [registry, origin] of cases) t.equal(registryOrigin(registry), origin, registry)
})
