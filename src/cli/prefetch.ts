// `dproxy prefetch [PATH...] --dry-run [--json]`: the images a project uses,
// found by src/control/scan, each once with every place it was found. This
// file only parses options and prints; fetching the images through the
// daemon is not built yet, so without --dry-run the command refuses (exit 2).
//
// Text output: each image on a line of its own, then its places indented
// (`file:line  kind[  platform]`); problems (a reference that needs a
// variable, an invalid one) go to stderr as `file:line: message`, like a
// compiler's. --json prints the whole result as one JSON document
// ({ images, problems }). Problems do not change the exit status: 0.

import type { Command } from 'commander'
import type { FindResult } from '../control/scan/index.js'
import { DproxyError } from '../errors.js'
import type { CliContext } from './program.js'

interface PrefetchFlags {
  dryRun?: boolean
  json?: boolean
}

export function registerPrefetchCommand(program: Command, ctx: CliContext): void {
  program
    .command('prefetch')
    .description("find the images a project uses (compose, Dockerfiles, CI files, Kubernetes...) and cache them")
    .argument('[path...]', 'files or directories to scan', ['.'])
    .option('--dry-run', 'list the images and where each is used; fetch nothing')
    .option('--json', 'print the list as one JSON document')
    .addHelpText('after', '\nExit status: 0 listed (problems are reported on stderr), 2 usage error. See dproxy-prefetch(1).')
    .action(async (paths: string[], flags: PrefetchFlags) => {
      if (!flags.dryRun) throw new DproxyError('USAGE', 'fetching is not implemented yet: use --dry-run')
      const { findImageReferences } = await import('../control/scan/index.js')
      const result = await findImageReferences(paths)
      if (flags.json) {
        ctx.stdout.write(JSON.stringify(result, null, 2) + '\n')
        return
      }
      ctx.stdout.write(formatImageList(result))
      for (const p of result.problems) ctx.stderr.write(`${p.line > 0 ? `${p.file}:${p.line}` : p.file}: ${p.message}\n`)
      const n = result.images.length
      ctx.stderr.write(`${n} image${n === 1 ? '' : 's'}, ${result.problems.length} problem${result.problems.length === 1 ? '' : 's'}\n`)
    })
}

/** The images and their places, as plain text. */
export function formatImageList(result: FindResult): string {
  const lines: string[] = []
  for (const image of result.images) {
    lines.push(image.platforms.length > 0 ? `${image.ref}  (${image.platforms.join(', ')})` : image.ref)
    const places = image.sources.map((s) => `${s.file}:${s.line}`)
    const width = Math.max(...places.map((p) => p.length))
    image.sources.forEach((s, i) => {
      lines.push(`  ${places[i]!.padEnd(width)}  ${s.kind}${s.platform ? `  ${s.platform}` : ''}`)
    })
  }
  return lines.length > 0 ? lines.join('\n') + '\n' : ''
}
