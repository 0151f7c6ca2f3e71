// The inbound Distribution API, pull side. This file only matches URL shapes,
// validates what the client sent, and writes headers and bodies; the policy of
// what comes from cache and what from upstream lives in proxy/.
//
//   GET|HEAD /v2/                                  API version check
//   GET|HEAD /v2/<name>/manifests/<tag|digest>     byte-exact manifest
//   GET|HEAD /v2/<name>/blobs/<digest>             blob, with Range
//   GET      /v2/<name>/tags/list                  tags, upstream first
//   anything that writes                           405 UNSUPPORTED

import type { IncomingMessage, ServerResponse } from 'node:http'
import { DproxyError, truncate } from '../errors.js'
import type { Logger } from '../log.js'
import type { BlobProxy } from '../proxy/blobs.js'
import type { ManifestProxy } from '../proxy/manifests.js'
import type { ProbeRepository } from '../proxy/probe.js'
import type { UpstreamAnswer } from '../upstream/client.js'
import { SendBuffers } from './buffers.js'
import { sendError, type ErrorListener } from './errors.js'
import { sendBlob } from './send.js'
import { note } from './note.js'
import { parseDigest } from '../oci/digest.js'
import { parseReference, resolveImageName, type ImageName } from '../oci/reference.js'

export interface RegistryDeps {
  manifests: Pick<ManifestProxy, 'get' | 'listTags'>
  blobs: Pick<BlobProxy, 'open' | 'size'>
  /** Blob bytes pass through these on their way to clients; one pool per daemon (default: one per handler). */
  buffers?: SendBuffers
  log: Logger
  /** Throws when clients may not use this registry (upstream allow-list); checked before the cache too. */
  admit?: (registry: string) => void
  /** Throws when this client may not pull this repository (a token's --repos, daemon/clientauth.ts). */
  permit?: (req: IncomingMessage, image: ImageName) => void
  /** `dproxy doctor`'s probe repository, answered locally instead of by the proxies. */
  probe?: ProbeRepository
  onError?: ErrorListener
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>

const routeRe = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/
const tagsRe = /^\/v2\/(.+)\/tags\/list$/

export function registryHandler(options: RegistryDeps): Handler {
  const deps = { ...options, buffers: options.buffers ?? new SendBuffers() }
  return async (req, res) => {
    const method = req.method ?? 'GET'
    try {
      res.setHeader('docker-distribution-api-version', 'registry/2.0')
      // Match on the path exactly as sent: URL parsing would resolve `..` and `%2e%2e` first,
      // and `new URL` throws on targets such as `//` or `/\x`, which are the client's mistake.
      const { path, params } = splitTarget(req.url ?? '/')
      if (/%|\/\/|\/\.\.?(\/|$)/.test(path)) {
        throw new DproxyError('NAME_INVALID', 'escaped characters, empty, `.` and `..` components are not allowed in names')
      }
      if (method !== 'GET' && method !== 'HEAD') {
        throw new DproxyError('UNSUPPORTED', `dproxy is a read-only pull-through cache: ${method} is not supported`, {
          status: 405,
        })
      }
      if (path === '/v2' || path === '/v2/') {
        sendJson(res, method, 200, {})
        return
      }
      const ns = params.get('ns') ?? undefined
      let m = routeRe.exec(path)
      if (m) {
        const image = resolveImageName(m[1]!, ns)
        note(res, { image: `${image.registry}/${image.repository}` })
        deps.admit?.(image.registry)
        deps.permit?.(req, image)
        if (ns !== undefined) res.setHeader('oci-namespace', ns)
        const via = { ...deps, ...deps.probe?.claim(image, { name: m[1]!, ns, method, userAgent: req.headers['user-agent'] }) }
        if (m[2] === 'manifests') await serveManifest(via, req, res, image, m[3]!)
        else await serveBlob(via, req, res, image, m[3]!)
        return
      }
      m = tagsRe.exec(path)
      if (m) {
        const image = resolveImageName(m[1]!, ns)
        deps.admit?.(image.registry)
        deps.permit?.(req, image)
        if (ns !== undefined) res.setHeader('oci-namespace', ns)
        const query = new URLSearchParams()
        for (const key of ['n', 'last']) {
          const v = params.get(key)
          if (v !== null) query.set(key, v)
        }
        const { tags, next, stale } = await deps.manifests.listTags(image, query)
        if (stale) res.setHeader('warning', STALE_WARNING)
        // Pagination continues through dproxy, under the name the client used.
        if (next) res.setHeader('link', `</v2/${m[1]}/tags/list?${next.toString()}${ns === undefined ? '' : `&ns=${encodeURIComponent(ns)}`}>; rel="next"`)
        sendJson(res, method, 200, { name: m[1], tags })
        return
      }
      throw new DproxyError('NAME_UNKNOWN', `no such endpoint: ${truncate(path)}`, { status: 404 })
    } catch (err) {
      const upstreamStatus = upstreamStatusOf(err)
      if (upstreamStatus !== undefined) note(res, { upstreamStatus })
      sendError(res, err, deps.log, method, deps.onError)
    }
  }
}

/** The upstream answer behind an error, also when it was wrapped (outage.ts keeps it as the cause). */
function upstreamStatusOf(err: unknown): number | undefined {
  for (let e = err, depth = 0; e instanceof DproxyError && depth < 3; e = e.cause, depth++) {
    const status = (e.detail as { upstreamStatus?: unknown } | undefined)?.upstreamStatus
    if (typeof status === 'number') return status
  }
  return undefined
}

const STALE_WARNING = '110 - "Response is stale"'

/** The note's fields for the upstream answer behind a miss. */
function answered(upstream: UpstreamAnswer | undefined): { upstreamStatus?: number; upstreamEndpoint?: string } {
  return upstream ? { upstreamStatus: upstream.status, upstreamEndpoint: upstream.endpoint } : {}
}

async function serveManifest(
  deps: RegistryDeps,
  req: IncomingMessage,
  res: ServerResponse,
  image: ImageName,
  reference: string,
): Promise<void> {
  const ref = parseReference(reference)
  const m = await deps.manifests.get(image, ref)
  note(res, { cache: m.stale ? 'stale' : m.fetched ? 'miss' : 'hit', ...answered(m.upstream) })
  res.setHeader('content-type', m.mediaType)
  res.setHeader('docker-content-digest', m.digest)
  res.setHeader('etag', `"${m.digest}"`)
  if (m.stale) res.setHeader('warning', STALE_WARNING)
  if (req.headers['if-none-match'] === `"${m.digest}"`) {
    res.statusCode = 304
    res.end()
    return
  }
  res.setHeader('content-length', m.bytes.length)
  res.statusCode = 200
  res.end(req.method === 'HEAD' ? undefined : m.bytes)
}

async function serveBlob(
  deps: RegistryDeps & { buffers: SendBuffers },
  req: IncomingMessage,
  res: ServerResponse,
  image: ImageName,
  reference: string,
): Promise<void> {
  const d = parseDigest(reference)
  res.setHeader('docker-content-digest', d.value)
  res.setHeader('etag', `"${d.value}"`)
  res.setHeader('content-type', 'application/octet-stream')
  if (req.method === 'HEAD') {
    const size = await deps.blobs.size(image, d)
    res.setHeader('accept-ranges', 'bytes')
    res.setHeader('content-length', size)
    res.statusCode = 200
    res.end()
    return
  }
  const source = await deps.blobs.open(image, d)
  note(res, { cache: source.cached ? 'hit' : source.joined === true ? 'joined' : 'miss', ...answered(source.upstream) })
  let start = 0
  // Unknown size (upstream sent no Content-Length): the whole blob, chunked.
  let end = source.size < 0 ? Infinity : source.size - 1
  if (source.size >= 0) {
    res.setHeader('accept-ranges', 'bytes')
    const range = parseRange(req.headers.range, source.size)
    if (range === 'unsatisfiable') {
      await source.close()
      throw new DproxyError('RANGE_INVALID', `range '${truncate(req.headers.range ?? '')}' is outside the blob`, {
        detail: { size: source.size },
      })
    }
    if (range) {
      ;[start, end] = range
      res.statusCode = 206
      res.setHeader('content-range', `bytes ${start}-${end}/${source.size}`)
    } else {
      res.statusCode = 200
    }
    res.setHeader('content-length', end - start + 1)
  } else {
    res.statusCode = 200
  }
  if (source.size === 0) {
    await source.close()
    res.end()
    return
  }
  try {
    // The bytes came from elsewhere after all (the next endpoint, or past a full disk): the note says who answered.
    await sendBlob(source, res, start, end, deps.buffers, (other) =>
      note(res, { upstreamStatus: other.upstream?.status, upstreamEndpoint: other.upstream?.endpoint }),
    )
  } catch (err) {
    // sendBlob() has cut the connection: the client sees a failure, never a complete-looking wrong body.
    deps.log.warn(`blob ${d.value} to client aborted: ${(err as Error).message}`)
  }
}

/**
 * A request target as the client sent it: the path untouched (no resolving of
 * `..` or `%2e`, which the caller rejects) and the query parameters. Never
 * throws, unlike `new URL` on targets such as `//` or `/\\x`.
 */
export function splitTarget(raw: string): { path: string; params: URLSearchParams } {
  const q = raw.indexOf('?')
  return { path: q < 0 ? raw : raw.slice(0, q), params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) }
}

/**
 * A single `bytes=` range against a blob of `size` bytes, as inclusive
 * [start, end]; undefined to send the whole blob (no header, or one we ignore
 * as RFC 9110 allows: several ranges, other units, nonsense).
 */
export function parseRange(header: string | undefined, size: number): [number, number] | 'unsatisfiable' | undefined {
  if (!header) return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!m || (m[1] === '' && m[2] === '')) return undefined
  if (m[1] === '') {
    const suffix = Number(m[2])
    if (suffix === 0) return 'unsatisfiable'
    return [Math.max(0, size - suffix), size - 1]
  }
  const start = Number(m[1])
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  if (start >= size) return 'unsatisfiable'
  if (end < start) return undefined
  return [start, end]
}

function sendJson(res: ServerResponse, method: string, status: number, value: unknown): void {
  const body = JSON.stringify(value)
  res.statusCode = status
  res.setHeader('content-type', 'application/json; charset=utf-8')
  res.setHeader('content-length', Buffer.byteLength(body))
  res.end(method === 'HEAD' ? undefined : body)
}
