// `dproxy prefetch [PATH...] [--platform LIST|all] [--jobs N] [--dry-run]
// [--max-pulls N] [--json]`: the images a project uses, found by
// src/control/scan, cached through the daemon like `dproxy pull` (cli/pull.ts
// prints the progress and decides the exit status). This file only parses
// options and prints the listing.
//
// --dry-run prints each image on a line of its own with the platforms a run
// would fetch (control/pull.ts decides: --platform, else what the files name,
// else the host's), then its places indented (`file:line  kind[  platform]`),
// and fetches nothing; with --json the whole result is one JSON document
// ({ images, problems }, each image with its `fetchPlatforms`). Problems (a reference
// that needs a variable, an invalid one) go to stderr as `file:line: message`,
// like a compiler's, and do not change the exit status.

import type { Command } from 'commander'
import { formatChoice, prefetchChoice } from '../control/pull.js'
import type { FindResult } from '../control/scan/index.js'
import { formatPlatform, hostPlatform, parsePlatforms, type Platform, type PlatformChoice } from '../oci/platform.js'
import type { CliContext } from './program.js'
import { addPullOptions, fetchImages, type PullFlags } from './pull.js'

interface PrefetchFlags extends PullFlags {
  dryRun?: boolean
}

export function registerPrefetchCommand(program: Command, ctx: CliContext): void {
  addPullOptions(
    program
      .command('prefetch')
      .description("find the images a project uses (compose, Dockerfiles, CI files, Kubernetes...) and cache them")
      .argument('[path...]', 'files or directories to scan', ['.'])
      .option('--dry-run', 'list the images and where each is used; fetch nothing'),
  )
    .addHelpText(
      'after',
      '\nExit status: 0 all cached (or listed; problems are reported on stderr), 1 an image failed or the run was refused,\n2 usage error. See dproxy-prefetch(1).',
    )
    .action(async (paths: string[], flags: PrefetchFlags) => {
      const { findImageReferences } = await import('../control/scan/index.js')
      const result = await findImageReferences(paths)
      const given = flags.platform !== undefined ? parsePlatforms(flags.platform) : undefined
      const host = hostPlatform()
      const choices = new Map(result.images.map((i) => [i.ref, prefetchChoice(i, given, host)]))
      if (!flags.dryRun) {
        for (const p of result.problems) ctx.stderr.write(`${p.line > 0 ? `${p.file}:${p.line}` : p.file}: ${p.message}\n`)
        if (result.images.length === 0) {
          if (!flags.json) ctx.stdout.write('no image references found\n')
          return
        }
        const perImage = new Map<string, Platform[]>()
        for (const [ref, choice] of choices) if (choice.kind === 'list') perImage.set(ref, choice.platforms)
        await fetchImages(
          result.images.map((i) => i.ref),
          flags,
          ctx,
          perImage,
        )
        return
      }
      if (flags.json) {
        const fetchPlatforms = (c: PlatformChoice) => (c.kind === 'list' ? c.platforms.map(formatPlatform) : [c.kind])
        const images = result.images.map((i) => ({ ...i, fetchPlatforms: fetchPlatforms(choices.get(i.ref)!) }))
        ctx.stdout.write(JSON.stringify({ ...result, images }, null, 2) + '\n')
        return
      }
      ctx.stdout.write(formatImageList(result, choices))
      for (const p of result.problems) ctx.stderr.write(`${p.line > 0 ? `${p.file}:${p.line}` : p.file}: ${p.message}\n`)
      const n = result.images.length
      ctx.stderr.write(`${n} image${n === 1 ? '' : 's'}, ${result.problems.length} problem${result.problems.length === 1 ? '' : 's'}\n`)
    })
}

/** The images with the platforms a run would fetch, and their places, as plain text. */
export function formatImageList(result: FindResult, choices: Map<string, PlatformChoice>): string {
  const lines: string[] = []
  for (const image of result.images) {
    const choice = choices.get(image.ref)
    lines.push(choice ? `${image.ref}  (${formatChoice(choice)})` : image.ref)
    const places = image.sources.map((s) => `${s.file}:${s.line}`)
    const width = Math.max(...places.map((p) => p.length))
    image.sources.forEach((s, i) => {
      lines.push(`  ${places[i]!.padEnd(width)}  ${s.kind}${s.platform ? `  ${s.platform}` : ''}`)
    })
  }
  return lines.length > 0 ? lines.join('\n') + '\n' : ''
}
