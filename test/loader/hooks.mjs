// Module hooks for the test processes (register.mjs installs them; package.json's
// "tap" section passes it to every test file): a TypeScript file is transpiled once
// per content and the JavaScript kept in test/.cache/ts/, so that the hundred-odd
// test processes of a run share the work instead of each transpiling the src/ graph
// it imports again; and `./x.js` resolves to x.ts. They stand in for ts-node, which
// @tapjs/typescript would load into every test process (about a CPU-second each,
// before any test runs): package.json's "test-env" sets TAP_TYPE_STRIP_ONLY=1, with
// which the plugin's import skips it. A test that starts a TypeScript child passes
// its own execArgv's loader arguments on (test/pidlock.test.ts).
//
// The output is what ts-node's transpile-only mode produces (TypeScript's
// transpileModule with the project's tsconfig.json), as ES modules (the package is
// "type": "module"), with an inline source map holding the source, so that stack
// traces and coverage name the .ts lines as before. The cache key is the
// TypeScript version, tsconfig.json, this file, the file's path (the map names it) and
// its content; a file is written to a temporary name and renamed into place, so
// processes racing on the same file never read half of one.

import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
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

/**
 * `./x.js` names x.ts (or x.tsx) when there is no x.js: TypeScript's NodeNext
 * convention, which src/ and test/ follow. Answered here, as ts-node answers it,
 * without asking the hooks after these again: t.mockImport's hooks would make the
 * .ts a fresh copy in a mocked graph, where the module it loads in place of a
 * missing .js is the shared one (one DproxyError class, say).
 */
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context)
  } catch (err) {
    const relative = specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('file:')
    // A query or fragment stays on (t.mockImport's `?tapmock=...`).
    const [, path, rest] = /^([^?#]*)(.*)$/s.exec(specifier)
    if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !relative || !/\.jsx?$/.test(path)) throw err
    for (const ext of ['.ts', '.tsx']) {
      const url = new URL(path.replace(/\.jsx?$/, ext), context.parentURL)
      if (url.protocol === 'file:' && existsSync(fileURLToPath(url))) return { url: url.href + rest, format: 'module', shortCircuit: true }
    }
    throw err
  }
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
