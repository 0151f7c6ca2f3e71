// `dproxy prefetch --dry-run` as users run it: the built binary in a project
// that uses every format together. The listing must be exactly the images the
// project pulls, each with every file:line that names it.

import t from 'tap'
import { isolatedEnv, runDproxy } from '../helpers/cli.js'

const digest = `sha256:${'1'.repeat(64)}`

const project = {
  'compose.yaml': [
    'services:',
    '  app:',
    '    build:',
    '      context: .',
    '      args:',
    '        NODE_VERSION: "22"',
    '  db:',
    '    image: postgres:${PG_VERSION:-16}',
    '  cache:',
    '    image: ${CACHE_IMAGE}',
    '',
  ].join('\n'),
  Dockerfile: [
    '# syntax=docker/dockerfile:1',
    'ARG NODE_VERSION=20',
    'ARG DISTROLESS=gcr.io/distroless/nodejs22-debian12',
    'FROM --platform=$BUILDPLATFORM node:${NODE_VERSION}-alpine AS build',
    'RUN --mount=type=bind,from=golang:1.23,source=/usr/local/go,target=/go true',
    'FROM build AS test',
    'COPY --from=build /app /app',
    `FROM --platform=linux/arm64 \${DISTROLESS}@${digest}`,
    'COPY --from=busybox:1.36 /bin/busybox /busybox',
    '',
  ].join('\n'),
  '.gitlab-ci.yml': [
    'variables:',
    '  PYTHON: "3.12"',
    'default:',
    '  image: $CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX/python:${PYTHON}',
    'test:',
    '  services:',
    '    - name: ${CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX}/postgres:16',
    '  script: [pytest]',
    '',
  ].join('\n'),
  '.github': {
    workflows: {
      'ci.yml': [
        'on: push',
        'jobs:',
        '  test:',
        '    runs-on: ubuntu-latest',
        '    container: node:22-alpine',
        '    services:',
        '      redis:',
        '        image: redis:7',
        '    steps:',
        '      - uses: docker://alpine:3.20',
        '',
      ].join('\n'),
    },
  },
  '.devcontainer': {
    'devcontainer.json': '{\n  // dev image\n  "image": "mcr.microsoft.com/devcontainers/typescript-node:22",\n}\n',
  },
  deploy: {
    'app.yaml': [
      'apiVersion: apps/v1',
      'kind: Deployment',
      'spec:',
      '  template:',
      '    spec:',
      '      initContainers:',
      '        - name: migrate',
      '          image: ghcr.io/acme/migrate:1.4',
      '      containers:',
      '        - name: app',
      '          image: ghcr.io/acme/app:2.0',
      '',
    ].join('\n'),
  },
  node_modules: { dep: { Dockerfile: 'FROM never-listed:1\n' } },
}

const expected = [
  'docker.io/docker/dockerfile:1',
  '  Dockerfile:1  dockerfile syntax',
  'docker.io/library/alpine:3.20',
  '  .github/workflows/ci.yml:10  workflow step',
  'docker.io/library/busybox:1.36',
  '  Dockerfile:9  dockerfile COPY --from',
  'docker.io/library/golang:1.23',
  '  Dockerfile:5  dockerfile RUN --mount',
  'docker.io/library/node:22-alpine',
  '  .github/workflows/ci.yml:5  workflow container',
  '  Dockerfile:4                dockerfile FROM',
  'docker.io/library/postgres:16',
  '  .gitlab-ci.yml:7  gitlab-ci service',
  '  compose.yaml:8    compose image',
  'docker.io/library/python:3.12',
  '  .gitlab-ci.yml:4  gitlab-ci image',
  'docker.io/library/redis:7',
  '  .github/workflows/ci.yml:8  workflow service',
  `gcr.io/distroless/nodejs22-debian12@${digest}  (linux/arm64)`,
  '  Dockerfile:8  dockerfile FROM  linux/arm64',
  'ghcr.io/acme/app:2.0',
  '  deploy/app.yaml:11  kubernetes',
  'ghcr.io/acme/migrate:1.4',
  '  deploy/app.yaml:8  kubernetes',
  'mcr.microsoft.com/devcontainers/typescript-node:22',
  '  .devcontainer/devcontainer.json:3  devcontainer image',
  '',
].join('\n')

t.test('prefetch --dry-run lists exactly the project’s images with file:line', async (t) => {
  const env = isolatedEnv(t)
  const dir = t.testdir(project)
  const r = await runDproxy(['prefetch', '--dry-run'], env, { cwd: dir })
  t.equal(r.code, 0, r.err)
  t.equal(r.out, expected)
  t.equal(r.err, 'compose.yaml:10: service cache image ${CACHE_IMAGE}: needs $CACHE_IMAGE\n12 images, 1 problem\n')
})

t.test('--json is the same result as one document', async (t) => {
  const env = isolatedEnv(t)
  const dir = t.testdir(project)
  const r = await runDproxy(['prefetch', '.', '--dry-run', '--json'], env, { cwd: dir })
  t.equal(r.code, 0, r.err)
  t.equal(r.err, '')
  const doc = JSON.parse(r.out) as {
    images: Array<{ ref: string; registry: string; repository: string; tag?: string; digest?: string; platforms: string[]; sources: unknown[] }>
    problems: unknown[]
  }
  t.strictSame(
    doc.images.map((i) => i.ref),
    expected.split('\n').filter((l) => l !== '' && !l.startsWith(' ')).map((l) => l.split('  ')[0]),
  )
  const distroless = doc.images.find((i) => i.registry === 'gcr.io')!
  t.strictSame(distroless, {
    ref: `gcr.io/distroless/nodejs22-debian12@${digest}`,
    registry: 'gcr.io',
    repository: 'distroless/nodejs22-debian12',
    digest,
    platforms: ['linux/arm64'],
    sources: [{ file: 'Dockerfile', line: 8, kind: 'dockerfile FROM', platform: 'linux/arm64' }],
  })
  t.strictSame(doc.problems, [{ file: 'compose.yaml', line: 10, message: 'service cache image ${CACHE_IMAGE}: needs $CACHE_IMAGE' }])
})

t.test('without --dry-run it refuses with a usage error (fetching is not built yet)', async (t) => {
  const env = isolatedEnv(t)
  const r = await runDproxy(['prefetch'], env, { cwd: t.testdir({}) })
  t.equal(r.code, 2)
  t.equal(r.err, 'dproxy: fetching is not implemented yet: use --dry-run\n')
})
