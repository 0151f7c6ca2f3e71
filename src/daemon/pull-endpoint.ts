// POST /_dproxy/pull: the daemon warms images on request (`dproxy pull`,
// `dproxy prefetch`). admin.ts routes it here, loopback clients only. The body
// is one JSON object, checked strictly since anything on the machine may send
// it:
//
//   {"images": ["docker.io/library/alpine:latest", ...],   canonical references, 1..1000
//    "platforms": ["linux/amd64"] | "all",                  default: the host's
//    "jobs": 4, "maxPulls": 10, "dryRun": false}
//
// An entry of `images` may also be {"image": "<ref>", "platforms": [...]}:
// that image is fetched for those platforms instead of the run's (prefetch
// passes what the project's files name per image).
//
// The answer is NDJSON, one WarmEvent per line as it happens (proxy/warm.ts),
// ending with a `summary` or a `refused` line. A client that goes away stops
// the run between images; downloads already started finish into the cache.

import type { IncomingMessage, ServerResponse } from 'node:http'
import { DproxyError } from '../errors.js'
import { hostPlatform, MAX_PLATFORMS, parsePlatform, type Platform, type PlatformChoice } from '../oci/platform.js'
import { manifestReference, parseImageReference } from '../oci/reference.js'
import { Warmer, type WarmEvent, type WarmerDeps, type WarmTarget } from '../proxy/warm.js'

const MAX_BODY = 1024 * 1024
const MAX_IMAGES = 1000
const MAX_JOBS = 32

export interface PullRequest {
  images: string[]
  /** Platforms asked for one image instead of `platforms`. */
  imagePlatforms: Map<string, Platform[]>
  platforms: PlatformChoice
  jobs: number
  maxPulls?: number
  dryRun: boolean
}

/** Checks a request body; USAGE errors say which field is wrong. */
export function parsePullRequest(body: unknown): PullRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw usage('the body must be a JSON object')
  const fields = body as Record<string, unknown>
  for (const key of Object.keys(fields)) {
    if (!['images', 'platforms', 'jobs', 'maxPulls', 'dryRun'].includes(key)) throw usage(`unknown field '${key.slice(0, 50)}'`)
  }
  if (!Array.isArray(fields.images) || fields.images.length === 0 || fields.images.length > MAX_IMAGES) {
    throw usage(`images must be a list of 1 to ${MAX_IMAGES} references`)
  }
  const images: string[] = []
  const imagePlatforms = new Map<string, Platform[]>()
  for (const entry of fields.images as unknown[]) {
    if (typeof entry === 'string') {
      images.push(entry)
      continue
    }
    const e = (entry ?? {}) as Record<string, unknown>
    if (typeof entry !== 'object' || Array.isArray(entry) || typeof e.image !== 'string' || Object.keys(e).some((k) => k !== 'image' && k !== 'platforms')) {
      throw usage('an entry of images must be a reference or {"image": "<reference>", "platforms": ["linux/amd64"]}')
    }
    const own = platformList(e.platforms)
    if (!own) throw usage(`the platforms of ${e.image.slice(0, 80)} must be a list like ["linux/amd64"]`)
    images.push(e.image)
    imagePlatforms.set(e.image, [...(imagePlatforms.get(e.image) ?? []), ...own])
  }
  let platforms: PlatformChoice
  if (fields.platforms === undefined) platforms = { kind: 'list', platforms: [hostPlatform()] }
  else if (fields.platforms === 'all') platforms = { kind: 'all' }
  else {
    const list = platformList(fields.platforms)
    if (!list) throw usage("platforms must be 'all' or a list like [\"linux/amd64\"]")
    platforms = { kind: 'list', platforms: list }
  }
  const int = (key: string, min: number, max: number): number | undefined => {
    const v = fields[key]
    if (v === undefined) return undefined
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw usage(`${key} must be a whole number from ${min} to ${max}`)
    return v
  }
  const jobs = int('jobs', 1, MAX_JOBS) ?? 4
  const maxPulls = int('maxPulls', 0, 1_000_000)
  if (fields.dryRun !== undefined && typeof fields.dryRun !== 'boolean') throw usage('dryRun must be true or false')
  return { images: [...new Set(images)], imagePlatforms, platforms, jobs, ...(maxPulls !== undefined ? { maxPulls } : {}), dryRun: fields.dryRun === true }
}

/** 1 to MAX_PLATFORMS platforms (a bad one throws parsePlatform's USAGE), or undefined when `value` is no such list. */
function platformList(value: unknown): Platform[] | undefined {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_PLATFORMS || !value.every((p) => typeof p === 'string')) return undefined
  return value.map(parsePlatform)
}

function usage(why: string): DproxyError {
  return new DproxyError('USAGE', `POST /_dproxy/pull: ${why}`)
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let total = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length
    if (total > MAX_BODY) throw usage(`the body is over ${MAX_BODY} bytes`)
    chunks.push(chunk)
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw usage('the body is not JSON')
  }
}

/** Answers a POST /_dproxy/pull; errors before the first line are thrown (admin.ts sends them as OCI JSON). */
export async function pullEndpoint(deps: WarmerDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'POST') throw new DproxyError('UNSUPPORTED', `${req.method ?? 'GET'} /_dproxy/pull: use POST`, { status: 405 })
  const request = parsePullRequest(await readJson(req))
  const targets = pullTargets(request)
  let gone = false
  res.on('close', () => (gone = true))
  res.statusCode = 200
  res.setHeader('content-type', 'application/x-ndjson; charset=utf-8')
  res.setHeader('cache-control', 'no-store')
  res.flushHeaders()
  const emit = (e: WarmEvent) => {
    if (!gone) res.write(JSON.stringify(e) + '\n')
  }
  await runPull(deps, request, targets, emit, () => gone)
  res.end()
}

/** The images of a checked request as the warmer takes them; USAGE for a reference it cannot parse. */
export function pullTargets(request: PullRequest): WarmTarget[] {
  return request.images.map((ref) => {
    const own = request.imagePlatforms.get(ref)
    const r = parseImageReference(ref)
    return { ref, image: { registry: r.registry, repository: r.repository }, reference: manifestReference(r), ...(own ? { platforms: own } : {}) }
  })
}

/**
 * Runs a checked request, every event to `emit`, the last a summary or a
 * refusal. Also what `dproxy pull` runs on a daemon it started in its own
 * process (control/pull.ts): the same run without a loopback HTTP hop.
 */
export async function runPull(deps: WarmerDeps, request: PullRequest, targets: WarmTarget[], emit: (e: WarmEvent) => void, cancelled = () => false): Promise<void> {
  try {
    await new Warmer(deps).run(
      targets,
      {
        platforms: request.platforms,
        jobs: request.jobs,
        dryRun: request.dryRun,
        ...(request.maxPulls !== undefined ? { maxPulls: request.maxPulls } : {}),
        cancelled,
      },
      emit,
    )
  } catch (err) {
    emit({ type: 'refused', pulls: 0, reason: err instanceof Error ? err.message : String(err) })
  }
}
