// What the cache holds, as images rather than files: every tag a repository
// has (its tag files under repositories/), every manifest a repository
// references without a tag (pulled by digest, or what a tag pointed at before
// it moved), and for each of them the manifests and blobs it is made of.
// `dproxy cache ls`, clearing and eviction (evict.ts) all start from one scan.
//
// An image's files are its manifest, the children of an index or list that
// are cached (usually one platform of several), and every cached blob those
// manifests name. Manifests are read only for their descriptors (config,
// layers, manifests[], blobs[], schema1 fsLayers: oci/manifest.ts); the bytes
// are never rewritten. A descriptor whose digest is malformed is ignored, and
// the only paths ever derived from a scan are those of files found on disk.
//
// Times: "stored" is the manifest file's mtime (the store never rewrites a
// manifest in place, and touching keeps mtime); "last used" is the newest
// atime of the image's manifests, which the store sets explicitly on every
// pull. Blob atimes are left out on purpose: base layers are shared, and a
// busy image would make every image built on the same base look used. The
// scan reads manifests with O_NOATIME where the OS has it (and puts the atime
// back where it has not), so listing the cache never makes it look used.
//
// Files that no image reaches (blobs served by digest only, content a crash
// left between deleting a tag and its files) are "orphans": clearing
// everything and eviction by time or size remove them like images.

import { constants, promises as fs, type Stats } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { relative, sep } from 'node:path'
import { isNotFound } from '../fs.js'
import { walk, type Store, type TagRecord } from './store.js'
import { parseDigest } from '../oci/digest.js'
import { referencedDigests } from '../oci/manifest.js'
import { parseReference } from '../oci/reference.js'

export interface FileInfo {
  size: number
  atimeMs: number
  mtimeMs: number
}

export interface ManifestInfo extends FileInfo {
  mediaType: string
  /** Digests of child manifests (index / manifest list entries). */
  children: string[]
  /** Digests of blobs (config, layers). */
  blobs: string[]
}

export interface RepositoryInfo {
  registry: string
  repository: string
  tags: Map<string, TagRecord>
  /** Digests of the repository's manifest links. */
  links: Set<string>
}

/** Everything on disk, as found by one walk. Keys are `alg:hex` digests. */
export interface CacheScan {
  manifests: Map<string, ManifestInfo>
  blobs: Map<string, FileInfo>
  repositories: RepositoryInfo[]
  /** Bytes in blobs/ and manifests/ (media type files included), as `Store.stats()` counts them. */
  bytes: number
}

/** One cached image as `dproxy cache ls` shows it. */
export interface CachedImage {
  registry: string
  repository: string
  /** Null for a manifest the repository references without a tag. */
  tag: string | null
  digest: string
  mediaType: string
  /** Bytes of every cached manifest and blob of the image, shared ones included. */
  size: number
  /** Bytes no other cached image references: what clearing only this image frees. */
  uniqueBytes: number
  /** Cached manifests (the image's own, plus cached children of an index). */
  manifests: number
  blobs: number
  /** False when the manifest or a blob of a cached manifest is missing (a pull that stopped half-way). */
  complete: boolean
  /** ISO 8601: when the manifest was stored. */
  storedAt: string
  /** ISO 8601: when a client last pulled it. */
  lastUsed: string
}

/** File keys: `m:<digest>` for a manifest, `b:<digest>` for a blob. */
export type FileKey = `m:${string}` | `b:${string}`

/** An image or an orphan file: the unit that clearing and eviction select or keep. */
export interface CacheUnit {
  kind: 'image' | 'orphan'
  /** For images; for orphans only `digest` is meaningful. */
  registry: string
  repository: string
  tag: string | null
  digest: string
  mediaType: string
  /** Manifests of the image found in the cache (root first). Empty for orphans and dangling tags. */
  manifestDigests: string[]
  files: FileKey[]
  complete: boolean
  storedAtMs: number
  lastUsedMs: number
}

export interface Inventory {
  scan: CacheScan
  units: CacheUnit[]
  images: CachedImage[]
  orphans: { manifests: number; blobs: number; bytes: number }
}

const noatime = (constants as { O_NOATIME?: number }).O_NOATIME ?? 0

/** Walks the cache directory once. */
export async function scanCache(store: Store): Promise<CacheScan> {
  const { layout } = store
  const scan: CacheScan = { manifests: new Map(), blobs: new Map(), repositories: [], bytes: 0 }

  await walk(layout.blobsDir, async (path) => {
    const d = digestFromPath(layout.blobsDir, path)
    if (!d) return
    const st = await statOrUndefined(path)
    if (!st) return
    scan.blobs.set(d, fileInfo(st))
    scan.bytes += st.size
  })

  await walk(layout.manifestsDir, async (path) => {
    if (path.endsWith('.type')) return
    const d = digestFromPath(layout.manifestsDir, path)
    if (!d) return
    const read = await readQuietly(path)
    if (!read) return
    const type = await fs.readFile(`${path}.type`, 'utf8').catch(() => '')
    const refs = referencedDigests(read.bytes)
    const size = read.stats.size + Buffer.byteLength(type)
    scan.manifests.set(d, { ...fileInfo(read.stats), size, mediaType: type.trim(), ...refs })
    scan.bytes += size
  })

  const repos = new Map<string, RepositoryInfo>()
  const repoFor = (registry: string, repository: string): RepositoryInfo => {
    const key = `${registry}/${repository}`
    let r = repos.get(key)
    if (!r) {
      r = { registry, repository, tags: new Map(), links: new Set() }
      repos.set(key, r)
    }
    return r
  }
  await walk(layout.repositoriesDir, async (path) => {
    const file = layout.repositoryFile(path)
    if (file?.kind === 'tag') {
      const { registry, repository, tag } = file
      if (tag === undefined || !isTag(tag)) return
      const rec = await store.getTag(registry, repository, tag)
      if (rec) repoFor(registry, repository).tags.set(tag, rec)
    } else if (file?.kind === 'link') {
      const d = validDigest(file.digest)
      if (d) repoFor(file.registry, file.repository).links.add(d)
    }
  })
  scan.repositories = [...repos.values()].sort((a, b) => compare(`${a.registry}/${a.repository}`, `${b.registry}/${b.repository}`))
  return scan
}

/** Scans the cache and groups it into images and orphans. */
export async function inventory(store: Store): Promise<Inventory> {
  return inventoryOf(await scanCache(store))
}

/** Every cached image, sorted by registry, repository, then tags before tag-less digests. */
export async function listImages(store: Store): Promise<CachedImage[]> {
  return (await inventory(store)).images
}

/** Groups a scan into images (tagged, then tag-less per repository) and orphan files. */
export function inventoryOf(scan: CacheScan): Inventory {
  const units: CacheUnit[] = []
  const reached = new Set<FileKey>()

  for (const repo of scan.repositories) {
    const covered = new Set<string>()
    for (const [tag, rec] of [...repo.tags].sort(([a], [b]) => compare(a, b))) {
      const unit = imageUnit(scan, repo, tag, rec.digest, rec)
      for (const d of unit.manifestDigests) covered.add(d)
      covered.add(rec.digest)
      units.push(unit)
    }
    // Linked manifests no tag reaches, minus the children of other such manifests (an old index's platforms).
    const loose = [...repo.links].filter((d) => !covered.has(d) && scan.manifests.has(d)).sort(compare)
    const trees = new Map(loose.map((d) => [d, closure(scan, d)]))
    for (const d of loose) {
      const child = loose.some((other) => other !== d && trees.get(other)!.manifests.has(d))
      if (!child) units.push(imageUnit(scan, repo, null, d, undefined))
    }
  }
  for (const u of units) for (const f of u.files) reached.add(f)

  const refs = new Map<FileKey, number>()
  for (const u of units) for (const f of u.files) refs.set(f, (refs.get(f) ?? 0) + 1)

  const orphans = { manifests: 0, blobs: 0, bytes: 0 }
  for (const [d, m] of scan.manifests) {
    if (reached.has(`m:${d}`)) continue
    units.push(orphanUnit(`m:${d}`, d, m.mediaType, m))
    orphans.manifests++
    orphans.bytes += m.size
  }
  for (const [d, b] of scan.blobs) {
    if (reached.has(`b:${d}`)) continue
    units.push(orphanUnit(`b:${d}`, d, '', b))
    orphans.blobs++
    orphans.bytes += b.size
  }

  const images = units
    .filter((u) => u.kind === 'image')
    .map((u): CachedImage => {
      let size = 0
      let uniqueBytes = 0
      let blobs = 0
      for (const f of u.files) {
        const n = fileSize(scan, f)
        size += n
        if (refs.get(f) === 1) uniqueBytes += n
        if (f.startsWith('b:')) blobs++
      }
      return {
        registry: u.registry,
        repository: u.repository,
        tag: u.tag,
        digest: u.digest,
        mediaType: u.mediaType,
        size,
        uniqueBytes,
        manifests: u.manifestDigests.length,
        blobs,
        complete: u.complete,
        storedAt: new Date(u.storedAtMs).toISOString(),
        lastUsed: new Date(u.lastUsedMs).toISOString(),
      }
    })
  return { scan, units, images, orphans }
}

export function fileSize(scan: CacheScan, f: FileKey): number {
  const d = f.slice(2)
  return (f.startsWith('m:') ? scan.manifests.get(d)?.size : scan.blobs.get(d)?.size) ?? 0
}

interface Tree {
  manifests: Set<string>
  blobs: Set<string>
  /** Blobs named by a cached manifest but not cached. */
  missing: number
}

/** The cached manifests and blobs reachable from `root`. Content addressing rules out cycles; `seen` makes sure. */
export function closure(scan: CacheScan, root: string): Tree {
  const tree: Tree = { manifests: new Set(), blobs: new Set(), missing: 0 }
  const stack = [root]
  while (stack.length > 0) {
    const d = stack.pop()!
    if (tree.manifests.has(d)) continue
    const m = scan.manifests.get(d)
    if (!m) continue // an index child that was never pulled (another platform)
    tree.manifests.add(d)
    for (const c of m.children) stack.push(c)
    for (const b of m.blobs) {
      if (scan.blobs.has(b)) tree.blobs.add(b)
      else tree.missing++
    }
  }
  return tree
}

function imageUnit(
  scan: CacheScan,
  repo: RepositoryInfo,
  tag: string | null,
  digest: string,
  rec: TagRecord | undefined,
): CacheUnit {
  const tree = closure(scan, digest)
  const root = scan.manifests.get(digest)
  const manifestDigests = [...tree.manifests]
  let lastUsedMs = 0
  for (const d of manifestDigests) lastUsedMs = Math.max(lastUsedMs, scan.manifests.get(d)!.atimeMs)
  // A tag whose manifest is gone (a crash half-way through clearing) still has the time upstream was asked.
  const fallback = rec?.checkedAt ?? 0
  return {
    kind: 'image',
    registry: repo.registry,
    repository: repo.repository,
    tag,
    digest,
    mediaType: root?.mediaType ?? rec?.mediaType ?? '',
    manifestDigests,
    files: [...manifestDigests.map((d): FileKey => `m:${d}`), ...[...tree.blobs].map((d): FileKey => `b:${d}`)],
    complete: root !== undefined && tree.missing === 0,
    storedAtMs: root?.mtimeMs ?? fallback,
    lastUsedMs: root ? lastUsedMs : fallback,
  }
}

function orphanUnit(key: FileKey, digest: string, mediaType: string, info: FileInfo): CacheUnit {
  return {
    kind: 'orphan',
    registry: '',
    repository: '',
    tag: null,
    digest,
    mediaType,
    manifestDigests: [],
    files: [key],
    complete: true,
    storedAtMs: info.mtimeMs,
    lastUsedMs: info.atimeMs,
  }
}

function validDigest(value: string): string | undefined {
  try {
    return parseDigest(value).value
  } catch {
    return undefined
  }
}

function isTag(value: string): boolean {
  try {
    return parseReference(value).kind === 'tag'
  } catch {
    return false
  }
}

/** `<dir>/<alg>/<hh>/<hex>` -> `alg:hex`, or undefined for anything else (stray files). */
function digestFromPath(dir: string, path: string): string | undefined {
  const parts = relative(dir, path).split(sep)
  if (parts.length !== 3) return undefined
  const [alg, hh, hex] = parts as [string, string, string]
  if (hex.slice(0, 2) !== hh) return undefined
  return validDigest(`${alg}:${hex}`)
}

function fileInfo(st: Stats): FileInfo {
  return { size: st.size, atimeMs: st.atimeMs, mtimeMs: st.mtimeMs }
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await fs.stat(path)
  } catch (err) {
    if (isNotFound(err)) return undefined
    throw err
  }
}

/**
 * Reads a file without changing its atime: with O_NOATIME where the OS has it
 * and allows it (we own the file), otherwise by putting the atime back.
 */
async function readQuietly(path: string): Promise<{ bytes: Buffer; stats: Stats } | undefined> {
  let fh: FileHandle
  let quiet = noatime !== 0
  try {
    try {
      fh = await fs.open(path, constants.O_RDONLY | noatime)
    } catch (err) {
      if (!quiet || (err as NodeJS.ErrnoException).code !== 'EPERM') throw err
      quiet = false
      fh = await fs.open(path, constants.O_RDONLY)
    }
  } catch (err) {
    if (isNotFound(err)) return undefined
    throw err
  }
  try {
    const stats = await fh.stat()
    const bytes = await fh.readFile()
    if (!quiet) {
      const after = await fh.stat()
      if (after.atimeMs !== stats.atimeMs) await fh.utimes(stats.atime, stats.mtime).catch(() => {})
    }
    return { bytes, stats }
  } finally {
    await fh.close()
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
