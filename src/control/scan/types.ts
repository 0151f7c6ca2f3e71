// What every format scanner hands back to the tree walker (index.ts): the
// image references it found, as written once variables are expanded, and the
// places where it could not tell which image is meant. Scanners never
// normalise names and never guess a value: the walker normalises every
// reference in one place, so all formats agree on what an image is.

/** Where a reference was found; kinds are stable strings (they appear in --json). */
export type SourceKind =
  | 'dockerfile FROM'
  | 'dockerfile COPY --from'
  | 'dockerfile RUN --mount'
  | 'dockerfile syntax'
  | 'compose image'
  | 'gitlab-ci image'
  | 'gitlab-ci service'
  | 'workflow container'
  | 'workflow service'
  | 'workflow step'
  | 'devcontainer image'
  | 'kubernetes'
  | 'image list'

export interface RawReference {
  /** The reference after variable expansion, not yet validated. */
  raw: string
  file: string
  /** 1-based. */
  line: number
  kind: SourceKind
  /** A platform the file names for this image (`FROM --platform=linux/arm64`, compose `platform:`). */
  platform?: string
}

export interface Problem {
  file: string
  /** 1-based; 0 when the problem is about the whole file. */
  line: number
  message: string
}

/** A Dockerfile some other file builds (compose `build:`, devcontainer `build`), with its build args. */
export interface BuildRequest {
  /** Absolute path of the Dockerfile, not yet checked against the scanned roots. */
  dockerfile: string
  args: Record<string, string>
  /** The platform the build targets, when the declaring file names one (compose `platform:`). */
  platform?: string
  /** Where the build is declared, for problems about it. */
  file: string
  line: number
}

export interface ScanResult {
  refs: RawReference[]
  problems: Problem[]
}

export const emptyScan = (): ScanResult => ({ refs: [], problems: [] })
