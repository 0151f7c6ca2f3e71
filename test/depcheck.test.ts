// The layers as the imports draw them. A folder of src/ may import only
// folders below it, so each layer can be read, tested and replaced without the
// ones above; the daemon's core never loads the CLI or the terminal UI (a
// service manager runs `dproxy serve` without a terminal). Static imports,
// re-exports and dynamic import() all count. A failure names the file, the
// line and the import.

import { promises as fs } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const src = fileURLToPath(new URL('../src/', import.meta.url))

/** Lowest first; a layer may import its own folder and the layers before it. */
const LAYERS: string[][] = [
  ['(root)', 'oci'],
  ['store', 'credentials', 'config'],
  ['upstream'],
  ['proxy'],
  ['registry'],
  ['daemon'],
  ['control'],
  ['setup'],
  ['ui'],
  ['cli'],
]
/** Imports between folders of one layer that are allowed, as "from->to": the upstream client sends logins. */
const SIDEWAYS = new Set(['upstream->credentials', 'oci->(root)'])
/**
 * Folders held to less than their layer allows: the project scanner reads
 * files and names images with oci/'s vocabulary, nothing of the proxy or the
 * daemon, so `dproxy prefetch --dry-run` loads no more than that.
 */
const NARROW: Record<string, string[]> = {
  'control/scan': ['control/scan', 'oci', '(root)'],
}

interface Import {
  file: string
  line: number
  spec: string
  target: string | undefined
  /** `import type`: gone at run time, so no part of a cycle. */
  typeOnly: boolean
}

async function files(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...(await files(p)))
    else if (/\.tsx?$/.test(e.name)) out.push(p)
  }
  return out
}

async function imports(file: string): Promise<Import[]> {
  const text = await fs.readFile(file, 'utf8')
  const out: Import[] = []
  for (const m of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm)) {
    const spec = m[1]!
    const end = m.index + m[0].length
    const line = text.slice(0, end).split('\n').length
    const statement = text.slice(Math.max(text.lastIndexOf('import', end - spec.length - 2), text.lastIndexOf('export', end - spec.length - 2)), end)
    const target = spec.startsWith('.') ? relative(src, normalize(join(dirname(file), spec))).replace(/\.js$/, '') : undefined
    out.push({ file: relative(src, file), line, spec, target, typeOnly: /^(import|export)\s+type\s/.test(statement) })
  }
  return out
}

function folderOf(path: string): string {
  return path.includes('/') ? path.slice(0, path.indexOf('/')) : '(root)'
}

function rank(folder: string): number {
  return LAYERS.findIndex((layer) => layer.includes(folder))
}

/** Why `imp` breaks the order, or undefined when it is allowed. */
function violation(imp: Import): string | undefined {
  const narrow = Object.keys(NARROW).find((dir) => imp.file.startsWith(`${dir}/`))
  if (narrow && imp.target !== undefined) {
    const allowed = NARROW[narrow]!
    const ok = allowed.some((dir) => (dir === '(root)' ? !imp.target!.includes('/') : imp.target!.startsWith(`${dir}/`)))
    if (!ok) return `${narrow} imports only ${allowed.join(', ')}`
  }
  const from = folderOf(imp.file)
  if (imp.target === undefined) {
    const ui = /^(ink|react)(\/|$)|^ink-/.test(imp.spec)
    return ui && from !== 'ui' && from !== 'cli' ? 'the terminal UI belongs to ui/ and cli/' : undefined
  }
  const to = folderOf(imp.target)
  if (from === to) return undefined
  if (from === 'oci' && to === '(root)' && imp.target !== 'errors') return 'oci/ imports nothing of dproxy but errors'
  const [a, b] = [rank(from), rank(to)]
  if (a < 0 || b < 0) return `${a < 0 ? from : to} is in no layer (add it to LAYERS)`
  if (b < a) return undefined
  if (b === a && SIDEWAYS.has(`${from}->${to}`)) return undefined
  return b === a ? `${from} and ${to} are one layer: neither imports the other` : `${from} is below ${to}`
}

t.test('a lower layer never imports an upper one (file:line -> import)', async (t) => {
  const all = await files(src)
  t.ok(all.length > 50, 'found the sources')
  const bad: string[] = []
  for (const file of all) {
    for (const imp of await imports(file)) {
      const why = violation(imp)
      if (why) bad.push(`${imp.file}:${imp.line} -> ${imp.spec} (${why})`)
    }
  }
  t.strictSame(bad, [], 'imports against the order')
})

t.test('no import cycles between modules (type-only imports aside)', async (t) => {
  const graph = new Map<string, string[]>()
  for (const file of await files(src)) {
    const deps = (await imports(file)).filter((i) => !i.typeOnly).map((i) => i.target).filter((x): x is string => x !== undefined)
    graph.set(relative(src, file).replace(/\.tsx?$/, ''), deps)
  }
  const cycles: string[] = []
  const state = new Map<string, 'open' | 'done'>()
  const visit = (node: string, path: string[]): void => {
    if (state.get(node) === 'done') return
    if (state.get(node) === 'open') {
      cycles.push([...path.slice(path.indexOf(node)), node].join(' -> '))
      return
    }
    state.set(node, 'open')
    for (const next of graph.get(node) ?? []) if (graph.has(next)) visit(next, [...path, node])
    state.set(node, 'done')
  }
  for (const node of graph.keys()) visit(node, [])
  t.strictSame(cycles, [], 'cycles')
})

t.test('the check itself: an upward, a sideways and a UI import are caught', async (t) => {
  const at = (file: string, spec: string): Import => ({
    file,
    line: 1,
    spec,
    typeOnly: false,
    target: spec.startsWith('.') ? relative(src, normalize(join(src, dirname(file), spec))).replace(/\.js$/, '') : undefined,
  })
  t.match(violation(at('store/store.ts', '../daemon/daemon.js')), /store is below daemon/)
  t.match(violation(at('config/settings.ts', '../credentials/index.js')), /one layer/)
  t.match(violation(at('daemon/admin.ts', 'ink')), /terminal UI/)
  t.match(violation(at('oci/digest.ts', '../log.js')), /nothing of dproxy/)
  t.equal(violation(at('upstream/auth.ts', '../credentials/credential.js')), undefined)
  t.equal(violation(at('cli/status.ts', '../ui/StatusView.js')), undefined)
  t.equal(violation(at('control/status.ts', '../daemon/admin.js')), undefined)
  t.match(violation(at('control/scan/index.ts', '../../proxy/warm.js')), /control\/scan imports only/)
  t.match(violation(at('control/scan/index.ts', '../admin-client.js')), /control\/scan imports only/)
  t.equal(violation(at('control/scan/index.ts', '../../oci/platform.js')), undefined)
  t.equal(violation(at('control/scan/index.ts', './compose.js')), undefined)
  t.equal(violation(at('control/scan/index.ts', '../../errors.js')), undefined)
})
