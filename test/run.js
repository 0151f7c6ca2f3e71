#!/usr/bin/env node
// `npm test`: runs tap over the whole suite (or the files given) and ends with
// the plain summary line CI reads, `N passed, N failed[, N skipped]`. tap's
// TAP output is passed through untouched; its final `# { total, pass, ... }`
// comment is where the counts come from.

import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const tapBin = fileURLToPath(new URL('../node_modules/tap/dist/esm/run.mjs', import.meta.url))
const child = spawn(process.execPath, [tapBin, '--reporter=tap', ...process.argv.slice(2)], {
  stdio: ['ignore', 'pipe', 'inherit'],
})

let counts
let tail = ''
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk)
  tail = (tail + chunk.toString('utf8')).split('\n').slice(-50).join('\n')
  const m = /^# (\{ total: .*\})\s*$/m.exec(tail)
  if (m) counts = m[1]
})

child.on('close', (code, signal) => {
  const get = (key) => Number((counts && new RegExp(`\\b${key}: (\\d+)`).exec(counts)?.[1]) ?? 0)
  const passed = get('pass')
  const failed = get('fail') + (counts ? 0 : 1)
  const skipped = get('skip') + get('todo')
  process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`)
  process.exitCode = code ?? (signal ? 1 : 0)
})
