// The ink view of `dproxy pull` / `prefetch`, rendered with ink-testing-library:
// a line per image in each state, and the total bar with bytes, rate and ETA.

import { render } from 'ink-testing-library'
import t from 'tap'
import type { ImageEvent } from '../../src/proxy/warm.js'
import { PullView, TOTAL_BAR_WIDTH } from '../../src/ui/PullView.js'

const plain = (s: string | undefined) => (s ?? '').replace(/\x1b\[[0-9;]*m/g, '')

const image = (name: string, change: Partial<ImageEvent>): ImageEvent => ({
  type: 'image',
  image: name,
  state: 'queued',
  layersDone: 0,
  layersTotal: 0,
  bytes: 0,
  bytesTotal: 0,
  bytesFetched: 0,
  ...change,
})

t.test('a line per image and a total bar', async (t) => {
  const images = [
    image('docker.io/library/alpine:3.20', { state: 'up-to-date', layersDone: 2, layersTotal: 2, bytes: 3_000_000, bytesTotal: 3_000_000 }),
    { ...image('docker.io/library/node:22', { state: 'fetching', layersDone: 1, layersTotal: 4, bytes: 2_000_000, bytesTotal: 5_000_000, bytesFetched: 2_000_000 }), rate: 1_000_000 },
    image('ghcr.io/acme/app:2.0', { state: 'failed', reason: 'manifest unknown' }),
    image('docker.io/library/redis:7', {}),
  ]
  const { lastFrame, unmount } = render(<PullView progress={{ images, rate: 1_000_000 }} />)
  const frame = plain(lastFrame())
  unmount()
  const filled = Math.round((5 / 8) * TOTAL_BAR_WIDTH)
  t.equal(
    frame,
    [
      'docker.io/library/alpine:3.20  up to date 2 blobs, 3MB',
      'docker.io/library/node:22      fetching   1/4 blobs, 2MB of 5MB, 1MB/s',
      'ghcr.io/acme/app:2.0           failed     manifest unknown',
      'docker.io/library/redis:7      queued',
      '',
      `[${'█'.repeat(filled)}${'░'.repeat(TOTAL_BAR_WIDTH - filled)}] 2/4 images, 5MB of 8MB, 1MB/s, ETA 3s`,
    ].join('\n'),
  )
})
