// Warming the cache on purpose (`dproxy pull`, `dproxy prefetch`, the
// background refresh): which manifests and blobs an image needs, fetched
// through the same ManifestProxy and BlobProxy as client pulls, so single
// flight, verification and the upstream mapping apply unchanged. This file is
// policy only; it never talks to an upstream itself.
//
// Per image: the tag (a HEAD, and a GET only when the digest is not cached),
// for an index the children of the platforms asked for, then every config and
// layer, drained into the cache without being read. Before anything is
// fetched, plan() HEADs every tag (free) to count the counted manifest GETs
// the run needs, so that a run which would exceed `maxPulls` or the headroom
// upstream last reported is refused before it spends a single pull. Those
// HEADs are the run's answers: the fetch takes the digest plan() saw instead
// of asking again, so each tag costs one HEAD and the run fetches exactly
// what it counted. Only what a registry's origin charges counts: a tag a
// team endpoint before it answered (upstream/registries.ts) costs nothing.

import { DproxyError } from '../errors.js'
import type { ManifestStore, TagStore } from '../store/api.js'
import type { Upstreams } from '../upstream/client.js'
import type { BlobProxy } from './blobs.js'
import type { ManifestProxy, ManifestResult, TagCheck } from './manifests.js'
import { DOCKER_HUB } from '../oci/registry-host.js'
import { parseDigest } from '../oci/digest.js'
import { blobsOf, parseManifest, type Descriptor } from '../oci/manifest.js'
import { isIndexMediaType } from '../oci/media-types.js'
import { formatPlatform, platformMatches, type Platform, type PlatformChoice } from '../oci/platform.js'
import type { ImageName, Reference } from '../oci/reference.js'

export interface WarmTarget {
  /** The reference as given, canonical (`docker.io/library/alpine:latest`). */
  ref: string
  image: ImageName
  reference: Reference
  /** Platforms asked for this image instead of the run's (prefetch: what the project's files name). */
  platforms?: Platform[]
}

export type ImageState = 'queued' | 'checking' | 'fetching' | 'fetched' | 'refreshed' | 'up-to-date' | 'failed'

export interface ImageEvent {
  type: 'image'
  image: string
  state: ImageState
  layersDone: number
  layersTotal: number
  /** Blob bytes in the cache so far (fetched now or found there). */
  bytes: number
  /** Blob bytes of the image, from its manifests; 0 until they are known. */
  bytesTotal: number
  /** Bytes this run took from upstream for the image. */
  bytesFetched: number
  reason?: string
}

export interface PlanEvent {
  type: 'plan'
  images: number
  /** Counted manifest GETs the run needs (registries without a rate limit left out). */
  pulls: number
  /** Of those, Docker Hub's. */
  hubPulls: number
  /** True when an index is not cached and `all` platforms were asked: its children are not counted yet. */
  atLeast: boolean
  registries: Array<{ registry: string; pulls: number; remaining: number | null; limit: number | null }>
}

export interface RefusedEvent {
  type: 'refused'
  reason: string
  pulls: number
}

export interface Summary {
  type: 'summary'
  upToDate: number
  refreshed: number
  fetched: number
  failed: Array<{ image: string; reason: string }>
  bytesFromUpstream: number
  /** Counted manifest GETs made (all registries) and those of Docker Hub. */
  pulls: number
  hubPulls: number
}

export type WarmEvent = ImageEvent | PlanEvent | RefusedEvent | Summary

export interface WarmOptions {
  platforms: PlatformChoice
  jobs: number
  maxPulls?: number
  /** Plan only: count, then stop. */
  dryRun?: boolean
  /** Mark what is warmed as used by a client (prefetch yes, background refresh no). */
  touch?: boolean
  /** Headroom below which nothing is fetched from a rate-limited registry (refresh's reserve), as a fraction of the limit. */
  reserve?: number
  /** Checked between images; true stops the run (the client went away, the daemon stops). */
  cancelled?: () => boolean
}

export interface WarmerDeps {
  store: ManifestStore & TagStore
  upstreams: Upstreams
  manifests: ManifestProxy
  blobs: BlobProxy
}

/** Bytes between two progress events of one image. */
const PROGRESS_STEP = 512 * 1024
/**
 * Child manifests and blobs of one image fetched at the same time (on top of
 * `jobs` images): an image's small config and layers do not wait behind its
 * big one, as a client pulling it would not make them wait either.
 */
const BLOB_JOBS = 4
/** Tags HEADed at the same time by plan(), whatever `jobs` is: HEADs are free and small, and nothing is fetched until all have answered. */
const PLAN_JOBS = 8

interface ParsedManifest {
  index: boolean
  children: Descriptor[]
  blobs: Descriptor[]
}

/** What warming reads of a manifest (its bytes were verified against their digest already): an index's children, or an image's blobs. */
function readManifest(m: Pick<ManifestResult, 'bytes' | 'mediaType'>): ParsedManifest {
  const parsed = parseManifest(m.bytes, { mediaType: m.mediaType, strict: true })
  return { index: parsed.index, children: parsed.index ? parsed.manifests : [], blobs: parsed.index ? [] : blobsOf(parsed) }
}

/** A counted GET the registry's origin charged (one answered by a team endpoint before it is free). */
const charged = (m: Pick<ManifestResult, 'fetched' | 'upstream'>) => m.fetched && m.upstream?.charged !== false

const isAttestation = (d: Descriptor) => d.platform?.os === 'unknown' || d.platform === undefined

const choiceFor = (t: WarmTarget, run: PlatformChoice): PlatformChoice => (t.platforms ? { kind: 'list', platforms: t.platforms } : run)

export class Warmer {
  constructor(private readonly deps: WarmerDeps) {}

  /**
   * Warms `targets`, reporting every step through `emit`; resolves with the
   * summary (also emitted). A refused run resolves with the refusal.
   */
  async run(targets: WarmTarget[], o: WarmOptions, emit: (e: WarmEvent) => void): Promise<Summary | RefusedEvent> {
    const states = new Map<string, ImageEvent>()
    const update = (ref: string, change: Partial<ImageEvent>) => {
      const e = { ...states.get(ref)!, ...change }
      states.set(ref, e)
      emit(e)
    }
    for (const t of targets) {
      states.set(t.ref, { type: 'image', image: t.ref, state: 'queued', layersDone: 0, layersTotal: 0, bytes: 0, bytesTotal: 0, bytesFetched: 0 })
      emit(states.get(t.ref)!)
    }

    const checks = new Map<string, TagCheck>()
    const plan = await this.plan(targets, o, Math.max(o.jobs, PLAN_JOBS), checks)
    emit(plan)
    const refusal = this.refusal(plan, o)
    if (refusal) {
      emit(refusal)
      return refusal
    }
    const summary: Summary = { type: 'summary', upToDate: 0, refreshed: 0, fetched: 0, failed: [], bytesFromUpstream: 0, pulls: 0, hubPulls: 0 }
    if (o.dryRun) {
      emit(summary)
      return summary
    }
    await pool(targets, o.jobs, async (t) => {
      if (o.cancelled?.()) return
      try {
        const r = await this.warmOne(t, o, checks.get(t.ref), (change) => update(t.ref, change))
        summary.pulls += r.pulls
        if (t.image.registry === DOCKER_HUB) summary.hubPulls += r.pulls
        summary.bytesFromUpstream += states.get(t.ref)!.bytesFetched
        if (r.state === 'up-to-date') summary.upToDate++
        else if (r.state === 'refreshed') summary.refreshed++
        else summary.fetched++
        update(t.ref, { state: r.state })
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err)
        summary.failed.push({ image: t.ref, reason })
        summary.bytesFromUpstream += states.get(t.ref)!.bytesFetched
        update(t.ref, { state: 'failed', reason })
      }
    })
    emit(summary)
    return summary
  }

  /** HEADs every tag (free) and counts the counted GETs the run needs per registry; each HEAD's answer lands in `checks`. */
  async plan(targets: WarmTarget[], o: Pick<WarmOptions, 'platforms'>, jobs: number, checks = new Map<string, TagCheck>()): Promise<PlanEvent> {
    const perRegistry = new Map<string, number>()
    let atLeast = false
    await pool(targets, jobs, async (t) => {
      let n: number
      try {
        const r = await this.count(t, choiceFor(t, o.platforms), checks)
        // A team endpoint answered: the image's GETs go there too, and it charges nothing.
        n = r.free ? 0 : r.pulls
        atLeast ||= r.atLeast && !r.free
      } catch {
        // Unreachable or unknown: the run says so for this image; it spends nothing.
        n = 0
      }
      perRegistry.set(t.image.registry, (perRegistry.get(t.image.registry) ?? 0) + n)
    })
    const registries = [...perRegistry.entries()]
      .filter(([registry]) => this.deps.upstreams.rateLimits.get(registry)?.unlimited !== true)
      .map(([registry, pulls]) => {
        const r = this.deps.upstreams.rateLimits.get(registry)
        return { registry, pulls, remaining: r?.remaining ?? null, limit: r?.limit ?? null }
      })
      .sort((a, b) => a.registry.localeCompare(b.registry))
    const pulls = registries.reduce((n, r) => n + r.pulls, 0)
    const hubPulls = registries.find((r) => r.registry === DOCKER_HUB)?.pulls ?? 0
    return { type: 'plan', images: targets.length, pulls, hubPulls, atLeast, registries }
  }

  private refusal(plan: PlanEvent, o: Pick<WarmOptions, 'maxPulls' | 'reserve'>): RefusedEvent | undefined {
    const spend = `${plan.atLeast ? 'at least ' : ''}${plan.pulls} pull${plan.pulls === 1 ? '' : 's'}`
    if (o.maxPulls !== undefined && plan.pulls > o.maxPulls) {
      return { type: 'refused', pulls: plan.pulls, reason: `this run would spend ${spend}, more than --max-pulls ${o.maxPulls}` }
    }
    for (const r of plan.registries) {
      if (r.remaining === null || r.pulls === 0) continue
      const keep = o.reserve !== undefined && r.limit !== null ? Math.ceil(r.limit * o.reserve) : 0
      if (r.pulls > r.remaining - keep) {
        const reserve = keep > 0 ? `, ${keep} of them kept in reserve` : ''
        return {
          type: 'refused',
          pulls: plan.pulls,
          reason: `this run would spend ${r.pulls} pull${r.pulls === 1 ? '' : 's'} of ${r.registry}, which has ${r.remaining} left${reserve}`,
        }
      }
    }
    return undefined
  }

  /**
   * Counted GETs one image needs now; `free` when a team endpoint before the
   * registry's origin answered its HEAD (a digest not cached is HEADed too,
   * when the registry has such an endpoint: HEADs cost nothing).
   */
  private async count(t: WarmTarget, choice: PlatformChoice, checks: Map<string, TagCheck>): Promise<{ pulls: number; atLeast: boolean; free?: boolean }> {
    const { store, manifests } = this.deps
    let top: Pick<ManifestResult, 'bytes' | 'mediaType'> | undefined
    let mediaType: string
    let free = false
    if (t.reference.kind === 'tag') {
      const head = await manifests.check(t.image, t.reference.tag)
      checks.set(t.ref, head)
      free = !head.charged
      mediaType = head.mediaType
      top = head.cached ? await store.getManifest(parseDigest(head.digest)) : undefined
    } else {
      top = await store.getManifest(t.reference.digest)
      mediaType = top?.mediaType ?? ''
      if (!top && this.deps.upstreams.chain(t.image.registry).length > 1) {
        const head = await manifests.check(t.image, t.reference.digest.value)
        free = !head.charged
        mediaType = head.mediaType
      }
    }
    if (free) return { pulls: 0, atLeast: false, free }
    if (!top) {
      if (!isIndexMediaType(mediaType)) return { pulls: 1, atLeast: t.reference.kind === 'digest' }
      if (choice.kind === 'list') return { pulls: 1 + choice.platforms.length, atLeast: false }
      return { pulls: 1, atLeast: true }
    }
    const parsed = readManifest(top)
    if (!parsed.index) return { pulls: 0, atLeast: false }
    const children = await this.select(t, parsed.children, choice, undefined)
    let pulls = 0
    for (const c of children) if (!(await store.hasManifest(c.digest))) pulls++
    return { pulls, atLeast: false }
  }

  /** The children of an index to fetch. */
  private async select(t: WarmTarget, children: Descriptor[], choice: PlatformChoice, previous: ManifestResult | undefined): Promise<Descriptor[]> {
    const real = children.filter((c) => !isAttestation(c))
    if (choice.kind === 'all') return real
    let wanted: Platform[]
    if (choice.kind === 'list') {
      wanted = choice.platforms
    } else {
      // The platforms of the children the previous index had in the cache.
      wanted = []
      const old = previous ? readManifest(previous) : undefined
      for (const c of old?.children ?? []) if (c.platform && (await this.deps.store.hasManifest(c.digest))) wanted.push(c.platform)
      if (wanted.length === 0) wanted = choice.fallback
    }
    const picked = real.filter((c) => wanted.some((w) => platformMatches(w, c.platform)))
    if (picked.length === 0) {
      const has = real.map((c) => (c.platform ? formatPlatform(c.platform) : '?')).join(', ')
      throw new DproxyError('MANIFEST_UNKNOWN', `${t.ref} has no image for ${wanted.map(formatPlatform).join(', ')} (it has ${has || 'none'})`)
    }
    return picked
  }

  private async warmOne(
    t: WarmTarget,
    o: WarmOptions,
    checked: TagCheck | undefined,
    update: (change: Partial<ImageEvent>) => void,
  ): Promise<{ state: 'fetched' | 'refreshed' | 'up-to-date'; pulls: number }> {
    const { store, manifests, blobs } = this.deps
    const touch = { touch: o.touch ?? true }
    update({ state: 'checking' })
    const before = t.reference.kind === 'tag' ? await store.getTag(t.image.registry, t.image.repository, t.reference.tag) : undefined
    const previous = before ? await Promise.resolve(before.digest).then(parseDigest).then((d) => store.getManifest(d)).catch(() => undefined) : undefined
    const top = await manifests.get(t.image, t.reference, { ...touch, ...(checked ? { checked } : {}) })
    if (top.stale) {
      throw new DproxyError('UPSTREAM_UNAVAILABLE', 'upstream is unavailable; the cached version is kept')
    }
    let pulls = charged(top) ? 1 : 0
    const parsed = readManifest(top)
    const images: ParsedManifest[] = []
    if (parsed.index) {
      const prev = previous ? { ...previous, stale: false, fetched: false } : undefined
      await pool(await this.select(t, parsed.children, choiceFor(t, o.platforms), prev), BLOB_JOBS, async (c) => {
        const child = await manifests.get(t.image, { kind: 'digest', digest: c.digest }, touch)
        if (charged(child)) pulls++
        images.push(readManifest(child))
      })
    } else {
      images.push(parsed)
    }
    const unique = new Map<string, Descriptor>()
    for (const m of images) for (const b of m.blobs) unique.set(b.digest.value, b)
    const list = [...unique.values()]
    const bytesTotal = list.reduce((n, b) => n + b.size, 0)
    let bytes = 0
    let bytesFetched = 0
    let layersDone = 0
    let downloaded = false
    update({ state: 'fetching', layersTotal: list.length, layersDone, bytesTotal, bytes })
    // Bytes of the downloads still running, by digest, for progress between two completions.
    const running = new Map<string, number>()
    await pool(list, BLOB_JOBS, async (b) => {
      let reported = 0
      const r = await blobs.ensure(t.image, b.digest, (written) => {
        if (written - reported < PROGRESS_STEP) return
        reported = written
        running.set(b.digest.value, written)
        const partial = [...running.values()].reduce((n, w) => n + w, 0)
        update({ bytes: bytes + partial, bytesFetched: bytesFetched + partial })
      })
      running.delete(b.digest.value)
      bytes += r.size
      if (r.fetched) {
        bytesFetched += r.size
        downloaded = true
      }
      layersDone++
      update({ layersDone, bytes, bytesFetched })
    })
    if (!top.fetched && pulls === 0 && !downloaded) return { state: 'up-to-date', pulls }
    const moved = before !== undefined && before.digest !== top.digest
    return { state: moved ? 'refreshed' : 'fetched', pulls }
  }
}

/**
 * Runs `fn` over `items`, at most `jobs` at a time. After a failure no item
 * is started; the ones running are waited for, then the first error is thrown
 * (so nothing of a failed image reports after it failed).
 */
async function pool<T>(items: T[], jobs: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  let failure: { error: unknown } | undefined
  const worker = async () => {
    while (next < items.length && !failure) {
      try {
        await fn(items[next++]!)
      } catch (error) {
        failure ??= { error }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, items.length)) }, worker))
  if (failure) throw failure.error
}
