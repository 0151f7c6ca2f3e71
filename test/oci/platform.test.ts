// Platforms as tables: parsing keeps what the user wrote, normalisation folds
// the names one machine goes by, and matching picks an index's children the
// way a client would.

import t from 'tap'
import {
  formatPlatform,
  hostPlatform,
  MAX_PLATFORMS,
  normalizePlatform,
  parsePlatform,
  parsePlatforms,
  platformMatches,
  type Platform,
} from '../../src/oci/platform.js'

t.test('parsePlatform keeps os/architecture[/variant] as written', async (t) => {
  const cases: Array<[string, Platform]> = [
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }],
    ['linux/arm64', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ['linux/arm/v7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/x86_64', { os: 'linux', architecture: 'x86_64' }],
    ['windows/amd64', { os: 'windows', architecture: 'amd64' }],
  ]
  for (const [value, want] of cases) {
    t.strictSame(parsePlatform(value), want, value)
    t.equal(formatPlatform(parsePlatform(value)), value, `${value} formats back`)
  }
  for (const bad of ['linux', 'windows', 'Linux/amd64', 'linux/amd64/v8/x', 'linux//amd64', 'linux/amd64 ', '', `linux/${'a'.repeat(33)}`, 'linux/x86-64']) {
    t.throws(() => parsePlatform(bad), { code: 'USAGE', message: /expected a platform like 'linux\/amd64'/ }, JSON.stringify(bad))
  }
})

t.test('parsePlatforms: a comma list of 1 to 32, or all', async (t) => {
  t.strictSame(parsePlatforms('all'), { kind: 'all' })
  t.strictSame(parsePlatforms(' all '), { kind: 'all' })
  t.strictSame(parsePlatforms('linux/amd64, linux/arm/v7,'), {
    kind: 'list',
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ],
  })
  t.equal((parsePlatforms(Array(MAX_PLATFORMS).fill('linux/amd64').join(',')) as { platforms: Platform[] }).platforms.length, MAX_PLATFORMS)
  for (const bad of ['', ' , ', Array(MAX_PLATFORMS + 1).fill('linux/amd64').join(',')]) {
    t.throws(() => parsePlatforms(bad), { code: 'USAGE', message: /expected platforms like/ }, JSON.stringify(bad.slice(0, 20)))
  }
  t.throws(() => parsePlatforms('linux/amd64,linux'), { code: 'USAGE', message: /expected a platform like/ })
})

t.test('hostPlatform: Node architecture names as container platforms', async (t) => {
  const cases: Array<[string, Platform]> = [
    ['x64', { os: 'linux', architecture: 'amd64' }],
    ['arm64', { os: 'linux', architecture: 'arm64' }],
    ['arm', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['ia32', { os: 'linux', architecture: '386' }],
    ['ppc64', { os: 'linux', architecture: 'ppc64le' }],
    ['s390x', { os: 'linux', architecture: 's390x' }],
    ['riscv64', { os: 'linux', architecture: 'riscv64' }],
    ['loong64', { os: 'linux', architecture: 'loong64' }],
  ]
  for (const [arch, want] of cases) t.strictSame(hostPlatform(arch), want, arch)
  t.equal(hostPlatform().os, 'linux')
})

t.test('normalizePlatform: one spelling per machine', async (t) => {
  const cases: Array<[Platform, string]> = [
    [{ os: 'linux', architecture: 'amd64' }, 'linux/amd64/v1'],
    [{ os: 'linux', architecture: 'x86_64' }, 'linux/amd64/v1'],
    [{ os: 'linux', architecture: 'x86-64' }, 'linux/amd64/v1'],
    [{ os: 'linux', architecture: 'amd64', variant: 'v3' }, 'linux/amd64/v3'],
    [{ os: 'linux', architecture: 'arm64' }, 'linux/arm64/v8'],
    [{ os: 'linux', architecture: 'aarch64' }, 'linux/arm64/v8'],
    [{ os: 'linux', architecture: 'arm64', variant: '8' }, 'linux/arm64/v8'],
    [{ os: 'linux', architecture: 'arm' }, 'linux/arm/v7'],
    [{ os: 'linux', architecture: 'armhf' }, 'linux/arm/v7'],
    [{ os: 'linux', architecture: 'armel' }, 'linux/arm/v6'],
    [{ os: 'linux', architecture: 'arm', variant: '6' }, 'linux/arm/v6'],
    [{ os: 'linux', architecture: 'i386' }, 'linux/386/'],
    [{ os: 'Linux', architecture: 'AMD64' }, 'linux/amd64/v1'],
    [{ os: 'macos', architecture: 'arm64' }, 'darwin/arm64/v8'],
    [{ os: 'linux', architecture: 's390x' }, 'linux/s390x/'],
  ]
  for (const [p, want] of cases) {
    const n = normalizePlatform(p)
    t.equal(`${n.os}/${n.architecture}/${n.variant}`, want, formatPlatform(p))
  }
})

t.test('platformMatches: a bare architecture takes any variant, a named variant only its own', async (t) => {
  const p = (s: string): Platform => {
    const [os, architecture, variant] = s.split('/') as [string, string, string?]
    return { os, architecture, ...(variant !== undefined ? { variant } : {}) }
  }
  const cases: Array<[string, string | undefined, boolean]> = [
    ['linux/amd64', 'linux/amd64', true],
    ['linux/amd64', 'linux/arm64', false],
    ['linux/amd64', 'windows/amd64', false],
    ['linux/amd64', undefined, false],
    ['linux/arm64', 'linux/arm64', true],
    ['linux/arm64', 'linux/arm64/v8', true],
    ['linux/arm64/v8', 'linux/arm64/v8', true],
    ['linux/arm64/v8', 'linux/arm64', true],
    ['linux/arm64/v8', 'linux/arm64/v9', false],
    ['linux/arm', 'linux/arm/v6', true],
    ['linux/arm', 'linux/arm/v7', true],
    ['linux/arm/v7', 'linux/arm/v7', true],
    ['linux/arm/v7', 'linux/arm', true],
    ['linux/arm/v7', 'linux/arm/v6', false],
    ['linux/armhf', 'linux/arm/v7', true],
    ['linux/armhf', 'linux/arm/v6', false],
    ['linux/x86_64', 'linux/amd64', true],
    ['linux/aarch64', 'linux/arm64/v8', true],
    ['linux/amd64', 'unknown/unknown', false],
  ]
  for (const [want, have, matches] of cases) {
    t.equal(platformMatches(p(want), have === undefined ? undefined : p(have)), matches, `${want} ${matches ? 'takes' : 'does not take'} ${have ?? 'no platform'}`)
  }
})
