// The daemon's young generation stays small without a node flag: a child
// process (fresh heap, plain node on the built module: a TypeScript loader
// would grow the new space before the call) churns through
// short-lived objects that survive a scavenge or two, which makes V8 grow the
// new space, and reports its size.

import { execFile } from 'node:child_process'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

const heapModule = pathToFileURL(new URL('../dist/heap.js', import.meta.url).pathname).href

const MiB = 2 ** 20

const churn = (keepSmall: boolean) => `
import v8 from 'node:v8'
const { tuneHeap } = await import(${JSON.stringify(heapModule)})
if (${keepSmall}) tuneHeap()
let live = []
for (let i = 0; i < 2_000_000; i++) {
  live.push({ i, pair: [i, i + 1] })
  if (live.length > 20_000) live = []
}
process.stdout.write(String(v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size))
`

async function newSpaceBytes(keepSmall: boolean): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', churn(keepSmall)], {
    timeout: 60_000,
  })
  return Number(stdout)
}

t.test('tuneHeap holds the new space near its initial size under churn', async (t) => {
  const grown = await newSpaceBytes(false)
  t.ok(grown >= 16 * MiB, `without it the new space grows (${grown} bytes), so the churn proves something`)
  const small = await newSpaceBytes(true)
  t.ok(small <= 4 * MiB, `with it the new space stays within a few MiB (${small} bytes)`)
})
