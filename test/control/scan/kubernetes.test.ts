import t from 'tap'
import { looksLikeManifest, scanKubernetes } from '../../../src/control/scan/kubernetes.js'

t.test('containers at any depth, in every workload kind, across documents', async (t) => {
  const text = [
    'apiVersion: v1',
    'kind: Pod',
    'spec:',
    '  initContainers:',
    '    - name: init',
    '      image: busybox:1.36',
    '  containers:',
    '    - name: app',
    '      image: nginx:1.27',
    '  ephemeralContainers:',
    '    - name: debug',
    '      image: ghcr.io/o/debug',
    '---',
    'apiVersion: batch/v1',
    'kind: CronJob',
    'spec:',
    '  jobTemplate:',
    '    spec:',
    '      template:',
    '        spec:',
    '          containers:',
    '            - image: "{{ .Values.image }}"',
    '            - name: no-image',
    '---',
    'apiVersion: v1',
    'kind: List',
    'items:',
    '  - apiVersion: apps/v1',
    '    kind: Deployment',
    '    spec: { template: { spec: { containers: [ { image: redis:7 } ] } } }',
    '---',
    'containers: [ { image: not-a-manifest } ]',
    '',
  ].join('\n')
  t.ok(looksLikeManifest(text))
  const r = scanKubernetes(text, 'k.yaml')
  t.strictSame(
    r.refs.map((x) => [x.line, x.raw]),
    [
      [6, 'busybox:1.36'],
      [9, 'nginx:1.27'],
      [12, 'ghcr.io/o/debug'],
      [30, 'redis:7'],
    ],
  )
  t.strictSame(r.problems, [{ file: 'k.yaml', line: 22, message: 'image {{ .Values.image }}: a template, not a reference' }])
})

t.test('files that are not manifests are recognised without parsing', async (t) => {
  t.notOk(looksLikeManifest('name: CI\non: push\n'))
  t.notOk(looksLikeManifest('apiVersion: v1\nkind: ConfigMap\ndata: {}\n'))
})

t.test('an alias bomb is walked within a bound', async (t) => {
  const lines = ['apiVersion: v1', 'kind: List', 'a0: &a0 [{ containers: [{ image: alpine }] }]']
  for (let i = 1; i < 40; i++) lines.push(`a${i}: &a${i} [*a${i - 1}, *a${i - 1}]`)
  const r = scanKubernetes(lines.join('\n') + '\n', 'bomb.yaml')
  t.ok(r.refs.length > 0 && r.refs.length <= 100_000)
  t.match(r.problems, [{ message: /not read to the end/ }])
})
