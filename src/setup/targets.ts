// The vocabulary every setup target shares: what setup was asked to do, and
// the file edits a target plans. A target only computes text (before -> after)
// from what is on disk; setup.ts shows the diffs, writes, records and undoes,
// the same way for every target.

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
}

/** How dproxy's entries are found again in a file for --undo. */
export type EditKind =
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

/** dproxy's base URL for clients that want one. */
export function mirrorUrl(address: string): string {
  return `http://${address}`
}
