// k3s and rke2: /etc/rancher/k3s/registries.yaml, `mirrors.<registry>.endpoint`
// with dproxy first; k3s turns it into containerd hosts.toml files (and the
// origin stays the fallback). Edited with yaml's document API so the user's
// comments, order and other settings (configs, auth, rewrites) stay.

import { isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml'
import { invalidFile, readText, underRoot } from './files.js'
import { mirrorUrl, type SetupOptions, type TargetPlan } from './targets.js'

export const K3S_REGISTRIES = '/etc/rancher/k3s/registries.yaml'

function load(text: string, shown: string): Document {
  const doc = parseDocument(text)
  const first = doc.errors[0]
  if (first) {
    const pos = first.linePos?.[0]
    throw invalidFile(shown, pos?.line ?? 1, pos?.col ?? 1, first.message.split('\n')[0]!)
  }
  return doc
}

export function mergeRegistriesYaml(before: string | undefined, registries: string[], endpoint: string, shown: string): string {
  const doc = load(before ?? '', shown)
  let changed = false
  for (const registry of registries) {
    const seq = doc.getIn(['mirrors', registry, 'endpoint'], true)
    if (isSeq(seq)) {
      if (seq.items.some((i) => isScalar(i) && i.value === endpoint)) continue
      seq.items.unshift(doc.createNode(endpoint))
    } else {
      doc.setIn(['mirrors', registry, 'endpoint'], doc.createNode([endpoint]))
    }
    changed = true
  }
  if (!changed) return before ?? ''
  return doc.toString()
}

/** registries.yaml without `endpoint` (and without what becomes empty because of it). */
export function removeRegistriesYamlEndpoint(text: string, endpoint: string): string {
  const doc = load(text, K3S_REGISTRIES)
  const mirrors = doc.get('mirrors', true)
  if (!isMap(mirrors)) return text
  for (const pair of [...mirrors.items]) {
    const entry = pair.value
    if (!isMap(entry)) continue
    const seq = entry.get('endpoint', true)
    if (!isSeq(seq)) continue
    seq.items = seq.items.filter((i) => !(isScalar(i) && i.value === endpoint))
    if (seq.items.length === 0) entry.delete('endpoint')
    if (entry.items.length === 0) mirrors.delete(pair.key)
  }
  if (mirrors.items.length === 0) doc.delete('mirrors')
  const out = doc.toString()
  return out.trim() === '{}' ? '' : out
}

export async function planK3s(o: SetupOptions): Promise<TargetPlan> {
  const path = underRoot(o.root, K3S_REGISTRIES)
  const before = await readText(path)
  const endpoint = mirrorUrl(o.address)
  return {
    target: 'k3s',
    edits: [{ target: 'k3s', path, shown: K3S_REGISTRIES, before, after: mergeRegistriesYaml(before, o.registries, endpoint, K3S_REGISTRIES), kind: 'k3s-yaml', entry: endpoint }],
    notes: ['k3s reads registries.yaml when it starts (rke2: /etc/rancher/rke2/registries.yaml, same format)'],
    restart: 'sudo systemctl restart k3s',
  }
}
