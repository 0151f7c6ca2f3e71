// The ink bar of `dproxy cache export` / `import`: bytes of the total, rate
// and ETA when the total is known; bytes and rate alone when it is not (stdin).

import { render } from 'ink-testing-library'
import t from 'tap'
import { ARCHIVE_BAR_WIDTH, ArchiveView } from '../../src/ui/ArchiveView.js'

const plain = (s: string | undefined) => (s ?? '').replace(/\x1b\[[0-9;]*m/g, '')

t.test('a bar with bytes of the total, rate and ETA', async (t) => {
  const { lastFrame, unmount } = render(<ArchiveView verb="exporting" progress={{ bytes: 250_000_000, total: 1_000_000_000 }} rate={50_000_000} />)
  const frame = plain(lastFrame())
  unmount()
  const filled = Math.round(0.25 * ARCHIVE_BAR_WIDTH)
  t.equal(frame, `exporting [${'█'.repeat(filled)}${'░'.repeat(ARCHIVE_BAR_WIDTH - filled)}] 250MB of 1GB, 50MB/s, ETA 15s`)
})

t.test('without a total: bytes and rate', async (t) => {
  const { lastFrame, unmount } = render(<ArchiveView verb="importing" progress={{ bytes: 3_000_000 }} rate={0} />)
  const frame = plain(lastFrame())
  unmount()
  t.equal(frame, `importing [${'░'.repeat(ARCHIVE_BAR_WIDTH)}] 3MB`)
})
