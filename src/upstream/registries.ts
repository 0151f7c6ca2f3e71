// Which URL to contact for a registry host. Docker Hub's API does not live at
// its image-name host, every other registry serves the API over HTTPS at its
// own host, and the user may map any host to another URL (`--upstream
// docker.io=http://127.0.0.1:15000`, a team mirror, a test fixture).

import { DOCKER_HUB } from '../registry/names.js'

const DOCKER_HUB_API = 'https://registry-1.docker.io'

export function upstreamBaseUrl(registry: string, overrides: Readonly<Record<string, string>>): URL {
  const mapped = overrides[registry]
  if (mapped !== undefined) return new URL(mapped.replace(/\/+$/, ''))
  if (registry === DOCKER_HUB) return new URL(DOCKER_HUB_API)
  return new URL(`https://${registry}`)
}
