import { DOCKER_HUB } from '../oci/registry-host.js'
// Which URL to contact for a registry host. Docker Hub's API does not live at
// its image-name host, every other registry serves the API over HTTPS at its
// own host, and the user may map any host to another URL (`--upstream
// docker.io=http://127.0.0.1:15000`, a team mirror, a test fixture).


const DOCKER_HUB_API = 'https://registry-1.docker.io'

export function upstreamBaseUrl(registry: string, overrides: Readonly<Record<string, string>>): URL {
  const mapped = overrides[registry]
  if (mapped !== undefined) return new URL(mapped.replace(/\/+$/, ''))
  if (registry === DOCKER_HUB) return new URL(DOCKER_HUB_API)
  return new URL(`https://${registry}`)
}

/**
 * Registries clients of a daemon that other machines can reach may use when
 * the user lists none (config `registries`, `--allow-registry`): the big
 * public ones. Configured upstreams are always added (allowedRegistries).
 */
export const DEFAULT_ALLOWED_REGISTRIES: readonly string[] = [
  DOCKER_HUB,
  'ghcr.io',
  'quay.io',
  'registry.k8s.io',
  'gcr.io',
  'mcr.microsoft.com',
  'public.ecr.aws',
]

/** The allow-list: the user's list (or the default one) and every configured upstream. */
export function allowedRegistries(listed: readonly string[] | undefined, overrides: Readonly<Record<string, string>>): string[] {
  return [...new Set([...(listed ?? DEFAULT_ALLOWED_REGISTRIES), ...Object.keys(overrides)])]
}
