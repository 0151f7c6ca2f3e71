import path from 'node:path'
import t from 'tap'
import { scanDevcontainer } from '../../../src/control/scan/devcontainer.js'

const file = path.resolve('/p/.devcontainer/devcontainer.json')

t.test('image with localEnv defaults, JSON with comments and trailing commas', async (t) => {
  const r = scanDevcontainer(
    ['{', '  // the base', '  "name": "x",', '  "image": "mcr.microsoft.com/devcontainers/base:${localEnv:VARIANT:bookworm}",', '}', ''].join('\n'),
    file,
  )
  t.strictSame(r.refs, [{ raw: 'mcr.microsoft.com/devcontainers/base:bookworm', file, line: 4, kind: 'devcontainer image' }])
  t.strictSame(r.problems, [])
})

t.test('dockerComposeFile (string or list) and build', async (t) => {
  const r = scanDevcontainer(
    [
      '{',
      '  "dockerComposeFile": ["../compose.yaml", "dev.yml"],',
      '  "build": { "dockerfile": "Dockerfile", "context": "..", "args": { "V": "1", "N": 2 } },',
      '}',
    ].join('\n'),
    file,
  )
  t.strictSame(r.composeFiles, [
    { path: path.resolve('/p/compose.yaml'), line: 2 },
    { path: path.resolve('/p/.devcontainer/dev.yml'), line: 2 },
  ])
  t.strictSame(r.builds, [{ dockerfile: path.resolve('/p/.devcontainer/Dockerfile'), args: { V: '1' }, file, line: 3 }])
  t.strictSame(scanDevcontainer('{"dockerComposeFile": "c.yml"}', file).composeFiles, [{ path: path.resolve('/p/.devcontainer/c.yml'), line: 1 }])
})

t.test('machine-dependent variables and broken JSON are reported', async (t) => {
  const r = scanDevcontainer('{\n"image": "${localEnv:IMG}"\n}', file)
  t.strictSame(r.refs, [])
  t.strictSame(r.problems, [{ file, line: 2, message: 'image ${localEnv:IMG}: needs ${localEnv:IMG}' }])
  t.match(scanDevcontainer('{\n"image": \n', file).problems, [{ file, message: /not valid JSON/ }])
})
