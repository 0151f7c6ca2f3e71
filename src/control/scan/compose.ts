// Images a compose file runs: each service's `image:`, or, for a service that
// is built (`build:`), the Dockerfile it builds with the service's build args
// (the walker scans that Dockerfile; `dockerfile_inline` is scanned here). A
// service with both `build:` and `image:` names what the build produces,
// which is not pulled. A service's `platform:` is the platform its image is
// pulled for, or the one its build targets. Compose
// interpolation (`${TAG:-1.0}`, `$$`) is applied with the defaults written in
// the file; values from the shell or an .env file are not read, so a variable
// without a default is reported, never guessed.

import path from 'node:path'
import { Scalar, type Document } from 'yaml'
import { scanDockerfile } from './dockerfile.js'
import { expandVariables, needs } from './expand.js'
import type { BuildRequest, Problem, RawReference } from './types.js'
import { entries, get, isMap, isScalar, isSeq, items, parseYaml, text } from './yaml.js'

export interface ComposeScan {
  refs: RawReference[]
  problems: Problem[]
  builds: BuildRequest[]
}

const noValue = () => undefined

/** Compose interpolation with no environment: only defaults written in the file apply. */
function interpolate(value: string) {
  return expandVariables(value, noValue, { dollarEscape: true })
}

export function scanCompose(source: string, file: string): ComposeScan {
  const yaml = parseYaml(source, file)
  const out: ComposeScan = { refs: [], problems: [...yaml.problems], builds: [] }
  const dir = path.dirname(file)
  for (const doc of yaml.docs) {
    for (const [name, service] of entries(get(doc.contents, 'services', doc), doc)) {
      if (!isMap(service)) continue
      const build = get(service, 'build', doc)
      const platformText = text(get(service, 'platform', doc))
      const p = platformText === undefined ? undefined : interpolate(platformText)
      const platform = p && p.missing.length === 0 && p.value !== '' ? p.value.toLowerCase() : undefined
      const image = get(service, 'image', doc)
      if (build !== undefined && build !== null && !(isScalar(build) && build.value === null)) {
        const request = buildRequest(build, dir, doc, file, yaml.lineOf(build), out.problems, name, platform)
        const inline = isMap(build) ? get(build, 'dockerfile_inline', doc) : undefined
        const inlineText = text(inline)
        if (request && inlineText !== undefined) {
          // A block scalar's text starts on the line after its `|`.
          const block = isScalar(inline) && (inline.type === Scalar.BLOCK_LITERAL || inline.type === Scalar.BLOCK_FOLDED)
          const lineOffset = yaml.lineOf(inline) - (block ? 0 : 1)
          const scanned = scanDockerfile(inlineText, file, { buildArgs: request.args, lineOffset, ...(platform !== undefined ? { targetPlatform: platform } : {}) })
          out.refs.push(...scanned.refs)
          out.problems.push(...scanned.problems)
        } else if (request) {
          out.builds.push(request)
        }
        continue
      }
      const raw = text(image)
      if (raw === undefined) continue
      const line = yaml.lineOf(image)
      const e = interpolate(raw)
      if (e.missing.length > 0 || e.unsupported !== undefined) {
        out.problems.push({ file, line, message: `service ${name} image ${raw}: ${e.unsupported !== undefined ? `unsupported variable form ${e.unsupported}` : needs(e.missing)}` })
        continue
      }
      out.refs.push({ raw: e.value.trim(), file, line, kind: 'compose image', ...(platform !== undefined ? { platform } : {}) })
    }
  }
  return out
}

function buildRequest(
  build: unknown,
  dir: string,
  doc: Document.Parsed,
  file: string,
  line: number,
  problems: Problem[],
  service: string,
  platform: string | undefined,
): BuildRequest | undefined {
  const contextText = isMap(build) ? (text(get(build, 'context', doc)) ?? '.') : text(build)
  if (contextText === undefined) return undefined
  const context = interpolate(contextText)
  if (context.missing.length > 0) {
    problems.push({ file, line, message: `service ${service} build context ${contextText}: ${needs(context.missing)}` })
    return undefined
  }
  // A git URL or a remote tarball: nothing on this machine to read.
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(context.value) || context.value.startsWith('git@')) {
    problems.push({ file, line, message: `service ${service} builds from ${context.value}: a remote context is not scanned` })
    return undefined
  }
  const dockerfileText = isMap(build) ? (text(get(build, 'dockerfile', doc)) ?? 'Dockerfile') : 'Dockerfile'
  const dockerfile = interpolate(dockerfileText)
  if (dockerfile.missing.length > 0) {
    problems.push({ file, line, message: `service ${service} dockerfile ${dockerfileText}: ${needs(dockerfile.missing)}` })
    return undefined
  }
  const contextDir = path.resolve(dir, context.value)
  const args: Record<string, string> = {}
  const argsNode = isMap(build) ? get(build, 'args', doc) : undefined
  const setArg = (key: string, value: string | undefined) => {
    if (value === undefined) return
    const e = interpolate(value)
    // An arg whose value needs the environment is left out: the Dockerfile's default applies then.
    if (e.missing.length === 0) args[key] = e.value
  }
  if (isMap(argsNode)) {
    for (const [key, value] of entries(argsNode, doc)) setArg(key, text(value))
  } else if (isSeq(argsNode)) {
    for (const item of items(argsNode, doc)) {
      const s = text(item)
      const eq = s?.indexOf('=') ?? -1
      if (s !== undefined && eq > 0) setArg(s.slice(0, eq), s.slice(eq + 1))
    }
  }
  return { dockerfile: path.resolve(contextDir, dockerfile.value), args, file, line, ...(platform !== undefined ? { platform } : {}) }
}
