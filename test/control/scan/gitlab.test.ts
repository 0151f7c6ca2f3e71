import t from 'tap'
import { gitlabIncludes, scanGitlabCi } from '../../../src/control/scan/gitlab.js'

t.test('image and services in every form, the dependency proxy prefix, variables', async (t) => {
  const main = [
    'variables:',
    '  PY: "3.12"',
    '  PROXY: $CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX',
    '  REG:',
    '    value: ghcr.io/o',
    'image: alpine:3.20',
    'default:',
    '  image: $CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX/python:${PY}',
    '  services:',
    '    - ${CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX}/postgres:16',
    'test:',
    '  variables:',
    '    PY: "3.13"',
    '  image:',
    '    name: $PROXY/python:$PY',
    '  services:',
    '    - name: $REG/tool:1',
    '      alias: tool',
    '    - $CI_DEPENDENCY_PROXY_SERVER/g/dependency_proxy/containers/redis:7',
    '.template:',
    '  image: $CI_REGISTRY_IMAGE/builder',
    'stages: [test]',
    '',
  ].join('\n')
  const r = scanGitlabCi([
    { file: '.gitlab-ci.yml', source: main },
    { file: 'ci/lint.yml', source: 'lint:\n  image: node:${NODE}\nvariables:\n  PY: "2"\n' },
  ])
  t.strictSame(
    r.refs.map((x) => [x.file, x.line, x.kind, x.raw]),
    [
      ['.gitlab-ci.yml', 6, 'gitlab-ci image', 'alpine:3.20'],
      ['.gitlab-ci.yml', 8, 'gitlab-ci image', 'python:3.12'],
      ['.gitlab-ci.yml', 10, 'gitlab-ci service', 'postgres:16'],
      ['.gitlab-ci.yml', 15, 'gitlab-ci image', 'python:3.13'],
      ['.gitlab-ci.yml', 17, 'gitlab-ci service', 'ghcr.io/o/tool:1'],
      ['.gitlab-ci.yml', 19, 'gitlab-ci service', 'g/dependency_proxy/containers/redis:7'],
    ],
  )
  t.strictSame(r.problems, [
    { file: '.gitlab-ci.yml', line: 21, message: 'job .template image $CI_REGISTRY_IMAGE/builder: needs $CI_REGISTRY_IMAGE' },
    { file: 'ci/lint.yml', line: 2, message: 'job lint image node:${NODE}: needs $NODE' },
  ])
})

t.test('a variable of an included file is used; the main file wins over it', async (t) => {
  const r = scanGitlabCi([
    { file: 'main.yml', source: 'variables:\n  V: main\nj:\n  image: a:$V-$W\n' },
    { file: 'inc.yml', source: 'variables:\n  V: inc\n  W: w\n' },
  ])
  t.strictSame(r.refs.map((x) => x.raw), ['a:main-w'])
})

t.test('gitlabIncludes lists local includes and reports the others', async (t) => {
  const list = gitlabIncludes(
    [
      'include:',
      '  - ci/a.yml',
      '  - local: /ci/b.yml',
      '  - remote: https://example.invalid/c.yml',
      '  - https://example.invalid/d.yml',
      '  - project: g/p',
      '    file: x.yml',
      '',
    ].join('\n'),
    'f',
  )
  t.strictSame(list.local, [
    { path: 'ci/a.yml', line: 2 },
    { path: '/ci/b.yml', line: 3 },
  ])
  t.match(list.problems, [
    { line: 4, message: /'remote' is not scanned/ },
    { line: 5, message: /remote include/ },
    { line: 6, message: /'project' is not scanned/ },
  ])
  t.strictSame(gitlabIncludes("include: 'one.yml'\n", 'f').local, [{ path: 'one.yml', line: 1 }])
  t.strictSame(gitlabIncludes('include:\n  local: two.yml\n', 'f').local, [{ path: 'two.yml', line: 2 }])
})
