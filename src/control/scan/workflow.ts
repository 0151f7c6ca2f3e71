// Images a GitHub Actions workflow runs: a job's container
// (`jobs.<id>.container`, a string or `image:`), its service containers
// (`jobs.<id>.services.<id>.image`) and Docker actions used straight from a
// registry (`steps[].uses: docker://...`). A value computed by an expression
// (`${{ matrix.image }}`) is only known when the workflow runs: reported.

import type { Node } from 'yaml'
import type { RawReference, ScanResult, SourceKind } from './types.js'
import { entries, get, isMap, items, parseYaml, text } from './yaml.js'

export function scanWorkflow(source: string, file: string): ScanResult {
  const yaml = parseYaml(source, file)
  const out: ScanResult = { refs: [], problems: [...yaml.problems] }
  const add = (node: Node | undefined, kind: SourceKind, what: string, strip = '') => {
    const raw = text(node)
    if (raw === undefined) return
    const line = yaml.lineOf(node)
    const expression = /\$\{\{[^}]*\}\}/.exec(raw)
    if (expression) {
      out.problems.push({ file, line, message: `${what} ${raw}: needs ${expression[0]} (known only when the workflow runs)` })
      return
    }
    const ref: RawReference = { raw: raw.trim().slice(strip.length), file, line, kind }
    out.refs.push(ref)
  }
  for (const doc of yaml.docs) {
    for (const [id, job] of entries(get(doc.contents, 'jobs', doc), doc)) {
      if (!isMap(job)) continue
      const container = get(job, 'container', doc)
      add(isMap(container) ? get(container, 'image', doc) : container, 'workflow container', `job ${id} container`)
      for (const [name, service] of entries(get(job, 'services', doc), doc)) {
        add(get(service, 'image', doc), 'workflow service', `job ${id} service ${name}`)
      }
      for (const step of items(get(job, 'steps', doc), doc)) {
        const uses = get(step, 'uses', doc)
        if (text(uses)?.trim().startsWith('docker://')) add(uses, 'workflow step', `job ${id} step`, 'docker://')
      }
    }
  }
  return out
}

