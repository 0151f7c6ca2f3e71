// Pull-through policy for manifests and tags, after GitLab's Dependency Proxy:
// a manifest asked for by digest is immutable, so a cached one is served with
// no upstream request at all, under a repository that has it (LinkStore: its
// own marker, or a child of an index linked to it). Under any other name it
// costs one upstream HEAD by digest for that repository (free under Docker
// Hub's rate limit) and is linked on 200; on a refusal, or an upstream that
// cannot answer, the request is served as a cold miss (the upstream GET it
// would make), so the answer does not tell whether the cache holds it.
//
// A tag may move, so it costs one upstream HEAD (free under Docker Hub's rate
// limit); only when the digest changed does a GET follow (counted). With `maxAgeMs` a recently checked tag skips even the
// HEAD. When the upstream cannot answer (down, 5xx, 429, an HTML page), the
// cached tag is served and marked stale rather than failing the pull.
//
// Manifest bytes are verified against their digest and stored byte for byte:
// never re-serialised or converted, so multi-arch indexes keep their digests.
//
// Writing to the cache is bookkeeping, not the answer: when the disk refuses
// (full, read-only; CACHE_UNAVAILABLE, logged once by the store), the client
// is still served what upstream or the cache gave.

import type { Clock } from '../clock.js'
import { DproxyError, isDproxyError, isUpstreamOutage, truncate } from '../errors.js'
import type { Logger } from '../log.js'
import type { LinkStore, ManifestStore, StoredManifest, TagRecord, TagStore } from '../store/api.js'
import type { TagPage, UpstreamAnswer, UpstreamClient } from '../upstream/client.js'
import type { Counters } from './counters.js'
import { notCached } from './outage.js'
import { SingleFlight } from '../singleflight.js'
import { parseDigest, type Digest, digestOf } from '../oci/digest.js'
import type { ImageName, Reference } from '../oci/reference.js'

export interface ManifestResult extends StoredManifest {
  /** Served from cache because upstream could not be asked. */
  stale: boolean
  /** This call (or the one it joined) fetched the bytes with a counted upstream GET. */
  fetched: boolean
  /** When fetched: the upstream endpoint that answered, and its status. */
  upstream?: UpstreamAnswer
}

/** What a tag points at upstream, from a HEAD alone (free under Docker Hub's rate limit). */
export interface TagCheck {
  digest: string
  mediaType: string
  /** That manifest is in the cache already: pulling the tag costs no GET. */
  cached: boolean
  /** The registry's origin answered, which charges pulls; false when a team endpoint before it did (registries.ts). */
  charged: boolean
}

export interface GetOptions {
  /**
   * Mark the manifest as used by a client (default true). Background refreshes
   * pass false, so re-checking a tag never makes it look pulled.
   */
  touch?: boolean
  /**
   * The tag's upstream HEAD, made moments ago by check() (prefetch's counting
   * pass): taken as the answer instead of asking again, so a warmed tag costs
   * one HEAD, not two. The run then fetches what it counted.
   */
  checked?: TagCheck
}

/** What the manifest proxy asks of upstream (the Upstreams class, or a test's double). */
export interface ManifestUpstreams {
  get(registry: string): Pick<UpstreamClient, 'headManifest' | 'getManifest' | 'listTags'>
}

export interface ManifestProxyOptions {
  store: ManifestStore & TagStore & LinkStore
  upstreams: ManifestUpstreams
  counters: Counters
  clock: Clock
  log: Logger
  /** A tag checked upstream less than this long ago is served without asking again. */
  maxAgeMs: number
}

export class ManifestProxy {
  private readonly flights = new SingleFlight<ManifestResult>()
  /** Upstream's word that a repository has a cached manifest, asked once however many clients wait for it. */
  private readonly confirming = new SingleFlight<boolean>()

  constructor(private readonly options: ManifestProxyOptions) {}

  async get(image: ImageName, ref: Reference, opts: GetOptions = {}): Promise<ManifestResult> {
    const touch = opts.touch ?? true
    if (ref.kind === 'digest') return this.byDigest(image, ref.digest, touch)
    return this.byTag(image, ref.tag, touch, opts.checked)
  }

  /**
   * HEADs a tag and says whether its manifest is cached, changing nothing:
   * prefetch counts the GETs a run will need before it spends any.
   */
  async check(image: ImageName, tag: string): Promise<TagCheck> {
    const head = await this.options.upstreams.get(image.registry).headManifest(image.repository, tag)
    if (!head.digest) throw new DproxyError('UPSTREAM_INVALID', `upstream sent no digest for ${name(image)}:${tag}`)
    const d = parseDigestFromUpstream(head.digest)
    const m = await this.options.store.getManifest(d)
    return { digest: d.value, mediaType: head.mediaType, cached: m !== undefined && m.mediaType === head.mediaType, charged: head.charged !== false }
  }

  async listTags(image: ImageName, query: URLSearchParams): Promise<TagPage & { stale: boolean }> {
    try {
      return { ...(await this.options.upstreams.get(image.registry).listTags(image.repository, query)), stale: false }
    } catch (err) {
      if (!isUpstreamOutage(err)) throw err
      const tags = await this.options.store.listTags(image.registry, image.repository)
      if (tags.length === 0) throw notCached(err, 'NAME_UNKNOWN', `the tag list of ${name(image)}`, image.registry)
      this.options.log.warn(`serving cached tag list of ${name(image)}: ${(err as Error).message}`)
      return { tags, stale: true }
    }
  }

  private async byDigest(image: ImageName, d: Digest, touch: boolean): Promise<ManifestResult> {
    const cached = await this.options.store.getManifest(d)
    // A client may name any repository here: the cached bytes are its only when it has them.
    if (cached && (await this.has(image, d))) {
      this.options.counters.cacheHits++
      if (touch) await this.options.store.touchManifest(d)
      return { ...cached, stale: false, fetched: false }
    }
    return this.flights.do(`${image.registry}/${image.repository}@${d.value}`, async () => {
      this.options.counters.cacheMisses++
      try {
        const body = await this.options.upstreams.get(image.registry).getManifest(image.repository, d.value)
        return await this.keep(image, d, body.bytes, body.mediaType, body.digest, touch, body.answer)
      } catch (err) {
        throw notCached(err, 'MANIFEST_UNKNOWN', `${name(image)}@${d.value}`, image.registry)
      }
    })
  }

  /**
   * Whether the repository has manifest `d`: linked to it, or upstream's HEAD
   * by digest says so (then linked). When upstream refuses or cannot answer,
   * the request goes the way of a cold miss, and gets exactly its answer.
   */
  private async has(image: ImageName, d: Digest): Promise<boolean> {
    if (await this.options.store.isLinked(image.registry, image.repository, d)) return true
    return this.confirming.do(`${image.registry}/${image.repository}@${d.value}`, async () => {
      try {
        await this.options.upstreams.get(image.registry).headManifest(image.repository, d.value)
      } catch {
        return false
      }
      // A marker, as a GET under the repository would write: what the manifest names is the repository's too.
      await unlessDiskFails(this.options.store.linkManifest(image.registry, image.repository, d))
      return true
    })
  }

  private async byTag(image: ImageName, tag: string, touch: boolean, checked: TagCheck | undefined): Promise<ManifestResult> {
    const { store, clock, maxAgeMs } = this.options
    const rec = await store.getTag(image.registry, image.repository, tag)
    if (rec && checked === undefined && maxAgeMs > 0 && clock.now() - rec.checkedAt < maxAgeMs) {
      const fresh = await this.fromCache(image, rec, touch)
      if (fresh) {
        this.options.counters.cacheHits++
        return fresh
      }
    }
    return this.flights.do(`${image.registry}/${image.repository}:${tag}`, () => this.revalidate(image, tag, rec, touch, checked))
  }

  /** Asks upstream what the tag points at now (unless just asked); GETs only when that is not cached. */
  private async revalidate(
    image: ImageName,
    tag: string,
    rec: TagRecord | undefined,
    touch: boolean,
    checked: TagCheck | undefined,
  ): Promise<ManifestResult> {
    const { counters } = this.options
    const client = this.options.upstreams.get(image.registry)
    try {
      const head = checked ?? (await client.headManifest(image.repository, tag))
      if (head.digest) {
        const known = await this.fromCache(image, { digest: head.digest, mediaType: head.mediaType }, touch)
        if (known) {
          counters.cacheHits++
          counters.manifestGetsAvoided++
          await this.recordTag(image, tag, known)
          return known
        }
      }
      counters.cacheMisses++
      const body = await client.getManifest(image.repository, tag)
      const d = parseDigestFromUpstream(body.digest ?? digestOf(body.bytes))
      const result = await this.keep(image, d, body.bytes, body.mediaType, body.digest, touch, body.answer)
      await this.recordTag(image, tag, result)
      return result
    } catch (err) {
      const stale = isUpstreamOutage(err) && rec ? await this.fromCache(image, rec, touch) : undefined
      if (!stale) throw notCached(err, 'MANIFEST_UNKNOWN', `${name(image)}:${tag}`, image.registry)
      counters.cacheHits++
      counters.staleServed++
      this.options.log.warn(`serving stale ${name(image)}:${tag} (${stale.digest}): ${(err as Error).message}`)
      return { ...stale, stale: true }
    }
  }

  /** Remembers what upstream just said the tag points at. */
  private async recordTag(image: ImageName, tag: string, m: StoredManifest): Promise<void> {
    await unlessDiskFails(
      this.options.store.putTag(image.registry, image.repository, tag, {
        digest: m.digest,
        mediaType: m.mediaType,
        size: m.bytes.length,
        checkedAt: this.options.clock.now(),
      }),
    )
  }

  /** Verifies upstream bytes against every digest that names them, then stores them. */
  private async keep(
    image: ImageName,
    d: Digest,
    bytes: Buffer,
    mediaType: string,
    headerDigest: string | undefined,
    touch: boolean,
    upstream: UpstreamAnswer | undefined,
  ): Promise<ManifestResult> {
    for (const expected of headerDigest === undefined ? [d.value] : [d.value, headerDigest]) {
      const e = parseDigestFromUpstream(expected)
      const actual = digestOf(bytes, e.algorithm)
      if (actual !== e.value) {
        throw new DproxyError(
          'UPSTREAM_INVALID',
          `upstream sent a manifest for ${name(image)}@${d.value} whose content has digest ${actual}, not ${e.value}`,
        )
      }
    }
    await unlessDiskFails(this.options.store.putManifest(d, bytes, mediaType))
    await this.used(image, d, touch)
    return { digest: d.value, mediaType, bytes, stale: false, fetched: true, ...(upstream ? { upstream } : {}) }
  }

  private async fromCache(
    image: ImageName,
    rec: Pick<TagRecord, 'digest' | 'mediaType'>,
    touch: boolean,
  ): Promise<ManifestResult | undefined> {
    let d: Digest
    try {
      d = parseDigest(rec.digest)
    } catch {
      return undefined
    }
    const m = await this.options.store.getManifest(d)
    if (!m || m.mediaType !== rec.mediaType) return undefined
    await this.used(image, d, touch)
    return { ...m, stale: false, fetched: false }
  }

  private async used(image: ImageName, d: Digest, touch: boolean): Promise<void> {
    if (touch) await this.options.store.touchManifest(d)
    await unlessDiskFails(this.options.store.linkManifest(image.registry, image.repository, d))
  }
}

async function unlessDiskFails(write: Promise<void>): Promise<void> {
  try {
    await write
  } catch (err) {
    if (!isDproxyError(err, 'CACHE_UNAVAILABLE')) throw err
  }
}

function name(image: ImageName): string {
  return `${image.registry}/${image.repository}`
}

function parseDigestFromUpstream(value: string): Digest {
  try {
    return parseDigest(value)
  } catch {
    throw new DproxyError('UPSTREAM_INVALID', `upstream sent an invalid digest '${truncate(value)}'`)
  }
}
