// Removing content from the cache: `dproxy cache clear` (by image, by age, by
// last use, or everything) and eviction (`prune`: least recently used images
// first until the cache fits a size, and whatever was unused longer than a
// TTL, as GitLab's Dependency Proxy cleanup policy does). Both work in two
// steps, so that a dry run is the same computation minus the deleting:
//
//   plan   scan the cache (inventory.ts), select images and orphan files, and
//          work out which tags, links, manifests and blobs go: a manifest or
//          blob is removed only when no image that stays references it, so a
//          base layer shared with another image survives clearing one of them.
//   apply  delete tags first, then links, then manifests, then blobs: a reader
//          that starts from a tag never finds one whose manifest is gone, and
//          a crash half-way leaves orphans (removed next time), never a tag
//          pointing at nothing.
//
// Safe while the daemon serves pulls. Under tmp/, only files whose writer is
// gone (killed mid-download: their name carries a pid that is not alive) are
// removed; a blob being downloaded lives there until it is verified and
// renamed into place. A blob being streamed from disk is read through an
// open file handle, and POSIX keeps an unlinked file readable through handles opened before, so
// the client gets every byte (Windows refuses to delete a file in use: it is
// skipped and left for the next run). A pull that asks for a deleted manifest or blob
// afterwards fetches it from upstream again. The plan is a snapshot: content a
// pull starts to use between plan and apply may still be deleted, which costs
// that pull a refetch, never a wrong or partial answer. Tags are only removed
// if they still point where the plan saw them.
//
// Directories are left in place, even empty ones: removing one could race the
// daemon creating a file in it (mkdir, then rename).

import { DproxyError, truncate } from '../errors.js'
import { fileSize, inventory, type CacheUnit, type FileKey, type Inventory } from './inventory.js'
import { removeFile } from '../fs.js'
import type { Store } from './store.js'
import { parseDigest } from '../oci/digest.js'
import { parseImageReference } from '../oci/reference.js'

export interface ImageSelector {
  registry: string
  repository: string
  /** Only this tag; without tag and digest, every tag and tag-less manifest of the repository. */
  tag?: string
  /** Only the image with this manifest digest (tagged or not). */
  digest?: string
}

/** Every given criterion must hold; an empty filter selects everything. */
export interface ClearFilter {
  image?: ImageSelector
  /** Content stored more than this long ago (manifest mtime). */
  olderThanMs?: number
  /** Content not pulled for more than this long (manifest atime). */
  unusedForMs?: number
}

export interface PlannedImage {
  registry: string
  repository: string
  tag: string | null
  digest: string
}

export interface ClearPlan {
  /** The time the selection was made at, ms since the epoch. */
  now: number
  images: PlannedImage[]
  /** Orphan files (no image references them) selected. */
  orphans: number
  tags: Array<{ registry: string; repository: string; tag: string; digest: string }>
  links: Array<{ registry: string; repository: string; digest: string }>
  manifests: Array<{ digest: string; size: number }>
  blobs: Array<{ digest: string; size: number }>
  /** Bytes the plan frees. */
  bytes: number
  /** Bytes in the cache when it was scanned. */
  totalBytes: number
}

/** What a clear or prune freed (or, in a dry run, would free). */
export interface EvictionSummary {
  dryRun: boolean
  images: PlannedImage[]
  orphans: number
  tags: number
  manifests: number
  blobs: number
  bytes: number
  /** Bytes left in the cache afterwards. */
  remainingBytes: number
  /** Temp files a killed writer left under tmp/ (removed whatever the filter), and their bytes. */
  tempFiles: number
  tempBytes: number
}

export interface PruneOptions {
  /** Evict least recently used images until the cache is at most this big. */
  maxSizeBytes?: number
  /** Evict whatever was not used for longer than this. */
  ttlMs?: number
  /** Also every unreferenced file (orphan) not used within keepUsedWithinMs: to make room on a full disk. */
  orphans?: boolean
  /** Size and orphan eviction never take what was used this recently (a pull may be in progress). Default 0. */
  keepUsedWithinMs?: number
  /** Default: the store's clock. */
  now?: number
  dryRun?: boolean
}

export interface PruneSummary extends EvictionSummary {
  maxSizeBytes: number | null
  ttlMs: number | null
  /** Whether the cache is within maxSizeBytes afterwards (true without a size limit). */
  fits: boolean
}

/**
 * Parses `NAME[:TAG]` or `NAME@DIGEST` as `docker pull` does (`alpine` is
 * docker.io/library/alpine, `localhost:5000/x` names a registry with a port).
 * Throws USAGE with the reason.
 */
export function parseImageSelector(text: string): ImageSelector {
  const fail = (why: string) =>
    new DproxyError('USAGE', `invalid image '${truncate(text)}': ${why}`, { detail: { image: truncate(text) } })
  try {
    const { registry, repository, tag, digest } = parseImageReference(text.trim())
    if (tag !== undefined && digest !== undefined) throw fail('expected NAME[:TAG] or NAME@DIGEST')
    return { registry, repository, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest: digest.value } : {}) }
  } catch (err) {
    if (err instanceof DproxyError && err.code === 'USAGE') throw err
    throw fail(err instanceof Error ? err.message : String(err))
  }
}

/** `registry/repository[:tag|@digest]` for messages. */
export function formatSelector(s: ImageSelector): string {
  return `${s.registry}/${s.repository}${s.digest ? `@${s.digest}` : s.tag ? `:${s.tag}` : ''}`
}

export function isEmptyFilter(filter: ClearFilter): boolean {
  return filter.image === undefined && filter.olderThanMs === undefined && filter.unusedForMs === undefined
}

function matches(u: CacheUnit, filter: ClearFilter, now: number): boolean {
  const { image } = filter
  if (image) {
    if (u.kind !== 'image' || u.registry !== image.registry || u.repository !== image.repository) return false
    if (image.tag !== undefined && u.tag !== image.tag) return false
    if (image.digest !== undefined && u.digest !== image.digest) return false
  }
  if (filter.olderThanMs !== undefined && !(now - u.storedAtMs > filter.olderThanMs)) return false
  if (filter.unusedForMs !== undefined && !(now - u.lastUsedMs > filter.unusedForMs)) return false
  return true
}

/** What `clear` with this filter removes. */
export async function planClear(store: Store, filter: ClearFilter, opts: { now?: number } = {}): Promise<ClearPlan> {
  const now = opts.now ?? store.clock.now()
  const inv = await inventory(store)
  const selected = new Set(inv.units.filter((u) => matches(u, filter, now)))
  return planSelection(inv, selected, { now, allRepositories: isEmptyFilter(filter) })
}

/** Plans and, unless `dryRun`, applies a clear. */
export async function clearCache(
  store: Store,
  filter: ClearFilter,
  opts: { now?: number; dryRun?: boolean } = {},
): Promise<EvictionSummary> {
  const plan = await planClear(store, filter, opts)
  return withOrphanTemps(store, opts.dryRun ? summarize(plan, true) : await applyPlan(store, plan))
}

/** Adds the removal of temp files that no live process owns (found, in a dry run). */
async function withOrphanTemps(store: Store, summary: Omit<EvictionSummary, 'tempFiles' | 'tempBytes'>): Promise<EvictionSummary> {
  const temps = await store.removeOrphanTemps({ dryRun: summary.dryRun })
  return { ...summary, tempFiles: temps.files, tempBytes: temps.bytes }
}

/**
 * What eviction removes: everything unused for longer than `ttlMs`, with
 * `orphans` every unreferenced file, then least recently used units (whole
 * images, orphan files) until the cache fits `maxSizeBytes`, never one used
 * within `keepUsedWithinMs` (but for the TTL's).
 */
export async function planPrune(store: Store, opts: PruneOptions): Promise<ClearPlan> {
  const now = opts.now ?? store.clock.now()
  const inv = await inventory(store)
  const selected = new Set<CacheUnit>()
  const refs = new Map<FileKey, number>()
  for (const u of inv.units) for (const f of u.files) refs.set(f, (refs.get(f) ?? 0) + 1)
  let freed = 0
  const select = (u: CacheUnit) => {
    selected.add(u)
    for (const f of u.files) {
      const left = refs.get(f)! - 1
      refs.set(f, left)
      if (left === 0) freed += fileSize(inv.scan, f)
    }
  }
  const keep = opts.keepUsedWithinMs ?? 0
  if (opts.ttlMs !== undefined) {
    for (const u of inv.units) if (now - u.lastUsedMs > opts.ttlMs) select(u)
  }
  if (opts.orphans) {
    for (const u of inv.units) if (u.kind === 'orphan' && !selected.has(u) && now - u.lastUsedMs >= keep) select(u)
  }
  if (opts.maxSizeBytes !== undefined) {
    const lru = inv.units
      .filter((u) => !selected.has(u))
      .sort((a, b) => a.lastUsedMs - b.lastUsedMs || (a.kind === b.kind ? 0 : a.kind === 'orphan' ? -1 : 1) || cmp(a.digest, b.digest))
    for (const u of lru) {
      if (inv.scan.bytes - freed <= opts.maxSizeBytes) break
      if (now - u.lastUsedMs < keep) break
      select(u)
    }
  }
  return planSelection(inv, selected, { now, allRepositories: false })
}

/** Plans and, unless `dryRun`, applies eviction. */
export async function prune(store: Store, opts: PruneOptions): Promise<PruneSummary> {
  const plan = await planPrune(store, opts)
  const summary = await withOrphanTemps(store, opts.dryRun ? summarize(plan, true) : await applyPlan(store, plan))
  return {
    ...summary,
    maxSizeBytes: opts.maxSizeBytes ?? null,
    ttlMs: opts.ttlMs ?? null,
    fits: opts.maxSizeBytes === undefined || summary.remainingBytes <= opts.maxSizeBytes,
  }
}

/**
 * Which files go when `selected` units go: those no remaining unit references.
 * Links go in every repository a selected image belongs to (or in all, when
 * clearing everything) unless a remaining image of that repository reaches
 * them; so do links to manifests that are removed.
 */
export function planSelection(inv: Inventory, selected: Set<CacheUnit>, opts: { now: number; allRepositories: boolean }): ClearPlan {
  const { scan } = inv
  const kept = new Set<FileKey>()
  for (const u of inv.units) if (!selected.has(u)) for (const f of u.files) kept.add(f)
  const gone = new Set<FileKey>()
  for (const u of selected) for (const f of u.files) if (!kept.has(f)) gone.add(f)

  const plan: ClearPlan = {
    now: opts.now,
    images: [],
    orphans: 0,
    tags: [],
    links: [],
    manifests: [],
    blobs: [],
    bytes: 0,
    totalBytes: scan.bytes,
  }
  const touched = new Set<string>()
  for (const u of inv.units) {
    if (!selected.has(u)) continue
    if (u.kind === 'orphan') {
      plan.orphans++
      continue
    }
    plan.images.push({ registry: u.registry, repository: u.repository, tag: u.tag, digest: u.digest })
    if (u.tag !== null) plan.tags.push({ registry: u.registry, repository: u.repository, tag: u.tag, digest: u.digest })
    touched.add(`${u.registry}/${u.repository}`)
  }
  for (const f of [...gone].sort()) {
    const entry = { digest: f.slice(2), size: fileSize(scan, f) }
    if (f.startsWith('m:')) plan.manifests.push(entry)
    else plan.blobs.push(entry)
    plan.bytes += entry.size
  }
  // Manifests each repository's remaining images reach: their links stay.
  const reachable = new Map<string, Set<string>>()
  for (const u of inv.units) {
    if (u.kind !== 'image' || selected.has(u)) continue
    const key = `${u.registry}/${u.repository}`
    let set = reachable.get(key)
    if (!set) reachable.set(key, (set = new Set()))
    for (const d of u.manifestDigests) set.add(d)
  }
  for (const repo of scan.repositories) {
    const key = `${repo.registry}/${repo.repository}`
    const isTouched = opts.allRepositories || touched.has(key)
    const stays = reachable.get(key)
    for (const d of [...repo.links].sort()) {
      if ((isTouched && !stays?.has(d)) || gone.has(`m:${d}`)) {
        plan.links.push({ registry: repo.registry, repository: repo.repository, digest: d })
      }
    }
  }
  return plan
}

export function summarize(plan: ClearPlan, dryRun: boolean): Omit<EvictionSummary, 'tempFiles' | 'tempBytes'> {
  return {
    dryRun,
    images: plan.images,
    orphans: plan.orphans,
    tags: plan.tags.length,
    manifests: plan.manifests.length,
    blobs: plan.blobs.length,
    bytes: plan.bytes,
    remainingBytes: Math.max(0, plan.totalBytes - plan.bytes),
  }
}

/** Deletes what the plan lists; returns what was actually removed (files already gone are not counted). */
export async function applyPlan(store: Store, plan: ClearPlan): Promise<Omit<EvictionSummary, 'tempFiles' | 'tempBytes'>> {
  const { layout } = store
  const done = { tags: 0, manifests: 0, blobs: 0, bytes: 0 }
  for (const t of plan.tags) {
    const now = await store.getTag(t.registry, t.repository, t.tag)
    // A pull moved the tag since the plan: it now names content the plan did not look at.
    if (now && now.digest !== t.digest) continue
    if (await removeFile(layout.tag(t.registry, t.repository, t.tag))) done.tags++
  }
  for (const l of plan.links) {
    await removeFile(layout.manifestLink(l.registry, l.repository, parseDigest(l.digest)))
    store.forgetLinks(l.registry, l.repository)
  }
  for (const m of plan.manifests) {
    if (await unlessBusy(store.deleteManifest(parseDigest(m.digest)))) {
      done.manifests++
      done.bytes += m.size
    }
  }
  for (const b of plan.blobs) {
    if (await unlessBusy(store.deleteBlob(parseDigest(b.digest)))) {
      done.blobs++
      done.bytes += b.size
    }
  }
  return {
    dryRun: false,
    images: plan.images,
    orphans: plan.orphans,
    ...done,
    remainingBytes: Math.max(0, plan.totalBytes - done.bytes),
  }
}

/**
 * Where an open file cannot be deleted (Windows: EBUSY / EPERM while a client
 * reads it), it stays for the next clear or prune instead of failing this one.
 */
async function unlessBusy(deleting: Promise<boolean>): Promise<boolean> {
  try {
    return await deleting
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | null)?.code
    if (code === 'EBUSY' || (code === 'EPERM' && process.platform === 'win32')) return false
    throw err
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
