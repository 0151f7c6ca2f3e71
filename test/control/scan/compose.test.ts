import path from 'node:path'
import t from 'tap'
import { scanCompose } from '../../../src/control/scan/compose.js'

const file = path.resolve('/p/compose.yaml')

t.test('images with defaults, platforms, anchors and merge keys', async (t) => {
  const r = scanCompose(
    [
      'x-base: &base',
      '  image: redis:7',
      'services:',
      '  db:',
      '    image: "postgres:${PG:-16}"',
      '    platform: linux/arm64',
      '  cache:',
      '    <<: *base',
      '  cache2:',
      '    <<: *base',
      '    image: valkey/valkey:8',
      '  dollar:',
      '    image: ghcr.io/o/i:$$LITERAL',
      '  needs:',
      '    image: ${REGISTRY}/app:${TAG:-1}',
      '',
    ].join('\n'),
    file,
  )
  t.strictSame(
    r.refs.map((x) => [x.line, x.raw, x.platform ?? '']),
    [
      [5, 'postgres:16', 'linux/arm64'],
      [2, 'redis:7', ''],
      [11, 'valkey/valkey:8', ''],
      [13, 'ghcr.io/o/i:$LITERAL', ''],
    ],
  )
  t.strictSame(r.problems, [{ file, line: 15, message: 'service needs image ${REGISTRY}/app:${TAG:-1}: needs $REGISTRY' }])
})

t.test('build: leads to the Dockerfile with its args; image: beside build: is the result, not pulled', async (t) => {
  const r = scanCompose(
    [
      'services:',
      '  short:',
      '    build: ./web',
      '  long:',
      '    image: me/app:dev',
      '    build:',
      '      context: api',
      '      dockerfile: docker/Prod.Dockerfile',
      '      args:',
      '        NODE: "22"',
      '        FROM_ENV: ${UNSET}',
      '  list:',
      '    build:',
      '      context: .',
      '      args: ["A=1", "B"]',
      '  remote:',
      '    build: https://example.invalid/repo.git',
      '  inline:',
      '    build:',
      '      args: { V: "3.20" }',
      '      dockerfile_inline: |',
      '        ARG V',
      '        FROM alpine:${V}',
      '',
    ].join('\n'),
    file,
  )
  t.strictSame(
    r.builds.map((b) => [b.dockerfile, b.args, b.line]),
    [
      [path.resolve('/p/web/Dockerfile'), {}, 3],
      [path.resolve('/p/api/docker/Prod.Dockerfile'), { NODE: '22' }, 7],
      [path.resolve('/p/Dockerfile'), { A: '1' }, 14],
    ],
  )
  t.strictSame(r.refs.map((x) => [x.line, x.raw, x.kind]), [[23, 'alpine:3.20', 'dockerfile FROM']])
  t.match(r.problems, [{ line: 17, message: /remote context is not scanned/ }])
  t.equal(r.problems.length, 1)
})

t.test('invalid YAML is a problem with its line', async (t) => {
  const r = scanCompose('services:\n  a:\n    image: [oops\n', file)
  t.equal(r.refs.length, 0)
  t.match(r.problems, [{ file, message: /not valid YAML/ }])
})

t.test('merge-key chains are followed once per mapping', async (t) => {
  const lines = ['x0: &x0 { a: { image: "alpine:3" } }']
  for (let i = 1; i < 40; i++) lines.push(`x${i}: &x${i} { <<: [*x${i - 1}, *x${i - 1}] }`)
  lines.push('services:', '  <<: *x39')
  const r = scanCompose(lines.join('\n') + '\n', file)
  t.strictSame(r.refs.map((x) => [x.line, x.raw]), [[1, 'alpine:3']])
})

t.test('a built service’s platform: is the platform its build targets', async (t) => {
  const r = scanCompose(
    [
      'services:',
      '  api:',
      '    platform: ${API_PLATFORM:-linux/arm64}',
      '    build: ./api',
      '  inline:',
      '    platform: linux/arm64',
      '    build:',
      '      dockerfile_inline: |',
      '        FROM --platform=$BUILDPLATFORM golang:1.23',
      '        FROM alpine:3.20',
      '  host:',
      '    build: ./host',
      '',
    ].join('\n'),
    file,
  )
  t.strictSame(
    r.builds.map((b) => [b.dockerfile, b.platform ?? '']),
    [
      [path.resolve('/p/api/Dockerfile'), 'linux/arm64'],
      [path.resolve('/p/host/Dockerfile'), ''],
    ],
  )
  t.strictSame(
    r.refs.map((x) => [x.line, x.raw, x.platform ?? '']),
    [
      [9, 'golang:1.23', ''],
      [10, 'alpine:3.20', 'linux/arm64'],
    ],
  )
})
