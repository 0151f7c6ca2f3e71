// Images a dev container uses (devcontainer.json, JSON with comments): its
// `image`, the Dockerfile of its `build` (with `build.args`), and the compose
// files of `dockerComposeFile` (relative to the devcontainer.json), whose
// services the walker then scans as compose files. `${localEnv:NAME:default}`
// takes its default; other variables (`${localWorkspaceFolder}`...) depend on
// the machine and are reported.

import path from 'node:path'
import { findNodeAtLocation, parseTree, printParseErrorCode, type Node, type ParseError } from 'jsonc-parser'
import type { BuildRequest, Problem, RawReference } from './types.js'

export interface DevcontainerScan {
  refs: RawReference[]
  problems: Problem[]
  builds: BuildRequest[]
  /** Absolute paths of the compose files it names, with the line that names them. */
  composeFiles: Array<{ path: string; line: number }>
}

export function scanDevcontainer(source: string, file: string): DevcontainerScan {
  const out: DevcontainerScan = { refs: [], problems: [], builds: [], composeFiles: [] }
  const starts = lineStarts(source)
  const lineOf = (node: Node | undefined) => (node ? lineAt(starts, node.offset) : 0)
  const errors: ParseError[] = []
  const root = parseTree(source, errors, { allowTrailingComma: true, disallowComments: false })
  if (errors.length > 0 || root === undefined) {
    const first = errors[0]
    out.problems.push({ file, line: first ? lineAt(starts, first.offset) : 0, message: `not valid JSON: ${first ? printParseErrorCode(first.error) : 'empty'}` })
    return out
  }
  const dir = path.dirname(file)
  const str = (node: Node | undefined) => (node?.type === 'string' ? (node.value as string) : undefined)
  const value = (node: Node | undefined, what: string): string | undefined => {
    const raw = str(node)
    if (raw === undefined) return undefined
    const e = substitute(raw)
    if (e.missing.length > 0) {
      out.problems.push({ file, line: lineOf(node), message: `${what} ${raw}: needs ${e.missing.join(', ')}` })
      return undefined
    }
    return e.value
  }

  const image = findNodeAtLocation(root, ['image'])
  const imageValue = value(image, 'image')
  if (imageValue !== undefined) out.refs.push({ raw: imageValue.trim(), file, line: lineOf(image), kind: 'devcontainer image' })

  const compose = findNodeAtLocation(root, ['dockerComposeFile'])
  for (const node of compose?.type === 'array' ? (compose.children ?? []) : [compose]) {
    const p = value(node, 'dockerComposeFile')
    if (p !== undefined) out.composeFiles.push({ path: path.resolve(dir, p), line: lineOf(node) })
  }

  const dockerfileNode = findNodeAtLocation(root, ['build', 'dockerfile']) ?? findNodeAtLocation(root, ['dockerFile'])
  const dockerfile = value(dockerfileNode, 'build.dockerfile')
  if (dockerfile !== undefined) {
    const args: Record<string, string> = {}
    for (const prop of findNodeAtLocation(root, ['build', 'args'])?.children ?? []) {
      const [key, val] = prop.children ?? []
      const k = str(key)
      const v = str(val) === undefined ? undefined : substitute(str(val)!)
      if (k !== undefined && v !== undefined && v.missing.length === 0) args[k] = v.value
    }
    // Relative to the devcontainer.json, whatever `build.context` says.
    out.builds.push({ dockerfile: path.resolve(dir, dockerfile), args, file, line: lineOf(dockerfileNode) })
  }
  return out
}

/** `${localEnv:NAME:default}` takes its default; any other `${...}` is machine-dependent. */
function substitute(raw: string): { value: string; missing: string[] } {
  const missing: string[] = []
  const value = raw.replace(/\$\{([^}]*)\}/g, (whole, body: string) => {
    const m = /^localEnv:[A-Za-z_][A-Za-z0-9_]*:(.*)$/.exec(body)
    if (m) return m[1]!
    missing.push(whole)
    return whole
  })
  return { value, missing }
}

function lineStarts(source: string): number[] {
  const starts = [0]
  for (let i = 0; i < source.length; i++) if (source[i] === '\n') starts.push(i + 1)
  return starts
}

function lineAt(starts: number[], offset: number): number {
  let lo = 0
  let hi = starts.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (starts[mid]! <= offset) lo = mid
    else hi = mid - 1
  }
  return lo + 1
}
