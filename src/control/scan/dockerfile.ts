// Images a Dockerfile (or Containerfile) pulls when it is built: base images
// (`FROM`), images copied from (`COPY --from=`), images mounted into a RUN
// (`RUN --mount=...,from=`) and the BuildKit frontend of a `# syntax=`
// directive. Stage names are not images. Variables come from ARGs: their
// defaults, overridden by the build args of whoever builds the file (compose
// `build.args`). BuildKit's automatic platform ARGs mean "the host's
// platform", which is the fetcher's default, so they name none; except that a
// file building this one for a platform (compose `platform:`) makes that the
// target: `$TARGETPLATFORM` and every image the build pulls for its target
// (FROM without --platform, COPY --from, RUN --mount from) name it.

import { Arg, Copy, DockerfileParser, From, Run, type Instruction } from 'dockerfile-ast'
import { expandVariables, needs } from './expand.js'
import type { Problem, RawReference, ScanResult, SourceKind } from './types.js'

export interface DockerfileOptions {
  /** Build args given by the file that builds this one; they override ARG defaults. */
  buildArgs?: Record<string, string>
  /** Added to every line: a Dockerfile written inline in another file. */
  lineOffset?: number
  /** The platform the build is for, when the file that builds this one names it (`linux/arm64`). */
  targetPlatform?: string
}

const buildPlatformArgs = new Set(['BUILDPLATFORM', 'BUILDOS', 'BUILDARCH', 'BUILDVARIANT'])
const targetPlatformArgs = new Set(['TARGETPLATFORM', 'TARGETOS', 'TARGETARCH', 'TARGETVARIANT'])

type Scope = Map<string, string | undefined>

export function scanDockerfile(source: string, file: string, options: DockerfileOptions = {}): ScanResult {
  const refs: RawReference[] = []
  const problems: Problem[] = []
  const buildArgs = options.buildArgs ?? {}
  const offset = options.lineOffset ?? 0
  const target = options.targetPlatform
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
      const flag = instruction.getPlatformFlag()?.getValue() ?? null
      const platform = flag === null || flag === '' ? target : platformOf(flag, global, target)
      if (image !== null) found(image, [global], line, 'dockerfile FROM', 'FROM', platform)
      else problems.push({ file, line, message: 'FROM without an image' })
      stages.push((instruction.getBuildStage() ?? '').toLowerCase())
      stage = new Map()
    } else if (instruction instanceof Copy) {
      const value = instruction.getFromFlag()?.getValue()
      if (value) found(value, [stage ?? global, global], line, 'dockerfile COPY --from', 'COPY --from', target)
    } else if (instruction instanceof Run) {
      for (const flag of instruction.getFlags()) {
        if (flag.getName() !== 'mount') continue
        const value = flag.getOption('from')?.getValue()
        if (value) found(value, [stage ?? global, global], line, 'dockerfile RUN --mount', 'RUN --mount from', target)
      }
    }
  }
  return { refs, problems }
}

/** A literal platform (`linux/arm64`), or undefined for "the host's" (BuildKit's build platform, an ARG with no value). */
function platformOf(flag: string, global: Scope, target: string | undefined): string | undefined {
  const [os, architecture, variant] = target?.split('/') ?? []
  const targetArgs: Record<string, string | undefined> = { TARGETPLATFORM: target, TARGETOS: os, TARGETARCH: architecture, TARGETVARIANT: variant ?? '' }
  const e = expandVariables(flag, (name) => {
    if (buildPlatformArgs.has(name)) return undefined
    if (targetPlatformArgs.has(name)) return target === undefined ? undefined : targetArgs[name]
    return global.get(name)
  })
  if (e.missing.length > 0 || e.unsupported !== undefined) return undefined
  const value = e.value.trim().toLowerCase()
  return value === '' ? undefined : value
}
