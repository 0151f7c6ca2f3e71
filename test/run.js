#!/usr/bin/env node
// `npm test`: runs tap over the whole suite (or the files given) and ends with
// the plain summary line CI reads, `N passed, N failed[, N skipped]`. tap's
// TAP output is passed through untouched; its final `# { total, pass, ... }`
// comment is where the counts come from. Before that line it prints the ten
// slowest test files with their wall times, which tap records per test
// process in .tap/processinfo/*.json (`externalID` is the file, `runtime` its
// milliseconds from start to exit, loading included; the `# time=` of the TAP
// stream counts only the tests, not the seconds of loading before them).
//
// Coverage (package.json's "tap" section) is measured on every run, but its
// floor is for the whole suite: a run of a few files covers a few modules,
// so only a full run fails (exits non-zero) when coverage is under the floor,
// and says so after the summary line.

import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const tapBin = fileURLToPath(new URL('../node_modules/tap/dist/esm/run.mjs', import.meta.url))
const args = process.argv.slice(2)
const partial = args.some((a) => !a.startsWith('-'))
const child = spawn(process.execPath, [tapBin, '--reporter=tap', ...(partial ? ['--allow-incomplete-coverage'] : []), ...args], {
  stdio: ['ignore', 'pipe', 'inherit'],
})

let counts
const underFloor = []
let tail = ''
let line = ''
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk)
  const text = chunk.toString('utf8')
  tail = (tail + text).split('\n').slice(-50).join('\n')
  const m = /^# (\{ total: .*\})\s*$/m.exec(tail)
  if (m) counts = m[1]
  const lines = (line + text).split('\n')
  line = lines.pop()
  for (const l of lines) {
    const c = /^# ERROR: incomplete (\w+) coverage \(([\d.]+)%\)/.exec(l)
    if (c) underFloor.push(`${c[1]} ${c[2]}%`)
  }
})

/** [file, ms] of the test files tap ran, slowest first; child processes they start are left out. */
function fileTimes() {
  const dir = join(process.cwd(), '.tap', 'processinfo')
  let names = []
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'))
  } catch {
    return []
  }
  const times = []
  for (const name of names) {
    try {
      const info = JSON.parse(readFileSync(join(dir, name), 'utf8'))
      if (info.parent === null && typeof info.externalID === 'string' && typeof info.runtime === 'number') times.push([info.externalID, info.runtime])
    } catch {
      // A file being written or not tap's: not a time to report.
    }
  }
  return times.sort((a, b) => b[1] - a[1])
}

child.on('close', (code, signal) => {
  const get = (key) => Number((counts && new RegExp(`\\b${key}: (\\d+)`).exec(counts)?.[1]) ?? 0)
  const passed = get('pass')
  const failed = get('fail') + (counts ? 0 : 1)
  const skipped = get('skip') + get('todo')
  const slowest = fileTimes().slice(0, 10)
  if (slowest.length > 0) {
    process.stdout.write('\n# slowest test files (wall time)\n')
    for (const [file, ms] of slowest) process.stdout.write(`# ${(ms / 1000).toFixed(1).padStart(6)} s  ${file}\n`)
  }
  process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`)
  if (underFloor.length > 0 && !partial) process.stdout.write(`coverage under the floor: ${underFloor.join(', ')}\n`)
  process.exitCode = code ?? (signal ? 1 : 0)
})
