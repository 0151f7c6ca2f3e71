// `dproxy setup [TARGET...]`: points the machine's container clients at dproxy
// as a mirror, so `docker pull alpine` goes through it unchanged. This file
// parses options, asks, and prints; everything else is src/setup/, plain
// functions over a root dir. With --server URL --fingerprint F the clients
// are pointed at a team server over TLS instead of this machine's dproxy:
// its CA is fetched and checked first (src/setup/server.ts), and refused
// before anything is planned when it is not the one F names.
//
// Exit status: 0 done (or nothing to change, or --dry-run), 1 failure (a file
// that does not parse, permission denied), 2 usage error (bad target, no
// --yes without a terminal, declined, --server without --fingerprint).

import { createInterface } from 'node:readline/promises'
import { resolve } from 'node:path'
import type { Command } from 'commander'
import type { CliContext } from './program.js'
import { UsageError } from './fatal.js'

export interface SetupCommandContext extends CliContext {
  /** Where the confirmation is read from; default process.stdin. */
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean }
}

interface SetupFlags {
  user?: boolean
  root?: string
  registries?: string
  dryRun?: boolean
  yes?: boolean
  undo?: boolean
  restart?: boolean
  json?: boolean
  server?: string
  fingerprint?: string
}

export function registerSetupCommand(program: Command, ctx: SetupCommandContext): void {
  program
    .command('setup')
    .description('make docker, containerd, podman, buildkit and k3s pull through dproxy by themselves (reversible)')
    .argument('[target...]', 'docker, containerd, podman, buildkit, k3s (default: every one installed); kind, minikube, docker-desktop print what to do')
    .option('--user', "configure this user's clients (rootless docker, ~/.config/containers) instead of the system's")
    .option('--root <dir>', 'treat DIR as / for every system path')
    .option('--registries <list>', 'registries to send through dproxy, comma separated (default: docker.io, the configured upstreams and common public ones)')
    .option('--dry-run', 'only show the diff')
    .option('--yes', 'apply without asking')
    .option('--undo', "remove dproxy's entries again (restores files nothing else changed)")
    .option('--restart', 'make the clients read their new configuration (docker: SIGHUP)')
    .option('--json', 'print what was found, changed and still needs a restart as JSON')
    .option('--server <url>', "point the clients at a team server (https://HOST:PORT) instead of this machine's dproxy, trusting its CA")
    .option('--fingerprint <sha256>', "the SHA-256 of the server's CA (sha256:<hex> as dproxy serve prints it, or openssl's AB:CD:... form); required with --server")
    .addHelpText('after', '\nExit status: 0 done or nothing to change, 1 failure, 2 usage error. See dproxy-setup(1).')
    .action(async (targets: string[], flags: SetupFlags) => {
      await setupCommand(targets, flags, ctx)
    })
}

async function confirm(ctx: SetupCommandContext, question: string): Promise<boolean> {
  const rl = createInterface({ input: ctx.stdin ?? process.stdin, output: ctx.stderr, terminal: false })
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim())
  } finally {
    rl.close()
  }
}

export async function setupCommand(args: string[], flags: SetupFlags, ctx: SetupCommandContext): Promise<void> {
  const [{ resolveSettings }, { homeDir }, setup, { clientAddress, setupRegistries }, { TARGETS }, { vmInstructions, VM_TARGETS }, { sendReload }, server] =
    await Promise.all([
      import('../config/settings.js'),
      import('../config/paths.js'),
      import('../setup/setup.js'),
      import('../setup/address.js'),
      import('../setup/targets.js'),
      import('../setup/vm.js'),
      import('../setup/restart.js'),
      import('../setup/server.js'),
    ])
  const out = (s: string) => ctx.stdout.write(s)
  const settings = resolveSettings({ env: ctx.env })
  const root = resolve(flags.root ?? '/')

  if (flags.undo) {
    const undone = await setup.undoSetup(root, settings.stateDir)
    if (flags.json) out(JSON.stringify({ undone }, null, 2) + '\n')
    else if (undone.length === 0) out('nothing to undo: dproxy setup has not changed anything here\n')
    else for (const u of undone) out(`${u.action.padEnd(8)} ${u.shown}\n`)
    // dockerd's reload applies only the keys a daemon.json sets: a removed
    // registry-mirrors stays in force until dockerd restarts.
    if (!flags.json && undone.some((u) => u.kind === 'json-mirrors' && u.action !== 'gone')) {
      out('docker: a running dockerd keeps the mirror until it restarts (a reload does not drop a removed registry-mirrors): sudo systemctl restart docker\n')
    }
    return
  }

  const known = [...TARGETS, ...VM_TARGETS] as readonly string[]
  const unknown = args.filter((a) => !known.includes(a))
  if (unknown.length > 0) throw new UsageError(`unknown target ${unknown.join(', ')} (known: ${known.join(', ')})`)
  if (flags.fingerprint !== undefined && flags.server === undefined) throw new UsageError('--fingerprint goes with --server URL (the team server whose CA it names)')
  const registries = setupRegistries(flags.registries, settings.upstreams)
  const vms = args.filter((a): a is (typeof VM_TARGETS)[number] => (VM_TARGETS as readonly string[]).includes(a))
  if (flags.server !== undefined && vms.length > 0) {
    throw new UsageError(`--server configures this machine's clients; for ${vms.join(', ')} run dproxy setup --server inside the VM (see dproxy-setup(1))`)
  }
  // The server is checked before anything is planned: a wrong fingerprint changes nothing.
  const trusted = flags.server === undefined ? undefined : await server.fetchServerCa(flags.server, server.requireFingerprint(flags.server, flags.fingerprint))
  const { address, running } = trusted ? { address: trusted.address, running: true } : await clientAddress(settings)
  const explicit = args.filter((a): a is (typeof TARGETS)[number] => (TARGETS as readonly string[]).includes(a))
  const targets = args.length > 0 ? explicit : await setup.detectTargets(root, ctx.env.PATH)
  const record = await (await import('../setup/record.js')).readRecord(settings.stateDir, root)
  const options = {
    root,
    home: homeDir(ctx.env),
    user: flags.user === true,
    address,
    registries,
    ...(record && record.address !== address ? { previousAddresses: [record.address] } : {}),
    ...(trusted ? { tls: { ca: trusted.ca, fingerprint: trusted.fingerprint } } : {}),
  }
  const plans = await setup.planSetup(options, targets)
  const changes = setup.changedEdits(plans)
  const report = (applied: boolean, restarted: string[]) => ({
    address,
    ...(trusted ? { server: { url: trusted.url, fingerprint: trusted.fingerprint } } : { daemonRunning: running }),
    registries,
    dryRun: flags.dryRun === true,
    applied,
    targets: plans.map((p) => ({
      target: p.target,
      files: p.edits.map((e) => ({ path: e.shown, action: e.before === e.after ? 'unchanged' : e.before === undefined ? 'create' : 'change' })),
      notes: p.notes,
      ...(p.restart !== undefined ? { restart: p.restart } : {}),
    })),
    changed: changes.map((e) => e.shown),
    needsRestart: applied
      ? plans.filter((p) => p.restart !== undefined && changes.some((e) => e.target === p.target) && !restarted.includes(p.target)).map((p) => ({ target: p.target, command: p.restart }))
      : [],
    vm: vms.map((v) => vmInstructions(v, address)),
  })

  const text = (s: string) => {
    if (!flags.json) out(s)
  }
  if (trusted) text(`${trusted.url}: its CA is ${trusted.fingerprint} as --fingerprint says, and its certificate chains to it\n`)
  if (!running) text(`note: dproxy is not running; clients are pointed at the configured address ${address} (start it with dproxy start)\n`)
  for (const v of vms) text(vmInstructions(v, address).text)
  if (targets.length === 0 && vms.length === 0) text('no container clients found (docker, containerd, podman, buildkit, k3s); name one to configure it anyway\n')
  if (changes.length === 0) {
    if (targets.length > 0) text(`nothing to change: ${targets.join(', ')} already pull through dproxy at ${address}\n`)
    if (flags.json) out(JSON.stringify(report(false, []), null, 2) + '\n')
    return
  }
  text(setup.planDiff(plans))
  if (flags.dryRun) {
    if (flags.json) out(JSON.stringify(report(false, []), null, 2) + '\n')
    else text(`dry run: ${changes.length} file(s) would change\n`)
    return
  }
  if (!flags.yes) {
    if ((ctx.stdin ?? process.stdin).isTTY !== true) {
      throw new UsageError('not a terminal: pass --yes to apply these changes (or --dry-run to only show them)')
    }
    if (!(await confirm(ctx, `Apply these changes to ${changes.length} file(s)? [y/N] `))) {
      throw new UsageError('nothing changed')
    }
  }
  await setup.applySetup(plans, options, settings.stateDir)
  const restarted: string[] = []
  if (flags.restart && changes.some((e) => e.target === 'docker')) {
    const sent = await sendReload(root, options)
    if (sent) restarted.push('docker')
    text(sent ? `sent SIGHUP to dockerd (pid ${sent})\n` : 'dockerd is not running (no pid file): nothing to reload\n')
  }
  const r = report(true, restarted)
  if (flags.json) {
    out(JSON.stringify(r, null, 2) + '\n')
    return
  }
  text(`changed ${changes.length} file(s); dproxy setup --undo takes it back\n`)
  for (const p of plans) for (const n of p.notes) text(`${p.target}: ${n}\n`)
  for (const n of r.needsRestart) text(`${n.target}: to apply now: ${n.command}\n`)
  if (trusted) text(loginHint(address))
}

/** How each client logs in to a team server (it requires a login: dproxy env or dproxy token create on the server). */
function loginHint(address: string): string {
  return (
    `log in with a token from the server (dproxy token create NAME there, or the values of dproxy env): ` +
    `docker login ${address}; podman login ${address}; ctr images pull --user NAME ...; ` +
    `k3s: configs."${address}".auth in registries.yaml\n`
  )
}
