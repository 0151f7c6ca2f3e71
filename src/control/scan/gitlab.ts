// Images a GitLab pipeline runs: `image:` and `services:` (string or `name:`
// form) at the top level, under `default:` and in every job, across the main
// `.gitlab-ci.yml` and the local files it includes. The walker reads the
// include tree (gitlabIncludes says which local files one file includes) and
// hands all of it to scanGitlabCi, because a job may use a variable that
// another file of the tree defines.
//
// GitLab's dependency proxy prefix (`$CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX/`,
// `${CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX}/`) means Docker Hub, which
// is what dproxy stands in for; `$CI_DEPENDENCY_PROXY_SERVER/<group>/
// dependency_proxy/containers/<image>` is the long form of the same thing.
// Other variables are expanded from `variables:` (global, then the job's);
// one with no value there (GitLab's predefined ones included) is reported.

import type { Document } from 'yaml'
import { expandVariables, needs } from './expand.js'
import type { Problem, ScanResult, SourceKind } from './types.js'
import { entries, get, isMap, items, parseYaml, text, type YamlFile } from './yaml.js'

export interface GitlabFile {
  file: string
  source: string
}

/** Top-level keys that are settings, not jobs. */
const globalKeywords = new Set([
  'default',
  'include',
  'stages',
  'variables',
  'workflow',
  'image',
  'services',
  'cache',
  'before_script',
  'after_script',
  'types',
  'spec',
])

const proxyPrefix = /^\$(?:\{CI_DEPENDENCY_PROXY_(?:DIRECT_)?GROUP_IMAGE_PREFIX\}|CI_DEPENDENCY_PROXY_(?:DIRECT_)?GROUP_IMAGE_PREFIX(?![A-Za-z0-9_]))\//
const proxyServer = /^\$(?:\{CI_DEPENDENCY_PROXY_SERVER\}|CI_DEPENDENCY_PROXY_SERVER(?![A-Za-z0-9_]))\//
/** Rounds of expansion for variables whose values use other variables. */
const maxRounds = 5

export interface IncludeList {
  /** Local include paths as written (relative to the project root, a leading `/` allowed). */
  local: Array<{ path: string; line: number }>
  problems: Problem[]
}

/** The local files `source` includes; other include kinds are reported as not scanned. */
export function gitlabIncludes(source: string, file: string): IncludeList {
  const yaml = parseYaml(source, file)
  const out: IncludeList = { local: [], problems: [] }
  for (const doc of yaml.docs) {
    const node = get(doc.contents, 'include', doc)
    const list = isMap(node) || text(node) !== undefined ? [node] : items(node, doc)
    for (const entry of list) {
      const line = yaml.lineOf(entry)
      const s = text(entry)
      if (s !== undefined) {
        if (/^https?:\/\//i.test(s)) out.problems.push({ file, line, message: `remote include ${s} is not scanned` })
        else out.local.push({ path: s, line })
        continue
      }
      const local = text(get(entry, 'local', doc))
      if (local !== undefined) {
        out.local.push({ path: local, line })
        continue
      }
      const [kind] = entries(entry, doc).map(([k]) => k)
      if (kind !== undefined) out.problems.push({ file, line, message: `include of kind '${kind}' is not scanned (only local files are)` })
    }
  }
  return out
}

interface Parsed {
  file: string
  yaml: YamlFile
}

/** Scans a pipeline: the main file first, then the files it includes (in any order). */
export function scanGitlabCi(files: GitlabFile[]): ScanResult {
  const out: ScanResult = { refs: [], problems: [] }
  const parsed: Parsed[] = files.map(({ file, source }) => ({ file, yaml: parseYaml(source, file) }))
  // The main file's variables win over the included files'.
  const globals = new Map<string, string>()
  for (const { yaml } of [...parsed].reverse()) {
    for (const doc of yaml.docs) {
      for (const [k, v] of variables(get(doc.contents, 'variables', doc), doc)) globals.set(k, v)
    }
  }
  for (const { file, yaml } of parsed) {
    out.problems.push(...yaml.problems)
    for (const doc of yaml.docs) {
      const scan = (holder: unknown, local: Map<string, string>, where: string) =>
        scanHolder(holder, doc, { file, yaml, where, lookup: (n) => local.get(n) ?? globals.get(n) }, out)
      scan(doc.contents, new Map(), 'global')
      scan(get(doc.contents, 'default', doc), new Map(), 'default')
      for (const [name, job] of entries(doc.contents, doc)) {
        if (globalKeywords.has(name) || !isMap(job)) continue
        scan(job, new Map(variables(get(job, 'variables', doc), doc)), `job ${name}`)
      }
    }
  }
  return out
}

function variables(node: unknown, doc: Document.Parsed): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (const [k, v] of entries(node, doc)) {
    const value = text(v) ?? text(get(v, 'value', doc))
    if (value !== undefined) out.push([k, value])
  }
  return out
}

interface Where {
  file: string
  yaml: YamlFile
  where: string
  lookup: (name: string) => string | undefined
}

function scanHolder(holder: unknown, doc: Document.Parsed, w: Where, out: ScanResult): void {
  if (!isMap(holder)) return
  const image = get(holder, 'image', doc)
  if (image !== undefined) one(isMap(image) ? get(image, 'name', doc) : image, 'gitlab-ci image', w, out)
  for (const service of items(get(holder, 'services', doc), doc)) {
    one(isMap(service) ? get(service, 'name', doc) : service, 'gitlab-ci service', w, out)
  }
}

function one(node: unknown, kind: SourceKind, w: Where, out: ScanResult): void {
  const raw = text(node)
  if (raw === undefined) return
  const line = w.yaml.lineOf(node as Parameters<YamlFile['lineOf']>[0])
  let value = raw
  for (let round = 0; round < maxRounds; round++) {
    const next = expandVariables(value, w.lookup).value
    if (next === value) break
    value = next
  }
  value = value.trim().replace(proxyPrefix, '').replace(proxyServer, '')
  const e = expandVariables(value, w.lookup)
  if (e.missing.length > 0 || e.unsupported !== undefined) {
    const why = e.unsupported !== undefined ? `unsupported variable form ${e.unsupported}` : needs(e.missing)
    out.problems.push({ file: w.file, line, message: `${w.where} ${kind === 'gitlab-ci image' ? 'image' : 'service'} ${raw}: ${why}` })
    return
  }
  out.refs.push({ raw: value, file: w.file, line, kind })
}
