// The config file, <configDir>/config.json, read and written through conf.
// Values are kept in the string form the user typed ('10m', '20GB'), checked
// against the key table in keys.ts before they are written, so `config get`
// prints back what was set and the file stays readable and hand-editable.
//
// Reading never writes, and never loads conf: every command resolves settings,
// and conf (with its schema validator) costs about 100 ms of start-up, so the
// file is read as plain JSON. conf is imported only when a value is stored
// (`dproxy config set/unset`); it is given no defaults or schema (ajv's
// useDefaults would write on construction). Validation with precise messages
// happens here and in settings.ts instead of conf's schema.
//
// No secret ever goes into this file: credentials live in src/credentials, and
// upstream URLs carrying user-info are refused.

import fs from 'node:fs'
import path from 'node:path'
import type Conf from 'conf'
import { DproxyError } from '../errors.js'
import { configDir } from './paths.js'
import { checkSetting, settingKey, unknownSetting, type SettingKey } from './keys.js'

export interface ConfigFile {
  /** Absolute path of config.json, whether or not it exists yet. */
  readonly path: string
  /** The value as stored, or undefined when unset. Throws USAGE for an unknown key. */
  get(key: string): string | undefined
  /** Checks and stores a value; returns the canonical key it was stored under. */
  set(key: string, value: string): Promise<SettingKey>
  /** Removes a key (also one this version does not know); true when something was removed. */
  unset(key: string): Promise<boolean>
  /** Everything in the file as strings, unknown keys included, in file order. */
  list(): Record<string, string>
}

type Stored = Record<string, unknown>

/** The string form of a value found in the file; hand edits may have used numbers, booleans or an object. */
function asText(value: unknown): string {
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  if (Array.isArray(value)) return value.map(asText).join(',')
  if (value !== null && typeof value === 'object') {
    return Object.entries(value)
      .map(([k, v]) => `${k}=${asText(v)}`)
      .join(',')
  }
  return JSON.stringify(value) ?? String(value)
}

export function openConfig(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): ConfigFile {
  const dir = configDir(env, platform)
  const file = path.join(dir, 'config.json')
  let conf: Conf<Stored> | undefined

  const fail = (err: unknown): DproxyError => {
    const reason = err instanceof Error ? err.message : String(err)
    return new DproxyError('CONFIG_INVALID', `cannot read config file ${file}: ${reason}`, { cause: err, detail: { path: file } })
  }

  const open = async (): Promise<Conf<Stored>> => {
    if (conf) return conf
    const { default: ConfClass } = await import('conf')
    try {
      conf = new ConfClass<Stored>({
        projectName: 'dproxy',
        cwd: dir,
        configName: 'config',
        accessPropertiesByDotNotation: false,
        clearInvalidConfig: false,
      })
    } catch (err) {
      throw fail(err)
    }
    return conf
  }

  const read = (): Stored => {
    let text: string
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
      throw fail(err)
    }
    let parsed: unknown
    try {
      parsed = text.trim() === '' ? {} : JSON.parse(text)
    } catch {
      throw fail(new Error('not valid JSON'))
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw fail(new Error('not a JSON object'))
    return parsed as Stored
  }

  const known = (name: string): SettingKey => {
    const key = settingKey(name)
    if (key === undefined) throw unknownSetting(name)
    return key
  }

  return {
    path: file,
    get(name) {
      const key = known(name)
      const value = read()[key]
      return value === undefined ? undefined : asText(value)
    },
    async set(name, value) {
      const key = known(name)
      const text = value.trim()
      checkSetting(key, text, env)
      ;(await open()).set(key, text)
      return key
    },
    async unset(name) {
      const stored = read()
      // The exact name first, so that a misspelt key in a hand-edited file can be removed.
      const key = Object.hasOwn(stored, name) ? name : known(name)
      if (!Object.hasOwn(stored, key)) return false
      ;(await open()).delete(key)
      return true
    },
    list() {
      const out: Record<string, string> = {}
      for (const [key, value] of Object.entries(read())) out[key] = asText(value)
      return out
    },
  }
}
