#!/usr/bin/env node
// Sums the self time of V8 CPU profiles (.cpuprofile files, as `--cpu-prof`
// and DPROXY_BENCH_PROFILE write them) by function and file, and prints the
// top of that table: where a daemon spent its CPU, without opening DevTools.
// Several files (or a directory of them) are added together, so the five
// daemons of a cold_pull step read as one.
//
//   node test/bench/profile-summary.mjs DIR_OR_FILES... [--top 25] [--by url] [--from NAME]
//
// `--by url` sums by file (node:internal/..., dist/..., undici's) instead of
// by function. "(program)" is V8 and native work outside any JS frame
// (hashing, syscalls, the HTTP parser's WebAssembly shows under its own name);
// "(idle)" is time spent waiting, left out of the percentages. `--from NAME`
// counts each profile only from its first sample with a function NAME on the
// stack: `--from checkHost` (the daemon's first request) leaves start-up out.

import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'

const args = process.argv.slice(2)
let top = 25
let by = 'function'
let from
const inputs = []
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--top') top = Number(args[++i])
  else if (args[i] === '--by') by = args[++i]
  else if (args[i] === '--from') from = args[++i]
  else inputs.push(args[i])
}
if (inputs.length === 0 || !Number.isInteger(top) || top <= 0 || !['function', 'url'].includes(by)) {
  process.stderr.write('usage: profile-summary.mjs DIR_OR_FILES... [--top N] [--by function|url]\n')
  process.exit(2)
}

const files = inputs.flatMap((p) =>
  statSync(p).isDirectory()
    ? readdirSync(p)
        .filter((f) => f.endsWith('.cpuprofile'))
        .map((f) => join(p, f))
    : [p],
)

const cwd = process.cwd()
const shortUrl = (url) => {
  if (!url) return ''
  const path = url.startsWith('file://') ? new URL(url).pathname : url
  const nm = path.lastIndexOf('/node_modules/')
  if (nm >= 0) return path.slice(nm + 1)
  return path.startsWith('/') ? relative(cwd, path) : path
}

const selfUs = new Map()
let totalUs = 0
let idleUs = 0
for (const file of files) {
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const keyOf = new Map()
  const parentOf = new Map()
  const nameOf = new Map()
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parentOf.set(child, node.id)
    nameOf.set(node.id, node.callFrame.functionName)
    const { functionName, url, lineNumber } = node.callFrame
    const where = shortUrl(url)
    const key = by === 'url' ? where || functionName || '(anonymous)' : `${functionName || '(anonymous)'} ${where}${where ? `:${lineNumber + 1}` : ''}`
    keyOf.set(node.id, key)
  }
  const { samples, timeDeltas } = profile
  const onStack = (id, name) => {
    for (let at = id; at !== undefined; at = parentOf.get(at)) if (nameOf.get(at) === name) return true
    return false
  }
  let counting = from === undefined
  for (let i = 0; i < samples.length; i++) {
    if (!counting && !(counting = onStack(samples[i], from))) continue
    // A sample's delta is the time since the previous sample: charge it to the sample before.
    const us = timeDeltas[i + 1] ?? 0
    const key = keyOf.get(samples[i])
    if (key.startsWith('(idle)')) {
      idleUs += us
      continue
    }
    totalUs += us
    selfUs.set(key, (selfUs.get(key) ?? 0) + us)
  }
}

const rows = [...selfUs].sort((a, b) => b[1] - a[1]).slice(0, top)
const ms = (us) => (us / 1000).toFixed(0).padStart(7)
process.stdout.write(`${files.length} profile(s): ${ms(totalUs).trim()} ms busy, ${ms(idleUs).trim()} ms idle\n`)
process.stdout.write(`${'self ms'.padStart(7)}  ${'%'.padStart(5)}  ${by}\n`)
for (const [key, us] of rows) {
  process.stdout.write(`${ms(us)}  ${((100 * us) / totalUs).toFixed(1).padStart(5)}  ${key}\n`)
}
