// The recent failures, per image. In mirror mode a client hides dproxy's
// errors: dockerd falls back to the origin and prints the origin's error, so
// "why did dproxy not serve this" is visible nowhere else. Every error the
// registry handler sends is noted here (registry/errors.ts calls back), and
// `dproxy status` and `dproxy doctor` show them.
//
// Bounded on both axes, since clients choose the names: the images least
// recently failed are forgotten first, and each image keeps its latest few.

import type { IncomingMessage } from 'node:http'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.js'
import type { WireError } from '../registry/errors.js'
import { splitTarget } from '../registry/handler.js'
import { resolveImageName } from '../oci/reference.js'

export interface Failure {
  /** ISO 8601 */
  at: string
  /** What was asked: `GET /v2/library/alpine/manifests/latest?ns=docker.io` (cut at 300 characters). */
  request: string
  status: number
  code: string
  message: string
}

export interface ImageFailures {
  /** `docker.io/library/alpine`, or the path's name when it is not a valid image name. */
  image: string
  /** Failures since the daemon started (more than `failures` holds). */
  count: number
  /** Latest first. */
  failures: Failure[]
}

const pathRe = /^\/v2\/(.+)\/(?:manifests|blobs|tags)\//
const printable = (s: string, max: number) => s.replace(/[^\x20-\x7e]/g, '?').slice(0, max)

export class FailureBook {
  private readonly images: LRUCache<string, ImageFailures>

  constructor(
    private readonly clock: Clock,
    private readonly perImage = 5,
    maxImages = 50,
  ) {
    this.images = new LRUCache({ max: maxImages })
  }

  /** Notes an error sent for an image request; other paths (`/v2/`, unknown endpoints) are not an image's failure. */
  record(req: Pick<IncomingMessage, 'method' | 'url'>, wire: WireError): void {
    const raw = req.url ?? '/'
    const { path, params } = splitTarget(raw)
    const m = pathRe.exec(path)
    if (!m) return
    const image = this.imageOf(m[1]!, params.get('ns') ?? undefined)
    const entry = this.images.get(image) ?? { image, count: 0, failures: [] }
    entry.count++
    entry.failures.unshift({
      at: new Date(this.clock.now()).toISOString(),
      request: printable(`${req.method ?? 'GET'} ${raw}`, 300),
      status: wire.status,
      code: wire.code,
      message: printable(wire.message, 500),
    })
    entry.failures.length = Math.min(entry.failures.length, this.perImage)
    this.images.set(image, entry)
  }

  /** Images with failures, the most recently failed first. */
  recent(): ImageFailures[] {
    return [...this.images.values()].map((e) => ({ ...e, failures: [...e.failures] }))
  }

  private imageOf(name: string, ns: string | undefined): string {
    try {
      const image = resolveImageName(name, ns)
      return `${image.registry}/${image.repository}`
    } catch {
      return printable(name, 200)
    }
  }
}
