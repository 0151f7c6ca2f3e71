// `dproxy config get|set|unset|list|path`: a thin adapter over the config file
// in src/config/file.ts, which does all checking. Values are printed as they
// are stored, one per line, or as JSON with --json. Bad keys and values throw
// DproxyError USAGE / CONFIG_INVALID, which main.ts turns into exit code 2.
//
// `config get` prints the effective value (environment, else file, else
// default) on stdout, alone so that scripts can use it, and where it comes
// from on stderr; --json prints both as one object.

import type { Command } from 'commander'
import { settingHelp, settingKeys } from '../config/keys.js'
import { effectiveSetting, type EffectiveSetting } from '../config/settings.js'
import { openConfig } from '../config/file.js'

export interface ConfigCommandContext {
  env: NodeJS.ProcessEnv
  stdout: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
}

/** The value stored in the config file, or undefined when unset. */
export function configGet(env: NodeJS.ProcessEnv, key: string): string | undefined {
  return openConfig(env).get(key)
}

export function configGetEffective(env: NodeJS.ProcessEnv, key: string): EffectiveSetting {
  return effectiveSetting(key, env)
}

function describeSource(s: EffectiveSetting): string {
  if (s.source === 'default') return s.value === '' ? '(default: none)' : '(default)'
  return s.source === 'env' ? `(from the environment: ${s.from})` : `(from ${s.from})`
}

/** Stores a value; returns the canonical key ('max-age' -> 'maxAge'). */
export async function configSet(env: NodeJS.ProcessEnv, key: string, value: string): Promise<string> {
  return openConfig(env).set(key, value)
}

export async function configUnset(env: NodeJS.ProcessEnv, key: string): Promise<boolean> {
  return openConfig(env).unset(key)
}

export function configList(env: NodeJS.ProcessEnv): Record<string, string> {
  return openConfig(env).list()
}

export function configPath(env: NodeJS.ProcessEnv): string {
  return openConfig(env).path
}

const keysHelp = [
  '',
  'Settings:',
  ...settingKeys.map((key) => `  ${key.padEnd(10)} ${settingHelp[key].description} (e.g. ${settingHelp[key].example})`),
  '',
  'Flags and DPROXY_* environment variables override the file.',
].join('\n')

export function registerConfigCommand(program: Command, ctx: ConfigCommandContext): void {
  const print = (line: string): void => {
    ctx.stdout.write(`${line}\n`)
  }
  const json = (value: unknown): void => print(JSON.stringify(value, null, 2))

  const config = program
    .command('config')
    .description('read and change settings in the config file')
    .addHelpText('after', keysHelp)

  config
    .command('get')
    .description('print the effective value of a setting (stdout) and where it comes from (stderr)')
    .argument('<key>', 'setting name')
    .option('--json', 'print {key, value, source: env|file|default, from}')
    .action((key: string, options: { json?: boolean }) => {
      const setting = configGetEffective(ctx.env, key)
      if (options.json) {
        json(setting)
        return
      }
      print(setting.value)
      ctx.stderr?.write(`${describeSource(setting)}\n`)
    })

  config
    .command('set')
    .description('check and store a setting')
    .argument('<key>', 'setting name')
    .argument('<value>', "value, e.g. '20GB' or '10m'")
    .action(async (key: string, value: string) => {
      await configSet(ctx.env, key, value)
    })

  config
    .command('unset')
    .description('remove a setting so that its default applies')
    .argument('<key>', 'setting name')
    .action(async (key: string) => {
      await configUnset(ctx.env, key)
    })

  config
    .command('list')
    .description('print every setting in the config file')
    .option('--json', 'print a JSON object')
    .action((options: { json?: boolean }) => {
      const values = configList(ctx.env)
      if (options.json) {
        json(values)
        return
      }
      for (const [key, value] of Object.entries(values)) print(`${key}=${value}`)
    })

  config
    .command('path')
    .description('print where the config file is (it may not exist yet)')
    .option('--json', 'print a JSON string')
    .action((options: { json?: boolean }) => {
      const file = configPath(ctx.env)
      if (options.json) json(file)
      else print(file)
    })
}
