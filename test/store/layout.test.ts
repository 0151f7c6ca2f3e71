// layout.ts recognises the paths it builds: a tag file and a manifest link
// come back as what they stand for (registry decoded, nested repositories,
// case-safe tag names), and nothing else under repositories/ is taken for one.

import { join } from 'node:path'
import t from 'tap'
import { Layout } from '../../src/store/layout.js'
import { parseDigest } from '../../src/oci/digest.js'

const d = parseDigest(`sha256:${'a'.repeat(64)}`)

t.test('a built tag file or manifest link is recognised as what it stands for', async (t) => {
  const layout = new Layout('/cache')
  for (const [registry, repository, tag] of [
    ['docker.io', 'library/alpine', 'latest'],
    ['localhost:5000', 'a/b/c', 'V1.2'],
  ] as const) {
    const file = layout.tag(registry, repository, tag)
    t.match(layout.repositoryFile(file), { kind: 'tag', registry, repository, tag }, `${registry}/${repository}:${tag}`)
    t.strictSame(layout.repositoryFile(layout.manifestLink(registry, repository, d)), {
      kind: 'link',
      registry,
      repository,
      digest: d.value,
    })
  }
  t.match(layout.repositoryFile(layout.tag('docker.io', 'library/alpine', 'V1')), { kind: 'tag', file: '!v1', tag: 'V1' }, 'the name on disk')
})

t.test('anything else under repositories/ is neither', async (t) => {
  const layout = new Layout('/cache')
  for (const rel of ['docker.io/_tags/x', 'docker.io/library/a/_tags/x/y', 'docker.io/library/a/_manifests/sha256', '%E0%A4%A/library/a/_tags/x', 'docker.io/library/a/other']) {
    t.equal(layout.repositoryFile(join(layout.repositoriesDir, rel)), undefined, rel)
  }
  t.strictSame(layout.repositoryFile(join(layout.repositoriesDir, 'docker.io/library/a/_tags/V1')), { kind: 'tag', registry: 'docker.io', repository: 'library/a', file: 'V1', tag: undefined }, 'a name version 2 never writes')
})
