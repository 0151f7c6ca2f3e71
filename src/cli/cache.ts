// `dproxy cache ls|clear|prune`: what the cache holds, and removing some or
// all of it. An adapter over store/inventory.ts and control/cache.ts.
//
// `ls` reads the cache directory itself (reading is safe next to a running
// daemon). `clear` and `prune` go through the running daemon when there is
// one, else work on the directory under its lock: control/cache.ts decides.
//
// Clearing everything is the one destructive default: it asks on a terminal,
// and without one it refuses (exit 2) unless --yes is given.

import { resolve } from 'node:path'
import { createInterface } from 'node:readline/promises'
import type { Command } from 'commander'
import { resolveSettings } from '../config/settings.js'
import { formatBytes, parseDuration, parseSize } from '../config/units.js'
import { clearCacheDir, clearFilter, isCacheDir, pruneCacheDir, type ClearRequest } from '../control/cache.js'
import { formatSelector, isEmptyFilter, type EvictionSummary, type PruneSummary } from '../store/evict.js'
import { inventory, type CachedImage } from '../store/inventory.js'
import { Store } from '../store/store.js'
import type { CliContext } from './program.js'
import { registerArchiveCommands } from './cache-archive.js'
import { UsageError } from './fatal.js'

export interface CacheCommandContext extends CliContext {
  /** Where the confirmation is read from; default process.stdin. */
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean }
}

export interface Listing {
  cacheDir: string
  images: CachedImage[]
  /** Bytes in the cache, images and unreferenced files. */
  totalBytes: number
  orphans: { manifests: number; blobs: number; bytes: number }
}

/** Every cached image in `cacheDir` (nothing when it is not a cache directory). */
export async function listCache(cacheDir: string): Promise<Listing> {
  const empty = { manifests: 0, blobs: 0, bytes: 0 }
  if (!isCacheDir(cacheDir)) return { cacheDir, images: [], totalBytes: 0, orphans: empty }
  const inv = await inventory(await Store.open(cacheDir))
  return { cacheDir, images: inv.images, totalBytes: inv.scan.bytes, orphans: inv.orphans }
}

// ---- rendering

const name = (i: { registry: string; repository: string; tag: string | null; digest: string }): string =>
  `${i.registry}/${i.repository}${i.tag !== null ? `:${i.tag}` : `@${i.digest}`}`

export function shortDigest(digest: string): string {
  const [alg, hex = ''] = digest.split(':')
  return alg === 'sha256' ? hex.slice(0, 12) : `${alg}:${hex.slice(0, 12)}`
}

/** '42s ago', '5m ago', '3h ago', '12d ago'. */
export function ago(ms: number): string {
  if (ms < 0) return 'just now'
  const s = Math.floor(ms / 1000)
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.floor(s / 60)}m ago`
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`
  return `${Math.floor(s / 86_400)}d ago`
}

export function formatListing(l: Listing, now: number): string {
  if (l.images.length === 0 && l.totalBytes === 0) return `no cached images in ${l.cacheDir}\n`
  const rows = [
    ['REGISTRY', 'REPOSITORY', 'TAG', 'DIGEST', 'SIZE', 'LAST USED'],
    ...l.images.map((i) => [
      i.registry,
      i.repository,
      i.tag ?? '<none>',
      shortDigest(i.digest),
      formatBytes(i.size) + (i.complete ? '' : '*'),
      ago(now - Date.parse(i.lastUsed)),
    ]),
  ]
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)))
  let out = rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n') + '\n'
  const count = `${l.images.length} image${l.images.length === 1 ? '' : 's'}`
  out += `\n${count}, ${formatBytes(l.totalBytes)} in ${l.cacheDir}`
  if (l.orphans.bytes > 0) out += ` (${formatBytes(l.orphans.bytes)} in files no image references)`
  out += '\n'
  if (l.images.some((i) => !i.complete)) out += '* partly cached: a pull stopped before every blob was fetched\n'
  return out
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

export function formatSummary(s: EvictionSummary, what?: string): string {
  if (s.images.length === 0 && s.orphans === 0 && s.bytes === 0 && s.tags === 0) {
    return what ? `nothing cached for ${what}\n` : 'nothing to remove\n'
  }
  const verb = s.dryRun ? 'would free' : 'freed'
  const parts = [plural(s.images.length, 'image'), plural(s.manifests, 'manifest'), plural(s.blobs, 'blob')]
  if (s.orphans > 0) parts.push(`${s.orphans} unreferenced file${s.orphans === 1 ? '' : 's'}`)
  let out = `${verb} ${formatBytes(s.bytes)}: ${parts.join(', ')}\n`
  for (const i of s.images) out += `  ${name(i)}\n`
  out += s.dryRun ? 'dry run: nothing was removed\n' : `cache now ${formatBytes(s.remainingBytes)}\n`
  return out
}

function formatPrune(s: PruneSummary): string {
  let out = formatSummary(s)
  if (s.maxSizeBytes !== null && !s.fits) {
    out += `still over ${formatBytes(s.maxSizeBytes)}: what is left was used too recently or is shared\n`
  }
  return out
}

// ---- commander

interface Common {
  cacheDir?: string
  json?: boolean
}

function cacheDirOf(flags: Common, ctx: CliContext): string {
  const settings = resolveSettings({ flags: flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {}, env: ctx.env })
  return resolve(settings.cacheDir)
}

async function confirm(ctx: CacheCommandContext, question: string): Promise<boolean> {
  const input = ctx.stdin ?? process.stdin
  const rl = createInterface({ input, output: ctx.stderr, terminal: false })
  try {
    const answer = await rl.question(question)
    return /^y(es)?$/i.test(answer.trim())
  } finally {
    rl.close()
  }
}

export function registerCacheCommand(program: Command, ctx: CacheCommandContext): void {
  const print = (text: string) => ctx.stdout.write(text)
  const json = (value: unknown) => print(JSON.stringify(value, null, 2) + '\n')

  const cache = program
    .command('cache')
    .description('list what is cached, clear images, evict to a size')
    .addHelpText(
      'after',
      '\nclear and prune go through the running daemon when there is one, else work on the cache dir directly.\nSee dproxy-cache(1).',
    )

  cache
    .command('ls')
    .description('list cached images: registry, repository, tag, digest, size, last use')
    .option('--cache-dir <dir>', 'the cache directory (default: from settings)')
    .option('--json', 'print JSON: every image with size, unique bytes, stored and last-used times')
    .action(async (flags: Common) => {
      const listing = await listCache(cacheDirOf(flags, ctx))
      if (flags.json) json(listing)
      else print(formatListing(listing, Date.now()))
    })

  cache
    .command('clear')
    .description('remove cached images (all of them when no filter is given)')
    .option('--image <name[:tag]>', "one image (every tag of it without ':tag'); 'alpine' is docker.io/library/alpine")
    .option('--older-than <duration>', "content stored more than this long ago (e.g. '30d')")
    .option('--unused-for <duration>', "content not pulled for this long (e.g. '2w')")
    .option('--dry-run', 'say what would be removed, remove nothing')
    .option('-y, --yes', 'clear everything without asking')
    .option('--cache-dir <dir>', 'the cache directory (default: from settings)')
    .option('--json', 'print JSON: what was (or would be) freed')
    .action(async (flags: Common & { image?: string; olderThan?: string; unusedFor?: string; dryRun?: boolean; yes?: boolean }) => {
      const cacheDir = cacheDirOf(flags, ctx)
      const req: ClearRequest = {
        cacheDir,
        stateDir: resolveSettings({ env: ctx.env }).stateDir,
        ...(flags.image !== undefined ? { image: flags.image } : {}),
        ...(flags.olderThan !== undefined ? { olderThan: flags.olderThan } : {}),
        ...(flags.unusedFor !== undefined ? { unusedFor: flags.unusedFor } : {}),
        dryRun: Boolean(flags.dryRun),
      }
      const filter = clearFilter(req)
      if (isEmptyFilter(filter) && !flags.dryRun && !flags.yes) {
        const tty = (ctx.stdin ?? process.stdin).isTTY === true
        if (!tty) {
          throw new UsageError(
            'refusing to clear the whole cache without confirmation: pass --yes (or narrow it with --image, --older-than, --unused-for)',
          )
        }
        if (!(await confirm(ctx, `Remove everything cached in ${cacheDir}? [y/N] `))) {
          ctx.stderr.write('nothing removed\n')
          return
        }
      }
      const summary = await clearCacheDir(req)
      if (flags.json) json(summary)
      else print(formatSummary(summary, filter.image ? formatSelector(filter.image) : undefined))
    })

  cache
    .command('prune')
    .description('evict least recently used images until the cache fits a size')
    .option('--max-size <size>', "target size (e.g. '20GB'; default: the maxSize setting)")
    .option('--ttl <duration>', "also evict what was not pulled for this long (default: the ttl setting)")
    .option('--dry-run', 'say what would be evicted, remove nothing')
    .option('--cache-dir <dir>', 'the cache directory (default: from settings)')
    .option('--json', 'print JSON: what was (or would be) freed')
    .action(async (flags: Common & { maxSize?: string; ttl?: string; dryRun?: boolean }) => {
      const settings = resolveSettings({ flags: flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {}, env: ctx.env })
      const summary = await pruneCacheDir({
        cacheDir: resolve(settings.cacheDir),
        stateDir: settings.stateDir,
        // 0 is "no limit", as in the settings: `--ttl 0` prunes by size alone.
        maxSizeBytes: flags.maxSize !== undefined ? parseSize(flags.maxSize, '--max-size') || undefined : settings.maxSizeBytes,
        ttlMs: flags.ttl !== undefined ? parseDuration(flags.ttl, '--ttl') || undefined : settings.ttlMs,
        dryRun: Boolean(flags.dryRun),
      })
      if (flags.json) json(summary)
      else print(formatPrune(summary))
    })

  registerArchiveCommands(cache, ctx)
}
