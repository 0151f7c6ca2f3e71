import t from 'tap'
import { scanImageList } from '../../../src/control/scan/imagelist.js'

t.test('one reference a line; comments and blank lines skipped', async (t) => {
  const r = scanImageList('# tools\nalpine:3.20\n\n  ghcr.io/o/i:1   # pinned\r\nbad#tag\n', 'x.images')
  t.strictSame(
    r.refs.map((x) => [x.line, x.raw]),
    [
      [2, 'alpine:3.20'],
      [4, 'ghcr.io/o/i:1'],
      [5, 'bad#tag'],
    ],
  )
})
