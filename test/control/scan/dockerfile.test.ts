import t from 'tap'
import { scanDockerfile } from '../../../src/control/scan/dockerfile.js'

const places = (r: ReturnType<typeof scanDockerfile>) => r.refs.map((x) => [x.line, x.kind, x.raw, x.platform ?? ''])

t.test('FROM with global ARG defaults, platforms, stages skipped', async (t) => {
  const r = scanDockerfile(
    [
      '# syntax=docker/dockerfile:1.7',
      'ARG NODE=20',
      'ARG DISTRO=alpine',
      'FROM --platform=$BUILDPLATFORM node:${NODE}-${DISTRO} AS build',
      'RUN --mount=type=cache,target=/root/.npm --mount=type=bind,from=golang:1.22,target=/go true',
      'COPY --from=busybox:1.36 /bin/sh /sh',
      'FROM build AS test',
      'COPY --from=BUILD /a /a',
      'COPY --from=0 /b /b',
      'FROM --platform=linux/arm64 debian:12',
      'RUN --mount=from=test,target=/t true',
      'FROM scratch',
      '',
    ].join('\n'),
    '/p/Dockerfile',
  )
  t.strictSame(places(r), [
    [1, 'dockerfile syntax', 'docker/dockerfile:1.7', ''],
    [4, 'dockerfile FROM', 'node:20-alpine', ''],
    [5, 'dockerfile RUN --mount', 'golang:1.22', ''],
    [6, 'dockerfile COPY --from', 'busybox:1.36', ''],
    [10, 'dockerfile FROM', 'debian:12', 'linux/arm64'],
  ])
  t.strictSame(r.problems, [])
})

t.test('build args override defaults; an ARG without a value is reported, not guessed', async (t) => {
  const text = ['ARG NODE=20', 'ARG BASE', 'FROM node:${NODE}', 'FROM ${BASE}:1', ''].join('\n')
  const plain = scanDockerfile(text, 'Dockerfile')
  t.strictSame(places(plain), [[3, 'dockerfile FROM', 'node:20', '']])
  t.strictSame(plain.problems, [{ file: 'Dockerfile', line: 4, message: 'FROM ${BASE}:1: needs $BASE (an ARG with no default)' }])
  const built = scanDockerfile(text, 'Dockerfile', { buildArgs: { NODE: '22', BASE: 'ghcr.io/o/base', OTHER: 'x' } })
  t.strictSame(places(built), [
    [3, 'dockerfile FROM', 'node:22', ''],
    [4, 'dockerfile FROM', 'ghcr.io/o/base:1', ''],
  ])
  t.strictSame(built.problems, [])
})

t.test('an ARG after the first FROM is not in scope for FROM, but is for COPY --from', async (t) => {
  const r = scanDockerfile(['FROM alpine', 'ARG TOOLS=ghcr.io/o/tools:1', 'COPY --from=${TOOLS} /t /t', 'FROM ${TOOLS}', ''].join('\n'), 'D')
  t.strictSame(places(r), [
    [1, 'dockerfile FROM', 'alpine', ''],
    [3, 'dockerfile COPY --from', 'ghcr.io/o/tools:1', ''],
  ])
  t.match(r.problems, [{ line: 4, message: /needs \$TOOLS/ }])
})

t.test('line offset for a Dockerfile inside another file', async (t) => {
  const r = scanDockerfile('FROM alpine\n', 'compose.yaml', { lineOffset: 7 })
  t.equal(r.refs[0]!.line, 8)
})

t.test('a build for a platform: $TARGETPLATFORM and what the target pulls name it; $BUILDPLATFORM stays the host', async (t) => {
  const text = [
    'ARG PLAT=linux/arm64',
    'FROM --platform=$BUILDPLATFORM golang:1.23 AS build',
    'FROM --platform=$TARGETPLATFORM alpine:3.20',
    'FROM --platform=linux/$TARGETARCH debian:12',
    'FROM --platform=$PLAT node:22',
    'FROM busybox:1.36',
    'COPY --from=ghcr.io/o/tools:1 /t /t',
    '',
  ].join('\n')
  t.strictSame(places(scanDockerfile(text, 'D')), [
    [2, 'dockerfile FROM', 'golang:1.23', ''],
    [3, 'dockerfile FROM', 'alpine:3.20', ''],
    [4, 'dockerfile FROM', 'debian:12', ''],
    [5, 'dockerfile FROM', 'node:22', 'linux/arm64'],
    [6, 'dockerfile FROM', 'busybox:1.36', ''],
    [7, 'dockerfile COPY --from', 'ghcr.io/o/tools:1', ''],
  ])
  t.strictSame(places(scanDockerfile(text, 'D', { targetPlatform: 'linux/riscv64', buildArgs: { PLAT: 'linux/s390x' } })), [
    [2, 'dockerfile FROM', 'golang:1.23', ''],
    [3, 'dockerfile FROM', 'alpine:3.20', 'linux/riscv64'],
    [4, 'dockerfile FROM', 'debian:12', 'linux/riscv64'],
    [5, 'dockerfile FROM', 'node:22', 'linux/s390x'],
    [6, 'dockerfile FROM', 'busybox:1.36', 'linux/riscv64'],
    [7, 'dockerfile COPY --from', 'ghcr.io/o/tools:1', 'linux/riscv64'],
  ])
})
