// findImageReferences: the images a project uses, found in its files. Walks
// the given paths, hands each file it recognises to the scanner of its format
// (one module each in this folder), follows what files point at (a compose
// `build:` to its Dockerfile, a devcontainer to its compose files, GitLab's
// local includes), normalises every reference with the registry's grammar,
// and groups them: each image once, with every place it was found.
//
// The tree is hostile input like anything else: the walk skips vendored and
// tool directories, never enters a symlinked directory, reads no file outside
// the given paths (a symlink or `../` pointing out is reported, not
// followed), skips files over `maxFileBytes` and stops after `maxFiles`.
//
// File names in the result are the given paths joined with the path inside
// them (`.` gives `compose.yaml`, an absolute path gives absolute names), so
// they read like a compiler's `file:line`.

import { promises as fs, type Dirent } from 'node:fs'
import path from 'node:path'
import { scanCompose } from './compose.js'
import { scanDevcontainer } from './devcontainer.js'
import { scanDockerfile } from './dockerfile.js'
import { gitlabIncludes, scanGitlabCi, type GitlabFile } from './gitlab.js'
import { scanImageList } from './imagelist.js'
import { looksLikeManifest, scanKubernetes } from './kubernetes.js'
import { parsePlatform } from '../../oci/platform.js'
import { canonicalReference, type CanonicalReference } from '../../oci/reference.js'
import type { BuildRequest, Problem, RawReference, ScanResult, SourceKind } from './types.js'
import { scanWorkflow } from './workflow.js'

export type { Problem, SourceKind } from './types.js'

export interface FindOptions {
  /** Files examined before the walk stops (default 20000). */
  maxFiles?: number
  /** Larger files are not read (default 4 MiB). */
  maxFileBytes?: number
}

export interface ImageSource {
  file: string
  line: number
  kind: SourceKind
  /** The platform this place names for the image, when it names one. */
  platform?: string
}

export interface FoundImage extends CanonicalReference {
  /** Platforms named by any source, sorted; empty when none names one (the fetcher's default applies). */
  platforms: string[]
  sources: ImageSource[]
}

export interface FindResult {
  images: FoundImage[]
  problems: Problem[]
}

/** Directories that hold other people's code or tool state, never the project's own image references. */
export const skippedDirectories = new Set(['node_modules', '.git', '.hg', '.svn', 'vendor', 'third_party', 'bower_components'])

const defaultMaxFiles = 20_000
const defaultMaxFileBytes = 4 * 1024 * 1024
const maxDepth = 48
/** Files one pipeline may include, all levels together. */
const maxIncludes = 100

type Format = 'compose' | 'dockerfile' | 'gitlab-ci' | 'workflow' | 'devcontainer' | 'image-list' | 'yaml'

/** The format a file's name says it has, or undefined for files that are never scanned. */
export function formatOf(file: string): Format | undefined {
  const base = path.basename(file)
  const lower = base.toLowerCase()
  if (/^(?:docker-compose.*|compose(?:\.[^.]+)*)\.ya?ml$/.test(lower)) return 'compose'
  if (/^(?:docker|container)file(?:\..+)?$|\.(?:docker|container)file$/.test(lower) && !lower.endsWith('.dockerignore')) return 'dockerfile'
  if (base === '.gitlab-ci.yml' || base === '.gitlab-ci.yaml') return 'gitlab-ci'
  if (base === 'devcontainer.json' || base === '.devcontainer.json') return 'devcontainer'
  if (lower.endsWith('.images')) return 'image-list'
  if (/\.ya?ml$/.test(lower)) {
    const dir = path.dirname(file)
    return path.basename(dir) === 'workflows' && path.basename(path.dirname(dir)) === '.github' ? 'workflow' : 'yaml'
  }
  return undefined
}

export async function findImageReferences(paths: string[], options: FindOptions = {}): Promise<FindResult> {
  const scan = new Scan(options)
  await scan.run(paths.length > 0 ? paths : ['.'])
  return scan.result()
}

interface Root {
  given: string
  abs: string
  real: string
}

class Scan {
  private readonly maxFiles: number
  private readonly maxFileBytes: number
  private readonly roots: Root[] = []
  private readonly files = new Map<Format, string[]>()
  private readonly refs: RawReference[] = []
  private readonly problems: Problem[] = []
  private examined = 0

  constructor(options: FindOptions) {
    this.maxFiles = options.maxFiles ?? defaultMaxFiles
    this.maxFileBytes = options.maxFileBytes ?? defaultMaxFileBytes
  }

  async run(paths: string[]): Promise<void> {
    for (const given of paths) {
      const abs = path.resolve(given)
      try {
        this.roots.push({ given, abs, real: await fs.realpath(abs) })
      } catch (err) {
        this.problem(abs, 0, `cannot read: ${errorCode(err)}`)
      }
    }
    for (const root of this.roots) {
      const stat = await fs.stat(root.abs)
      if (stat.isDirectory()) await this.walk(root.abs)
      else this.classify(root.abs, true)
    }
    await this.gitlab()
    const builds: BuildRequest[] = []
    const composeFiles = new Set(this.files.get('compose') ?? [])
    for (const file of this.files.get('devcontainer') ?? []) {
      const source = await this.read(file)
      if (source === undefined) continue
      const found = scanDevcontainer(source, file)
      this.add(found)
      builds.push(...found.builds)
      for (const c of found.composeFiles) {
        if (!composeFiles.has(c.path) && (await this.readable(c.path, file, c.line))) composeFiles.add(c.path)
      }
    }
    for (const file of composeFiles) {
      const source = await this.read(file)
      if (source === undefined) continue
      const found = scanCompose(source, file)
      this.add(found)
      builds.push(...found.builds)
    }
    for (const [format, scanner] of [
      ['workflow', scanWorkflow],
      ['image-list', scanImageList],
    ] as const) {
      for (const file of this.files.get(format) ?? []) {
        const source = await this.read(file)
        if (source !== undefined) this.add(scanner(source, file))
      }
    }
    for (const file of this.files.get('yaml') ?? []) {
      const source = await this.read(file, { quiet: true })
      if (source !== undefined && looksLikeManifest(source)) this.add(scanKubernetes(source, file))
    }
    await this.dockerfiles(builds)
  }

  /** Dockerfiles something builds are scanned with its build args; the others as they are. */
  private async dockerfiles(builds: BuildRequest[]): Promise<void> {
    const built = new Set<string>()
    const done = new Set<string>()
    for (const build of builds) {
      const key = `${build.dockerfile}\0${JSON.stringify(Object.entries(build.args).sort())}\0${build.platform ?? ''}`
      if (done.has(key)) continue
      done.add(key)
      if (!(await this.readable(build.dockerfile, build.file, build.line))) continue
      built.add(build.dockerfile)
      const source = await this.read(build.dockerfile)
      if (source !== undefined) {
        const target = build.platform !== undefined ? { targetPlatform: build.platform } : {}
        this.add(scanDockerfile(source, build.dockerfile, { buildArgs: build.args, ...target }))
      }
    }
    for (const file of this.files.get('dockerfile') ?? []) {
      if (built.has(file)) continue
      const source = await this.read(file)
      if (source !== undefined) this.add(scanDockerfile(source, file))
    }
  }

  /** Each `.gitlab-ci.yml` with the local files it includes, transitively, read as one pipeline. */
  private async gitlab(): Promise<void> {
    for (const main of this.files.get('gitlab-ci') ?? []) {
      const projectRoot = path.dirname(main)
      const pipeline: GitlabFile[] = []
      const queue = [main]
      const seen = new Set(queue)
      while (queue.length > 0) {
        const file = queue.shift()!
        const source = await this.read(file)
        if (source === undefined) continue
        pipeline.push({ file, source })
        const includes = gitlabIncludes(source, file)
        this.problems.push(...includes.problems)
        for (const include of includes.local) {
          if (include.path.includes('*')) {
            this.problem(file, include.line, `include ${include.path}: wildcard includes are not followed`)
            continue
          }
          const target = path.join(projectRoot, include.path.replace(/^\/+/, ''))
          if (seen.has(target)) continue
          if (seen.size >= maxIncludes) {
            this.problem(file, include.line, `include ${include.path}: more than ${maxIncludes} included files, not followed`)
            continue
          }
          seen.add(target)
          if (await this.readable(target, file, include.line)) queue.push(target)
        }
      }
      this.add(scanGitlabCi(pipeline))
    }
  }

  private async walk(start: string): Promise<void> {
    const stack: Array<[string, number]> = [[start, 0]]
    while (stack.length > 0) {
      const [dir, depth] = stack.pop()!
      let entries: Dirent[]
      try {
        entries = await fs.readdir(dir, { withFileTypes: true })
      } catch (err) {
        this.problem(dir, 0, `cannot read directory: ${errorCode(err)}`)
        continue
      }
      // Sorted, so that where a capped walk stops does not depend on the file system's order.
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      for (const entry of entries) {
        const full = path.join(dir, entry.name)
        if (entry.isDirectory()) {
          if (!skippedDirectories.has(entry.name) && depth < maxDepth) stack.push([full, depth + 1])
          continue
        }
        if (!entry.isFile() && !entry.isSymbolicLink()) continue
        if (++this.examined > this.maxFiles) {
          this.problem(start, 0, `stopped after ${this.maxFiles} files; pass narrower paths`)
          return
        }
        // A symlinked directory is never entered; a symlinked file is read only if it stays inside the roots.
        if (entry.isSymbolicLink() && formatOf(full) !== undefined) {
          const stat = await fs.stat(full).catch(() => undefined)
          if (!stat?.isFile()) continue
        }
        this.classify(full, false)
      }
    }
  }

  private classify(file: string, explicit: boolean): void {
    const format = formatOf(file)
    if (format === undefined) {
      if (explicit) this.problem(file, 0, 'not a file format dproxy scans for images')
      return
    }
    const list = this.files.get(format) ?? []
    list.push(file)
    this.files.set(format, list)
  }

  /** True when `file` exists inside one of the roots; otherwise says why not, at the place that names it. */
  private async readable(file: string, from: string, line: number): Promise<boolean> {
    // Named as the referring file would write it.
    const named = path.relative(path.dirname(from), file)
    let real: string
    try {
      real = await fs.realpath(file)
    } catch (err) {
      this.problem(from, line, `${named}: ${errorCode(err) === 'ENOENT' ? 'no such file' : `cannot read: ${errorCode(err)}`}`)
      return false
    }
    if (!this.roots.some((r) => isInside(r.real, real))) {
      this.problem(from, line, `${named}: outside the scanned paths, not read`)
      return false
    }
    return true
  }

  private async read(file: string, options: { quiet?: boolean } = {}): Promise<string | undefined> {
    try {
      const real = await fs.realpath(file)
      if (!this.roots.some((r) => isInside(r.real, real))) {
        if (!options.quiet) this.problem(file, 0, 'links outside the scanned paths, not read')
        return undefined
      }
      const handle = await fs.open(real, 'r')
      try {
        const stat = await handle.stat()
        if (!stat.isFile()) return undefined
        if (stat.size > this.maxFileBytes) {
          if (!options.quiet) this.problem(file, 0, `larger than ${this.maxFileBytes} bytes, not read`)
          return undefined
        }
        return await handle.readFile('utf8')
      } finally {
        await handle.close()
      }
    } catch (err) {
      if (!options.quiet) this.problem(file, 0, `cannot read: ${errorCode(err)}`)
      return undefined
    }
  }

  private add(found: ScanResult): void {
    this.refs.push(...found.refs)
    this.problems.push(...found.problems)
  }

  private problem(file: string, line: number, message: string): void {
    this.problems.push({ file, line, message })
  }

  /** The path as the user would write it: the given root joined with the path inside it. */
  private display(file: string): string {
    const root = this.roots.find((r) => isInside(r.abs, file))
    return root ? path.join(root.given, path.relative(root.abs, file)) : file
  }

  result(): FindResult {
    const images = new Map<string, FoundImage>()
    const seenSources = new Set<string>()
    for (const r of this.refs) {
      let n: CanonicalReference
      try {
        n = canonicalReference(r.raw)
      } catch (err) {
        this.problem(r.file, r.line, `${r.raw}: ${(err as Error).message}`)
        continue
      }
      const image = images.get(n.ref) ?? { ...n, platforms: [], sources: [] }
      images.set(n.ref, image)
      // A platform the fetcher could not ask for is reported; the place then stands for the default.
      let platform = r.platform
      if (platform !== undefined && !validPlatform(platform)) {
        this.problem(r.file, r.line, `${r.raw}: platform '${platform}' is not like linux/arm64 or linux/arm/v7; the default applies`)
        platform = undefined
      }
      const source: ImageSource = { file: this.display(r.file), line: r.line, kind: r.kind, ...(platform ? { platform } : {}) }
      const key = `${n.ref}\0${source.file}\0${source.line}\0${source.kind}\0${source.platform ?? ''}`
      if (seenSources.has(key)) continue
      seenSources.add(key)
      image.sources.push(source)
      if (platform && !image.platforms.includes(platform)) image.platforms.push(platform)
    }
    const byPlace = (a: { file: string; line: number }, b: { file: string; line: number }) =>
      a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line
    const list = [...images.values()].sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0))
    for (const image of list) {
      image.platforms.sort()
      image.sources.sort(byPlace)
    }
    const problems: Problem[] = []
    const seenProblems = new Set<string>()
    for (const p of this.problems) {
      const shown = { ...p, file: this.display(p.file) }
      const key = `${shown.file}\0${shown.line}\0${shown.message}`
      if (!seenProblems.has(key)) problems.push(shown)
      seenProblems.add(key)
    }
    problems.sort((a, b) => byPlace(a, b) || (a.message < b.message ? -1 : 1))
    return { images: list, problems }
  }
}

function validPlatform(value: string): boolean {
  try {
    parsePlatform(value)
    return true
  } catch {
    return false
  }
}

function isInside(root: string, file: string): boolean {
  const rel = path.relative(root, file)
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel))
}

function errorCode(err: unknown): string {
  return (err as NodeJS.ErrnoException)?.code ?? (err instanceof Error ? err.message : String(err))
}
