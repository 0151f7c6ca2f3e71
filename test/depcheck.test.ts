// The daemon's core must never depend on the CLI or the terminal UI: a
// service manager runs `dproxy serve` without a terminal, and the layers are
// meant to be usable on their own. This walks the static imports of every
// source file outside src/cli and src/ui.

import { promises as fs } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const src = fileURLToPath(new URL('../src/', import.meta.url))

async function files(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...(await files(p)))
    else if (/\.tsx?$/.test(e.name)) out.push(p)
  }
  return out
}

t.test('core modules import neither ink, react nor cli/ui', async (t) => {
  const core = (await files(src)).filter((f) => !/^(cli|ui)\//.test(relative(src, f)))
  t.ok(core.length > 10, 'found the core sources')
  for (const file of core) {
    const text = await fs.readFile(file, 'utf8')
    const imports = [...text.matchAll(/(?:from\s+|import\s*\(\s*)['"]([^'"]+)['"]/g)].map((m) => m[1]!)
    const bad = imports.filter((i) => /^(ink|react)(\/|$)|ink-|\/(cli|ui)\//.test(i) || /^\.\.?\/(cli|ui)\//.test(i))
    t.strictSame(bad, [], relative(src, file))
  }
})
