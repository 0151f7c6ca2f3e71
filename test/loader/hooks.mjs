// Module hooks for the test processes (register.mjs installs them; package.json's
// "tap" section passes it to every test file): a TypeScript file is transpiled once
// per content and the JavaScript kept in test/.cache/ts/, so that the hundred-odd
// test processes of a run share the work instead of each transpiling the src/ graph
// it imports again. @tapjs/typescript (ts-node, transpile only) stays registered for
// resolution (`./x.js` naming x.ts) and for whatever these hooks pass on; they run
// first, being registered after it.
//
// The output is what ts-node's transpile-only mode produces (TypeScript's
// transpileModule with the project's tsconfig.json), as ES modules (the package is
// "type": "module"), with an inline source map holding the source, so that stack
// traces and coverage name the .ts lines as before. The cache key is the
// TypeScript version, tsconfig.json, this file, the file's path (the map names it) and
// its content; a file is written to a temporary name and renamed into place, so
// processes racing on the same file never read half of one.

import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))
const cacheDir = join(root, 'test', '.cache', 'ts')
const require = createRequire(import.meta.url)

/** What the JavaScript depends on besides the file: TypeScript's version, tsconfig.json, and this file. */
const salt = [
  JSON.parse(readFileSync(require.resolve('typescript/package.json'), 'utf8')).version,
  readFileSync(join(root, 'tsconfig.json'), 'utf8'),
  readFileSync(fileURLToPath(import.meta.url), 'utf8'),
].join('\0')

/** TypeScript and the compiler options, loaded on the first file not in the cache. */
let compiler

function getCompiler() {
  if (compiler) return compiler
  const ts = require('typescript')
  const file = join(root, 'tsconfig.json')
  const parsed = ts.parseJsonConfigFileContent(ts.readConfigFile(file, ts.sys.readFile).config, ts.sys, root)
  const options = {
    ...parsed.options,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    sourceMap: false,
    inlineSourceMap: true,
    inlineSources: true,
    declaration: false,
    noEmit: false,
  }
  compiler = { ts, options }
  return compiler
}

export async function load(url, context, next) {
  // t.mockImport loads a module again under a query: the same file.
  const query = url.indexOf('?')
  const bare = query < 0 ? url : url.slice(0, query)
  if (!bare.startsWith('file:') || !/\.tsx?$/.test(bare)) return next(url, context)
  const path = fileURLToPath(bare)
  const text = readFileSync(path, 'utf8')
  const key = createHash('sha256').update(salt).update('\0').update(path).update('\0').update(text).digest('hex')
  const cached = join(cacheDir, `${key}.js`)
  let source
  try {
    source = readFileSync(cached, 'utf8')
  } catch {
    const { ts, options } = getCompiler()
    source = ts.transpileModule(text, { compilerOptions: options, fileName: path }).outputText
    mkdirSync(cacheDir, { recursive: true })
    const tmp = `${cached}.${process.pid}.tmp`
    writeFileSync(tmp, source)
    renameSync(tmp, cached)
  }
  return { format: 'module', source, shortCircuit: true }
}
