// `dproxy pull IMAGE... [--platform LIST|all] [--jobs N] [--max-pulls N] [--json]`:
// caches the named images through the daemon (src/control/pull.ts). This file
// parses options and prints; `dproxy prefetch` prints through it too.
//
//   --json                  every WarmEvent as one NDJSON line; never loads ink
//   a terminal, CI unset    the ink view (src/ui/PullView.tsx)
//   piped, or CI set        a plain line per change of state, then the summary
//
// Exit status: 0 when every image is cached, 1 when one failed or the run was
// refused (rate-limit headroom, --max-pulls), 2 on a usage error.

import type { Command } from 'commander'
import { resolveSettings } from '../config/settings.js'
import { describeImage, formatPulls, formatSummary, pullImages, stateWords } from '../control/pull.js'
import { DproxyError } from '../errors.js'
import { hostPlatform, parsePlatforms, type Platform } from '../oci/platform.js'
import { canonicalReference } from '../oci/reference.js'
import type { RefusedEvent, Summary, WarmEvent } from '../proxy/warm.js'
import type { CliContext } from './program.js'
import { lazyCredentials, wantsInteractive } from './status.js'
import { UsageError } from './fatal.js'

export interface PullFlags {
  platform?: string
  jobs?: string
  maxPulls?: string
  json?: boolean
  cacheDir?: string
}

export function registerPullCommand(program: Command, ctx: CliContext): void {
  addPullOptions(
    program
      .command('pull')
      .description('cache images (every layer of the platforms asked for) so they can be pulled offline')
      .argument('<image...>', "images as you would pull them: 'alpine', 'ghcr.io/o/i:1'"),
  )
    .addHelpText('after', '\nExit status: 0 all cached, 1 an image failed or the run was refused, 2 usage error. See dproxy-pull(1).')
    .action(async (images: string[], flags: PullFlags) => {
      await fetchImages(images.map((i) => canonicalReference(i).ref), flags, ctx)
    })
}

/** The options `pull` and `prefetch` share. */
export function addPullOptions(cmd: Command): Command {
  return cmd
    .option('--platform <list>', "platforms to fetch, comma separated, or 'all' (default: this machine's)")
    .option('--jobs <n>', 'images fetched at the same time (default: 4)')
    .option('--max-pulls <n>', 'refuse a run that would spend more rate-limited manifest GETs than this')
    .option('--json', 'print progress as NDJSON events')
    .option('--cache-dir <dir>', 'the cache to fill (default: the configured one)')
}

function count(value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined
  const n = /^\d{1,7}$/.test(value) ? Number(value) : Number.NaN
  if (!(n >= min && n <= max)) throw new UsageError(`expected ${flag} to be a whole number from ${min} to ${max}, got '${value.slice(0, 50)}'`)
  return n
}

/**
 * Fetches canonical references through the daemon, prints progress, throws PULL_FAILED when any failed.
 * `imagePlatforms` (prefetch's, from files) applies only when --platform is not given.
 */
export async function fetchImages(refs: string[], flags: PullFlags, ctx: CliContext, imagePlatforms?: Map<string, Platform[]>): Promise<void> {
  const platforms = flags.platform !== undefined ? parsePlatforms(flags.platform) : { kind: 'list' as const, platforms: [hostPlatform()] }
  const jobs = count(flags.jobs, '--jobs', 1, 32) ?? 4
  const maxPulls = count(flags.maxPulls, '--max-pulls', 0, 1_000_000)
  const settings = resolveSettings({ flags: flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {}, env: ctx.env })
  // Opened only when a daemon is started here and a registry asks for a token (it may ask a keychain).
  const credentials = lazyCredentials(settings.configDir, ctx.env, settings.dockerCredentials)
  const refsUnique = [...new Set(refs)]
  const interactive = !flags.json && wantsInteractive(ctx.stdout, ctx.env)
  const view = interactive ? await (await import('../ui/PullView.js')).startPullView(ctx.stdout) : undefined
  const plain = plainPrinter(ctx)
  let end: Summary | RefusedEvent
  try {
    end = await pullImages({
      cacheDir: settings.cacheDir,
      stateDir: settings.stateDir,
      upstreams: settings.upstreams,
      maxAgeMs: settings.maxAgeMs,
      credentials,
      images: refsUnique,
      platforms,
      ...(imagePlatforms && flags.platform === undefined ? { imagePlatforms } : {}),
      jobs,
      ...(maxPulls !== undefined ? { maxPulls } : {}),
      onEvent: (e) => {
        if (flags.json) ctx.stdout.write(JSON.stringify(e) + '\n')
        else if (view) view.update(e)
        else plain(e)
      },
    })
  } finally {
    await view?.done()
  }
  if (end.type === 'refused') throw new DproxyError('PULL_FAILED', `refused: ${end.reason}`)
  if (!flags.json) ctx.stdout.write(formatSummary(end))
  if (end.failed.length > 0) {
    const n = end.failed.length
    throw new DproxyError('PULL_FAILED', `${n} of ${refsUnique.length} image${refsUnique.length === 1 ? '' : 's'} failed`)
  }
}

/** Plain output: a line when an image changes state (not for every byte), and the plan. */
function plainPrinter(ctx: CliContext): (e: WarmEvent) => void {
  const last = new Map<string, string>()
  return (e) => {
    if (e.type === 'plan') {
      ctx.stdout.write(`${e.images} image${e.images === 1 ? '' : 's'}; ${formatPulls(e)} needed\n`)
      return
    }
    if (e.type !== 'image' || e.state === 'queued' || last.get(e.image) === e.state) return
    last.set(e.image, e.state)
    const detail = describeImage(e)
    ctx.stdout.write(`${stateWords[e.state].padEnd(10)} ${e.image}${detail ? `  ${detail}` : ''}\n`)
  }
}
