// The settings a user can write down, and how each one is checked. One table
// serves the three places a value can come from (flags, environment, config
// file) and `dproxy config set`, so a value refused in one place is refused
// with the same words in the others: "expected maxSize like '20GB', got 'lots'".
//
// Parsers throw DproxyError CONFIG_INVALID naming the key; callers that know
// where the value came from add that with `fromSource`.

import net from 'node:net'
import path from 'node:path'
import { DproxyError, isDproxyError } from '../errors.js'
import { expandHome } from './paths.js'
import { parseDuration, parseSize } from './units.js'
import { parseRegistryHost } from '../oci/registry-host.js'
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../log.js'

export const settingKeys = ['host', 'port', 'cacheDir', 'upstreams', 'noOrigin', 'chainConnectTimeout', 'chainFirstByteTimeout', 'maxAge', 'maxSize', 'ttl', 'auth', 'registries', 'refresh', 'refreshWindow', 'refreshReserve', 'logFormat', 'logLevel', 'logMaxSize', 'metricsAddress', 'dockerCredentials', 'tls', 'tlsCert', 'tlsKey', 'tlsNames', 'insecureLan'] as const
export type SettingKey = (typeof settingKeys)[number]

/** What `dproxy config` shows for each key: an example value and one line of help. */
export const settingHelp: Record<SettingKey, { example: string; description: string }> = {
  host: { example: '127.0.0.1', description: "listen address or comma list; 'localhost' means 127.0.0.1 and ::1" },
  port: { example: '5000', description: 'listen port (0 picks a free one)' },
  cacheDir: { example: '~/dproxy-cache', description: 'where blobs and manifests are kept' },
  upstreams: {
    example: 'docker.io=https://cache.team.example,https://registry-1.docker.io',
    description: 'registry=URL[,URL...] endpoints tried in order, comma separated (see dproxy-serve(1))',
  },
  noOrigin: { example: 'docker.io', description: "true, or the registries whose endpoint list is the only way out (no origin implied last)" },
  chainConnectTimeout: { example: '2s', description: 'connect limit of an upstream endpoint that has another behind it' },
  chainFirstByteTimeout: { example: '10s', description: 'first response byte limit of an upstream endpoint that has another behind it' },
  maxAge: { example: '10m', description: 'how long a cached tag is served before asking upstream again (0: always ask)' },
  maxSize: { example: '20GB', description: 'cache size limit (0 means none)' },
  ttl: { example: '30d', description: 'drop cached content unused for this long (0 means keep)' },
  auth: { example: 'true', description: 'require the client password (dproxy env --rotate)' },
  registries: { example: 'docker.io,ghcr.io', description: 'registries clients may use when listening beyond loopback' },
  refresh: { example: '1h', description: 're-check cached tags this often and fetch the ones that moved (0: off)' },
  refreshWindow: { example: '14d', description: 'refresh only tags a client pulled within this long' },
  refreshReserve: { example: '20%', description: 'rate-limit headroom the refresh never spends' },
  logFormat: { example: 'json', description: 'log lines as text or JSON lines' },
  logLevel: { example: 'debug', description: 'least severe lines logged: error, warn, info (every manifest and blob request) or debug' },
  logMaxSize: { example: '10MiB', description: 'detached: rotate the log file past this size, keeping 3 old ones' },
  metricsAddress: { example: '127.0.0.1:9464', description: 'also serve /metrics there, to anyone who can reach it' },
  dockerCredentials: { example: 'false', description: "use docker's and podman's logins (credential helpers, config.json, auth.json) after dproxy login's" },
  tls: { example: 'auto', description: "auto: serve HTTPS with dproxy's own CA (state dir tls/); off: plain HTTP unless tlsCert is set" },
  tlsCert: { example: '/etc/dproxy/server.pem', description: 'serve HTTPS with this certificate (PEM, chain after it), re-read when it changes' },
  tlsKey: { example: '/etc/dproxy/server-key.pem', description: "the private key of tlsCert (PEM)" },
  tlsNames: { example: 'cache.lan,host.docker.internal', description: 'with tls auto: more names and addresses the certificate covers, comma separated' },
  insecureLan: { example: 'true', description: 'allow plain HTTP or no client auth beyond loopback (anyone on the network reads the traffic)' },
}

/** The pair of loopback addresses that 'localhost' and 'loopback' stand for. */
export const loopbackHosts: readonly string[] = ['127.0.0.1', '::1']

const squash = (name: string): string => name.replace(/[-_]/g, '').toLowerCase()
const bySquashedName = new Map(settingKeys.map((key) => [squash(key), key]))

/** The canonical key for a name written any reasonable way ('max-age', 'MAX_AGE', 'maxAge'). */
export function settingKey(name: string): SettingKey | undefined {
  return bySquashedName.get(squash(name))
}

export function unknownSetting(name: string, code: 'USAGE' | 'CONFIG_INVALID' = 'USAGE'): DproxyError {
  return new DproxyError(code, `unknown setting '${name}' (known: ${settingKeys.join(', ')})`, {
    detail: { key: name },
  })
}

function expected(key: string, example: string, value: unknown, hint?: string): DproxyError {
  const shown = typeof value === 'string' ? `'${value}'` : JSON.stringify(value)
  return new DproxyError('CONFIG_INVALID', `expected ${key} like '${example}', got ${shown}${hint ? ` (${hint})` : ''}`, {
    detail: { key, value },
  })
}

/** Runs a parser and, if it refuses the value, says where the value came from. */
export function fromSource<T>(source: string, parse: () => T): T {
  try {
    return parse()
  } catch (err) {
    if (isDproxyError(err, 'CONFIG_INVALID')) {
      throw new DproxyError('CONFIG_INVALID', `${err.message} (from ${source})`, { detail: err.detail, cause: err })
    }
    throw err
  }
}

function isListenHost(host: string): boolean {
  if (net.isIP(host) !== 0) return true
  return host.length <= 253 && host.split('.').every((part) => /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i.test(part))
}

/** Listen addresses from 'a' or 'a,b'; 'localhost' and 'loopback' stand for 127.0.0.1 and ::1. */
export function parseHosts(value: string, key = 'host'): string[] {
  const parts = value
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '')
  if (parts.length === 0) throw expected(key, '127.0.0.1', value)
  const hosts: string[] = []
  for (const part of parts) {
    const lower = part.toLowerCase()
    const expanded = lower === 'localhost' || lower === 'loopback' ? loopbackHosts : [part.replace(/^\[(.*)\]$/, '$1')]
    for (const host of expanded) {
      if (!isListenHost(host)) throw expected(key, '127.0.0.1', value, `'${part}' is not an IP address or host name`)
      if (!hosts.includes(host)) hosts.push(host)
    }
  }
  return hosts
}

/** A listen port: 0 (the OS picks one) or 1..65535. */
export function parsePort(value: string | number, key = 'port'): number {
  const text = typeof value === 'number' ? String(value) : value.trim()
  const port = /^\d{1,5}$/.test(text) ? Number(text) : Number.NaN
  if (!(port >= 0 && port <= 65535)) throw expected(key, '5000', value, '0 to 65535')
  return port
}

const truthy = new Set(['true', 'yes', 'on', '1'])
const falsy = new Set(['false', 'no', 'off', '0'])

export function parseBoolean(value: string | boolean, key: string): boolean {
  if (typeof value === 'boolean') return value
  const lower = value.trim().toLowerCase()
  if (truthy.has(lower)) return true
  if (falsy.has(lower)) return false
  throw expected(key, 'true', value, 'true/false, yes/no, on/off, 1/0')
}

/**
 * A directory: '~' is expanded; a relative path is resolved against the
 * current directory when `relativeTo` is 'cwd' and refused when it is
 * 'forbidden' (a config file is read from anywhere, so relative would be a guess).
 */
export function parseDirectory(
  value: string,
  key: string,
  opts: { relativeTo: 'cwd' | 'forbidden'; env: NodeJS.ProcessEnv },
): string {
  const trimmed = value.trim()
  if (trimmed === '') throw expected(key, '~/dproxy-cache', value)
  const expanded = expandHome(trimmed, opts.env)
  if (path.isAbsolute(expanded)) return path.resolve(expanded)
  if (opts.relativeTo === 'forbidden') throw expected(key, '~/dproxy-cache', value, 'an absolute path or one starting with ~/')
  return path.resolve(expanded)
}

/** A file the daemon reads (a certificate, a key): absolute, or relative to the working directory where that is allowed. */
export function parseFilePath(value: string, key: string, opts: { relativeTo: 'cwd' | 'forbidden'; env: NodeJS.ProcessEnv }): string {
  const trimmed = value.trim()
  if (trimmed === '') throw expected(key, '/etc/dproxy/server.pem', value)
  const expanded = expandHome(trimmed, opts.env)
  if (path.isAbsolute(expanded) || opts.relativeTo === 'cwd') return path.resolve(expanded)
  throw expected(key, '/etc/dproxy/server.pem', value, 'an absolute path or one starting with ~/')
}

export const TLS_MODES = ['off', 'auto'] as const
export type TlsMode = (typeof TLS_MODES)[number]

export function parseTlsMode(value: string, key = 'tls'): TlsMode {
  return oneOf(TLS_MODES, value, key)
}

/**
 * Extra names for the certificate of `--tls auto`: DNS names or IP
 * addresses, from 'a,b' or repeated flags. A wildcard or anything else a
 * certificate cannot name is refused.
 */
export function parseTlsNames(value: string | string[], key = 'tlsNames'): string[] {
  const items = (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '')
  if (items.length === 0) throw expected(key, 'cache.lan', value)
  const out: string[] = []
  for (const item of items) {
    const name = item.replace(/^\[(.*)\]$/, '$1').toLowerCase()
    if (!isListenHost(name)) throw expected(key, 'cache.lan', item, 'a host name or an IP address')
    if (!out.includes(name)) out.push(name)
  }
  return out
}

/** Shows a URL with any user-info blanked, so a password typed into a URL is never echoed. */
function redactUrl(raw: string): string {
  return raw.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1***@')
}

function upstreamUrl(registry: string, raw: string): string {
  const example = 'https://mirror.example'
  const key = `upstream URL for ${registry}`
  let url: URL
  try {
    url = new URL(raw.trim())
  } catch {
    throw expected(key, example, redactUrl(raw))
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw expected(key, example, redactUrl(raw), 'http or https only')
  if (url.username !== '' || url.password !== '') {
    throw expected(key, example, redactUrl(raw), "credentials do not belong in a URL; use 'dproxy login'")
  }
  if (url.search !== '' || url.hash !== '') throw expected(key, example, redactUrl(raw), 'no query or fragment')
  return url.href.replace(/\/+$/, '')
}

/** The entry of an endpoint list that names the registry's own origin (`docker.io=https://cache.team.example,origin`). */
export const ORIGIN_KEYWORD = 'origin'

/**
 * Upstream endpoints, registry host -> the URLs to try in order, from
 * 'docker.io=https://cache.team.example,https://registry-1.docker.io,ghcr.io=https://m.example'
 * (an entry without `REGISTRY=` continues the list of the registry before it), from a list of such
 * strings (repeated flags) or from an object (a hand-edited config file) whose values are such lists.
 * The word `origin` stands for the registry's own origin. Docker Hub aliases become 'docker.io'; a
 * trailing slash is dropped. The same host given twice with different lists is refused rather than
 * resolved by order. What the lists mean (mirror, path prefix, the implied origin) is upstream/registries.ts's.
 */
export function upstreamsFrom(value: string | string[] | Record<string, string | string[]>): Record<string, string[]> {
  const key = 'upstreams'
  const example = 'docker.io=http://127.0.0.1:15000'
  const lists: Array<[string, string[]]> = []
  if (typeof value === 'string' || Array.isArray(value)) {
    for (const entry of typeof value === 'string' ? [value] : value) {
      if (typeof entry !== 'string') throw expected(key, example, value)
      let current: string[] | undefined
      for (const item of entry.split(',')) {
        if (item.trim() === '') continue
        const eq = item.indexOf('=')
        if (eq === -1) {
          if (current === undefined) throw expected(key, example, redactUrl(item.trim()), 'a list starts with REGISTRY=URL')
          current.push(item)
          continue
        }
        current = [item.slice(eq + 1)]
        lists.push([item.slice(0, eq), current])
      }
    }
  } else if (value !== null && typeof value === 'object') {
    for (const [host, urls] of Object.entries(value)) {
      if (typeof urls === 'string') lists.push([host, urls.split(',').filter((u) => u.trim() !== '')])
      else if (Array.isArray(urls) && urls.every((u) => typeof u === 'string')) lists.push([host, urls])
      else throw expected(key, example, value)
    }
  } else {
    throw expected(key, example, value)
  }
  const out: Record<string, string[]> = {}
  for (const [rawHost, rawUrls] of lists) {
    const registry = parseRegistryHost(rawHost, 'an upstream registry host')
    if (rawUrls.length === 0) throw expected(key, example, `${rawHost}=`, 'each registry names at least one URL')
    const urls = rawUrls.map((raw) => (raw.trim().toLowerCase() === ORIGIN_KEYWORD ? ORIGIN_KEYWORD : upstreamUrl(registry, raw)))
    const repeated = urls.find((u, i) => urls.indexOf(u) !== i)
    if (repeated !== undefined) {
      throw new DproxyError('CONFIG_INVALID', `upstream ${registry} lists '${repeated}' twice`, { detail: { key, registry } })
    }
    const previous = out[registry]
    if (previous !== undefined && previous.join(',') !== urls.join(',')) {
      throw new DproxyError('CONFIG_INVALID', `upstream ${registry} is given twice ('${previous.join(',')}' and '${urls.join(',')}')`, {
        detail: { key, registry },
      })
    }
    out[registry] = urls
  }
  return out
}

/**
 * `noOrigin`: true (no registry's list gets its origin implied last), false,
 * or the registries whose list is the only way out ('docker.io,ghcr.io').
 */
export function noOriginFrom(value: string | boolean | string[]): boolean | string[] {
  if (typeof value === 'boolean') return value
  const text = Array.isArray(value) ? value.join(',') : value
  const lower = text.trim().toLowerCase()
  if (truthy.has(lower)) return true
  if (falsy.has(lower)) return false
  try {
    return registriesFrom(text)
  } catch {
    throw expected('noOrigin', 'docker.io', value, 'true, false, or registries')
  }
}

/**
 * The registry allow-list from 'docker.io,ghcr.io' or a list of such strings
 * (repeated --allow-registry); Docker Hub aliases become 'docker.io'.
 */
export function registriesFrom(value: string | string[]): string[] {
  const items = (typeof value === 'string' ? [value] : value).flatMap((item) => item.split(','))
  const out = new Set<string>()
  for (const item of items) {
    if (item.trim() === '') continue
    out.add(parseRegistryHost(item, 'a registry host in registries'))
  }
  if (out.size === 0) throw expected('registries', 'docker.io,ghcr.io', value)
  return [...out]
}

/** A time limit: a duration above zero, at most ten minutes. */
export function parseTimeout(value: string, key: string): number {
  const ms = parseDuration(value, key)
  if (!(ms > 0 && ms <= 600_000)) throw expected(key, '2s', value, 'above 0 and at most 10m')
  return ms
}

/** A share of a whole: '20%' or '0.2'. */
export function parseFraction(value: string, key: string): number {
  const text = value.trim()
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(text)
  const n = m ? Number(m[1]) / (m[2] === '%' ? 100 : 1) : Number.NaN
  if (!(n >= 0 && n <= 1)) throw expected(key, '20%', value, 'a percentage, or a fraction from 0 to 1')
  return n
}

function oneOf<T extends string>(choices: readonly T[], value: string, key: string): T {
  const found = choices.find((c) => c === value.trim().toLowerCase())
  if (found === undefined) throw expected(key, choices[choices.length - 1]!, value, `one of ${choices.join(', ')}`)
  return found
}

export function parseLogFormat(value: string, key = 'logFormat'): LogFormat {
  return oneOf(LOG_FORMATS, value, key)
}

export function parseLogLevel(value: string, key = 'logLevel'): LogLevel {
  return oneOf(LOG_LEVELS, value, key)
}

/** `127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464`: an address and a port (0 for any). */
export function parseListenAddress(value: string, key = 'metricsAddress'): { host: string; port: number } {
  const text = value.trim()
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(text)
  const port = Number(m?.[2])
  if (!m || port > 65535 || !isListenHost(m[1]!)) throw expected(key, '127.0.0.1:9464', value.slice(0, 100), 'ADDRESS:PORT, an IPv6 address in brackets')
  return { host: m[1]!, port }
}

/** Checks a config value as `dproxy config set` receives it; throws CONFIG_INVALID naming the key. */
export function checkSetting(key: SettingKey, value: string, env: NodeJS.ProcessEnv): void {
  switch (key) {
    case 'host':
      parseHosts(value, key)
      return
    case 'port':
      parsePort(value, key)
      return
    case 'cacheDir':
      parseDirectory(value, key, { relativeTo: 'forbidden', env })
      return
    case 'upstreams':
      upstreamsFrom(value)
      return
    case 'noOrigin':
      noOriginFrom(value)
      return
    case 'chainConnectTimeout':
    case 'chainFirstByteTimeout':
      parseTimeout(value, key)
      return
    case 'maxAge':
    case 'ttl':
    case 'refresh':
    case 'refreshWindow':
      parseDuration(value, key)
      return
    case 'maxSize':
    case 'logMaxSize':
      parseSize(value, key)
      return
    case 'auth':
    case 'dockerCredentials':
    case 'insecureLan':
      parseBoolean(value, key)
      return
    case 'registries':
      registriesFrom(value)
      return
    case 'refreshReserve':
      parseFraction(value, key)
      return
    case 'logFormat':
      parseLogFormat(value, key)
      return
    case 'logLevel':
      parseLogLevel(value, key)
      return
    case 'metricsAddress':
      parseListenAddress(value, key)
      return
    case 'tls':
      parseTlsMode(value, key)
      return
    case 'tlsCert':
    case 'tlsKey':
      parseFilePath(value, key, { relativeTo: 'forbidden', env })
      return
    case 'tlsNames':
      parseTlsNames(value, key)
      return
  }
}
