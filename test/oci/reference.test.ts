import t from 'tap'
import { parseDigest } from '../../src/oci/digest.js'
import { parseReference, resolveImageName } from '../../src/oci/reference.js'

const hex = 'a'.repeat(64)

t.test('resolveImageName maps every accepted form to registry + repository', async (t) => {
  const cases: Array<[string, string | undefined, string, string]> = [
    ['alpine', undefined, 'docker.io', 'library/alpine'],
    ['library/alpine', undefined, 'docker.io', 'library/alpine'],
    ['bitnami/redis', undefined, 'docker.io', 'bitnami/redis'],
    ['docker.io/alpine', undefined, 'docker.io', 'library/alpine'],
    ['index.docker.io/library/alpine', undefined, 'docker.io', 'library/alpine'],
    ['ghcr.io/owner/img', undefined, 'ghcr.io', 'owner/img'],
    ['localhost:5001/img', undefined, 'localhost:5001', 'img'],
    ['localhost/img', undefined, 'localhost', 'img'],
    ['registry.example:8443/a/b/c', undefined, 'registry.example:8443', 'a/b/c'],
    ['mygroup/dependency_proxy/containers/alpine', undefined, 'docker.io', 'library/alpine'],
    ['g/sub/dependency_proxy/containers/bitnami/redis', undefined, 'docker.io', 'bitnami/redis'],
    ['library/alpine', 'docker.io', 'docker.io', 'library/alpine'],
    ['alpine', 'registry-1.docker.io', 'docker.io', 'library/alpine'],
    ['owner/img', 'ghcr.io', 'ghcr.io', 'owner/img'],
    ['a.b/c', 'quay.io', 'quay.io', 'a.b/c'],
    ['my-app__x/z--w.y', undefined, 'docker.io', 'my-app__x/z--w.y'],
    ['my.host/a', undefined, 'my.host', 'a'],
  ]
  for (const [name, ns, registry, repository] of cases) {
    t.strictSame(resolveImageName(name, ns), { registry, repository }, `${name}${ns ? `?ns=${ns}` : ''}`)
  }
})

t.test('resolveImageName rejects invalid names with NAME_INVALID', async (t) => {
  const bad = ['', 'Alpine', '../etc', 'a/../b', 'a/./b', 'a//b', 'a/', '-a', 'a-', 'a..b', '_tags', 'a/_manifests', 'ghcr.io/', 'bad_host:99999/x', 'x'.repeat(256), 'a b']
  for (const name of bad) {
    t.throws(() => resolveImageName(name), { code: 'NAME_INVALID' }, JSON.stringify(name))
  }
  t.throws(() => resolveImageName('x', 'not a host'), { code: 'NAME_INVALID' })
})

t.test('parseReference distinguishes tags and digests', async (t) => {
  t.strictSame(parseReference('latest'), { kind: 'tag', tag: 'latest' })
  t.strictSame(parseReference('v1.2_3-rc'), { kind: 'tag', tag: 'v1.2_3-rc' })
  const r = parseReference(`sha256:${hex}`)
  t.equal(r.kind, 'digest')
  t.throws(() => parseReference('.hidden'), { code: 'MANIFEST_INVALID' })
  t.throws(() => parseReference('x'.repeat(129)), { code: 'MANIFEST_INVALID' })
  t.throws(() => parseReference('..'))
})

t.test('parseDigest accepts sha256 and sha512 only, exact length, lowercase hex', async (t) => {
  t.strictSame(parseDigest(`sha256:${hex}`), { algorithm: 'sha256', hex, value: `sha256:${hex}` })
  t.equal(parseDigest(`sha512:${'b'.repeat(128)}`).algorithm, 'sha512')
  for (const bad of [`sha256:${hex.slice(1)}`, `sha256:${'A'.repeat(64)}`, `md5:${'a'.repeat(32)}`, `sha256:../${hex}`, 'sha256:', `sha512:${hex}`]) {
    t.throws(() => parseDigest(bad), { code: 'DIGEST_INVALID' }, bad)
  }
})
