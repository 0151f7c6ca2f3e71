// Reading YAML for the scanners without losing where things are: every file
// is parsed into nodes (parseAllDocuments with a LineCounter) rather than
// plain objects, so each image can be reported with its line. The helpers
// follow aliases and `<<` merge keys the way the plain-object view would,
// which compose files and GitLab templates use a lot.

import {
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseAllDocuments,
  type Document,
  type Node,
} from 'yaml'
import type { Problem } from './types.js'

export interface YamlFile {
  docs: Document.Parsed[]
  lineOf(node: Node | null | undefined): number
  /** Parse errors, one per document that has any (warnings such as unknown tags are ignored). */
  problems: Problem[]
}

export function parseYaml(text: string, file: string): YamlFile {
  const lines = new LineCounter()
  const parsed = parseAllDocuments(text, { lineCounter: lines, merge: true, prettyErrors: false, uniqueKeys: false })
  const all = Array.isArray(parsed) ? parsed : []
  const lineAt = (offset: number) => lines.linePos(offset).line
  const problems: Problem[] = []
  const docs: Document.Parsed[] = []
  for (const doc of all) {
    const err = doc.errors[0]
    if (err) problems.push({ file, line: lineAt(err.pos[0]), message: `not valid YAML: ${firstLine(err.message)}` })
    else docs.push(doc)
  }
  return {
    docs,
    problems,
    lineOf: (node) => (node?.range ? lineAt(node.range[0]) : 0),
  }
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim()
}

const merge = Symbol('merge key')

/** A pair's key as text, or `merge` for `<<` (which the parser gives as a symbol when merge keys are on). */
function keyOf(key: unknown): string | typeof merge | undefined {
  if (!isScalar(key)) return undefined
  if (key.value === '<<' || typeof key.value === 'symbol') return merge
  return typeof key.value === 'string' || typeof key.value === 'number' ? String(key.value) : undefined
}

/** Follows an alias to the node it names. */
export function deref(node: unknown, doc: Document.Parsed): Node | undefined {
  let n = node
  for (let hops = 0; isAlias(n) && hops < 16; hops++) n = n.resolve(doc)
  return isMap(n) || isSeq(n) || isScalar(n) ? n : undefined
}

/**
 * A mapping's value for `key`, looking into `<<` merges when the key is not set directly. `seen`
 * visits each merged mapping once, so hostile merge chains cost no more than the file's size.
 */
export function get(node: unknown, key: string, doc: Document.Parsed, seen = new Set<unknown>()): Node | undefined {
  const map = deref(node, doc)
  if (!isMap(map) || seen.has(map)) return undefined
  seen.add(map)
  let merged: Node | undefined
  for (const pair of map.items) {
    const k = keyOf(pair.key)
    if (k === key) return deref(pair.value, doc)
    if (k === merge && merged === undefined) {
      const sources = deref(pair.value, doc)
      for (const source of isSeq(sources) ? sources.items : [sources]) {
        merged ??= get(source, key, doc, seen)
      }
    }
  }
  return merged
}

/** A mapping's entries (own keys, then keys merged in with `<<`), skipping the merge keys themselves. */
export function entries(node: unknown, doc: Document.Parsed, seen = new Set<unknown>()): Array<[string, Node | undefined]> {
  const map = deref(node, doc)
  if (!isMap(map) || seen.has(map)) return []
  seen.add(map)
  const out = new Map<string, Node | undefined>()
  const merges: unknown[] = []
  for (const pair of map.items) {
    const k = keyOf(pair.key)
    if (k === merge) {
      const sources = deref(pair.value, doc)
      merges.push(...(isSeq(sources) ? sources.items : [sources]))
    } else if (k !== undefined) {
      out.set(k, deref(pair.value, doc))
    }
  }
  for (const source of merges) {
    for (const [k, v] of entries(source, doc, seen)) if (!out.has(k)) out.set(k, v)
  }
  return [...out]
}

/** A sequence's items (an empty list for anything else). */
export function items(node: unknown, doc: Document.Parsed): Array<Node | undefined> {
  const seq = deref(node, doc)
  return isSeq(seq) ? seq.items.map((i) => deref(i, doc)) : []
}

/** A scalar's text: strings as they are, numbers and booleans as written. */
export function text(node: unknown): string | undefined {
  if (!isScalar(node)) return undefined
  const v = node.value
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return node.source ?? String(v)
  return undefined
}

export { isMap, isScalar, isSeq }
