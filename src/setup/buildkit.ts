// BuildKit. The buildx docker-container driver runs its own buildkitd, which
// ignores the Docker daemon's mirrors; it takes a buildkitd.toml when the
// builder is created. Mirrors there are host names, not URLs: dproxy's
// address for each registry (the containerd resolver underneath adds
// `?ns=<registry>`), and `http = true` on dproxy's own table because it speaks
// plain HTTP. The builder needs the host's network to reach 127.0.0.1.
// A team server (--server) speaks TLS instead: its CA is installed in
// certs/<HOST:PORT>/ca.crt beside buildkitd.toml and named by dproxy's table
// (`ca = [...]`); buildx copies it into the builder when it is created.
// A registry the user already configured in the file is left alone (TOML
// does not allow a second table of the same name), with a note.

import { dirname, join } from 'node:path'
import { fenced, findFence, readText, underRoot } from './files.js'
import { checkToml } from './hosts-toml.js'
import { caEdit, caFile, type SetupOptions, type TargetPlan } from './targets.js'

export function buildkitPaths(o: Pick<SetupOptions, 'user' | 'home'>): { config: string; underRoot: boolean } {
  if (o.user) return { config: join(o.home, '.config', 'buildkit', 'buildkitd.toml'), underRoot: false }
  return { config: '/etc/buildkit/buildkitd.toml', underRoot: true }
}

/** The exact command that creates a builder using this buildkitd.toml. */
export function buildxCommand(config: string): string {
  return `docker buildx create --name dproxy --driver docker-container --driver-opt network=host --buildkitd-config ${config} --use`
}

/** The directory buildkit's CA files go in (certs/<HOST:PORT>/ca.crt beside buildkitd.toml). */
export function buildkitCertsDir(config: string): string {
  return join(dirname(config), 'certs')
}

/** buildkitd.toml with dproxy's tables; `ca`: the CA file of a team server (else dproxy is plain HTTP). */
export function mergeBuildkitd(before: string | undefined, registries: string[], address: string, shown: string, ca?: string): { after: string; skipped: string[] } {
  let rest = before ?? ''
  const at = before === undefined ? undefined : findFence(before)
  if (at) rest = rest.slice(0, at[0]) + rest.slice(at[1])
  const doc = checkToml(rest, shown)
  const theirs = (doc.registry ?? {}) as Record<string, unknown>
  const skipped = registries.filter((r) => r in theirs)
  const tables = registries.filter((r) => !(r in theirs)).map((r) => `[registry."${r}"]\n  mirrors = ["${address}"]\n`)
  if (!(address in theirs)) tables.push(`[registry."${address}"]\n${ca === undefined ? '  http = true\n' : `  ca = ["${ca}"]\n`}`)
  const block = fenced(tables.join('\n'))
  let after: string
  if (before !== undefined && at) after = before.slice(0, at[0]) + block + before.slice(at[1])
  else if (before === undefined || before === '') after = block
  else after = `${before}${before.endsWith('\n') ? '' : '\n'}\n${block}`
  checkToml(after, shown)
  return { after, skipped }
}

export async function planBuildkit(o: SetupOptions): Promise<TargetPlan> {
  const paths = buildkitPaths(o)
  const path = paths.underRoot ? underRoot(o.root, paths.config) : paths.config
  const before = await readText(path)
  const certsDir = buildkitCertsDir(paths.config)
  const ca = o.tls ? caFile(certsDir, o.address) : undefined
  const { after, skipped } = mergeBuildkitd(before, o.registries, o.address, paths.config, ca)
  return {
    target: 'buildkit',
    edits: [...(await caEdit('buildkit', certsDir, o, paths.underRoot)), { target: 'buildkit', path, shown: paths.config, before, after, kind: 'fenced' }],
    notes: skipped.length > 0 ? [`${paths.config} already configures ${skipped.join(', ')}: left as it is`] : [],
    restart: buildxCommand(paths.config),
  }
}
