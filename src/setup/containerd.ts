// containerd (and nerdctl, and Kubernetes through CRI). Mirrors live in
// `<config_path>/<registry>/hosts.toml`; config.toml only says where that
// directory is, under the CRI plugin's registry table, whose name changed in
// containerd 2.x (config version 3). A config_path the user already set is
// used as it is; otherwise one fenced line is added (or a fenced table, or a
// new config.toml). The old CRI `mirrors` tables cannot be combined with
// config_path, so when they exist config.toml is left alone with a note.
// `ctr` reads hosts.toml only when given `--hosts-dir`.

import { join } from 'node:path'
import { fenced, readText, underRoot } from './files.js'
import { checkToml, hostsTomlEdits } from './hosts-toml.js'
import type { FileEdit, SetupOptions, TargetPlan } from './targets.js'

const CRI_V1 = 'io.containerd.grpc.v1.cri'
const CRI_V2 = 'io.containerd.cri.v1.images'

export function containerdPaths(o: Pick<SetupOptions, 'user' | 'home'>): { config: string; certsDir: string; underRoot: boolean } {
  const dir = o.user ? join(o.home, '.config', 'containerd') : '/etc/containerd'
  return { config: join(dir, 'config.toml'), certsDir: join(dir, 'certs.d'), underRoot: !o.user }
}

type Table = Record<string, unknown>
const table = (v: unknown): Table | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Table) : undefined)

export interface ConfigPlan {
  /** The new config.toml text; equal to `before` when nothing has to change. */
  after: string | undefined
  /** Where hosts.toml files go. */
  hostsDir: string
  note?: string
}

/** config.toml with a config_path for the CRI registry (or the user's own, kept). */
export function mergeContainerdConfig(before: string | undefined, certsDir: string, shown: string): ConfigPlan {
  if (before === undefined) {
    return { after: `version = 2\n\n${fenced(`[plugins."${CRI_V1}".registry]\n  config_path = "${certsDir}"\n`)}`, hostsDir: certsDir }
  }
  const doc = checkToml(before, shown)
  const plugin = doc.version === 3 ? CRI_V2 : CRI_V1
  const registry = table(table(table(doc.plugins)?.[plugin])?.registry)
  const existing = registry?.config_path
  if (typeof existing === 'string' && existing !== '') {
    return { after: before, hostsDir: existing.split(':')[0]! }
  }
  if (table(registry?.mirrors) && Object.keys(table(registry?.mirrors)!).length > 0) {
    return {
      after: before,
      hostsDir: certsDir,
      note: `${shown} configures mirrors the old way (plugins."${plugin}".registry.mirrors), which containerd refuses next to config_path: ` +
        `move them to hosts.toml files and set config_path = "${certsDir}" there`,
    }
  }
  const escaped = plugin.replace(/\./g, '\\.')
  const header = new RegExp(`^[ \\t]*\\[[ \\t]*plugins[ \\t]*\\.[ \\t]*"${escaped}"[ \\t]*\\.[ \\t]*registry[ \\t]*\\][^\\n]*\\n`, 'm').exec(before)
  let after: string
  if (header) {
    const at = header.index + header[0].length
    after = before.slice(0, at) + fenced(`  config_path = "${certsDir}"\n`) + before.slice(at)
  } else {
    const sep = before === '' || before.endsWith('\n') ? '' : '\n'
    after = `${before}${sep}\n${fenced(`[plugins."${plugin}".registry]\n  config_path = "${certsDir}"\n`)}`
  }
  checkToml(after, shown)
  return { after, hostsDir: certsDir }
}

export async function planContainerd(o: SetupOptions): Promise<TargetPlan> {
  const paths = containerdPaths(o)
  const path = paths.underRoot ? underRoot(o.root, paths.config) : paths.config
  const before = await readText(path)
  const config = mergeContainerdConfig(before, paths.certsDir, paths.config)
  const edits: FileEdit[] = []
  if (config.after !== undefined) {
    edits.push({ target: 'containerd', path, shown: paths.config, before, after: config.after, kind: 'fenced' })
  }
  edits.push(...(await hostsTomlEdits('containerd', config.hostsDir, o, paths.underRoot)))
  return {
    target: 'containerd',
    edits,
    notes: [
      ...(config.note ? [config.note] : []),
      `hosts.toml is read on every pull; ctr reads it only with --hosts-dir ${config.hostsDir}`,
    ],
    restart: o.user ? 'systemctl --user restart containerd' : 'sudo systemctl restart containerd',
  }
}
