// One spelling per registry. Docker Hub answers to several host names
// (index.docker.io is what `docker login` stores, registry-1.docker.io is where
// the API lives); credentials, upstream overrides and cache keys must all agree
// on 'docker.io' or a login under one name would be missed under another. The
// grammar lives in src/registry/names.ts; this adds the user-facing error.

import { DproxyError } from '../errors.js'
import { DOCKER_HUB, isValidRegistryHost, normalizeRegistry as canonicalRegistry } from '../registry/names.js'

export { DOCKER_HUB }
export const isRegistryHost = isValidRegistryHost

/**
 * Pseudo-registry under which the daemon's client password (`dproxy env
 * --rotate`) lives in the credential store. It is a valid registry key, so it
 * needs no code of its own, and no real registry is called that (no dot, no port).
 */
export const CLIENT_SECRET_KEY = 'dproxy-client'

/**
 * The canonical key for a registry host: trimmed, lower-cased, Docker Hub
 * aliases folded into 'docker.io'. Throws CONFIG_INVALID for anything that is
 * not hostname[:port]; `what` names the input in that message.
 */
export function normalizeRegistry(input: string, what = 'a registry host'): string {
  const value = input.trim().toLowerCase()
  if (!isValidRegistryHost(value)) {
    throw new DproxyError('CONFIG_INVALID', `expected ${what} like 'ghcr.io' or 'localhost:5000', got '${input}'`, {
      detail: { value: input },
    })
  }
  return canonicalRegistry(value)
}
