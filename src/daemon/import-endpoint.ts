// POST /_dproxy/cache/import[?force=1]: `dproxy cache import` when a daemon
// holds the cache. The body is the archive itself, streamed into the same
// verifying import the CLI runs on its own (store/archive-import.ts), in the
// maintenance queue (maintenance.ts says why). admin.ts routes it here after
// its checks: loopback client, this machine's Host, no foreign Origin, the
// admin token.
//
// The body is bounded before anything is written: only ARCHIVE_CONTENT_TYPE
// is taken (a web page cannot send that without a preflight the daemon never
// grants), and at most `maxImportBytes` or, without that, the disk's free
// space when the request starts: a Content-Length over it is refused at once,
// a chunked body as soon as it passes it (413). A bad archive is refused with
// the import's own error, naming the entry, and records nothing. The answer
// is the import's summary as JSON.
//
// An error may come while the client is still sending: Node reads and drops
// the rest of the body after the answer (so the client gets the answer rather
// than a reset), except past the size bound, where the connection is closed.

import type { IncomingMessage, ServerResponse } from 'node:http'
import { formatBytes } from '../config/units.js'
import { DproxyError } from '../errors.js'
import { diskSpace } from '../fs.js'
import type { ImportSummary } from '../store/archive-import.js'
import { ARCHIVE_CONTENT_TYPE } from '../store/oci-archive.js'
import type { Store } from '../store/store.js'
import { liftBodyDeadline } from './body-deadline.js'
import type { CacheMaintenance } from './maintenance.js'

export const IMPORT_PATH = '/_dproxy/cache/import'

export interface ImportEndpointDeps {
  store: Pick<Store, 'root'>
  maintenance: Pick<CacheMaintenance, 'import'>
  options: { maxImportBytes?: number | undefined }
}

/** Reads the archive in the request and imports it; resolves to the summary. */
export async function importEndpoint(deps: ImportEndpointDeps, req: IncomingMessage, res: ServerResponse): Promise<ImportSummary> {
  const method = req.method ?? 'GET'
  if (method !== 'POST') throw new DproxyError('UNSUPPORTED', `${method} ${IMPORT_PATH}: use POST`, { status: 405 })
  const url = new URL(req.url ?? '/', 'http://dproxy.invalid')
  let force = false
  for (const [key, value] of url.searchParams) {
    if (key !== 'force') throw new DproxyError('USAGE', `unknown query parameter '${key.slice(0, 50)}' (known: force)`)
    if (!['', '0', '1', 'true', 'false'].includes(value)) throw new DproxyError('USAGE', `expected force to be 1 or 0, got '${value.slice(0, 50)}'`)
    force = value === '' || value === '1' || value === 'true'
  }
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
  if (type !== ARCHIVE_CONTENT_TYPE) {
    throw new DproxyError('UNSUPPORTED', `${IMPORT_PATH} takes Content-Type ${ARCHIVE_CONTENT_TYPE}, not '${type.slice(0, 100)}'`, { status: 415 })
  }
  // Without a configured bound, the free space; unbounded when the system cannot say (the disk then says it).
  const limit = deps.options.maxImportBytes ?? (await diskSpace(deps.store.root))?.free ?? Number.POSITIVE_INFINITY
  const tooLarge = (what: string) => {
    // Past the bound, reading the rest only to drop it is what the bound is against.
    res.setHeader('connection', 'close')
    // DENIED, not SIZE_INVALID: the import reports that one as a bad archive entry.
    return new DproxyError('DENIED', `${what}; this import takes at most ${formatBytes(limit)}`, { status: 413 })
  }
  const declared = Number(req.headers['content-length'] ?? Number.NaN)
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(`the archive is ${formatBytes(declared)}`)
  // Accepted: a large archive may take longer to arrive than any other request may.
  liftBodyDeadline(req)
  async function* bounded(): AsyncGenerator<Buffer> {
    let seen = 0
    for await (const chunk of req as AsyncIterable<Buffer>) {
      seen += chunk.length
      if (seen > limit) throw tooLarge(`the archive is larger than ${formatBytes(limit)}`)
      yield chunk
    }
  }
  return deps.maintenance.import(bounded(), { force })
}
