// Every failure dproxy knows about is a DproxyError with a stable string `code`.
// Codes that exist in the OCI Distribution spec are spelled as the spec spells
// them, so the registry layer can put them on the wire unchanged; the others are
// dproxy's own and map to the nearest OCI code in one table (registry/errors.ts).
// The HTTP status lives here too so that the mapping is decided where the error
// is raised, not guessed where it is reported.

export type ErrorCode =
  // OCI distribution-spec codes
  | 'BLOB_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'RANGE_INVALID'
  // dproxy's own
  | 'UPSTREAM_UNAVAILABLE'
  | 'UPSTREAM_INVALID'
  | 'CONFIG_INVALID'
  | 'LISTEN_FAILED'
  | 'USAGE'
  | 'INTERNAL'
  // daemon lifecycle (`dproxy start/stop`)
  | 'ALREADY_RUNNING'
  | 'START_FAILED'
  | 'STOP_FAILED'
  // another CLI command holds <cacheDir>/cache.lock
  | 'CACHE_LOCKED'
  // `dproxy setup`: a client's config file that does not parse, or that this user may not write
  | 'SETUP_FILE_INVALID'
  | 'SETUP_DENIED'
  // `dproxy setup --server`: the server's CA is not the one --fingerprint names, or its certificate does not chain
  // to it; or the server (its CA endpoint) cannot be reached
  | 'SETUP_UNTRUSTED'
  | 'SETUP_UNREACHABLE'
  // the cache's disk failed (full, read-only, permissions): a disk error, never an upstream one
  | 'CACHE_UNAVAILABLE'
  // `dproxy doctor`: a check failed (the report says which)
  | 'DOCTOR_FAILED'
  // `dproxy pull` / `prefetch`: an image failed, or the run was refused (rate limit, --max-pulls)
  | 'PULL_FAILED'
  // `dproxy logs`: there is no log file to print
  | 'LOG_MISSING'
  // `dproxy cache import`: an archive that is not a whole, valid OCI image layout (the message names the entry)
  | 'ARCHIVE_INVALID'

export interface DproxyErrorOptions {
  status?: number
  detail?: unknown
  cause?: unknown
}

const defaultStatus: Record<ErrorCode, number> = {
  BLOB_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  RANGE_INVALID: 416,
  UPSTREAM_UNAVAILABLE: 502,
  UPSTREAM_INVALID: 502,
  CONFIG_INVALID: 400,
  LISTEN_FAILED: 500,
  USAGE: 400,
  INTERNAL: 500,
  ALREADY_RUNNING: 409,
  START_FAILED: 500,
  STOP_FAILED: 500,
  CACHE_LOCKED: 409,
  SETUP_FILE_INVALID: 400,
  SETUP_DENIED: 403,
  SETUP_UNTRUSTED: 502,
  SETUP_UNREACHABLE: 502,
  CACHE_UNAVAILABLE: 503,
  DOCTOR_FAILED: 500,
  PULL_FAILED: 502,
  LOG_MISSING: 404,
  ARCHIVE_INVALID: 400,
}

export class DproxyError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly detail: unknown

  constructor(code: ErrorCode, message: string, options: DproxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'DproxyError'
    this.code = code
    this.status = options.status ?? defaultStatus[code]
    this.detail = options.detail
  }
}

export function isDproxyError(err: unknown, code?: ErrorCode): err is DproxyError {
  return err instanceof DproxyError && (code === undefined || err.code === code)
}

/**
 * True when an upstream failure means "the upstream cannot answer right now"
 * (unreachable, timing out, 5xx, rate limited, an HTML page instead of the API,
 * content that fails verification)
 * rather than "the upstream answered and the thing does not exist". Only the
 * former lets the proxy fall back to what it has cached.
 */
export function isUpstreamOutage(err: unknown): boolean {
  return (
    isDproxyError(err) &&
    (err.code === 'UPSTREAM_UNAVAILABLE' || err.code === 'UPSTREAM_INVALID' || err.code === 'TOOMANYREQUESTS')
  )
}


/**
 * What an error message may quote of a value a client (or an upstream) chose:
 * at most 80 characters, so a 5,000-character header or path is never echoed
 * back whole. Every message that quotes such a value goes through here.
 */
export function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s
}
