// Docker Engine. The classic image store takes `registry-mirrors` from
// daemon.json, for docker.io only, as a bare root URL, and reloads it on
// SIGHUP. The containerd image store (fresh Engine 29 installs, Docker
// Desktop) ignores that key and reads hosts.toml under certs.d for any
// registry, live; both are written so either store goes through dproxy.
// Rootless Docker (--user) keeps both under ~/.config/docker. For a team
// server (--server) the mirror is https and its CA goes to
// certs.d/<HOST:PORT>/ca.crt (hosts-toml.ts writes it), where both stores
// look for a registry's CA.
//
// daemon.json is edited with jsonc-parser, which changes only the bytes of
// the one key and keeps the user's layout (and comments, which dockerd itself
// would refuse, but that is the user's file to fix, not ours to drop).

import { applyEdits, modify, parse, printParseErrorCode, type ParseError } from 'jsonc-parser'
import { join } from 'node:path'
import { invalidFile, lineColumn, readText, underRoot } from './files.js'
import { hostsTomlEdits } from './hosts-toml.js'
import { mirrorUrl, previousMirrors, type FileEdit, type SetupOptions, type TargetPlan } from './targets.js'
import { DOCKER_HUB } from '../oci/registry-host.js'

const MIRRORS = 'registry-mirrors'

/** daemon.json and certs.d as the user means them. */
export function dockerPaths(o: Pick<SetupOptions, 'user' | 'home'>): { daemonJson: string; certsDir: string; underRoot: boolean } {
  if (o.user) {
    const dir = join(o.home, '.config', 'docker')
    return { daemonJson: join(dir, 'daemon.json'), certsDir: join(dir, 'certs.d'), underRoot: false }
  }
  return { daemonJson: '/etc/docker/daemon.json', certsDir: '/etc/docker/certs.d', underRoot: true }
}

/** Parses JSON (with comments) or throws the setup refusal with file:line. */
export function checkJson(text: string, shown: string): unknown {
  const errors: ParseError[] = []
  const value: unknown = parse(text, errors, { allowTrailingComma: false, disallowComments: false })
  const first = errors[0]
  if (first) {
    const { line, column } = lineColumn(text, first.offset)
    throw invalidFile(shown, line, column, `invalid JSON (${printParseErrorCode(first.error)})`)
  }
  if (text.trim() !== '' && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    throw invalidFile(shown, 1, 1, 'expected a JSON object')
  }
  return value
}

function indentOf(text: string): { insertSpaces: boolean; tabSize: number } {
  const m = /\n([ \t]+)"/.exec(text)
  if (m?.[1]?.startsWith('\t')) return { insertSpaces: false, tabSize: 1 }
  return { insertSpaces: true, tabSize: m?.[1]?.length ?? 2 }
}

/** daemon.json with dproxy's URL first in registry-mirrors; the user's other mirrors kept after it. */
export function mergeDaemonJson(before: string | undefined, mirror: string, previous: string[], shown: string): string {
  const text = before === undefined || before.trim() === '' ? '{}\n' : before
  const doc = (checkJson(text, shown) ?? {}) as Record<string, unknown>
  const current = Array.isArray(doc[MIRRORS]) ? (doc[MIRRORS] as unknown[]) : []
  const others = current.filter((m) => m !== mirror && !(typeof m === 'string' && previous.includes(m)))
  const wanted = [mirror, ...others]
  if (current.length === wanted.length && current.every((m, i) => m === wanted[i])) return before ?? text
  const edits = modify(text, [MIRRORS], wanted, { formattingOptions: { ...indentOf(text), eol: '\n' } })
  return applyEdits(text, edits)
}

/** daemon.json without `mirror` (and without the key when nothing else is left in it). */
export function removeDaemonMirror(text: string, mirror: string): string {
  const doc = checkJson(text, 'daemon.json') as Record<string, unknown> | undefined
  const current = doc && Array.isArray(doc[MIRRORS]) ? (doc[MIRRORS] as unknown[]) : undefined
  if (!current?.includes(mirror)) return text
  const left = current.filter((m) => m !== mirror)
  const edits = modify(text, [MIRRORS], left.length === 0 ? undefined : left, {
    formattingOptions: { ...indentOf(text), eol: '\n' },
  })
  return applyEdits(text, edits)
}

export async function planDocker(o: SetupOptions): Promise<TargetPlan> {
  const paths = dockerPaths(o)
  const shown = paths.daemonJson
  const path = paths.underRoot ? underRoot(o.root, shown) : shown
  const before = await readText(path)
  const mirror = mirrorUrl(o.address, o.tls !== undefined)
  const previous = previousMirrors(o, mirror)
  const edits: FileEdit[] = []
  if (o.registries.includes(DOCKER_HUB)) {
    edits.push({ target: 'docker', path, shown, before, after: mergeDaemonJson(before, mirror, previous, shown), kind: 'json-mirrors', entry: mirror })
  }
  edits.push(...(await hostsTomlEdits('docker', paths.certsDir, o, paths.underRoot)))
  const restart = o.user ? 'systemctl --user kill --signal=SIGHUP docker' : 'sudo systemctl reload docker   # or: sudo kill -HUP "$(cat /var/run/docker.pid)"'
  return {
    target: 'docker',
    edits,
    notes: ['registry-mirrors is read on SIGHUP (dproxy setup --restart sends it); certs.d/*/hosts.toml is read on every pull'],
    restart,
  }
}
