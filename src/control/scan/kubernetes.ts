// Images in Kubernetes manifests: every `containers`, `initContainers` and
// `ephemeralContainers` list at any depth of a document that has `apiVersion`
// and `kind`, which covers Pods, the workload kinds that embed a pod template
// (Deployment, StatefulSet, DaemonSet, Job, CronJob...), `List`s of them, and
// custom resources shaped the same way. Many YAML files are not manifests, so
// `looksLikeManifest` lets the walker skip them without parsing.

import type { Document } from 'yaml'
import type { ScanResult } from './types.js'
import { entries, get, isMap, isSeq, items, parseYaml, text } from './yaml.js'

const containerLists = new Set(['containers', 'initContainers', 'ephemeralContainers'])
/** Deeper than any real manifest; bounds the walk over hostile input. */
const maxDepth = 64
/** Aliases make a small file a huge tree (`b: [*a, *a]`, `c: [*b, *b]`...): nodes visited per file. */
const maxVisits = 100_000

export function looksLikeManifest(source: string): boolean {
  return /^\s*apiVersion\s*:/m.test(source) && /(?:containers|Containers)\s*:/.test(source)
}

export function scanKubernetes(source: string, file: string): ScanResult {
  const yaml = parseYaml(source, file)
  const out: ScanResult = { refs: [], problems: [] }
  let visits = 0
  const walk = (node: unknown, doc: Document.Parsed, depth: number) => {
    if (depth > maxDepth || ++visits > maxVisits) return
    if (isSeq(node)) for (const item of items(node, doc)) walk(item, doc, depth + 1)
    if (!isMap(node)) return
    for (const [key, value] of entries(node, doc)) {
      if (containerLists.has(key) && isSeq(value)) {
        for (const container of items(value, doc)) {
          const image = get(container, 'image', doc)
          const raw = text(image)
          if (raw === undefined) continue
          const line = yaml.lineOf(image)
          if (/\{\{|\$\{\{/.test(raw)) out.problems.push({ file, line, message: `image ${raw}: a template, not a reference` })
          else out.refs.push({ raw: raw.trim(), file, line, kind: 'kubernetes' })
        }
      } else {
        walk(value, doc, depth + 1)
      }
    }
  }
  for (const doc of yaml.docs) {
    if (text(get(doc.contents, 'apiVersion', doc)) === undefined || text(get(doc.contents, 'kind', doc)) === undefined) continue
    walk(doc.contents, doc, 0)
  }
  if (visits > maxVisits) out.problems.push({ file, line: 0, message: `more than ${maxVisits} YAML nodes (aliases?), not read to the end` })
  // A broken document is worth a line only in a file that is otherwise a manifest.
  if (yaml.docs.some((doc) => text(get(doc.contents, 'kind', doc)) !== undefined)) out.problems.push(...yaml.problems)
  return out
}
