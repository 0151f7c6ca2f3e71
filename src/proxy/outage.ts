// What a client is told when upstream cannot answer and the cache has nothing
// to offer: the OCI "unknown" error for the thing it asked for, with a message
// that says why. A 4xx with an OCI body is what docker, podman and containerd
// print verbatim ("manifest unknown: not cached, and docker.io is
// unreachable: ..."), where a 502 would only show "unexpected HTTP status".
// A 429 stays TOOMANYREQUESTS so clients say "rate limit".

import { DproxyError, isDproxyError } from '../errors.js'

export function notCached(err: unknown, code: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN', what: string, registry: string): unknown {
  if (!isDproxyError(err) || (err.code !== 'UPSTREAM_UNAVAILABLE' && err.code !== 'UPSTREAM_INVALID')) return err
  return new DproxyError(code, `${what} is not cached, and upstream ${registry} is unavailable: ${err.message}`, {
    cause: err,
    detail: { upstream: registry },
  })
}
