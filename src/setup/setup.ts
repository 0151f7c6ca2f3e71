// `dproxy setup` as plain functions the CLI (and tests) call with a root dir:
// find the installed clients, plan every target's edits, show them as one
// diff, write them (atomically, each changed file backed up, all of it
// recorded in the state dir), and take them back with undo.
//
// Every file is planned and parsed before the first one is written, so a
// broken file anywhere refuses the whole run with nothing changed.

import { promises as fs } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'
import { planBuildkit } from './buildkit.js'
import { planContainerd } from './containerd.js'
import { unifiedDiff } from './diff.js'
import { removeDaemonMirror, planDocker } from './docker.js'
import { exists, removeCreated, removeFence, underRoot, writeAtomic } from './files.js'
import { planK3s, removeRegistriesYamlEndpoint } from './k3s.js'
import { planPodman } from './podman.js'
import { backUp, readRecord, removeRecord, sha256, writeRecord, type RecordEntry, type SetupRecord } from './record.js'
import { mirrorUrl, TARGETS, type EditKind, type FileEdit, type SetupOptions, type TargetName, type TargetPlan } from './targets.js'

const planners: Record<TargetName, (o: SetupOptions) => Promise<TargetPlan>> = {
  docker: planDocker,
  containerd: planContainerd,
  podman: planPodman,
  buildkit: planBuildkit,
  k3s: planK3s,
}

/** What makes a target count as installed: a binary on PATH, or its config dir (under --root). */
const evidence: Record<TargetName, { bins: string[]; dirs: string[] }> = {
  docker: { bins: ['dockerd', 'docker'], dirs: ['/etc/docker'] },
  containerd: { bins: ['containerd'], dirs: ['/etc/containerd'] },
  podman: { bins: ['podman', 'buildah', 'skopeo', 'crio'], dirs: ['/etc/containers'] },
  buildkit: { bins: ['buildkitd', 'docker-buildx'], dirs: ['/etc/buildkit', '/usr/libexec/docker/cli-plugins/docker-buildx'] },
  k3s: { bins: ['k3s', 'rke2'], dirs: ['/etc/rancher/k3s'] },
}

/** The targets found installed, in TARGETS order. */
export async function detectTargets(root: string, path: string | undefined): Promise<TargetName[]> {
  const dirs = (path ?? '').split(delimiter).filter((d) => d !== '')
  const found: TargetName[] = []
  for (const target of TARGETS) {
    const e = evidence[target]
    const onPath = async () => {
      for (const bin of e.bins) for (const d of dirs) if (await exists(join(d, bin))) return true
      return false
    }
    const hasDir = async () => {
      for (const d of e.dirs) if (await exists(underRoot(root, d))) return true
      return false
    }
    if ((await hasDir()) || (await onPath())) found.push(target)
  }
  return found
}

/** Plans every target; throws (before anything is written) when a file does not parse. */
export async function planSetup(o: SetupOptions, targets: TargetName[]): Promise<TargetPlan[]> {
  const plans: TargetPlan[] = []
  for (const target of targets) plans.push(await planners[target](o))
  return plans
}

export const changedEdits = (plans: TargetPlan[]): FileEdit[] => plans.flatMap((p) => p.edits.filter((e) => e.before !== e.after))

/** Every planned change as one unified diff. */
export function planDiff(plans: TargetPlan[]): string {
  return changedEdits(plans)
    .map((e) => unifiedDiff(e.shown, e.before, e.after))
    .join('')
}

async function missingDirs(path: string): Promise<string[]> {
  const out: string[] = []
  for (let d = dirname(path); d !== dirname(d) && !(await exists(d)); d = dirname(d)) out.unshift(d)
  return out
}

/** Writes the planned changes, backing up and recording each file; returns the files changed. */
export async function applySetup(plans: TargetPlan[], o: SetupOptions, stateDir: string, now = new Date()): Promise<FileEdit[]> {
  const edits = changedEdits(plans)
  if (edits.length === 0) return []
  const record: SetupRecord = (await readRecord(stateDir, o.root)) ?? { version: 1, root: o.root, address: o.address, entries: [], dirs: [] }
  record.address = o.address
  if (o.tls) record.server = { url: mirrorUrl(o.address, true), fingerprint: o.tls.fingerprint }
  else delete record.server
  for (const edit of edits) {
    let entry = record.entries.find((e) => e.path === edit.path)
    if (!entry) {
      const created = edit.before === undefined
      entry = {
        target: edit.target,
        path: edit.path,
        shown: edit.shown,
        kind: edit.kind,
        ...(edit.entry !== undefined ? { entry: edit.entry } : {}),
        created,
        ...(created ? {} : { backup: await backUp(stateDir, edit.path, now) }),
        afterSha256: '',
      }
      record.entries.push(entry)
    }
    for (const d of await missingDirs(edit.path)) if (!record.dirs.includes(d)) record.dirs.push(d)
    // Recorded before the write: an interrupted run still leaves enough to undo.
    entry.afterSha256 = sha256(edit.after)
    if (edit.entry !== undefined) entry.entry = edit.entry
    await writeRecord(stateDir, record)
    await writeAtomic(edit.path, edit.after)
  }
  return edits
}

export interface UndoneFile {
  path: string
  shown: string
  /**
   * restored: the backup's bytes; removed: setup had created it; cleaned: only dproxy's entries taken out;
   * kept: a whole file of dproxy's (a CA) that the user changed since, left alone; gone: nothing there.
   */
  action: 'restored' | 'removed' | 'cleaned' | 'kept' | 'gone'
  /** What setup had written there (the record's kind). */
  kind: EditKind
}

function withoutEntries(entry: RecordEntry, text: string): string {
  switch (entry.kind) {
    case 'whole':
      return text
    case 'fenced':
      return removeFence(text)
    case 'json-mirrors': {
      const left = removeDaemonMirror(text, entry.entry ?? '')
      return entry.created && left.replace(/\s/g, '') === '{}' ? '' : left
    }
    case 'k3s-yaml':
      return removeRegistriesYamlEndpoint(text, entry.entry ?? '')
  }
}

/** Takes back what setup did under `root`; an empty list when it did nothing there. */
export async function undoSetup(root: string, stateDir: string): Promise<UndoneFile[]> {
  const record = await readRecord(stateDir, root)
  if (!record) return []
  const done: UndoneFile[] = []
  for (const entry of record.entries) {
    const current = await fs.readFile(entry.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined
      throw err
    })
    const base = { path: entry.path, shown: entry.shown, kind: entry.kind }
    if (current === undefined) {
      done.push({ ...base, action: 'gone' })
    } else if (sha256(current) === entry.afterSha256) {
      if (entry.created || !entry.backup) {
        await removeCreated(entry.path)
        done.push({ ...base, action: 'removed' })
      } else {
        await writeAtomic(entry.path, await fs.readFile(entry.backup))
        done.push({ ...base, action: 'restored' })
      }
    } else if (entry.kind === 'whole') {
      done.push({ ...base, action: 'kept' })
    } else {
      const left = withoutEntries(entry, current.toString('utf8'))
      if (entry.created && left.trim() === '') {
        await removeCreated(entry.path)
        done.push({ ...base, action: 'removed' })
      } else {
        if (left !== current.toString('utf8')) await writeAtomic(entry.path, left)
        done.push({ ...base, action: 'cleaned' })
      }
    }
  }
  for (const d of [...record.dirs].reverse()) await fs.rmdir(d).catch(() => {})
  await removeRecord(stateDir, record)
  return done
}
