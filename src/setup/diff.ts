// A unified diff of one file's text before and after `dproxy setup`, shown
// before anything is written so the user sees exactly what will change. The
// files are small (a few hundred lines at most), so a plain LCS table is fast
// enough and keeps this free of dependencies.

const CONTEXT = 3

type Op = { kind: ' ' | '-' | '+'; line: string }

function lines(text: string | undefined): string[] {
  if (text === undefined || text === '') return []
  const out = text.split('\n')
  if (out[out.length - 1] === '') out.pop()
  return out
}

function script(a: string[], b: string[]): Op[] {
  const n = a.length
  const m = b.length
  // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1))
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!)
    }
  }
  const ops: Op[] = []
  let i = 0
  let j = 0
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      ops.push({ kind: ' ', line: a[i]! })
      i++
      j++
    } else if (i < n && (j === m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      ops.push({ kind: '-', line: a[i++]! })
    } else {
      ops.push({ kind: '+', line: b[j++]! })
    }
  }
  return ops
}

/**
 * `--- a/path` / `+++ b/path` and hunks with three lines of context; an empty
 * string when nothing changes. A file that does not exist (or is removed) is
 * `/dev/null` on its side, as git prints it.
 */
export function unifiedDiff(path: string, before: string | undefined, after: string | undefined): string {
  if (before === after) return ''
  const ops = script(lines(before), lines(after))
  const out = [`--- ${before === undefined ? '/dev/null' : `a${path}`}`, `+++ ${after === undefined ? '/dev/null' : `b${path}`}`]
  let k = 0
  while (k < ops.length) {
    if (ops[k]!.kind === ' ') {
      k++
      continue
    }
    // A hunk: from CONTEXT lines before this change to CONTEXT lines after the last change that is close enough.
    const start = Math.max(0, k - CONTEXT)
    let end = k
    while (end < ops.length) {
      let next = end
      while (next < ops.length && ops[next]!.kind === ' ') next++
      if (next === ops.length || next - end > 2 * CONTEXT) break
      while (next < ops.length && ops[next]!.kind !== ' ') next++
      end = next
    }
    const stop = Math.min(ops.length, end + CONTEXT)
    let aLine = 1
    let bLine = 1
    for (let x = 0; x < start; x++) {
      if (ops[x]!.kind !== '+') aLine++
      if (ops[x]!.kind !== '-') bLine++
    }
    const hunk = ops.slice(start, stop)
    const aCount = hunk.filter((o) => o.kind !== '+').length
    const bCount = hunk.filter((o) => o.kind !== '-').length
    out.push(`@@ -${aCount === 0 ? aLine - 1 : aLine},${aCount} +${bCount === 0 ? bLine - 1 : bLine},${bCount} @@`)
    for (const o of hunk) out.push(`${o.kind}${o.line}`)
    k = stop
  }
  return out.join('\n') + '\n'
}
