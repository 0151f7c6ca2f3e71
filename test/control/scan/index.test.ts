// The walker over real directories: which files it reads, what it follows,
// and the bounds that keep a hostile tree from reaching outside the paths.

import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { findImageReferences, formatOf } from '../../../src/control/scan/index.js'

const places = (r: Awaited<ReturnType<typeof findImageReferences>>) =>
  r.images.map((i) => [i.ref, i.sources.map((s) => `${path.relative(process.cwd(), s.file) || s.file}:${s.line}`)])

t.test('formatOf recognises files by name', async (t) => {
  const cases: Array<[string, string | undefined]> = [
    ['compose.yaml', 'compose'],
    ['compose.override.yml', 'compose'],
    ['docker-compose.prod.yaml', 'compose'],
    ['composer.yml', 'yaml'],
    ['Dockerfile', 'dockerfile'],
    ['Dockerfile.dev', 'dockerfile'],
    ['api.Dockerfile', 'dockerfile'],
    ['Containerfile', 'dockerfile'],
    ['Dockerfile.dockerignore', undefined],
    ['.gitlab-ci.yml', 'gitlab-ci'],
    ['.github/workflows/ci.yaml', 'workflow'],
    ['other/workflows/ci.yaml', 'yaml'],
    ['.devcontainer/devcontainer.json', 'devcontainer'],
    ['.devcontainer.json', 'devcontainer'],
    ['ci.images', 'image-list'],
    ['package.json', undefined],
  ]
  for (const [name, format] of cases) t.equal(formatOf(name), format, name)
})

t.test('skips vendored dirs, follows compose build to its Dockerfile with args, groups places', async (t) => {
  const dir = t.testdir({
    'compose.yaml': 'services:\n  web:\n    build:\n      context: web\n      args:\n        V: "22"\n  db:\n    image: postgres:16\n',
    web: { Dockerfile: 'ARG V=20\nFROM node:${V}\n' },
    other: { Dockerfile: 'FROM postgres:16\n' },
    node_modules: { pkg: { Dockerfile: 'FROM hidden:1\n' } },
    vendor: { 'compose.yaml': 'services: { a: { image: hidden:2 } }\n' },
    third_party: { 'x.images': 'hidden:3\n' },
    '.git': { 'x.images': 'hidden:4\n' },
  })
  const r = await findImageReferences([dir])
  t.strictSame(
    r.images.map((i) => [i.ref, i.sources.map((s) => `${path.relative(dir, s.file)}:${s.line} ${s.kind}`)]),
    [
      ['docker.io/library/node:22', ['web/Dockerfile:2 dockerfile FROM']],
      ['docker.io/library/postgres:16', ['compose.yaml:8 compose image', 'other/Dockerfile:1 dockerfile FROM']],
    ],
  )
  t.strictSame(r.problems, [])
})

t.test('file names are the given path joined with the path inside it', async (t) => {
  const dir = t.testdir({ sub: { 'a.images': 'alpine\n' } })
  const cwd = process.cwd()
  process.chdir(dir)
  t.teardown(() => process.chdir(cwd))
  const r = await findImageReferences(['.', 'sub/a.images'])
  t.strictSame(r.images[0]!.sources, [{ file: path.join('sub', 'a.images'), line: 1, kind: 'image list' }])
  t.strictSame((await findImageReferences([])).images.length, 1, 'no path means .')
})

t.test('never reads outside the given paths', async (t) => {
  const dir = t.testdir({
    outside: { 'secret.images': 'outside:1\n', Dockerfile: 'FROM outside:2\n', dir: { 'x.images': 'outside:3\n' } },
    project: {
      'compose.yaml': 'services:\n  a:\n    build:\n      context: ../outside\n',
      'linked.images': t.fixture('symlink', '../outside/secret.images'),
      linkeddir: t.fixture('symlink', '../outside/dir'),
      '.gitlab-ci.yml': 'include:\n  - local: ../outside/secret.images\n  - missing.yml\n  - ci/*.yml\n',
      '.devcontainer.json': '{ "dockerComposeFile": "../outside/compose.yaml" }',
    },
  })
  const project = path.join(dir, 'project')
  const r = await findImageReferences([project])
  t.strictSame(r.images, [])
  const rel = r.problems.map((p) => `${path.relative(project, p.file)}:${p.line} ${p.message}`)
  t.strictSame(rel, [
    '.devcontainer.json:1 ../outside/compose.yaml: no such file',
    '.gitlab-ci.yml:2 ../outside/secret.images: outside the scanned paths, not read',
    '.gitlab-ci.yml:3 missing.yml: no such file',
    '.gitlab-ci.yml:4 include ci/*.yml: wildcard includes are not followed',
    'compose.yaml:4 ../outside/Dockerfile: outside the scanned paths, not read',
    'linked.images:0 links outside the scanned paths, not read',
  ].map((s) => s.replace(/\.\.\/outside/g, path.join('..', 'outside'))))
})

t.test('GitLab local includes are read as one pipeline', async (t) => {
  const dir = t.testdir({
    '.gitlab-ci.yml': 'include:\n  - local: /ci/jobs.yml\nvariables:\n  V: "3.20"\n',
    ci: { 'jobs.yml': 'include: ci/more.yml\nj:\n  image: alpine:$V\n', 'more.yml': 'include: ci/jobs.yml\nk:\n  image: busybox\n' },
  })
  const r = await findImageReferences([dir])
  t.strictSame(places(r).map(([ref]) => ref), ['docker.io/library/alpine:3.20', 'docker.io/library/busybox:latest'])
  t.strictSame(r.problems, [])
})

t.test('devcontainer compose files are scanned as compose files, once', async (t) => {
  const dir = t.testdir({
    '.devcontainer': {
      'devcontainer.json': '{ "dockerComposeFile": ["../compose.yaml", "extra.yml"], "service": "app" }',
      'extra.yml': 'services:\n  app:\n    image: mcr.microsoft.com/devcontainers/base:1\n',
    },
    'compose.yaml': 'services:\n  db:\n    image: postgres:16\n',
  })
  const r = await findImageReferences([dir])
  t.strictSame(
    r.images.map((i) => [i.ref, i.sources.length]),
    [
      ['docker.io/library/postgres:16', 1],
      ['mcr.microsoft.com/devcontainers/base:1', 1],
    ],
  )
})

t.test('bounded: files over the size cap are not read, the walk stops at the file cap', async (t) => {
  const dir = t.testdir({
    'big.images': 'alpine\n'.repeat(100),
    'small.images': 'busybox\n',
    'config.yaml': 'apiVersion: v1\nkind: Pod\nspec: { containers: [ { image: nginx } ] }\n' + '#'.repeat(500),
  })
  const r = await findImageReferences([dir], { maxFileBytes: 100 })
  t.strictSame(r.images.map((i) => i.ref), ['docker.io/library/busybox:latest'])
  t.strictSame(r.problems.map((p) => [path.basename(p.file), p.message]), [['big.images', 'larger than 100 bytes, not read']])
  const capped = await findImageReferences([dir], { maxFiles: 1 })
  t.match(capped.problems, [{ message: 'stopped after 1 files; pass narrower paths' }])
  t.strictSame(capped.images.map((i) => i.ref), ['docker.io/library/alpine:latest'], 'only the first file, big.images, was read')
})

t.test('invalid references are problems with file:line and why', async (t) => {
  const dir = t.testdir({ 'a.images': 'alpine\nAlpine:1\nalpine@sha256:abc\n' })
  const r = await findImageReferences([dir])
  t.strictSame(r.images.map((i) => i.ref), ['docker.io/library/alpine:latest'])
  t.strictSame(
    r.problems.map((p) => [p.line, p.message]),
    [
      [2, "Alpine:1: invalid repository name 'Alpine': bad component 'Alpine'"],
      [3, "alpine@sha256:abc: invalid digest 'sha256:abc'"],
    ],
  )
  t.ok(fs.existsSync(dir))
})

t.test('platforms: a built service’s platform reaches its Dockerfile; one the fetcher cannot ask for is a problem', async (t) => {
  const dir = t.testdir({
    'compose.yaml': 'services:\n  api:\n    platform: linux/arm64\n    build: api\n  db:\n    image: postgres:16\n    platform: windows\n',
    api: { Dockerfile: 'FROM node:22\nFROM --platform=$BUILDPLATFORM golang:1.23\n' },
  })
  const r = await findImageReferences([dir])
  t.strictSame(
    r.images.map((i) => [i.ref, i.platforms, i.sources.map((s) => s.platform ?? '')]),
    [
      ['docker.io/library/golang:1.23', [], ['']],
      ['docker.io/library/node:22', ['linux/arm64'], ['linux/arm64']],
      ['docker.io/library/postgres:16', [], ['']],
    ],
  )
  t.strictSame(r.problems, [
    { file: path.join(dir, 'compose.yaml'), line: 6, message: "postgres:16: platform 'windows' is not like linux/arm64 or linux/arm/v7; the default applies" },
  ])
})
