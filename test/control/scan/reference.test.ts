import t from 'tap'
import { normalizeReference } from '../../../src/control/scan/reference.js'

const hex = 'a'.repeat(64)

t.test('normalizeReference gives the canonical form', async (t) => {
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
  for (const [raw, ref] of cases) t.equal(normalizeReference(raw).ref, ref, raw)
  t.strictSame(normalizeReference(`ghcr.io/o/i:1@sha256:${hex}`), {
    ref: `ghcr.io/o/i:1@sha256:${hex}`,
    registry: 'ghcr.io',
    repository: 'o/i',
    tag: '1',
    digest: `sha256:${hex}`,
  })
  t.notOk('tag' in normalizeReference(`alpine@sha256:${hex}`), 'a digest alone gets no default tag')
})

t.test('normalizeReference says why a reference is invalid', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['Alpine', /invalid repository name 'Alpine'/],
    ['alpine:', /invalid tag ''/],
    ['alpine:.x', /invalid tag/],
    ['alpine@sha256:abc', /invalid digest/],
    ['alpine 3', /white space/],
    ['../etc/passwd', /invalid repository name/],
    ['a'.repeat(700), /longer than/],
  ]
  for (const [raw, message] of cases) t.throws(() => normalizeReference(raw), { message }, JSON.stringify(raw.slice(0, 20)))
})
