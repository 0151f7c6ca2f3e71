import t from 'tap'
import { parseChallenge } from '../../src/upstream/challenge.js'

t.test('parses Bearer challenges as registries send them', async (t) => {
  t.strictSame(
    parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:library/alpine:pull"'),
    {
      scheme: 'bearer',
      params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:library/alpine:pull' },
    },
  )
  // Commas inside quotes, spaces after commas, unquoted tokens, escaped quotes.
  t.strictSame(
    parseChallenge('Bearer realm="https://a/token", scope="repository:a:pull,push", error=insufficient_scope, x="q\\"uote"'),
    {
      scheme: 'bearer',
      params: { realm: 'https://a/token', scope: 'repository:a:pull,push', error: 'insufficient_scope', x: 'q"uote' },
    },
  )
  t.strictSame(parseChallenge('Basic realm="Registry"'), { scheme: 'basic', params: { realm: 'Registry' } })
  t.strictSame(parseChallenge('Bearer'), { scheme: 'bearer', params: {} })
  t.equal(parseChallenge(undefined), undefined)
  t.equal(parseChallenge(''), undefined)
})
