// k3s and rke2: /etc/rancher/k3s/registries.yaml, `mirrors.<registry>.endpoint`
// with dproxy first; k3s turns it into containerd hosts.toml files (and the
// origin stays the fallback). Edited with yaml's document API so the user's
// comments, order and other settings (configs, auth, rewrites) stay.
// For a team server (--server) the endpoint is https and its CA is installed
// in /etc/rancher/k3s/certs.d/<HOST:PORT>/ca.crt, named by
// `configs.<HOST:PORT>.tls.ca_file`; undo takes out exactly that setting.

import { isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml'
import { invalidFile, readText, underRoot } from './files.js'
import { caEdit, caFile, mirrorUrl, previousMirrors, type SetupOptions, type TargetPlan } from './targets.js'

export const K3S_REGISTRIES = '/etc/rancher/k3s/registries.yaml'
export const K3S_CERTS = '/etc/rancher/k3s/certs.d'

/** HOST:PORT of an endpoint URL setup wrote. */
const hostPortOf = (endpoint: string) => endpoint.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '')

function load(text: string, shown: string): Document {
  const doc = parseDocument(text)
  const first = doc.errors[0]
  if (first) {
    const pos = first.linePos?.[0]
    throw invalidFile(shown, pos?.line ?? 1, pos?.col ?? 1, first.message.split('\n')[0]!)
  }
  return doc
}

/**
 * registries.yaml with `endpoint` first for each registry, and without the
 * `previous` endpoints an earlier setup wrote; `caFile`: the CA file of a
 * team server, named for its HOST:PORT.
 */
export function mergeRegistriesYaml(before: string | undefined, registries: string[], endpoint: string, shown: string, caFile?: string, previous: string[] = []): string {
  const doc = load(before ?? '', shown)
  let changed = false
  const mirrors = doc.get('mirrors', true)
  if (isMap(mirrors)) {
    for (const pair of mirrors.items) {
      const seq = isMap(pair.value) ? pair.value.get('endpoint', true) : undefined
      if (!isSeq(seq)) continue
      const kept = seq.items.filter((i) => !(isScalar(i) && typeof i.value === 'string' && previous.includes(i.value)))
      if (kept.length !== seq.items.length) {
        seq.items = kept
        changed = true
      }
    }
  }
  if (caFile !== undefined) {
    const path = ['configs', hostPortOf(endpoint), 'tls', 'ca_file']
    if (doc.getIn(path) !== caFile) {
      doc.setIn(path, caFile)
      changed = true
    }
  }
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

/** Deletes the map at `path` and each map above it (up to the top) that becomes empty because of it. */
function deleteEmpty(doc: Document, path: string[]): void {
  for (let n = path.length; n > 0; n--) {
    const node = doc.getIn(path.slice(0, n), true)
    if (!isMap(node) || node.items.length > 0) return
    doc.deleteIn(path.slice(0, n))
  }
}

/** registries.yaml without `endpoint` and the CA setting setup wrote for it (and without what becomes empty because of them). */
export function removeRegistriesYamlEndpoint(text: string, endpoint: string): string {
  const doc = load(text, K3S_REGISTRIES)
  const hostPort = hostPortOf(endpoint)
  const caPath = ['configs', hostPort, 'tls', 'ca_file']
  if (doc.getIn(caPath) === caFile(K3S_CERTS, hostPort)) {
    doc.deleteIn(caPath)
    deleteEmpty(doc, caPath.slice(0, -1))
  }
  const mirrors = doc.get('mirrors', true)
  if (!isMap(mirrors)) {
    const out = doc.toString()
    return out.trim() === '{}' ? '' : out
  }
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
  const endpoint = mirrorUrl(o.address, o.tls !== undefined)
  const ca = o.tls ? caFile(K3S_CERTS, o.address) : undefined
  const after = mergeRegistriesYaml(before, o.registries, endpoint, K3S_REGISTRIES, ca, previousMirrors(o, endpoint))
  return {
    target: 'k3s',
    edits: [...(await caEdit('k3s', K3S_CERTS, o, true)), { target: 'k3s', path, shown: K3S_REGISTRIES, before, after, kind: 'k3s-yaml', entry: endpoint }],
    notes: ['k3s reads registries.yaml when it starts (rke2: /etc/rancher/rke2/registries.yaml, same format)'],
    restart: 'sudo systemctl restart k3s',
  }
}
