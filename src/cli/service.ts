// `dproxy service install|uninstall [--dry-run] [--json]`: writes or removes a
// systemd user unit (Linux) or a launchd agent (macOS) that runs `dproxy
// serve`, via src/control/service.ts. It never runs systemctl or launchctl
// itself; it prints the commands that enable or stop the service, so nothing
// starts behind the user's back and tests never touch the real service manager.

import type { Command } from 'commander'
import { homeDir, stateDir } from '../config/paths.js'
import { statePaths } from '../control/lifecycle.js'
import { installService, serviceDefinition, uninstallService, type ServiceDefinition } from '../control/service.js'
import { binPath } from './daemon.js'
import type { CliContext } from './program.js'

export function definitionFor(env: NodeJS.ProcessEnv, platform: NodeJS.Platform = process.platform): ServiceDefinition {
  const uid = process.getuid?.()
  return serviceDefinition({
    platform,
    nodePath: process.execPath,
    binPath,
    env,
    home: homeDir(env, platform),
    logFile: statePaths(stateDir(env, platform)).logFile,
    ...(uid !== undefined ? { uid } : {}),
  })
}

interface Flags {
  dryRun?: boolean
  json?: boolean
}

export function registerServiceCommand(program: Command, ctx: CliContext): void {
  const out = (text: string) => ctx.stdout.write(text)
  const service = program
    .command('service')
    .description('run dproxy under the user service manager (systemd user unit or launchd agent)')
    .addHelpText('after', '\nNothing is enabled or started for you: the commands to do it are printed. See dproxy-service(1).')

  service
    .command('install')
    .description('write the service definition and print how to enable it')
    .option('--dry-run', 'print the definition and where it would go, write nothing')
    .option('--json', 'print the outcome as JSON')
    .action(async (flags: Flags) => {
      const def = definitionFor(ctx.env)
      const action = flags.dryRun ? 'dry-run' : (await installService(def)).action
      if (flags.json) {
        out(JSON.stringify({ kind: def.kind, path: def.path, action, content: def.content, enable: def.enable }, null, 2) + '\n')
        return
      }
      if (flags.dryRun) out(`would write ${def.path}:\n\n${def.content}\n`)
      else out(`${action === 'unchanged' ? 'already up to date' : action}: ${def.path}\n`)
      out(`enable and start it with:\n  ${def.enable.join(' && ')}\nundo with: dproxy service uninstall\n`)
    })

  service
    .command('uninstall')
    .description('remove the service definition and print how to stop the service')
    .option('--dry-run', 'say what would be removed, remove nothing')
    .option('--json', 'print the outcome as JSON')
    .action(async (flags: Flags) => {
      const def = definitionFor(ctx.env)
      const removed = flags.dryRun ? [] : await uninstallService(def)
      if (flags.json) {
        out(JSON.stringify({ kind: def.kind, path: def.path, dryRun: flags.dryRun === true, removed, disable: def.disable }, null, 2) + '\n')
        return
      }
      if (flags.dryRun) {
        out(`would remove ${[...def.links, def.path].join(' and ')} (where present)\n`)
      } else if (removed.length === 0) {
        out(`dproxy service is not installed (no ${def.path})\n`)
        return
      } else {
        for (const file of removed) out(`removed ${file}\n`)
      }
      out(`stop the running service with:\n  ${def.disable.join(' && ')}\n`)
    })
}
