// Which content each repository may be served. Blobs and manifests are stored
// once, by digest, and shared by every repository; a registry serves a blob,
// or a manifest by digest, only under a repository that has it (distribution
// keeps a link per repository and layer or manifest for exactly this).
// Without that, anyone who knows a digest could read a private image under
// any name, once someone else pulled it through this cache.
//
// Nothing new is written to disk for it: a repository's links are derived
// from what the cache records already, the manifests linked to it
// (repositories/<registry>/<repo>/_manifests/, layout.ts). A linked manifest
// lends the repository its config and layers, and an index its children and,
// for each child that is cached, that child's blobs (a registry accepts an
// index only when its children are in the same repository). So a cache
// written by an older dproxy serves its images as before, and a restart keeps
// everything its manifests say. What upstream confirmed for a repository
// beyond its manifests (LinkIndex.addBlob) is kept in memory only: after a
// restart it costs one free HEAD again.
//
// The index is in memory, per repository, derived on first use (one readdir
// and a read of each linked manifest) and kept in a bounded LRU, so a warm
// blob GET costs a Set lookup and no disk work. A child that was not cached
// when its index was linked is remembered as pending and looked at again when
// a digest is not found, so a platform pulled later lends its blobs too.

import { LRUCache } from 'lru-cache'
import { referencedDigests } from '../oci/manifest.js'
import { parseDigest, type Digest } from '../oci/digest.js'
import type { StoredManifest } from './api.js'

/** Where the index reads what a repository references (the file store, the memory store). */
export interface LinkSource {
  /** The manifests recorded as referenced by the repository (linkManifest), in any order. */
  linkedManifests(registry: string, repository: string): Promise<Digest[]>
  getManifest(d: Digest): Promise<StoredManifest | undefined>
}

export interface LinkIndexOptions {
  /** Digests remembered over all repositories before the least recently used repository is forgotten. */
  maxDigests?: number
  /** Digests one repository may hold; past it, further ones need upstream's word each time. */
  maxPerRepository?: number
}

/** Enough for a few thousand images' layers; a forgotten repository is derived again when asked. */
const MAX_DIGESTS = 200_000
const MAX_PER_REPOSITORY = 50_000
/** Uncached children remembered per repository (an index's attestations are never fetched, and stay pending). */
const MAX_PENDING = 256
/** An index of indexes of images: deeper nesting lends nothing more. */
const MAX_DEPTH = 3

class RepositoryLinks {
  /** Digests the repository has: manifests, their blobs and children, and what upstream confirmed. */
  readonly digests = new Set<string>()
  /** Manifests whose references are in `digests`. */
  readonly expanded = new Set<string>()
  /** Children named by a linked index but not cached when it was read. */
  readonly pending = new Set<string>()
}

export class LinkIndex {
  private readonly repos: LRUCache<string, RepositoryLinks>
  private readonly loading = new Map<string, Promise<RepositoryLinks>>()
  private readonly maxPerRepository: number

  constructor(
    private readonly source: LinkSource,
    o: LinkIndexOptions = {},
  ) {
    this.maxPerRepository = o.maxPerRepository ?? MAX_PER_REPOSITORY
    this.repos = new LRUCache({ maxSize: o.maxDigests ?? MAX_DIGESTS, sizeCalculation: (r) => r.digests.size + 1 })
  }

  /** Whether `repository` has `d`: a linked manifest names it, or upstream said so. */
  async has(registry: string, repository: string, d: Digest): Promise<boolean> {
    const key = repoKey(registry, repository)
    const repo = this.repos.get(key) ?? (await this.load(key, registry, repository))
    if (repo.digests.has(d.value)) return true
    if (repo.pending.size === 0) return false
    // A platform of a linked index may have been cached since.
    for (const m of [...repo.pending]) await this.expand(repo, m, 1)
    this.resize(key, repo)
    return repo.digests.has(d.value)
  }

  /** The repository now references manifest `d` (stored already): it has what that manifest names. */
  async addManifest(registry: string, repository: string, d: Digest): Promise<void> {
    const key = repoKey(registry, repository)
    const repo = this.repos.get(key) ?? (await this.load(key, registry, repository))
    if (repo.expanded.has(d.value)) return
    await this.expand(repo, d.value, 0)
    this.resize(key, repo)
  }

  /** Upstream confirmed that the repository has `d`. */
  async addBlob(registry: string, repository: string, d: Digest): Promise<void> {
    const key = repoKey(registry, repository)
    const repo = this.repos.get(key) ?? (await this.load(key, registry, repository))
    if (repo.digests.has(d.value) || repo.digests.size >= this.maxPerRepository) return
    repo.digests.add(d.value)
    this.resize(key, repo)
  }

  /** Forgets what is known of the repository (its links were removed): derived again when next asked. */
  forget(registry: string, repository: string): void {
    this.repos.delete(repoKey(registry, repository))
  }

  private load(key: string, registry: string, repository: string): Promise<RepositoryLinks> {
    let loading = this.loading.get(key)
    if (!loading) {
      loading = (async () => {
        const repo = new RepositoryLinks()
        let linked: Digest[]
        try {
          linked = await this.source.linkedManifests(registry, repository)
        } catch {
          // Unreadable now: nothing is lent (upstream is asked instead), and the next request reads again.
          return repo
        }
        for (const m of linked) await this.expand(repo, m.value, 0)
        this.repos.set(key, repo)
        return repo
      })().finally(() => this.loading.delete(key))
      this.loading.set(key, loading)
    }
    return loading
  }

  /** Adds manifest `m` and what it names; an uncached child is left pending. */
  private async expand(repo: RepositoryLinks, m: string, depth: number): Promise<void> {
    if (repo.expanded.has(m)) return
    this.add(repo, m)
    let stored: StoredManifest | undefined
    try {
      stored = await this.source.getManifest(parseDigest(m))
    } catch {
      // An unreadable manifest lends nothing; upstream can still confirm what it named.
      stored = undefined
    }
    if (!stored) {
      if (depth > 0 && repo.pending.size < MAX_PENDING) repo.pending.add(m)
      return
    }
    repo.pending.delete(m)
    repo.expanded.add(m)
    const { children, blobs } = referencedDigests(stored.bytes)
    for (const b of blobs) this.add(repo, b)
    for (const c of children) {
      if (depth + 1 < MAX_DEPTH) await this.expand(repo, c, depth + 1)
      else this.add(repo, c)
    }
  }

  private add(repo: RepositoryLinks, d: string): void {
    if (repo.digests.size < this.maxPerRepository) repo.digests.add(d)
  }

  /** The LRU weighs an entry when it is set: set it again after it grew. */
  private resize(key: string, repo: RepositoryLinks): void {
    if (this.repos.get(key) === repo) this.repos.set(key, repo)
  }
}

/** Names cannot hold a newline, so it separates them unambiguously. */
function repoKey(registry: string, repository: string): string {
  return `${registry}\n${repository}`
}
