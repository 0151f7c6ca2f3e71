// containerd's hosts.toml (also read by Docker's containerd image store from
// its certs.d): `<dir>/<registry>/hosts.toml` names the origin as `server` and
// the mirrors as ordered `[host."URL"]` tables; containerd tries the hosts in
// file order and the server last. dproxy's host goes FIRST, with pull and
// resolve, and sends `?ns=<registry>` so one dproxy serves every registry.
//
// A hosts.toml the user already has is merged, never replaced: TOML has no
// library that keeps comments, so dproxy's table is inserted as text, fenced,
// before the first existing [host] table, and the result is parsed with
// smol-toml before anything is written.
//
// For a team server (--server) the host is https and names the CA setup
// installed beside it, `<dir>/<HOST:PORT>/ca.crt`, by a path relative to the
// hosts.toml's own directory (containerd resolves it from there), so the
// same file works wherever the directory is (ctr --hosts-dir, --root).

import { parse, TomlError } from 'smol-toml'
import { findFence, fenced, invalidFile, readText, underRoot } from './files.js'
import { registryOrigin } from '../oci/registry-host.js'
import { caEdit, caFile, mirrorUrl, type FileEdit, type SetupOptions, type TargetName } from './targets.js'

/** Parses TOML or throws the setup refusal with the file's line and column. */
export function checkToml(text: string, shown: string): Record<string, unknown> {
  try {
    return parse(text) as Record<string, unknown>
  } catch (err) {
    if (err instanceof TomlError) throw invalidFile(shown, err.line, err.column, err.message.split('\n')[0]!)
    throw err
  }
}

function hostTable(address: string, tls: boolean): string {
  const ca = tls ? `  ca = "${caFile('..', address)}"\n` : ''
  return `[host."${mirrorUrl(address, tls)}"]\n  capabilities = ["pull", "resolve"]\n${ca}`
}

/** The new text of one hosts.toml (existing text merged), checked by parsing it; `tls`: dproxy is a team server. */
export function mergeHostsToml(before: string | undefined, registry: string, address: string, shown: string, tls = false): string {
  if (before === undefined) {
    return fenced(`server = "${registryOrigin(registry)}"\n\n${hostTable(address, tls)}`)
  }
  checkToml(before, shown)
  let after: string
  const at = findFence(before)
  if (at) {
    // setup ran before: dproxy's block is replaced in place (a new port, say).
    const ownsServer = /^server = /m.test(before.slice(at[0], at[1]))
    const body = ownsServer ? `server = "${registryOrigin(registry)}"\n\n${hostTable(address, tls)}` : hostTable(address, tls)
    after = before.slice(0, at[0]) + fenced(body) + before.slice(at[1])
  } else {
    const first = /^[ \t]*\[[ \t]*host[ \t]*\./m.exec(before)
    if (first) {
      after = `${before.slice(0, first.index)}${fenced(hostTable(address, tls))}\n${before.slice(first.index)}`
    } else {
      after = `${before}${before === '' || before.endsWith('\n') ? '' : '\n'}\n${fenced(hostTable(address, tls))}`
    }
  }
  checkToml(after, shown)
  return after
}

/**
 * One hosts.toml edit per registry under `dir` (a path as the user means it,
 * placed under --root), and for a team server its CA in `dir`.
 */
export async function hostsTomlEdits(target: TargetName, dir: string, o: SetupOptions, underRootDir = true): Promise<FileEdit[]> {
  const edits: FileEdit[] = await caEdit(target, dir, o, underRootDir)
  for (const registry of o.registries) {
    const shown = `${dir}/${registry}/hosts.toml`
    const path = underRootDir ? underRoot(o.root, shown) : shown
    const before = await readText(path)
    edits.push({ target, path, shown, before, after: mergeHostsToml(before, registry, o.address, shown, o.tls !== undefined), kind: 'fenced' })
  }
  return edits
}
