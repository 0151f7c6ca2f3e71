// Images a Dockerfile (or Containerfile) pulls when it is built: base images
// (`FROM`), images copied from (`COPY --from=`), images mounted into a RUN
// (`RUN --mount=...,from=`) and the BuildKit frontend of a `# syntax=`
// directive. Stage names are not images. Variables come from ARGs: their
// defaults, overridden by the build args of whoever builds the file (compose
// `build.args`); BuildKit's automatic platform ARGs (`$BUILDPLATFORM`) mean
// "the host's platform", which is the fetcher's default, so they name none.

import { Arg, Copy, DockerfileParser, From, Run, type Instruction } from 'dockerfile-ast'
import { expandVariables, needs } from './expand.js'
import type { Problem, RawReference, ScanResult, SourceKind } from './types.js'

export interface DockerfileOptions {
  /** Build args given by the file that builds this one; they override ARG defaults. */
  buildArgs?: Record<string, string>
  /** Added to every line: a Dockerfile written inline in another file. */
  lineOffset?: number
}

const platformArgs = new Set([
  'BUILDPLATFORM',
  'BUILDOS',
  'BUILDARCH',
  'BUILDVARIANT',
  'TARGETPLATFORM',
  'TARGETOS',
  'TARGETARCH',
  'TARGETVARIANT',
])

type Scope = Map<string, string | undefined>

export function scanDockerfile(source: string, file: string, options: DockerfileOptions = {}): ScanResult {
  const refs: RawReference[] = []
  const problems: Problem[] = []
  const buildArgs = options.buildArgs ?? {}
  const offset = options.lineOffset ?? 0
  const dockerfile = DockerfileParser.parse(source)
  const lineOf = (i: Instruction) => i.getRange().start.line + 1 + offset

  for (const directive of dockerfile.getDirectives()) {
    if (directive.getName().toLowerCase() === 'syntax' && directive.getValue() !== '') {
      refs.push({ raw: directive.getValue(), file, line: directive.getNameRange().start.line + 1 + offset, kind: 'dockerfile syntax' })
    }
  }

  const global: Scope = new Map()
  let stage: Scope | undefined
  const stages: string[] = []

  const expand = (text: string, scopes: Scope[]) =>
    expandVariables(text, (name) => {
      for (const scope of scopes) if (scope.has(name)) return scope.get(name)
      return undefined
    })

  /** Adds `raw` as a reference unless it names a stage; reports unresolved variables. */
  const found = (raw: string, scopes: Scope[], line: number, kind: SourceKind, what: string, platform?: string) => {
    const e = expand(raw, scopes)
    if (e.unsupported !== undefined) {
      problems.push({ file, line, message: `${what} ${raw}: unsupported variable form ${e.unsupported}` })
      return
    }
    if (e.missing.length > 0) {
      problems.push({ file, line, message: `${what} ${raw}: ${needs(e.missing)} (an ARG with no default)` })
      return
    }
    const value = e.value.trim()
    if (value === '' || /^\d+$/.test(value) || stages.includes(value.toLowerCase())) return
    if (kind === 'dockerfile FROM' && value.toLowerCase() === 'scratch') return
    refs.push({ raw: value, file, line, kind, ...(platform !== undefined ? { platform } : {}) })
  }

  for (const instruction of dockerfile.getInstructions()) {
    const line = lineOf(instruction)
    if (instruction instanceof Arg) {
      for (const property of instruction.getProperties()) {
        const name = property.getName()
        const given = Object.hasOwn(buildArgs, name) ? buildArgs[name] : undefined
        // In a stage, `ARG NAME` without a default brings the global ARG's value in.
        const inherited = stage !== undefined ? global.get(name) : undefined
        ;(stage ?? global).set(name, given ?? property.getValue() ?? inherited)
      }
    } else if (instruction instanceof From) {
      const image = instruction.getImage()
      const platform = platformOf(instruction.getPlatformFlag()?.getValue() ?? null, global)
      if (image !== null) found(image, [global], line, 'dockerfile FROM', 'FROM', platform)
      else problems.push({ file, line, message: 'FROM without an image' })
      stages.push((instruction.getBuildStage() ?? '').toLowerCase())
      stage = new Map()
    } else if (instruction instanceof Copy) {
      const value = instruction.getFromFlag()?.getValue()
      if (value) found(value, [stage ?? global, global], line, 'dockerfile COPY --from', 'COPY --from')
    } else if (instruction instanceof Run) {
      for (const flag of instruction.getFlags()) {
        if (flag.getName() !== 'mount') continue
        const value = flag.getOption('from')?.getValue()
        if (value) found(value, [stage ?? global, global], line, 'dockerfile RUN --mount', 'RUN --mount from')
      }
    }
  }
  return { refs, problems }
}

/** A literal platform (`linux/arm64`), or undefined for "the host's" (unset, or BuildKit's platform ARGs). */
function platformOf(flag: string | null, global: Scope): string | undefined {
  if (flag === null || flag === '') return undefined
  const e = expandVariables(flag, (name) => (platformArgs.has(name) ? undefined : global.get(name)))
  if (e.missing.length > 0 || e.unsupported !== undefined) return undefined
  const value = e.value.trim().toLowerCase()
  return value === '' ? undefined : value
}
