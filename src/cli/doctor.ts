// `dproxy doctor [--json] [--root DIR]`: proves, client by client, that pulls
// go through dproxy, and says what to fix. The work is src/setup/doctor.ts;
// this file parses options and prints: a table on a terminal (marks and
// colour), the same table in plain words when piped, or one JSON object.
//
// Exit status: 0 every client found goes through dproxy and the daemon is
// healthy, 1 something is broken (what and the fix are printed), 2 usage error.

import { resolve } from 'node:path'
import type { Command } from 'commander'
import { describeFailures } from '../control/status.js'
import { DproxyError } from '../errors.js'
import type { CliContext } from './program.js'
import type { Check, ClientReport, DoctorReport } from '../setup/doctor.js'

interface DoctorFlags {
  json?: boolean
  root?: string
}

export function registerDoctorCommand(program: Command, ctx: CliContext): void {
  program
    .command('doctor')
    .description('prove that docker, containerd and podman pull through dproxy (a real pull of a local probe image), and say what to fix')
    .option('--json', 'print one JSON object (a report per client with configured, verified and the reason)')
    .option('--root <dir>', 'read the system config files under DIR, as dproxy setup --root wrote them')
    .addHelpText('after', '\nExit status: 0 all good, 1 something is broken, 2 usage error. See dproxy-doctor(1).')
    .action(async (flags: DoctorFlags) => {
      await doctorCommand(flags, ctx)
    })
}

type Marks = { yes: string; no: string; none: string; level: Record<Check['level'], string> }

const plainMarks: Marks = { yes: 'yes', no: 'no', none: '-', level: { ok: 'ok', warn: 'warn', fail: 'FAIL' } }
const ttyMarks: Marks = {
  yes: '\u001b[32m✓\u001b[0m',
  no: '\u001b[31m✗\u001b[0m',
  none: '-',
  level: { ok: '\u001b[32mok\u001b[0m', warn: '\u001b[33mwarn\u001b[0m', fail: '\u001b[31mFAIL\u001b[0m' },
}

/** Pads to a width measured without escape codes. */
function pad(s: string, width: number): string {
  // eslint-disable-next-line no-control-regex
  const visible = s.replace(/\u001b\[[0-9;]*m/g, '').length
  return s + ' '.repeat(Math.max(0, width - visible))
}

function mark(c: ClientReport, value: boolean, m: Marks, configuredOnly = false): string {
  if (c.state === 'skipped' && !value) return m.none
  if (configuredOnly) return m.none
  return value ? m.yes : m.no
}

/** The report as text: the daemon's checks, then the client table with each reason below its row. */
export function formatDoctorText(r: DoctorReport, tty: boolean): string {
  const m = tty ? ttyMarks : plainMarks
  const out: string[] = []
  const nameWidth = Math.max(10, ...r.checks.map((c) => c.name.length)) + 2
  for (const c of r.checks) {
    out.push(`${pad(c.name, nameWidth)}${pad(m.level[c.level], 6)}${c.detail}`)
    if (c.fix !== undefined) out.push(`${' '.repeat(nameWidth + 6)}fix: ${c.fix}`)
  }
  out.push('')
  const rows = r.clients.map((c) => [
    c.client,
    mark(c, c.configured, m),
    mark(c, c.verified, m, (c.client === 'buildkit' || c.client === 'k3s') && c.state !== 'skipped'),
    c.state === 'skipped' ? '(skipped)' : (c.fix ?? ''),
  ])
  const header = ['client', 'configured', 'verified', 'fix']
  const widths = [10, 12, 10]
  out.push(header.map((h, i) => (i < 3 ? pad(h, widths[i]!) : h)).join('').trimEnd())
  r.clients.forEach((c, i) => {
    out.push(rows[i]!.map((v, j) => (j < 3 ? pad(v, widths[j]!) : v)).join('').trimEnd())
    out.push(`  ${c.reason}`)
  })
  if (r.recentFailures.length > 0) {
    out.push('', 'recent failures (clients in mirror mode fall back to the origin and print its error instead):')
    for (const line of describeFailures(r.recentFailures)) out.push(`  ${line}`)
  }
  out.push('', r.ok ? 'all good: every client found goes through dproxy' : 'something is broken: see FAIL and the fixes above')
  return out.join('\n') + '\n'
}

export async function doctorCommand(flags: DoctorFlags, ctx: CliContext): Promise<void> {
  const [{ resolveSettings }, { homeDir }, { runDoctor }, { lazyCredentials }] = await Promise.all([
    import('../config/settings.js'),
    import('../config/paths.js'),
    import('../setup/doctor.js'),
    import('./status.js'),
  ])
  const settings = resolveSettings({ env: ctx.env })
  const report = await runDoctor({
    settings,
    root: resolve(flags.root ?? '/'),
    home: homeDir(ctx.env),
    env: ctx.env,
    credentials: lazyCredentials(settings.configDir, ctx.env, settings.dockerCredentials),
  })
  if (flags.json) ctx.stdout.write(JSON.stringify(report, null, 2) + '\n')
  else ctx.stdout.write(formatDoctorText(report, (ctx.stdout as { isTTY?: boolean }).isTTY === true && !ctx.env.CI))
  if (!report.ok) throw new DproxyError('DOCTOR_FAILED', 'something is broken (see the report above)')
}
