// What `dproxy setup` did, kept in the state dir so that `--undo` can take it
// back: per file, whether setup created it, a copy of the bytes it had before
// (the backup), a hash of the text setup left, and how dproxy's entries are
// found in it. A file that still hashes to what setup wrote gets its backup
// back byte for byte (or is removed when setup created it); a file the user
// changed since only loses dproxy's entries.
//
//   <stateDir>/setup/record.json              for --root / (the machine)
//   <stateDir>/setup/record-<hash>.json       for another --root DIR
//   <stateDir>/setup/backups/<time>-<n>-<name> the original bytes

import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { writeAtomic } from './files.js'
import type { EditKind, TargetName } from './targets.js'

export interface RecordEntry {
  target: TargetName
  path: string
  shown: string
  kind: EditKind
  entry?: string
  /** Setup created the file (undo removes it). */
  created: boolean
  /** The file holding the bytes from before the first setup that changed it. */
  backup?: string
  /** sha256 of the text the last setup left. */
  afterSha256: string
}

export interface SetupRecord {
  version: 1
  root: string
  /** The address the last setup pointed clients at. */
  address: string
  /** When that address is a team server (setup --server): its URL and the fingerprint of the CA installed for it. */
  server?: { url: string; fingerprint: string }
  entries: RecordEntry[]
  /** Directories setup created, deepest last; undo removes those left empty. */
  dirs: string[]
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

export function setupStateDir(stateDir: string): string {
  return join(stateDir, 'setup')
}

export function recordPath(stateDir: string, root: string): string {
  const name = root === '/' ? 'record.json' : `record-${sha256(root).slice(0, 12)}.json`
  return join(setupStateDir(stateDir), name)
}

export async function readRecord(stateDir: string, root: string): Promise<SetupRecord | undefined> {
  try {
    const parsed = JSON.parse(await fs.readFile(recordPath(stateDir, root), 'utf8')) as SetupRecord
    return parsed.version === 1 && Array.isArray(parsed.entries) ? parsed : undefined
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

export async function writeRecord(stateDir: string, record: SetupRecord): Promise<void> {
  await writeAtomic(recordPath(stateDir, record.root), JSON.stringify(record, null, 2) + '\n')
}

export async function removeRecord(stateDir: string, record: SetupRecord): Promise<void> {
  for (const e of record.entries) if (e.backup) await fs.rm(e.backup, { force: true })
  await fs.rm(recordPath(stateDir, record.root), { force: true })
}

let backups = 0

/** Copies `path`'s current bytes into the backups dir; returns the copy's path. */
export async function backUp(stateDir: string, path: string, now: Date): Promise<string> {
  const dir = join(setupStateDir(stateDir), 'backups')
  await fs.mkdir(dir, { recursive: true })
  const stamp = now.toISOString().replace(/[:.]/g, '-')
  const name = `${stamp}-${process.pid}-${backups++}-${basename(dirname(path))}-${basename(path)}`
  const copy = join(dir, name)
  await fs.copyFile(path, copy)
  return copy
}
