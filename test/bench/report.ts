// What the bench prints: one row per number, each with the baseline measured in
// the same run, the ratio between them, the target and a verdict. People read the
// table; tools read the single JSON line after it. Rows are built by the
// measurements and only formatted here, so every number is judged and shown the
// same way.

export type Verdict = 'PASS' | 'MISS' | 'INFO'

export interface Row {
  /** Stable key, also the key of the row's raw numbers in the JSON. */
  id: string
  metric: string
  dproxy: string
  baseline: string
  /** dproxy relative to the baseline; what it means is said in README.md per row. */
  ratio: number | null
  target: string
  /** INFO: no target was set for this number; it is reported for comparison only. */
  verdict: Verdict
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export function verdict(pass: boolean): Verdict {
  return pass ? 'PASS' : 'MISS'
}

export const MiB = 1024 * 1024
export const MB = 1_000_000

export function fixed(value: number, digits = 1): string {
  return Number.isFinite(value) ? value.toFixed(digits) : String(value)
}

export function formatRatio(ratio: number | null): string {
  return ratio === null || !Number.isFinite(ratio) ? '-' : `${ratio.toFixed(2)}x`
}

export function formatTable(rows: readonly Row[]): string {
  const header = ['metric', 'dproxy', 'baseline', 'ratio', 'target', 'result']
  const cells = rows.map((r) => [r.metric, r.dproxy, r.baseline, formatRatio(r.ratio), r.target, r.verdict])
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const line = (c: string[]) => c.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd()
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n')
}
