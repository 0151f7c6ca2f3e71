// The vocabulary every setup target shares: what setup was asked to do, and
// the file edits a target plans. A target only computes text (before -> after)
// from what is on disk; setup.ts shows the diffs, writes, records and undoes,
// the same way for every target.

import { readText, underRoot } from './files.js'

export const TARGETS = ['docker', 'containerd', 'podman', 'buildkit', 'k3s'] as const
export type TargetName = (typeof TARGETS)[number]

export interface SetupOptions {
  /** Treated as `/` for every system path (`--root DIR`). */
  root: string
  /** The user's home, for `--user` paths (never under root). */
  home: string
  /** Configure the user's own clients (rootless docker, podman's user drop-in) instead of the system's. */
  user: boolean
  /** Where clients reach dproxy: `127.0.0.1:5000`, `[::1]:5000`. */
  address: string
  /** Registry hosts to send through dproxy; docker.io first. */
  registries: string[]
  /** Addresses an earlier setup wrote, replaced rather than kept next to the new one. */
  previousAddresses?: string[]
  /**
   * A team server that speaks TLS (`--server https://HOST:PORT`): `address` is
   * its HOST:PORT, mirrors are https URLs, and each target installs `ca` (the
   * server's CA certificate, PEM, checked against its fingerprint) where that
   * client looks for a registry's CA.
   */
  tls?: { ca: string; fingerprint: string }
}

/** How dproxy's entries are found again in a file for --undo. */
export type EditKind =
  /** The whole file is dproxy's (a server's CA certificate): undo removes it, or leaves it when the user changed it. */
  | 'whole'
  /** dproxy's text is fenced by BEGIN/END comment lines (TOML, registries.conf). */
  | 'fenced'
  /** A URL in daemon.json's registry-mirrors. */
  | 'json-mirrors'
  /** Mirrors in k3s's registries.yaml whose endpoint is dproxy. */
  | 'k3s-yaml'

export interface FileEdit {
  target: TargetName
  /** The real path (under --root). */
  path: string
  /** The path as the user means it, for messages and diffs. */
  shown: string
  /** Undefined when the file does not exist yet. */
  before: string | undefined
  after: string
  kind: EditKind
  /** What --undo removes for 'json-mirrors' and 'k3s-yaml': the URL dproxy added. */
  entry?: string
}

export interface TargetPlan {
  target: TargetName
  edits: FileEdit[]
  /** What the user still has to do or know (a restart command, a note). */
  notes: string[]
  /** The exact command that makes the client read its new config, when one is needed. */
  restart?: string
}

/** dproxy's base URL for clients that want one: https for a team server (`--server`). */
export function mirrorUrl(address: string, tls = false): string {
  return `${tls ? 'https' : 'http'}://${address}`
}

/** The mirror URLs an earlier setup may have written for these addresses (either scheme), except `keep`. */
export function previousMirrors(o: Pick<SetupOptions, 'previousAddresses' | 'address'>, keep: string): string[] {
  return [...(o.previousAddresses ?? []), o.address].flatMap((a) => [mirrorUrl(a), mirrorUrl(a, true)]).filter((m) => m !== keep)
}

/** The file a target installs the server's CA in: `<dir>/<HOST:PORT>/ca.crt` (docker's certs.d layout). */
export function caFile(dir: string, address: string): string {
  return `${dir}/${address}/ca.crt`
}

/** The edit that installs the server's CA for `target` under `dir` (a path as the user means it); none without --server. */
export async function caEdit(target: TargetName, dir: string, o: SetupOptions, underRootDir: boolean): Promise<FileEdit[]> {
  if (!o.tls) return []
  const shown = caFile(dir, o.address)
  const path = underRootDir ? underRoot(o.root, shown) : shown
  const before = await readText(path)
  return [{ target, path, shown, before, after: o.tls.ca, kind: 'whole' }]
}
