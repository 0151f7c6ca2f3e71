// Platforms: `os/architecture[/variant]` as users write them (`--platform
// linux/arm64`, `FROM --platform=linux/arm/v7`, compose `platform:`) and as an
// index or manifest list describes its children. Parsing keeps what was
// written, so listings show the user's words; matching compares normalised
// forms, because the same machine goes by several names: `x86_64` is `amd64`,
// `aarch64` is `arm64`, and a missing variant means the default one (`arm64`
// is `arm64/v8`, `arm` is `arm/v7`), as containerd's platform matcher has it.

import { DproxyError } from '../errors.js'

export interface Platform {
  os: string
  architecture: string
  variant?: string
}

/** Which children of an index to fetch: some platforms, all of them, or those cached before (refresh). */
export type PlatformChoice = { kind: 'list'; platforms: Platform[] } | { kind: 'all' } | { kind: 'cached'; fallback: Platform[] }

/** Platforms one list may name (`--platform`, the pull endpoint). */
export const MAX_PLATFORMS = 32

/** The platform this machine runs containers of: linux on the host's architecture. */
export function hostPlatform(arch: string = process.arch): Platform {
  const map: Record<string, Platform> = {
    x64: { os: 'linux', architecture: 'amd64' },
    arm64: { os: 'linux', architecture: 'arm64' },
    arm: { os: 'linux', architecture: 'arm', variant: 'v7' },
    ia32: { os: 'linux', architecture: '386' },
    ppc64: { os: 'linux', architecture: 'ppc64le' },
    s390x: { os: 'linux', architecture: 's390x' },
    riscv64: { os: 'linux', architecture: 'riscv64' },
  }
  return map[arch] ?? { os: 'linux', architecture: arch }
}

/** Parses `linux/amd64,linux/arm64/v8` or `all`. */
export function parsePlatforms(value: string): PlatformChoice {
  if (value.trim() === 'all') return { kind: 'all' }
  const platforms = value
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')
    .map(parsePlatform)
  if (platforms.length === 0 || platforms.length > MAX_PLATFORMS) {
    throw new DproxyError('USAGE', `expected platforms like 'linux/amd64,linux/arm64' or 'all', got '${value.slice(0, 80)}'`)
  }
  return { kind: 'list', platforms }
}

/** One `os/architecture[/variant]`, kept as written; USAGE for anything else. */
export function parsePlatform(value: string): Platform {
  const m = /^([a-z0-9]{1,32})\/([a-z0-9_]{1,32})(?:\/([a-z0-9]{1,32}))?$/.exec(value)
  if (!m) throw new DproxyError('USAGE', `expected a platform like 'linux/amd64' or 'linux/arm/v7', got '${value.slice(0, 80)}'`)
  return { os: m[1]!, architecture: m[2]!, ...(m[3] !== undefined ? { variant: m[3] } : {}) }
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`
}

/** Other names of an architecture, and the variant a name implies. */
const architectureAliases: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  aarch64: { architecture: 'arm64' },
  i386: { architecture: '386' },
  i686: { architecture: '386' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
}

/** The variant a platform without one means. */
const defaultVariant: Record<string, string> = { amd64: 'v1', arm64: 'v8', arm: 'v7' }

/**
 * The one spelling of a platform: lower case, architecture aliases folded
 * (`x86_64` -> `amd64`), a bare version number as a variant (`8` -> `v8`) and
 * the default variant filled in (`linux/arm64` -> `linux/arm64/v8`).
 */
export function normalizePlatform(p: Platform): Required<Platform> {
  const os = p.os.toLowerCase()
  const alias = architectureAliases[p.architecture.toLowerCase()]
  const architecture = alias?.architecture ?? p.architecture.toLowerCase()
  let variant = p.variant?.toLowerCase() || alias?.variant || defaultVariant[architecture] || ''
  if (/^\d+$/.test(variant)) variant = `v${variant}`
  return { os: os === 'macos' ? 'darwin' : os, architecture, variant }
}

/**
 * Whether `have` (an index's child) is a platform the user asked for with
 * `want`: `linux/arm64` takes any variant of arm64, `linux/arm64/v8` only v8
 * (which a child without a variant is), `linux/armhf` only arm/v7. Compared
 * in normal form.
 */
export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have) return false
  const w = normalizePlatform(want)
  const h = normalizePlatform(have)
  if (w.os !== h.os || w.architecture !== h.architecture) return false
  const namesVariant = want.variant !== undefined || architectureAliases[want.architecture.toLowerCase()]?.variant !== undefined
  return !namesVariant || w.variant === h.variant
}
