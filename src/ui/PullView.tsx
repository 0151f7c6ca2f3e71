// The terminal view of `dproxy pull` and `dproxy prefetch`: a line per image
// (queued, checking, fetching N/M with bytes and speed, fetched, up to date,
// failed) and a total bar with bytes, rate and ETA. PullView is pure: it draws
// a PullProgress; startPullView keeps one up to date from the daemon's events
// and the wall clock. The CLI imports this module only on a terminal.

import { Box, render, Text } from 'ink'
import { formatBytes } from '../config/units.js'
import { describeImage, stateWords } from '../control/pull.js'
import type { ImageEvent, PlanEvent, WarmEvent } from '../proxy/warm.js'

export const TOTAL_BAR_WIDTH = 30

export interface ImageLine extends ImageEvent {
  /** Bytes per second of this image's download, when it is fetching. */
  rate?: number
}

export interface PullProgress {
  images: ImageLine[]
  plan?: PlanEvent
  /** Bytes per second over the whole run so far. */
  rate: number
}

const stateColor: Partial<Record<ImageEvent['state'], string>> = {
  fetched: 'green',
  refreshed: 'green',
  'up-to-date': 'green',
  failed: 'red',
  fetching: 'cyan',
}

function eta(remaining: number, rate: number): string {
  if (rate <= 0 || remaining <= 0) return ''
  const s = Math.ceil(remaining / rate)
  return s >= 60 ? `ETA ${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `ETA ${s}s`
}

export function PullView({ progress }: { progress: PullProgress }) {
  const width = Math.max(10, ...progress.images.map((i) => i.image.length)) + 2
  const bytes = progress.images.reduce((n, i) => n + i.bytes, 0)
  const total = progress.images.reduce((n, i) => n + i.bytesTotal, 0)
  const fraction = total > 0 ? Math.min(1, bytes / total) : 0
  const filled = Math.round(fraction * TOTAL_BAR_WIDTH)
  const finished = progress.images.filter((i) => ['fetched', 'refreshed', 'up-to-date', 'failed'].includes(i.state)).length
  return (
    <Box flexDirection="column">
      {progress.images.map((i) => (
        <Box key={i.image}>
          <Box width={width} flexShrink={0}>
            <Text>{i.image}</Text>
          </Box>
          <Box width={11} flexShrink={0}>
            <Text color={stateColor[i.state]}>{stateWords[i.state]}</Text>
          </Box>
          <Text dimColor={i.state !== 'failed'}>
            {describeImage(i)}
            {i.state === 'fetching' && i.rate ? `, ${formatBytes(i.rate)}/s` : ''}
          </Text>
        </Box>
      ))}
      <Box marginTop={1}>
        <Text>
          [<Text color="cyan">{'█'.repeat(filled)}</Text>
          <Text dimColor>{'░'.repeat(TOTAL_BAR_WIDTH - filled)}</Text>] {finished}/{progress.images.length} images,{' '}
          {formatBytes(bytes)} of {formatBytes(total)}
          {progress.rate > 0 ? `, ${formatBytes(progress.rate)}/s` : ''}
          {progress.rate > 0 && total > bytes ? `, ${eta(total - bytes, progress.rate)}` : ''}
        </Text>
      </Box>
    </Box>
  )
}

export interface PullViewHandle {
  update(e: WarmEvent): void
  /** Draws the last state and lets go of the terminal. */
  done(): Promise<void>
}

/** Renders the view on `stdout` and keeps it up to date from the events. */
export async function startPullView(stdout: NodeJS.WritableStream, now: () => number = Date.now): Promise<PullViewHandle> {
  const started = now()
  const lines = new Map<string, ImageLine & { since: number; fromBytes: number }>()
  let plan: PlanEvent | undefined
  const snapshot = (): PullProgress => {
    const images = [...lines.values()]
    const fetched = images.reduce((n, i) => n + i.bytesFetched, 0)
    const elapsed = (now() - started) / 1000
    return { images, ...(plan ? { plan } : {}), rate: elapsed > 0 ? fetched / elapsed : 0 }
  }
  const instance = render(<PullView progress={snapshot()} />, { stdout: stdout as NodeJS.WriteStream, patchConsole: false, exitOnCtrlC: false })
  return {
    update(e) {
      if (e.type === 'plan') plan = e
      if (e.type !== 'image') return
      const prev = lines.get(e.image)
      const since = prev && prev.state === e.state ? prev.since : now()
      const fromBytes = prev && prev.state === e.state ? prev.fromBytes : e.bytesFetched
      const seconds = (now() - since) / 1000
      const rate = e.state === 'fetching' && seconds > 0 ? (e.bytesFetched - fromBytes) / seconds : 0
      lines.set(e.image, { ...e, since, fromBytes, ...(rate > 0 ? { rate } : {}) })
      instance.rerender(<PullView progress={snapshot()} />)
    },
    async done() {
      instance.rerender(<PullView progress={snapshot()} />)
      instance.unmount()
      await instance.waitUntilExit()
    },
  }
}
