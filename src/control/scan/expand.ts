// Shell-style variable expansion as Dockerfiles, compose files and GitLab CI
// do it: `$NAME`, `${NAME}` and the POSIX forms `${NAME:-word}`,
// `${NAME-word}`, `${NAME:+word}`, `${NAME+word}`, `${NAME:?msg}`,
// `${NAME?msg}`. A variable the lookup does not know is never replaced by a
// guess: it stays in the text as written and is listed in `missing`, so the
// caller can say "needs $NAME" with the file and line.

export type Lookup = (name: string) => string | undefined

export interface Expansion {
  value: string
  /** Variables with no value and no default, in order of appearance, once each. */
  missing: string[]
  /** Set when the text uses a form this expander does not implement (`${NAME#pattern}`...). */
  unsupported?: string
}

export interface ExpandOptions {
  /** Compose writes a literal `$` as `$$`. */
  dollarEscape?: boolean
}

const nameStart = /[A-Za-z_]/
const nameChar = /[A-Za-z0-9_]/
/** Nesting bound for defaults that contain variables (`${A:-${B:-x}}`). */
const maxDepth = 8

export function expandVariables(text: string, lookup: Lookup, options: ExpandOptions = {}, depth = 0): Expansion {
  const missing: string[] = []
  let unsupported: string | undefined
  let out = ''
  let i = 0
  const miss = (name: string) => {
    if (!missing.includes(name)) missing.push(name)
  }
  while (i < text.length) {
    const c = text[i]!
    if (c !== '$') {
      out += c
      i++
      continue
    }
    const next = text[i + 1]
    if (options.dollarEscape && next === '$') {
      out += '$'
      i += 2
      continue
    }
    if (next !== undefined && nameStart.test(next)) {
      let j = i + 1
      while (j < text.length && nameChar.test(text[j]!)) j++
      const name = text.slice(i + 1, j)
      const value = lookup(name)
      if (value === undefined) {
        miss(name)
        out += text.slice(i, j)
      } else {
        out += value
      }
      i = j
      continue
    }
    if (next === '{') {
      const end = closingBrace(text, i + 2)
      if (end < 0) {
        unsupported ??= text.slice(i)
        out += text.slice(i)
        break
      }
      const body = text.slice(i + 2, end)
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])([\s\S]*))?$/.exec(body)
      if (!m || depth >= maxDepth) {
        unsupported ??= text.slice(i, end + 1)
        out += text.slice(i, end + 1)
        i = end + 1
        continue
      }
      const [, name, op, word = ''] = m
      const value = lookup(name!)
      const set = value !== undefined && (!op?.startsWith(':') || value !== '')
      const inner = () => {
        const e = expandVariables(word, lookup, options, depth + 1)
        e.missing.forEach(miss)
        unsupported ??= e.unsupported
        return e.value
      }
      if (op === undefined) {
        if (value === undefined) {
          miss(name!)
          out += text.slice(i, end + 1)
        } else out += value
      } else if (op.endsWith('-')) {
        out += set ? value : inner()
      } else if (op.endsWith('+')) {
        out += set ? inner() : ''
      } else if (set) {
        out += value
      } else {
        miss(name!)
        out += text.slice(i, end + 1)
      }
      i = end + 1
      continue
    }
    out += c
    i++
  }
  return unsupported === undefined ? { value: out, missing } : { value: out, missing, unsupported }
}

function closingBrace(text: string, from: number): number {
  let depth = 1
  for (let i = from; i < text.length; i++) {
    if (text[i] === '{') depth++
    else if (text[i] === '}' && --depth === 0) return i
  }
  return -1
}

/** "needs $A, $B" */
export function needs(missing: string[]): string {
  return `needs ${missing.map((n) => `$${n}`).join(', ')}`
}
