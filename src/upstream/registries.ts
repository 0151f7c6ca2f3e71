// Which URL to contact for a registry host: the registry's own API origin
// (oci/registry-host.ts; Docker Hub's is not at its image-name host), unless
// the user maps the host to another URL (`--upstream
// docker.io=http://127.0.0.1:15000`, a team mirror, a test fixture).

import { DOCKER_HUB, registryOrigin } from '../oci/registry-host.js'

export function upstreamBaseUrl(registry: string, overrides: Readonly<Record<string, string>>): URL {
  const mapped = overrides[registry]
  if (mapped !== undefined) return new URL(mapped.replace(/\/+$/, ''))
  return new URL(registryOrigin(registry))
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
