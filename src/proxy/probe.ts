// The doctor's probe repository. `dproxy doctor` proves that a client's pulls
// reach dproxy by making that client pull `<registry>/dproxy-doctor/probe:<nonce>`.
// dproxy answers this one repository itself, under every registry and in
// every route a client uses (a mirror's root, containerd's `?ns=`, the
// `<registry>/...` path), with a tiny image held in memory, and notes which
// nonces arrived, how, and from which client. Nothing about it is ever asked
// upstream, so the check costs no pull anywhere; a client that bypasses dproxy
// asks the real registry, where the repository does not exist, and its nonce
// never arrives.
//
// The image is deterministic: its one layer is an empty tar (two zero blocks)
// in a gzip stream written with a stored deflate block (no compressor whose
// output could change between zlib versions), and its config names the
// platform dproxy runs on, because containerd checks a plain manifest's
// platform before it unpacks it.

import { crc32 } from 'node:zlib'
import { LRUCache } from 'lru-cache'
import type { Clock } from '../clock.js'
import { DproxyError } from '../errors.js'
import { DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST } from '../oci/media-types.js'
import type { BlobProxy, BlobSource } from './blobs.js'
import type { ManifestProxy, ManifestResult } from './manifests.js'
import type { ImageName, Reference } from '../oci/reference.js'
import { type Digest, digestOf } from '../oci/digest.js'

/** The reserved repository, under any registry. */
export const PROBE_REPOSITORY = 'dproxy-doctor/probe'


/** How a probe request reached dproxy. */
export type ProbeRoute = 'root' | 'ns' | 'path'

export interface ProbeHit {
  /** ISO 8601 */
  at: string
  registry: string
  route: ProbeRoute
  method: string
  userAgent: string
}

export interface ProbeImage {
  manifest: { digest: string; mediaType: string; bytes: Buffer }
  blobs: Map<string, Buffer>
}

/** A gzip member holding `data` in one stored (uncompressed) deflate block. */
function storedGzip(data: Buffer): Buffer {
  if (data.length > 0xffff) throw new DproxyError('INTERNAL', 'a stored deflate block holds at most 65535 bytes')
  const header = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])
  const block = Buffer.alloc(5)
  block[0] = 1
  block.writeUInt16LE(data.length, 1)
  block.writeUInt16LE(~data.length & 0xffff, 3)
  const trailer = Buffer.alloc(8)
  trailer.writeUInt32LE(crc32(data) >>> 0, 0)
  trailer.writeUInt32LE(data.length, 4)
  return Buffer.concat([header, block, data, trailer])
}

const ociArch: Partial<Record<NodeJS.Architecture, string>> = { x64: 'amd64', ia32: '386', ppc64: 'ppc64le' }

/** The probe image for a platform (default: the one dproxy runs on). */
export function buildProbeImage(arch: string = ociArch[process.arch] ?? process.arch): ProbeImage {
  const tar = Buffer.alloc(1024)
  const layer = storedGzip(tar)
  const config = Buffer.from(
    JSON.stringify({
      architecture: arch,
      os: 'linux',
      created: '1970-01-01T00:00:00Z',
      config: { Labels: { 'org.opencontainers.image.description': 'dproxy doctor probe, served by dproxy itself' } },
      rootfs: { type: 'layers', diff_ids: [digestOf(tar)] },
      history: [{ created: '1970-01-01T00:00:00Z', created_by: 'dproxy doctor' }],
    }),
  )
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { mediaType: DOCKER_CONFIG, size: config.length, digest: digestOf(config) },
      layers: [{ mediaType: DOCKER_LAYER_GZIP, size: layer.length, digest: digestOf(layer) }],
    }),
  )
  return {
    manifest: { digest: digestOf(manifest), mediaType: DOCKER_MANIFEST, bytes: manifest },
    blobs: new Map([
      [digestOf(config), config],
      [digestOf(layer), layer],
    ]),
  }
}

function memorySource(bytes: Buffer): BlobSource {
  return { kind: 'bytes', size: bytes.length, cached: true, bytes, async close() {} }
}

/** What the request handler needs to know about a request for the probe. */
export interface ProbeRequest {
  /** The repository name as the client sent it (before `?ns=` and `library/`). */
  name: string
  ns: string | undefined
  method: string
  userAgent: string | undefined
}

export interface ProbeRepositoryOptions {
  clock: Clock
  /** Nonces remembered (least recently seen forgotten first). */
  maxNonces?: number
  arch?: string
}

const HITS_PER_NONCE = 8

export class ProbeRepository {
  readonly image: ProbeImage
  private readonly nonces: LRUCache<string, ProbeHit[]>

  constructor(private readonly options: ProbeRepositoryOptions) {
    this.image = buildProbeImage(options.arch)
    this.nonces = new LRUCache({ max: options.maxNonces ?? 256 })
  }

  /**
   * The manifest and blob answers for a request that names the probe
   * repository (the tag it asks for is noted as a nonce); undefined for every
   * other repository, which the proxies answer.
   */
  claim(image: ImageName, req: ProbeRequest): { manifests: Pick<ManifestProxy, 'get' | 'listTags'>; blobs: Pick<BlobProxy, 'open' | 'size'> } | undefined {
    if (image.repository !== PROBE_REPOSITORY) return undefined
    const route: ProbeRoute = req.ns !== undefined ? 'ns' : req.name === image.repository ? 'root' : 'path'
    return {
      manifests: {
        get: async (_image: ImageName, ref: Reference): Promise<ManifestResult> => {
          if (ref.kind === 'tag') this.note(ref.tag, { registry: image.registry, route, method: req.method, userAgent: req.userAgent })
          else if (ref.digest.value !== this.image.manifest.digest) {
            throw new DproxyError('MANIFEST_UNKNOWN', `${PROBE_REPOSITORY} has no manifest ${ref.digest.value}`)
          }
          return { ...this.image.manifest, stale: false, fetched: false }
        },
        listTags: async () => ({ tags: [...this.nonces.keys()].sort(), stale: false }),
      },
      blobs: {
        open: async (_image: ImageName, d: Digest) => memorySource(this.blob(d)),
        size: async (_image: ImageName, d: Digest) => this.blob(d).length,
      },
    }
  }

  /** The requests that asked for `nonce`, oldest first; undefined when it never arrived. */
  seen(nonce: string): ProbeHit[] | undefined {
    return this.nonces.get(nonce)
  }

  private blob(d: Digest): Buffer {
    const bytes = this.image.blobs.get(d.value)
    if (!bytes) throw new DproxyError('BLOB_UNKNOWN', `${PROBE_REPOSITORY} has no blob ${d.value}`)
    return bytes
  }

  private note(nonce: string, hit: Omit<ProbeHit, 'at' | 'userAgent'> & { userAgent: string | undefined }): void {
    const hits = this.nonces.get(nonce) ?? []
    // A client's user agent is whatever it says: kept short and printable.
    const userAgent = (hit.userAgent ?? '').replace(/[^\x20-\x7e]/g, '?').slice(0, 200)
    if (hits.length < HITS_PER_NONCE) hits.push({ ...hit, userAgent, at: new Date(this.options.clock.now()).toISOString() })
    this.nonces.set(nonce, hits)
  }
}
