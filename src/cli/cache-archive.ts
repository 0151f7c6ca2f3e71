// `dproxy cache export FILE [--image REF]...` and `dproxy cache import FILE`:
// the cache carried on an OCI image layout archive (store/oci-archive.ts
// does the work; this file parses, picks the output and prints).
//
// Export only reads, so it works next to a running daemon. It writes FILE
// through a temp file renamed at the end (a failed export leaves no
// complete-looking archive), or stdout for `-`. The file is 0600, like the
// cache it comes from: it may hold layers of private images.
//
// Import changes the cache. With no daemon running it holds the cache lock
// (store/lock.ts), like `cache clear`. With a daemon serving the cache it
// streams the archive to the daemon (POST /_dproxy/cache/import), which runs
// the same verifying import in its maintenance queue, so that its eviction
// cannot remove blobs the import has verified but not yet tagged; the
// progress is then the bytes sent. Which of the two happens is
// control/cache.ts's importCache.
//
// Progress goes to stderr (stdout may be the archive): an ink bar on a
// terminal, a plain line every few seconds when piped or under CI, nothing
// with --json, which prints the summary as JSON (to stderr when the archive
// goes to stdout) and never loads ink.

import { promises as fs } from 'node:fs'
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { resolveSettings } from '../config/settings.js'
import { formatBytes } from '../config/units.js'
import { importCache } from '../control/cache.js'
import { parseImageSelector } from '../store/evict.js'
import { exportArchive } from '../store/archive-export.js'
import type { ImportSummary } from '../store/archive-import.js'
import type { ArchiveProgress, ArchiveSummary } from '../store/oci-archive.js'
import { Store } from '../store/store.js'
import type { CliContext } from './program.js'
import { wantsInteractive } from './status.js'

interface ArchiveFlags {
  cacheDir?: string
  json?: boolean
}

export interface ExportRequest {
  cacheDir: string
  /** A path, or '-' for `stdout`. */
  file: string
  images?: string[]
  stdout?: NodeJS.WritableStream
  onProgress?: (p: ArchiveProgress) => void
}

/** Writes the archive; the file appears only when it is complete. */
export async function exportCache(req: ExportRequest): Promise<ArchiveSummary> {
  const images = (req.images ?? []).map(parseImageSelector)
  const store = await Store.open(req.cacheDir)
  const opts = { images, ...(req.onProgress ? { onProgress: req.onProgress } : {}) }
  if (req.file === '-') return exportArchive(store, { stream: req.stdout ?? process.stdout, keepOpen: true }, opts)
  const temp = `${req.file}.${process.pid}.tmp`
  try {
    const fh = await fs.open(temp, 'wx', 0o600)
    let summary: ArchiveSummary
    try {
      summary = await exportArchive(store, { file: fh }, opts)
    } finally {
      await fh.close()
    }
    await fs.rename(temp, req.file)
    return summary
  } catch (err) {
    await fs.rm(temp, { force: true })
    throw err
  }
}

// ---- printing

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

export function formatArchiveSummary(verb: 'exported' | 'imported', s: ArchiveSummary | ImportSummary): string {
  let out = `${verb} ${plural(s.images.length, 'image')}, ${plural(s.manifests, 'manifest')}, ${plural(s.blobs, 'blob')}, ${formatBytes(s.bytes)}\n`
  for (const i of s.images) out += `  ${i}\n`
  if ('unchanged' in s && s.unchanged.length > 0) out += `${plural(s.unchanged.length, 'image')} already cached as in the archive\n`
  if (s.skipped.length > 0) {
    out += `skipped ${s.skipped.length}:\n`
    for (const k of s.skipped) out += `  ${k.image}: ${k.reason}\n`
  }
  return out
}

interface Progress {
  update(p: ArchiveProgress): void
  done(): Promise<void>
}

/** The bar on a terminal, a plain line every 5 s otherwise, nothing for --json. */
async function progressFor(ctx: CliContext, verb: string, json: boolean): Promise<Progress> {
  if (json) return { update: () => {}, done: async () => {} }
  if (wantsInteractive(ctx.stderr, ctx.env)) return (await import('../ui/ArchiveView.js')).startArchiveView(ctx.stderr, verb)
  const started = Date.now()
  let printed = started
  return {
    update(p) {
      const now = Date.now()
      if (now - printed < 5000) return
      printed = now
      const rate = p.bytes / ((now - started) / 1000)
      ctx.stderr.write(`${verb} ${formatBytes(p.bytes)}${p.total !== undefined ? ` of ${formatBytes(p.total)}` : ''}, ${formatBytes(rate)}/s\n`)
    },
    done: async () => {},
  }
}

/** `stdin`: where `import -` reads the archive; default process.stdin. */
export function registerArchiveCommands(cache: Command, ctx: CliContext & { stdin?: NodeJS.ReadableStream }): void {
  const cacheDirOf = (flags: ArchiveFlags) =>
    resolve(resolveSettings({ flags: flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {}, env: ctx.env }).cacheDir)

  /** Runs the work with progress shown, then prints its summary to `out`. */
  const run = async (verb: 'exported' | 'imported', flags: ArchiveFlags, out: NodeJS.WritableStream, work: (onProgress: (p: ArchiveProgress) => void) => Promise<ArchiveSummary>) => {
    const json = Boolean(flags.json)
    const progress = await progressFor(ctx, verb === 'exported' ? 'exporting' : 'importing', json)
    let summary: ArchiveSummary
    try {
      summary = await work((p) => progress.update(p))
    } finally {
      await progress.done()
    }
    out.write(json ? JSON.stringify(summary, null, 2) + '\n' : formatArchiveSummary(verb, summary))
  }

  cache
    .command('export')
    .description('write cached images to an OCI image layout archive (skopeo reads it as oci-archive:FILE:REF)')
    .argument('<file>', "the archive to write, '-' for stdout")
    .option('--image <ref>', "only this image ('alpine:3.19', 'ghcr.io/o/i'; every tag without ':tag'); repeatable", (v: string, prev: string[] = []) => [...prev, v])
    .option('--cache-dir <dir>', 'the cache directory (default: from settings)')
    .option('--json', 'print the summary as JSON (to stderr when the archive goes to stdout)')
    .action(async (file: string, flags: ArchiveFlags & { image?: string[] }) => {
      // The summary goes to stderr when stdout is the archive.
      await run('exported', flags, file === '-' ? ctx.stderr : ctx.stdout, (onProgress) =>
        exportCache({ cacheDir: cacheDirOf(flags), file: file === '-' ? '-' : resolve(file), images: flags.image ?? [], stdout: ctx.stdout, onProgress }),
      )
    })

  cache
    .command('import')
    .description('add the images of an OCI image layout archive to the cache (verified; nothing is added from a bad archive)')
    .argument('<file>', "the archive to read, '-' for stdin")
    .option('--force', 'replace cached tags even when they are newer than the archive')
    .option('--cache-dir <dir>', 'the cache directory (default: from settings)')
    .option('--json', 'print the summary as JSON')
    .action(async (file: string, flags: ArchiveFlags & { force?: boolean }) => {
      await run('imported', flags, ctx.stdout, (onProgress) =>
        importCache({
          cacheDir: cacheDirOf(flags),
          stateDir: resolveSettings({ env: ctx.env }).stateDir,
          file: file === '-' ? '-' : resolve(file),
          force: Boolean(flags.force),
          ...(ctx.stdin ? { stdin: ctx.stdin as AsyncIterable<Buffer> } : {}),
          onProgress,
        }),
      )
    })
}
