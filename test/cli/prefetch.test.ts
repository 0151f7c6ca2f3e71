// `dproxy prefetch --dry-run` as users run it: the built binary in a project
// that uses every format together. The listing must be exactly the images the
// project pulls, each with the platforms a run fetches and every file:line
// that names it.

import path from 'node:path'
import t, { type Test } from 'tap'
import { formatPlatform, hostPlatform } from '../../src/oci/platform.js'
import { makeTempDir, skopeoCopy, skopeoCopyAll } from '../fixtures/clients.js'
import { dockerOrSkip, startDockerd } from '../fixtures/dockerd.js'
import { amd64, arm64, buildExtraImage, buildIndex } from '../fixtures/images.js'
import { startUpstream } from '../fixtures/upstream.js'
import { isolatedEnv, runDproxy } from '../helpers/cli.js'
import { startDaemon } from '../helpers/daemon.js'

const digest = `sha256:${'1'.repeat(64)}`
/** What a place that names no platform stands for. */
const host = formatPlatform(hostPlatform())

/** The project; `pinned` is the digest its Dockerfile pins distroless to. */
const projectWith = (pinned: string) => ({
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
    `FROM --platform=linux/arm64 \${DISTROLESS}@${pinned}`,
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
})
const project = projectWith(digest)

const expected = [
  `docker.io/docker/dockerfile:1  (${host})`,
  '  Dockerfile:1  dockerfile syntax',
  `docker.io/library/alpine:3.20  (${host})`,
  '  .github/workflows/ci.yml:10  workflow step',
  `docker.io/library/busybox:1.36  (${host})`,
  '  Dockerfile:9  dockerfile COPY --from',
  `docker.io/library/golang:1.23  (${host})`,
  '  Dockerfile:5  dockerfile RUN --mount',
  `docker.io/library/node:22-alpine  (${host})`,
  '  .github/workflows/ci.yml:5  workflow container',
  '  Dockerfile:4                dockerfile FROM',
  `docker.io/library/postgres:16  (${host})`,
  '  .gitlab-ci.yml:7  gitlab-ci service',
  '  compose.yaml:8    compose image',
  `docker.io/library/python:3.12  (${host})`,
  '  .gitlab-ci.yml:4  gitlab-ci image',
  `docker.io/library/redis:7  (${host})`,
  '  .github/workflows/ci.yml:8  workflow service',
  `gcr.io/distroless/nodejs22-debian12@${digest}  (linux/arm64)`,
  '  Dockerfile:8  dockerfile FROM  linux/arm64',
  `ghcr.io/acme/app:2.0  (${host})`,
  '  deploy/app.yaml:11  kubernetes',
  `ghcr.io/acme/migrate:1.4  (${host})`,
  '  deploy/app.yaml:8  kubernetes',
  `mcr.microsoft.com/devcontainers/typescript-node:22  (${host})`,
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
    images: Array<{ ref: string; registry: string; repository: string; tag?: string; digest?: string; platforms: string[]; sources: unknown[]; fetchPlatforms: string[] }>
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
    fetchPlatforms: ['linux/arm64'],
  })
  t.strictSame(doc.images.find((i) => i.repository === 'library/node')!.fetchPlatforms, [host], "$BUILDPLATFORM is the host's")
  t.strictSame(doc.problems, [{ file: 'compose.yaml', line: 10, message: 'service cache image ${CACHE_IMAGE}: needs $CACHE_IMAGE' }])
})

t.test('without --dry-run in a project with no references it says so and fetches nothing', async (t) => {
  const env = isolatedEnv(t)
  const r = await runDproxy(['prefetch'], env, { cwd: t.testdir({}) })
  t.equal(r.code, 0, r.err)
  t.equal(r.out, 'no image references found\n')
})

// The upstream holds every image the project names: multi-platform ones as a
// Docker list (node) and OCI indexes (postgres, distroless, pinned by digest),
// the rest single-platform. Every registry the project uses is mapped to the
// Hub shim, which counts the manifest GETs. Once prefetched, the images are
// pulled with the upstream stopped by skopeo, and by docker where an engine
// can run (test/fixtures/dockerd.ts; skipped with the reason otherwise).
async function projectUpstream(t: Test) {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const index = (repository: string, tag: string, format: 'docker' | 'oci') =>
    buildIndex({ repository, tag, seed: `project:${repository}`, format, platforms: [amd64, arm64], layers: [16 * 1024] })
  const images = {
    'docker/dockerfile:1': buildExtraImage('dockerfile', 'docker/dockerfile', '1'),
    'library/alpine:3.20': buildExtraImage('alpine320', 'library/alpine', '3.20'),
    'library/busybox:1.36': buildExtraImage('busybox', 'library/busybox', '1.36'),
    'library/golang:1.23': buildExtraImage('golang', 'library/golang', '1.23'),
    'library/node:22-alpine': index('library/node', '22-alpine', 'docker'),
    'library/postgres:16': index('library/postgres', '16', 'oci'),
    'library/python:3.12': buildExtraImage('python', 'library/python', '3.12'),
    'library/redis:7': buildExtraImage('redis', 'library/redis', '7'),
    'distroless/nodejs22-debian12:nonroot': index('distroless/nodejs22-debian12', 'nonroot', 'oci'),
    'acme/app:2.0': buildExtraImage('app', 'acme/app', '2.0'),
    'acme/migrate:1.4': buildExtraImage('migrate', 'acme/migrate', '1.4'),
    'devcontainers/typescript-node:22': buildExtraImage('devcontainer', 'devcontainers/typescript-node', '22'),
  }
  for (const image of Object.values(images)) await up.retag(image.repository, image.tag, image)
  const upstreams = ['docker.io', 'gcr.io', 'ghcr.io', 'mcr.microsoft.com'].map((r) => `${r}=${up.hubUrl}`).join(',')
  return { up, images, upstreams, pinned: images['distroless/nodejs22-debian12:nonroot'].digest }
}

interface Event {
  type: string
  image?: string
  state?: string
  fetched?: number
  upToDate?: number
  refreshed?: number
  failed?: unknown[]
  hubPulls?: number
  pulls?: number
  atLeast?: boolean
}

const events = (out: string) => out.trim().split('\n').map((l) => JSON.parse(l) as Event)

t.test('prefetch --platform all caches every image of the project, every platform, for offline pulls', async (t) => {
  const { up, images, upstreams, pinned } = await projectUpstream(t)
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: upstreams }, { project: projectWith(pinned) })
  const dir = path.join(path.dirname(env.HOME!), 'project')

  // No daemon runs: the command starts one for the run. --json: NDJSON events as they happen.
  const first = await runDproxy(['prefetch', '--platform', 'all', '--json'], env, { cwd: dir })
  t.equal(first.code, 0, first.err)
  t.equal(first.err, 'compose.yaml:10: service cache image ${CACHE_IMAGE}: needs $CACHE_IMAGE\n')
  const ev = events(first.out)
  t.equal(ev[0]!.type, 'image')
  // Before the run: one GET per tag; the children of an index not cached yet are not known ("at least").
  t.match(ev.find((e) => e.type === 'plan'), { pulls: 12, atLeast: true })
  const summary = ev.at(-1)!
  t.match(summary, { type: 'summary', fetched: 12, upToDate: 0, refreshed: 0, failed: [], pulls: 12 + 3 * 2 })
  t.equal(summary.pulls, up.hub.counts.manifestGet, 'the summary counts the GETs the upstream saw')
  // One HEAD per tag for the whole run: the counting pass's answer is the one the fetch uses.
  const tagged = Object.values(images).filter((i) => i.repository !== 'distroless/nodejs22-debian12')
  const onceEach = Object.fromEntries(tagged.map((i) => [i.repository, 1]))
  t.strictSame(up.hub.counts.manifestHeadByRepo, onceEach, 'exactly one manifest HEAD per tag')
  const states = new Set(ev.filter((e) => e.type === 'image').map((e) => e.state))
  t.strictSame([...states].sort(), ['checking', 'fetched', 'fetching', 'queued'])

  // Again: all up to date, and not one counted manifest GET.
  up.hub.resetCounts()
  const second = await runDproxy(['prefetch', '--platform', 'all'], env, { cwd: dir })
  t.equal(second.code, 0, second.err)
  t.equal(up.hub.counts.manifestGet, 0, 'no counted manifest GET')
  t.strictSame(up.hub.counts.manifestHeadByRepo, onceEach, 'again one HEAD per tag')
  t.match(second.out, /^12 images; 0 counted manifest GETs \(0 from Docker Hub\) needed\n/)
  t.match(second.out, /\n12 up to date, 0 refreshed, 0 fetched, 0 failed; 0B from upstream; 0 Docker Hub pulls spent\n$/)

  // Upstream moves redis:7: the next prefetch refreshes that one only.
  await up.retag('library/redis', '7', buildExtraImage('redis-next', 'library/redis', '7'))
  up.hub.resetCounts()
  const third = await runDproxy(['prefetch', '--platform', 'all'], env, { cwd: dir })
  t.equal(third.code, 0, third.err)
  t.match(third.out, /^refreshed  docker\.io\/library\/redis:7  2 blobs, /m)
  t.match(third.out, /11 up to date, 1 refreshed, 0 fetched, 0 failed; .* 1 Docker Hub pull spent\n$/)
  t.equal(up.hub.counts.manifestGet, 1)

  // --max-pulls refuses a run that would spend more, before spending any.
  await up.retag('library/python', '3.12', buildExtraImage('python-next', 'library/python', '3.12'))
  await up.retag('library/golang', '1.23', buildExtraImage('golang-next', 'library/golang', '1.23'))
  up.hub.resetCounts()
  const refused = await runDproxy(['prefetch', '--platform', 'all', '--max-pulls', '1'], env, { cwd: dir })
  t.equal(refused.code, 1)
  t.match(refused.err, 'dproxy: refused: this run would spend 2 pulls, more than --max-pulls 1\n')
  t.equal(up.hub.counts.manifestGet, 0, 'nothing was spent')

  // Upstream gone: every image, every platform, pulls from the cache with skopeo (digests preserved).
  await up.stop()
  const daemon = await startDaemon(t, up, { cacheDir: env.DPROXY_CACHE_DIR!, upstreams: Object.fromEntries(upstreams.split(',').map((p) => p.split('=') as [string, string])) })
  const host = daemon.url.replace('http://', '')
  const listed = await runDproxy(['prefetch', '--dry-run', '--json'], env, { cwd: dir })
  const refs = (JSON.parse(listed.out) as { images: Array<{ ref: string }> }).images.map((i) => i.ref)
  t.equal(refs.length, 12)
  for (const ref of refs) {
    const dest = path.join(makeTempDir('dproxy-copy-', t), 'image')
    await t.resolves(skopeoCopyAll(`${host}/${ref}`, dest), `skopeo copy --all ${ref}`)
  }

  // And the real Docker Engine, where one can run here: each image for this machine's platform.
  await t.test('docker pulls every prefetched image with the upstream stopped', async (t) => {
    if (!dockerOrSkip(t)) return
    const engine = await startDockerd(t)
    t.teardown(() => engine.stop())
    for (const ref of refs) {
      const res = await engine.docker(['pull', `localhost:${daemon.port}/${ref}`], { timeoutMs: 120_000 })
      t.equal(res.code, 0, res.code === 0 ? `docker pull ${ref}` : `docker pull ${ref}: ${res.stderr.trim().split('\n').pop()}`)
    }
  })
})

t.test('without --platform each image is fetched for the platforms its files name, or the host’s; --platform wins', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  // "Other" is the fixture platform that is not this machine's, so every case differs from the default.
  const other = hostPlatform().architecture === 'arm64' ? amd64 : arm64
  const otherName = `linux/${other.architecture}`
  const index = (repository: string) =>
    buildIndex({ repository, tag: '1', seed: `platforms:${repository}`, format: 'oci', platforms: [amd64, arm64], layers: [16 * 1024] })
  const images = { base: index('library/base'), tools: index('library/tools'), db: index('library/db'), both: index('library/both') }
  for (const image of Object.values(images)) await up.retag(image.repository, image.tag, image)
  const files = {
    Dockerfile: [`ARG PLAT=${otherName}`, 'FROM --platform=$PLAT base:1', 'FROM --platform=$BUILDPLATFORM tools:1', ''].join('\n'),
    'compose.yaml': ['services:', '  db:', '    image: db:1', `    platform: ${otherName}`, '  both:', '    image: both:1', `    platform: ${otherName}`, ''].join('\n'),
    'local.images': 'both:1\n',
  }
  const env = isolatedEnv(t, { DPROXY_UPSTREAMS: `docker.io=${up.hubUrl}` }, { project: files })
  const dir = path.join(path.dirname(env.HOME!), 'project')
  const child = (image: (typeof images)['base'], arch: string) => image.children.find((c) => c.platform.architecture === arch)!.digest
  const hostArch = hostPlatform().architecture

  const listed = await runDproxy(['prefetch', '--dry-run'], env, { cwd: dir })
  t.equal(listed.code, 0, listed.err)
  const both = [host, otherName].sort().join(', ')
  t.match(listed.out, `docker.io/library/base:1  (${otherName})\n  Dockerfile:2  dockerfile FROM  ${otherName}\n`)
  t.match(listed.out, `docker.io/library/both:1  (${both})\n`)
  t.match(listed.out, `docker.io/library/tools:1  (${host})\n`)
  const given = await runDproxy(['prefetch', '--dry-run', '--json', '--platform', host], env, { cwd: dir })
  const doc = JSON.parse(given.out) as { images: Array<{ ref: string; fetchPlatforms: string[] }> }
  t.strictSame(
    doc.images.map((i) => i.fetchPlatforms),
    doc.images.map(() => [host]),
    '--platform wins over the files',
  )

  const run = await runDproxy(['prefetch', '--json'], env, { cwd: dir })
  t.equal(run.code, 0, run.err)
  t.match(events(run.out).at(-1), { type: 'summary', fetched: 4, failed: [], pulls: 4 + 5 })
  const fetched = up.hub.counts.requests
    .filter((r) => r.listener === 'hub' && r.method === 'GET' && r.status === 200)
    .map((r) => /\/manifests\/(sha256:[0-9a-f]{64})$/.exec(r.path)?.[1])
    .filter((d) => d !== undefined)
    .sort()
  t.strictSame(
    fetched,
    [
      child(images.base, other.architecture),
      child(images.tools, hostArch),
      child(images.db, other.architecture),
      child(images.both, other.architecture),
      child(images.both, hostArch),
    ].sort(),
    'exactly the children the files ask for',
  )

  // Offline, the cache serves each image for the platform it was fetched for.
  await up.stop()
  const daemon = await startDaemon(t, up, { cacheDir: env.DPROXY_CACHE_DIR! })
  const at = daemon.url.replace('http://', '')
  for (const [name, arch] of [['base', other.architecture], ['db', other.architecture], ['tools', hostArch]] as const) {
    const dest = path.join(makeTempDir('dproxy-copy-', t), 'image')
    await t.resolves(
      skopeoCopy(`docker://${at}/library/${name}:1`, `dir:${dest}`, { extraArgs: ['--override-os', 'linux', '--override-arch', arch] }),
      `${name} for linux/${arch}`,
    )
  }
})
