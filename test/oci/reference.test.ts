// The one reference parser, as tables: every form the registry's request
// paths, `dproxy pull` and prefetch (canonicalReference), warm targets
// (manifestReference), archive ref names (parseTaggedReference) and cache
// selectors take, and every refusal with its reason.

import t from 'tap'
import { parseDigest } from '../../src/oci/digest.js'
import {
  canonicalReference,
  formatImageReference,
  manifestReference,
  MAX_REFERENCE_LENGTH,
  parseImageReference,
  parseReference,
  parseTaggedReference,
  resolveImageName,
  withDefaultTag,
} from '../../src/oci/reference.js'

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
  t.strictSame(parseReference('x'.repeat(128)), { kind: 'tag', tag: 'x'.repeat(128) }, 'a tag of 128 characters')
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

t.test('parseImageReference: name, tag, digest, both or neither; no default filled in', async (t) => {
  const d = parseDigest(`sha256:${hex}`)
  const cases: Array<[string, object]> = [
    ['alpine', { registry: 'docker.io', repository: 'library/alpine' }],
    ['alpine:3.19', { registry: 'docker.io', repository: 'library/alpine', tag: '3.19' }],
    ['docker.io/library/alpine:latest', { registry: 'docker.io', repository: 'library/alpine', tag: 'latest' }],
    ['localhost:5000/team/app', { registry: 'localhost:5000', repository: 'team/app' }],
    ['localhost:5000/x:2', { registry: 'localhost:5000', repository: 'x', tag: '2' }],
    [`ghcr.io/o/i@sha256:${hex}`, { registry: 'ghcr.io', repository: 'o/i', digest: d }],
    [`node:20@sha256:${hex}`, { registry: 'docker.io', repository: 'library/node', tag: '20', digest: d }],
    ['g/dependency_proxy/containers/alpine:3', { registry: 'docker.io', repository: 'library/alpine', tag: '3' }],
  ]
  for (const [raw, want] of cases) t.strictSame(parseImageReference(raw), want, raw)
})

t.test('the longest valid reference fits under the length bound', async (t) => {
  // A 253-character host with a port, a 255-character repository, a 128-character tag and a sha512 digest.
  const host = `${'h'.repeat(63)}.${'h'.repeat(63)}.${'h'.repeat(63)}.${'h'.repeat(61)}:65535`
  const repository = Array.from({ length: 5 }, () => 'r'.repeat(50)).join('/') + 'r'
  const raw = `${host}/${repository}:${'t'.repeat(128)}@sha512:${'b'.repeat(128)}`
  t.equal(repository.length, 255)
  t.ok(raw.length > 600 && raw.length <= MAX_REFERENCE_LENGTH, `${raw.length} characters`)
  t.match(parseImageReference(raw), { repository, tag: 't'.repeat(128) })
  t.throws(() => parseImageReference('a'.repeat(MAX_REFERENCE_LENGTH + 1)), { code: 'NAME_INVALID', message: /longer than 1024 characters/ })
})

t.test('canonicalReference gives the canonical form (`dproxy pull`, prefetch)', async (t) => {
  const cases: Array<[string, string]> = [
    ['alpine', 'docker.io/library/alpine:latest'],
    ['alpine:3.20', 'docker.io/library/alpine:3.20'],
    ['docker.io/alpine', 'docker.io/library/alpine:latest'],
    ['index.docker.io/library/alpine:3', 'docker.io/library/alpine:3'],
    ['bitnami/redis:7.2', 'docker.io/bitnami/redis:7.2'],
    ['ghcr.io/owner/img', 'ghcr.io/owner/img:latest'],
    ['localhost:5001/img:1', 'localhost:5001/img:1'],
    ['localhost:5001/img', 'localhost:5001/img:latest'],
    [`alpine@sha256:${hex}`, `docker.io/library/alpine@sha256:${hex}`],
    [`node:20@sha256:${hex}`, `docker.io/library/node:20@sha256:${hex}`],
    ['mygroup/dependency_proxy/containers/alpine:3', 'docker.io/library/alpine:3'],
  ]
  for (const [raw, ref] of cases) t.equal(canonicalReference(raw).ref, ref, raw)
  t.strictSame(canonicalReference(`ghcr.io/o/i:1@sha256:${hex}`), {
    ref: `ghcr.io/o/i:1@sha256:${hex}`,
    registry: 'ghcr.io',
    repository: 'o/i',
    tag: '1',
    digest: `sha256:${hex}`,
  })
  t.notOk('tag' in canonicalReference(`alpine@sha256:${hex}`), 'a digest alone gets no default tag')
})

t.test('an invalid reference says why', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['Alpine', /invalid repository name 'Alpine'/],
    ['alpine:', /invalid tag ''/],
    ['alpine:.x', /invalid tag/],
    ['alpine@sha256:abc', /invalid digest/],
    ['alpine 3', /white space/],
    ['../etc/passwd', /invalid repository name/],
    ['a'.repeat(700), /longer than/],
    ['a'.repeat(1100), /longer than/],
    [':x', /no image name/],
    [`@sha256:${hex}`, /no image name/],
  ]
  for (const [raw, message] of cases) t.throws(() => canonicalReference(raw), { message }, JSON.stringify(raw.slice(0, 20)))
})

t.test('manifestReference: what a warm target asks for (a digest wins over a tag, else the tag, else latest)', async (t) => {
  const d = parseDigest(`sha256:${hex}`)
  const cases: Array<[string, object]> = [
    ['docker.io/library/alpine:latest', { kind: 'tag', tag: 'latest' }],
    ['docker.io/library/alpine', { kind: 'tag', tag: 'latest' }],
    ['ghcr.io/o/i:1.2', { kind: 'tag', tag: '1.2' }],
    [`docker.io/library/node:20@sha256:${hex}`, { kind: 'digest', digest: d }],
    [`alpine@sha256:${hex}`, { kind: 'digest', digest: d }],
  ]
  for (const [raw, want] of cases) t.strictSame(manifestReference(parseImageReference(raw)), want, raw)
  t.equal(formatImageReference(withDefaultTag(parseImageReference('alpine'))), 'docker.io/library/alpine:latest')
  t.equal(formatImageReference(parseImageReference(`ghcr.io/o/i@sha256:${hex}`)), `ghcr.io/o/i@sha256:${hex}`)
})

t.test('parseTaggedReference: archive ref names, full, bare (Docker Hub), and the ones that name no tag', async (t) => {
  const good: Array<[string, object]> = [
    ['docker.io/library/alpine:latest', { registry: 'docker.io', repository: 'library/alpine', tag: 'latest' }],
    ['ghcr.io/o/i:1.0', { registry: 'ghcr.io', repository: 'o/i', tag: '1.0' }],
    ['localhost:5000/x:2', { registry: 'localhost:5000', repository: 'x', tag: '2' }],
    ['alpine:3.19', { registry: 'docker.io', repository: 'library/alpine', tag: '3.19' }],
    ['bitnami/redis:7', { registry: 'docker.io', repository: 'bitnami/redis', tag: '7' }],
  ]
  for (const [raw, want] of good) t.strictSame(parseTaggedReference(raw), want, raw)
  const bad: Array<[string, RegExp]> = [
    ['latest', /without an image name/],
    ['docker.io/library/alpine', /without a tag/],
    [`alpine@sha256:${hex}`, /by digest/],
    [`alpine:3@sha256:${hex}`, /by digest/],
    ['../../etc:x', /invalid repository name/],
  ]
  for (const [raw, message] of bad) t.throws(() => parseTaggedReference(raw), { code: /_INVALID$/, message }, raw)
})
