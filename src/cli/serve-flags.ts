// The serve flags that are settings, each with the setting it gives: one map,
// read by `serve` (which resolves the settings and runs the daemon) and by
// `start` / `serve --detach` (which resolve them first, so that a bad value
// fails before anything is detached, then pass the flags on as typed). A new
// setting with a flag is its option in serve.ts and one line here.

import type { RawSettings } from '../config/settings.js'

/** Flag (commander's attribute name) -> setting. */
const SETTING_OF_FLAG = {
  host: 'host',
  port: 'port',
  cacheDir: 'cacheDir',
  upstream: 'upstreams',
  chainConnectTimeout: 'chainConnectTimeout',
  chainFirstByteTimeout: 'chainFirstByteTimeout',
  maxAge: 'maxAge',
  auth: 'auth',
  allowRegistry: 'registries',
  refresh: 'refresh',
  refreshWindow: 'refreshWindow',
  refreshReserve: 'refreshReserve',
  logFormat: 'logFormat',
  logLevel: 'logLevel',
  logMaxSize: 'logMaxSize',
  metricsAddress: 'metricsAddress',
  tls: 'tls',
  tlsCert: 'tlsCert',
  tlsKey: 'tlsKey',
  tlsName: 'tlsNames',
  insecureLan: 'insecureLan',
} as const satisfies Record<string, keyof RawSettings>

/**
 * `--no-x` flags -> the setting and the value the flag gives it. Commander
 * gives them true when absent, so only their false (the flag given) sets
 * anything; absent, the config decides.
 */
const SETTING_OF_NEGATED_FLAG: Record<string, readonly [keyof RawSettings, boolean]> = {
  dockerCredentials: ['dockerCredentials', false],
  origin: ['noOrigin', true],
}

/** The settings the given flags set (flags not given, and other flags, set nothing). */
export function flagSettings(flags: object): RawSettings {
  const raw: Record<string, unknown> = {}
  for (const [flag, setting] of Object.entries(SETTING_OF_FLAG)) {
    const value = (flags as Record<string, unknown>)[flag]
    if (typeof value === 'string' || value === true) raw[setting] = value
    else if (Array.isArray(value)) raw[setting] = value.map(String)
  }
  for (const [flag, [setting, value]] of Object.entries(SETTING_OF_NEGATED_FLAG)) {
    if ((flags as Record<string, unknown>)[flag] === false) raw[setting] = value
  }
  return raw as RawSettings
}
