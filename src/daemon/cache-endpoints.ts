// The admin endpoints that look at and change the cache, after GitLab's
// Dependency Proxy purge API. admin.ts routes /_dproxy/cache... here (loopback
// clients only, checked there); this file parses the query and answers JSON.
//
//   GET    /_dproxy/cache/images                      every cached image (store/inventory.ts)
//   DELETE /_dproxy/cache?image=NAME[:TAG]&olderThan=DUR&unusedFor=DUR&dryRun=1
//                                                    clear; no criterion means everything
//   POST   /_dproxy/cache/prune?maxSize=SIZE&ttl=DUR&dryRun=1
//                                                    evict; a limit not given is the configured
//                                                    one, and 0 is none (as in the settings)
//   POST   /_dproxy/cache/import?force=1          an archive in the body: import-endpoint.ts
//
// Unknown query parameters are refused rather than ignored: a misspelt
// `olderthan` must not turn "clear what is old" into "clear everything".

import { parseDuration, parseSize } from '../config/units.js'
import { DproxyError } from '../errors.js'
import { parseImageSelector, type ClearFilter } from '../store/evict.js'
import { listImages } from '../store/inventory.js'
import type { Store } from '../store/store.js'
import type { CacheMaintenance } from './maintenance.js'

export interface CacheEndpointDeps {
  store: Store
  maintenance: CacheMaintenance
  options: { maxSizeBytes?: number | undefined; ttlMs?: number | undefined }
}

/** The JSON answer for a /_dproxy/cache request, or undefined when the path is not one of these. */
export async function cacheEndpoint(deps: CacheEndpointDeps, method: string, rawUrl: string): Promise<unknown> {
  const url = new URL(rawUrl, 'http://dproxy.invalid')
  const path = url.pathname
  const q = url.searchParams
  if (path === '/_dproxy/cache/images') {
    allow(method, path, 'GET', 'HEAD')
    only(q, [])
    return listImages(deps.store)
  }
  if (path === '/_dproxy/cache') {
    allow(method, path, 'DELETE')
    only(q, ['image', 'olderThan', 'unusedFor', 'dryRun'])
    const filter: ClearFilter = {}
    const image = q.get('image')
    const olderThan = q.get('olderThan')
    const unusedFor = q.get('unusedFor')
    if (image !== null) filter.image = parseImageSelector(image)
    if (olderThan !== null) filter.olderThanMs = parseDuration(olderThan, 'olderThan')
    if (unusedFor !== null) filter.unusedForMs = parseDuration(unusedFor, 'unusedFor')
    return deps.maintenance.clear(filter, flag(q, 'dryRun'))
  }
  if (path === '/_dproxy/cache/prune') {
    allow(method, path, 'POST')
    only(q, ['maxSize', 'ttl', 'dryRun'])
    const maxSize = q.get('maxSize')
    const ttl = q.get('ttl')
    // 0 means "no limit", as in the settings, so `ttl=0` prunes by size alone.
    const maxSizeBytes = maxSize !== null ? parseSize(maxSize, 'maxSize') || undefined : deps.options.maxSizeBytes
    const ttlMs = ttl !== null ? parseDuration(ttl, 'ttl') || undefined : deps.options.ttlMs
    if (maxSizeBytes === undefined && ttlMs === undefined) {
      throw new DproxyError('USAGE', 'nothing to prune by: give maxSize or ttl, or configure maxSize / ttl for the daemon')
    }
    return deps.maintenance.prune({
      ...(maxSizeBytes !== undefined ? { maxSizeBytes } : {}),
      ...(ttlMs !== undefined ? { ttlMs } : {}),
      dryRun: flag(q, 'dryRun'),
    })
  }
  return undefined
}

function allow(method: string, path: string, ...methods: string[]): void {
  if (!methods.includes(method)) {
    throw new DproxyError('UNSUPPORTED', `${method} ${path}: use ${methods.join(' or ')}`, { status: 405 })
  }
}

function only(q: URLSearchParams, known: string[]): void {
  for (const key of q.keys()) {
    if (!known.includes(key)) {
      const expected = known.length > 0 ? `known: ${known.join(', ')}` : 'it takes none'
      throw new DproxyError('USAGE', `unknown query parameter '${key.slice(0, 50)}' (${expected})`)
    }
  }
}

function flag(q: URLSearchParams, key: string): boolean {
  const v = q.get(key)
  if (v === null || v === '0' || v === 'false') return false
  if (v === '' || v === '1' || v === 'true') return true
  throw new DproxyError('USAGE', `expected ${key} to be 1 or 0, got '${v.slice(0, 50)}'`)
}
