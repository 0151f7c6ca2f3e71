// The body of POST /_dproxy/pull, as anything on the machine may send it:
// each field checked, per-image platforms accepted, and a wrong shape refused
// with a USAGE error that names the field.

import t from 'tap'
import { parsePullRequest } from '../../src/daemon/pull-endpoint.js'

const alpine = 'docker.io/library/alpine:3.20'
const redis = 'docker.io/library/redis:7'

t.test('an image may carry its own platforms; the others get the run’s', async (t) => {
  const r = parsePullRequest({
    images: [alpine, { image: redis, platforms: ['linux/arm64'] }, { image: redis, platforms: ['linux/arm/v7'] }],
    platforms: ['linux/amd64'],
  })
  t.strictSame(r.images, [alpine, redis])
  t.strictSame(r.platforms, { kind: 'list', platforms: [{ os: 'linux', architecture: 'amd64' }] })
  t.strictSame(Object.fromEntries(r.imagePlatforms), {
    [redis]: [
      { os: 'linux', architecture: 'arm64' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ],
  })
})

t.test('wrong shapes are refused, naming what is wrong', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ images: [{ image: redis }] }, /the platforms of docker\.io\/library\/redis:7 must be a list/],
    [{ images: [{ image: redis, platforms: [] }] }, /the platforms of .* must be a list/],
    [{ images: [{ image: redis, platforms: ['linux'] }] }, /expected a platform like 'linux\/amd64'/],
    [{ images: [{ image: redis, platforms: ['linux/arm64'], extra: 1 }] }, /an entry of images must be a reference or/],
    [{ images: [{ ref: redis }] }, /an entry of images must be a reference or/],
    [{ images: [null] }, /an entry of images must be a reference or/],
    [{ images: [[redis]] }, /an entry of images must be a reference or/],
    [{ images: [alpine], platforms: 'some' }, /platforms must be 'all' or a list/],
    [{ images: [] }, /images must be a list of 1 to 1000 references/],
  ]
  for (const [body, message] of cases) t.throws(() => parsePullRequest(body), { code: 'USAGE', message }, JSON.stringify(body))
})
