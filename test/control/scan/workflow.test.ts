import t from 'tap'
import { scanWorkflow } from '../../../src/control/scan/workflow.js'

t.test('job containers, services and docker:// steps; expressions reported', async (t) => {
  const r = scanWorkflow(
    [
      'on: push',
      'jobs:',
      '  a:',
      '    runs-on: ubuntu-latest',
      '    container: node:20',
      '    services:',
      '      db:',
      '        image: postgres:16',
      '      none:',
      '        ports: [1]',
      '    steps:',
      '      - uses: actions/checkout@v4',
      '      - uses: docker://ghcr.io/o/action:1',
      '      - run: echo',
      '  b:',
      '    container:',
      '      image: debian:12',
      '      options: --cpus 1',
      '  c:',
      '    container: ${{ matrix.image }}',
      '',
    ].join('\n'),
    'ci.yml',
  )
  t.strictSame(
    r.refs.map((x) => [x.line, x.kind, x.raw]),
    [
      [5, 'workflow container', 'node:20'],
      [8, 'workflow service', 'postgres:16'],
      [13, 'workflow step', 'ghcr.io/o/action:1'],
      [17, 'workflow container', 'debian:12'],
    ],
  )
  t.strictSame(r.problems, [
    { file: 'ci.yml', line: 20, message: 'job c container ${{ matrix.image }}: needs ${{ matrix.image }} (known only when the workflow runs)' },
  ])
})
