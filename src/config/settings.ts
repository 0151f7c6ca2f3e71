// The one place where dproxy decides its settings. Each value is taken from the
// first layer that has it: command-line flags, then DPROXY_* environment
// variables, then the config file, then the defaults below. Upstream overrides
// are the exception: they merge per registry across the layers (a flag's
// `--upstream docker.io=URL` replaces docker.io from the environment or the
// file, and registries it does not mention are kept).
//
// Every value that is present is checked, even one a higher layer overrides,
// so a broken config file is reported the first time, not the day a flag is
// dropped. Errors say which layer the bad value came from. An environment
// variable set to the empty string counts as unset.
//
// Two values are normalised on the way: maxSize and ttl of 0 become undefined
// ("no limit"), so a flag can switch off a limit that the config file sets.

import { DproxyError } from '../errors.js'
import { configDir, defaultCacheDir, stateDir } from './paths.js'
import {
  fromSource,
  loopbackHosts,
  parseBoolean,
  parseDirectory,
  parseFraction,
  parseHosts,
  parseListenAddress,
  parseLogFormat,
  parseLogLevel,
  parsePort,
  parseTimeout,
  parseFilePath,
  parseTlsMode,
  parseTlsNames,
  type TlsMode,
  noOriginFrom,
  registriesFrom,
  settingKey,
  settingKeys,
  unknownSetting,
  upstreamsFrom,
  type SettingKey,
} from './keys.js'
import { openConfig } from './file.js'
import { parseDuration, parseSize } from './units.js'
import type { LogFormat, LogLevel } from '../log.js'
import { DEFAULT_LOG_MAX_BYTES } from '../logfile.js'

export interface Settings {
  /** Listen addresses; default 127.0.0.1 and ::1. */
  hosts: string[]
  /** Listen port; default 5000; 0 lets the OS choose (tests). */
  port: number
  /** Where blobs and manifests live; default defaultCacheDir(env). */
  cacheDir: string
  /**
   * Registry host -> the endpoint URLs to try in order (or `origin`), only what the user configured;
   * upstream/registries.ts upstreamChain says what a list means. Built-in defaults live there too.
   */
  upstreams: Record<string, string[]>
  /** No origin implied after these registries' lists (true: after every list). Default false. */
  noOrigin: boolean | string[]
  /** Limits of an upstream endpoint with another behind it; undefined: the built-in 2 s and 10 s. */
  chainConnectTimeoutMs: number | undefined
  chainFirstByteTimeoutMs: number | undefined
  /** Default 0. */
  maxAgeMs: number
  /** Undefined when unset or 0: no size limit. */
  maxSizeBytes: number | undefined
  /** Undefined when unset or 0. */
  ttlMs: number | undefined
  /** Default false. */
  auth: boolean
  /** Registries clients may use when the daemon listens beyond loopback; undefined: the built-in list. */
  registries: string[] | undefined
  /** Undefined when unset or 0: no background refresh. */
  refreshMs: number | undefined
  /** Default 14 days. */
  refreshWindowMs: number
  /** Default 0.2. */
  refreshReserve: number
  /** Default 'text'. */
  logFormat: LogFormat
  /** Default 'info'. */
  logLevel: LogLevel
  /** Detached: the log file rotates past this; default 10 MiB. */
  logMaxBytes: number
  /** Where /metrics is also served, to anyone; undefined: loopback only, on the daemon's own listeners. */
  metricsAddress: { host: string; port: number } | undefined
  /** Default true: logins docker and podman stored are used after dproxy's own. */
  dockerCredentials: boolean
  /** Default 'off'; 'auto': dproxy's own CA and certificate (daemon/tls.ts). */
  tls: TlsMode
  /** Serve HTTPS with these files (both or neither; not with tls auto). */
  tlsCert: string | undefined
  tlsKey: string | undefined
  /** More names for the certificate of tls auto; default none. */
  tlsNames: string[]
  /** Default false: beyond loopback, TLS and client auth are required. */
  insecureLan: boolean
  configDir: string
  stateDir: string
}

/** Values as they arrive from commander options or are read from the file, before checking. */
export interface RawSettings {
  host?: string
  port?: string | number
  cacheDir?: string
  upstreams?: string | string[] | Record<string, string | string[]>
  noOrigin?: string | boolean | string[]
  chainConnectTimeout?: string
  chainFirstByteTimeout?: string
  maxAge?: string
  maxSize?: string
  ttl?: string
  auth?: string | boolean
  registries?: string | string[]
  refresh?: string
  refreshWindow?: string
  refreshReserve?: string
  logFormat?: string
  logLevel?: string
  logMaxSize?: string
  metricsAddress?: string
  dockerCredentials?: string | boolean
  tls?: string
  tlsCert?: string
  tlsKey?: string
  tlsNames?: string | string[]
  insecureLan?: string | boolean
}

/** The environment variable for each setting. */
export const settingEnvVars: Record<SettingKey, string> = {
  host: 'DPROXY_HOST',
  port: 'DPROXY_PORT',
  cacheDir: 'DPROXY_CACHE_DIR',
  upstreams: 'DPROXY_UPSTREAMS',
  noOrigin: 'DPROXY_NO_ORIGIN',
  chainConnectTimeout: 'DPROXY_CHAIN_CONNECT_TIMEOUT',
  chainFirstByteTimeout: 'DPROXY_CHAIN_FIRST_BYTE_TIMEOUT',
  maxAge: 'DPROXY_MAX_AGE',
  maxSize: 'DPROXY_MAX_SIZE',
  ttl: 'DPROXY_TTL',
  auth: 'DPROXY_AUTH',
  registries: 'DPROXY_REGISTRIES',
  refresh: 'DPROXY_REFRESH',
  refreshWindow: 'DPROXY_REFRESH_WINDOW',
  refreshReserve: 'DPROXY_REFRESH_RESERVE',
  logFormat: 'DPROXY_LOG_FORMAT',
  logLevel: 'DPROXY_LOG_LEVEL',
  logMaxSize: 'DPROXY_LOG_MAX_SIZE',
  metricsAddress: 'DPROXY_METRICS_ADDRESS',
  dockerCredentials: 'DPROXY_DOCKER_CREDENTIALS',
  tls: 'DPROXY_TLS',
  tlsCert: 'DPROXY_TLS_CERT',
  tlsKey: 'DPROXY_TLS_KEY',
  tlsNames: 'DPROXY_TLS_NAMES',
  insecureLan: 'DPROXY_INSECURE_LAN',
}

/** The flag each setting is expected to be given by; used only to say where a bad value came from. */
const flagNames: Record<SettingKey, string> = {
  host: '--host',
  port: '--port',
  cacheDir: '--cache-dir',
  upstreams: '--upstream',
  noOrigin: '--no-origin',
  chainConnectTimeout: '--chain-connect-timeout',
  chainFirstByteTimeout: '--chain-first-byte-timeout',
  maxAge: '--max-age',
  maxSize: '--max-size',
  ttl: '--ttl',
  auth: '--auth',
  registries: '--allow-registry',
  refresh: '--refresh',
  refreshWindow: '--refresh-window',
  refreshReserve: '--refresh-reserve',
  logFormat: '--log-format',
  logLevel: '--log-level',
  logMaxSize: '--log-max-size',
  metricsAddress: '--metrics-address',
  dockerCredentials: '--no-docker-credentials',
  tls: '--tls',
  tlsCert: '--tls-cert',
  tlsKey: '--tls-key',
  tlsNames: '--tls-name',
  insecureLan: '--insecure-lan',
}

export const defaultPort = 5000

/**
 * Parses upstream overrides ('docker.io=http://127.0.0.1:15000,ghcr.io=https://mirror.example',
 * repeated 'HOST=URL' flags, or an object). `source` names where the value came from in errors.
 */
export function parseUpstreams(value: string | string[] | Record<string, string | string[]>, source: string): Record<string, string[]> {
  return fromSource(source, () => upstreamsFrom(value))
}

interface Layer {
  source: (key: SettingKey) => string
  values: RawSettings
  /** Relative directories: resolved against the working directory, or refused (config file). */
  relativeTo: 'cwd' | 'forbidden'
}

function present<T>(value: T | undefined | null): value is T {
  return value !== undefined && value !== null
}

function fromEnv(env: NodeJS.ProcessEnv): RawSettings {
  const raw: Record<string, string> = {}
  for (const key of settingKeys) {
    const value = env[settingEnvVars[key]]
    if (value !== undefined && value !== '') raw[key] = value
  }
  return raw
}

function fromFile(env: NodeJS.ProcessEnv, platform: NodeJS.Platform): { path: string; values: RawSettings } {
  const file = openConfig(env, platform)
  const raw: Record<string, string> = {}
  for (const [name, value] of Object.entries(file.list())) {
    // The file holds canonical names only (`config set` writes them); other spellings are reported, not guessed.
    if (!(settingKeys as readonly string[]).includes(name)) {
      const near = settingKey(name)
      const hint = near === undefined ? `known: ${settingKeys.join(', ')}` : `did you mean '${near}'?`
      throw new DproxyError('CONFIG_INVALID', `unknown setting '${name}' in ${file.path} (${hint})`, { detail: { key: name } })
    }
    raw[name] = value
  }
  return { path: file.path, values: raw }
}

/**
 * Settings from flags, environment, config file and defaults, in that order.
 * `env` defaults to process.env; pass an explicit one in tests. `platform` is for
 * computing another platform's directories in tests.
 */
export function resolveSettings(
  opts: { flags?: RawSettings; env?: NodeJS.ProcessEnv; platform?: NodeJS.Platform } = {},
): Settings {
  const env = opts.env ?? process.env
  const platform = opts.platform ?? process.platform
  const file = fromFile(env, platform)
  const layers: Layer[] = [
    { source: (key) => flagNames[key], values: opts.flags ?? {}, relativeTo: 'cwd' },
    { source: (key) => settingEnvVars[key], values: fromEnv(env), relativeTo: 'cwd' },
    { source: () => file.path, values: file.values, relativeTo: 'forbidden' },
  ]

  // Every present value is parsed (and so checked); the first layer's wins.
  function pick<T>(key: SettingKey, parse: (value: unknown, layer: Layer) => T): T | undefined {
    let winner: { value: T } | undefined
    for (const layer of layers) {
      const value = layer.values[key]
      if (!present(value)) continue
      const parsed = fromSource(layer.source(key), () => parse(value, layer))
      winner ??= { value: parsed }
    }
    return winner?.value
  }

  const text = (value: unknown): string => {
    if (typeof value === 'string') return value
    if (typeof value === 'number' || typeof value === 'boolean') return String(value)
    return JSON.stringify(value) ?? String(value)
  }

  const hosts = pick('host', (v) => parseHosts(text(v)))
  const port = pick('port', (v) => parsePort(typeof v === 'number' ? v : text(v)))
  const cacheDir = pick('cacheDir', (v, layer) => parseDirectory(text(v), 'cacheDir', { relativeTo: layer.relativeTo, env }))
  const maxAgeMs = pick('maxAge', (v) => parseDuration(text(v), 'maxAge'))
  const maxSizeBytes = pick('maxSize', (v) => parseSize(text(v), 'maxSize'))
  const ttlMs = pick('ttl', (v) => parseDuration(text(v), 'ttl'))
  const auth = pick('auth', (v) => parseBoolean(typeof v === 'boolean' ? v : text(v), 'auth'))
  const registries = pick('registries', (v) => registriesFrom(Array.isArray(v) ? v.map(text) : text(v)))
  const refreshMs = pick('refresh', (v) => parseDuration(text(v), 'refresh'))
  const refreshWindowMs = pick('refreshWindow', (v) => parseDuration(text(v), 'refreshWindow'))
  const refreshReserve = pick('refreshReserve', (v) => parseFraction(text(v), 'refreshReserve'))
  const logFormat = pick('logFormat', (v) => parseLogFormat(text(v)))
  const logLevel = pick('logLevel', (v) => parseLogLevel(text(v)))
  const logMaxBytes = pick('logMaxSize', (v) => parseSize(text(v), 'logMaxSize'))
  const metricsAddress = pick('metricsAddress', (v) => parseListenAddress(text(v)))
  const chainConnectTimeoutMs = pick('chainConnectTimeout', (v) => parseTimeout(text(v), 'chainConnectTimeout'))
  const chainFirstByteTimeoutMs = pick('chainFirstByteTimeout', (v) => parseTimeout(text(v), 'chainFirstByteTimeout'))
  const noOrigin = pick('noOrigin', (v) =>
    noOriginFrom(typeof v === 'boolean' ? v : Array.isArray(v) ? v.map(text) : text(v)),
  )
  const dockerCredentials = pick('dockerCredentials', (v) => parseBoolean(typeof v === 'boolean' ? v : text(v), 'dockerCredentials'))
  const tls = pick('tls', (v) => parseTlsMode(text(v)))
  const tlsCert = pick('tlsCert', (v, layer) => parseFilePath(text(v), 'tlsCert', { relativeTo: layer.relativeTo, env }))
  const tlsKey = pick('tlsKey', (v, layer) => parseFilePath(text(v), 'tlsKey', { relativeTo: layer.relativeTo, env }))
  const tlsNames = pick('tlsNames', (v) => parseTlsNames(Array.isArray(v) ? v.map(text) : text(v)))
  const insecureLan = pick('insecureLan', (v) => parseBoolean(typeof v === 'boolean' ? v : text(v), 'insecureLan'))
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new DproxyError('CONFIG_INVALID', `tlsCert and tlsKey go together: ${tlsCert === undefined ? 'tlsKey' : 'tlsCert'} is set alone (--tls-cert FILE --tls-key FILE)`)
  }
  if (tls === 'auto' && tlsCert !== undefined) {
    throw new DproxyError('CONFIG_INVALID', 'tls auto makes its own certificate: give either --tls auto or --tls-cert/--tls-key, not both')
  }

  // Lowest layer first so that higher layers overwrite per registry.
  const upstreams: Record<string, string[]> = {}
  for (const layer of [...layers].reverse()) {
    const value = layer.values.upstreams
    if (present(value)) Object.assign(upstreams, parseUpstreams(value, layer.source('upstreams')))
  }

  return {
    hosts: hosts ?? [...loopbackHosts],
    port: port ?? defaultPort,
    cacheDir: cacheDir ?? defaultCacheDir(env, platform),
    upstreams,
    noOrigin: noOrigin ?? false,
    chainConnectTimeoutMs,
    chainFirstByteTimeoutMs,
    maxAgeMs: maxAgeMs ?? 0,
    maxSizeBytes: maxSizeBytes === 0 ? undefined : maxSizeBytes,
    ttlMs: ttlMs === 0 ? undefined : ttlMs,
    auth: auth ?? false,
    registries,
    refreshMs: refreshMs === 0 ? undefined : refreshMs,
    refreshWindowMs: refreshWindowMs ?? 14 * 24 * 3600 * 1000,
    refreshReserve: refreshReserve ?? 0.2,
    logFormat: logFormat ?? 'text',
    logLevel: logLevel ?? 'info',
    logMaxBytes: logMaxBytes ?? DEFAULT_LOG_MAX_BYTES,
    metricsAddress,
    dockerCredentials: dockerCredentials ?? true,
    tls: tls ?? 'off',
    tlsCert,
    tlsKey,
    tlsNames: tlsNames ?? [],
    insecureLan: insecureLan ?? false,
    configDir: configDir(env, platform),
    stateDir: stateDir(env, platform),
  }
}

/** Where a setting's effective value comes from (flags aside: they belong to one command). */
export interface EffectiveSetting {
  key: SettingKey
  value: string
  source: 'env' | 'file' | 'default'
  /** The environment variable or the config file path; absent for a default. */
  from?: string
}

/**
 * The value a daemon started now without flags would use for `key`, in the
 * form it is written (`10m`, not milliseconds), and which layer gave it.
 * Values are shown, not checked: resolveSettings reports a bad one.
 */
export function effectiveSetting(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
): EffectiveSetting {
  const key = settingKey(name)
  if (key === undefined) throw unknownSetting(name)
  const file = openConfig(env, platform)
  const fromEnvValue = fromEnv(env)[key]
  if (fromEnvValue !== undefined) return { key, value: String(fromEnvValue), source: 'env', from: settingEnvVars[key] }
  const stored = file.get(key)
  if (stored !== undefined) return { key, value: stored, source: 'file', from: file.path }
  // Keys without a written default here have a built-in one elsewhere (or none): shown as ''.
  const defaults: Partial<Record<SettingKey, string>> = {
    host: loopbackHosts.join(','),
    port: String(defaultPort),
    cacheDir: defaultCacheDir(env, platform),
    upstreams: '',
    noOrigin: 'false',
    chainConnectTimeout: '2s',
    chainFirstByteTimeout: '10s',
    maxAge: '0',
    maxSize: '0',
    ttl: '0',
    auth: 'false',
    logFormat: 'text',
    logLevel: 'info',
    logMaxSize: '10MiB',
    dockerCredentials: 'true',
    tls: 'off',
    insecureLan: 'false',
  }
  return { key, value: defaults[key] ?? '', source: 'default' }
}
