// Durations and sizes as people write them in flags, environment variables and
// the config file ('10m', '1h30m', '20GB', '512MiB'), and back again for display.
// Parsing is strict and its errors name the setting and show an example, because
// a cache limit that silently means something else is worse than a refusal.
//
// Durations: a sequence of <number><unit> parts, units ms, s, m, h, d, w (any
// case, so 'M' is minutes: there are no months). A bare number is seconds, as
// in HTTP's Cache-Control max-age and sleep(1); '0' is zero.
// Sizes: <number>[unit]. Decimal units are powers of 1000 (k, kB, M, MB, G, GB,
// T, TB, P, PB), binary units powers of 1024 (Ki, KiB, Mi, MiB, ...), any case.
// A bare number, or the unit B, is bytes. Fractions are allowed ('1.5G') and
// the result is rounded to a whole number of bytes or milliseconds.

import { DproxyError } from '../errors.js'

const durationUnits: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
}

// Longest first so that a formatted duration reads as a person would write it.
const formatUnits: Array<[string, number]> = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1000],
  ['ms', 1],
]

const sizeUnits: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  p: 1e15,
  pb: 1e15,
  ki: 2 ** 10,
  kib: 2 ** 10,
  mi: 2 ** 20,
  mib: 2 ** 20,
  gi: 2 ** 30,
  gib: 2 ** 30,
  ti: 2 ** 40,
  tib: 2 ** 40,
  pi: 2 ** 50,
  pib: 2 ** 50,
}

const number = String.raw`(\d+(?:\.\d+)?|\.\d+)`
const durationPart = new RegExp(String.raw`^${number}\s*([a-z]+)\s*`, 'i')
const sizePattern = new RegExp(String.raw`^${number}\s*([a-z]*)$`, 'i')

function invalid(what: string, example: string, input: unknown, key: string | undefined, hint?: string): DproxyError {
  const subject = key ?? what
  const shown = typeof input === 'string' ? `'${input}'` : String(input)
  const message = `expected ${subject} like '${example}', got ${shown}${hint ? ` (${hint})` : ''}`
  return new DproxyError('CONFIG_INVALID', message, { detail: { key, value: input } })
}

/**
 * Milliseconds in a duration such as '90s', '10m', '1h30m', '7d' or '0'. A bare
 * number is seconds. `key` names the setting in the error message.
 */
export function parseDuration(input: string | number, key?: string): number {
  if (typeof input === 'number') {
    if (Number.isFinite(input) && input >= 0) return Math.round(input * 1000)
    throw invalid('a duration', '10m', input, key)
  }
  const text = input.trim()
  if (/^\d+(?:\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000)
  if (text === '') throw invalid('a duration', '10m', input, key)
  let rest = text
  let total = 0
  while (rest !== '') {
    const match = durationPart.exec(rest)
    if (!match) throw invalid('a duration', '10m', input, key, 'units: ms, s, m, h, d, w')
    const [whole, amount, unit] = match
    const scale = durationUnits[unit.toLowerCase()]
    if (scale === undefined) {
      throw invalid('a duration', '10m', input, key, `unknown unit '${unit}'; units: ms, s, m, h, d, w`)
    }
    total += Number(amount) * scale
    rest = rest.slice(whole.length)
  }
  const ms = Math.round(total)
  if (!Number.isSafeInteger(ms)) throw invalid('a duration', '10m', input, key, 'too large')
  return ms
}

/**
 * The shortest compound form of a duration: 5_400_000 -> '1h30m', 0 -> '0'.
 * parseDuration(formatDuration(ms)) === ms for every whole, non-negative ms.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`formatDuration: expected a non-negative number, got ${ms}`)
  let rest = Math.round(ms)
  if (rest === 0) return '0'
  let out = ''
  for (const [unit, scale] of formatUnits) {
    const count = Math.floor(rest / scale)
    if (count > 0) {
      out += `${count}${unit}`
      rest -= count * scale
    }
  }
  return out
}

/**
 * Bytes in a size such as '20GB', '512MiB', '1.5G', '100k' or '4096'. `key`
 * names the setting in the error message.
 */
export function parseSize(input: string | number, key?: string): number {
  if (typeof input === 'number') {
    if (Number.isSafeInteger(input) && input >= 0) return input
    throw invalid('a size', '20GB', input, key)
  }
  const match = sizePattern.exec(input.trim())
  if (!match) throw invalid('a size', '20GB', input, key)
  const [, amount, unit] = match
  const scale = sizeUnits[unit.toLowerCase()]
  if (scale === undefined) {
    throw invalid('a size', '20GB', input, key, `unknown unit '${unit}'; use B, kB, MB, GB, TB or KiB, MiB, GiB, TiB`)
  }
  const bytes = Math.round(Number(amount) * scale)
  if (!Number.isSafeInteger(bytes)) throw invalid('a size', '20GB', input, key, 'too large')
  return bytes
}

const byteUnits = ['B', 'kB', 'MB', 'GB', 'TB', 'PB']

/**
 * A size for people, in decimal units with at most three significant digits:
 * 0 -> '0B', 1536 -> '1.54kB', 20e9 -> '20GB'. The output is accepted by
 * parseSize (approximately, once rounded).
 */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`formatBytes: expected a non-negative number, got ${n}`)
  let value = n
  let unit = 0
  while (value >= 1000 && unit < byteUnits.length - 1) {
    value /= 1000
    unit++
  }
  // Rounding can carry into the next unit (999.95kB -> 1000kB); show 1MB instead.
  let shown = Number(value.toPrecision(3))
  if (shown >= 1000 && unit < byteUnits.length - 1) {
    shown = Number((shown / 1000).toPrecision(3))
    unit++
  }
  return `${unit === 0 ? Math.round(n) : shown}${byteUnits[unit]}`
}
