// Which URLs to contact for a registry host, in which order, and how to speak
// to each. Without configuration a registry is asked at its own API origin
// (oci/registry-host.ts; Docker Hub's is not at its image-name host). The
// user may give a registry one URL or an ordered list (`--upstream
// docker.io=https://cache.team.example,https://registry-1.docker.io`):
//
// - one URL is where the registry lives, as before lists existed: it stands
//   in for the origin (a private registry, a test fixture, a pinned mirror)
//   and is the only endpoint;
// - a list of two or more is a chain tried in order (proxy/ does not see it:
//   client.ts falls through). When it does not end with the registry's origin
//   (its URL, or the word `origin`), the origin is implied last, unless
//   `noOrigin` names the registry (an air-gapped site whose team cache is the
//   only way out).
//
// How an endpoint is spoken to follows from its URL alone:
// - the registry's origin (or a one-URL stand-in): plainly, `/v2/<repo>/...`;
//   its answers carry the registry's rate limit and counted pulls;
// - a URL without a path is a mirror, asked like containerd asks one:
//   `/v2/<repo>/...?ns=<registry>` (a dproxy, zot, a registry in proxy mode);
// - a URL with a path is a path-prefix registry: the path goes before the
//   repository, after Docker Hub's `library/` rule, `/v2/<path>/<repo>/...`
//   (GitLab's `<group>/dependency_proxy/containers`, a Harbor proxy project).
//
// Credentials are looked up by the registry name for its origin (as `dproxy
// login docker.io` stores them) and by the endpoint's host[:port] for every
// other endpoint (`dproxy login cache.team.example`): a mirror never gets the
// origin's login.

import { DOCKER_HUB, registryOrigin } from '../oci/registry-host.js'

/** What the user gave per registry: one URL, or the list (`origin` naming the origin itself). */
export type UpstreamMap = Readonly<Record<string, string | readonly string[]>>

export type EndpointKind = 'origin' | 'mirror' | 'prefix'

export interface EndpointSpec {
  /** The registry the endpoint serves (`docker.io`). */
  registry: string
  kind: EndpointKind
  /** Scheme, host and port only. */
  base: URL
  /** Repository prefix with its trailing slash (`group/dependency_proxy/containers/`), or ''. */
  prefix: string
  /** The endpoint as configured, for logs, status and metrics (`https://cache.team.example`). */
  label: string
  /** Whose login it sends (the registry name for its origin, else the endpoint's host[:port]). */
  credentialKey: string
  /** Where its rate-limit readings and 429 waits are kept (the registry name for its origin). */
  rateKey: string
  /** The user wrote its URL (an origin implied or named by the word `origin` is not). */
  configured: boolean
}

const ORIGIN = 'origin'

function listOf(value: string | readonly string[] | undefined): readonly string[] {
  if (value === undefined) return []
  return typeof value === 'string' ? value.split(',').filter((u) => u.trim() !== '') : value
}

function endpoint(registry: string, raw: string, kind: 'origin' | 'chained', configured = true): EndpointSpec {
  const url = new URL(raw.trim().replace(/\/+$/, ''))
  const path = url.pathname.replace(/^\/+|\/+$/g, '')
  const base = new URL(url.origin)
  const label = `${url.origin}${path ? `/${path}` : ''}`
  const own = kind === 'origin'
  return {
    registry,
    kind: own ? 'origin' : path ? 'prefix' : 'mirror',
    base,
    prefix: path ? `${path}/` : '',
    label,
    credentialKey: own ? registry : base.host,
    rateKey: own ? registry : label,
    configured,
  }
}

function isOrigin(registry: string, raw: string): boolean {
  if (raw.trim().toLowerCase() === ORIGIN) return true
  try {
    return new URL(raw.trim().replace(/\/+$/, '')).href === new URL(registryOrigin(registry)).href
  } catch {
    return false
  }
}

/** The endpoints of `registry`, in the order they are asked (see the comment at the top). */
export function upstreamChain(registry: string, upstreams: UpstreamMap, noOrigin: boolean | readonly string[] = false): EndpointSpec[] {
  const list = listOf(upstreams[registry])
  const origin = () => endpoint(registry, registryOrigin(registry), 'origin', false)
  if (list.length === 0) return [origin()]
  if (list.length === 1) return [isOrigin(registry, list[0]!) ? origin() : endpoint(registry, list[0]!, 'origin')]
  const chain = list.map((raw) => (isOrigin(registry, raw) ? origin() : endpoint(registry, raw, 'chained')))
  const implied = noOrigin === true ? false : !(Array.isArray(noOrigin) && noOrigin.includes(registry))
  if (implied && chain[chain.length - 1]!.kind !== 'origin') chain.push(origin())
  return chain
}

/** The first endpoint's URL (scheme, host, port) for a registry: what `dproxy login` and the doctor speak to. */
export function upstreamBaseUrl(registry: string, upstreams: UpstreamMap): URL {
  return upstreamChain(registry, upstreams)[0]!.base
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
export function allowedRegistries(listed: readonly string[] | undefined, upstreams: UpstreamMap): string[] {
  return [...new Set([...(listed ?? DEFAULT_ALLOWED_REGISTRIES), ...Object.keys(upstreams)])]
}
