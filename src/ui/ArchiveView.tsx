// The terminal view of `dproxy cache export` / `import`: one bar with bytes
// done of the total (when known), the rate and the ETA. ArchiveView is pure;
// startArchiveView redraws it from progress reports and the wall clock. The
// CLI imports this module only on a terminal.

import { Box, render, Text } from 'ink'
import { formatBytes } from '../config/units.js'
import type { ArchiveProgress } from '../store/oci-archive.js'

export const ARCHIVE_BAR_WIDTH = 30

export interface ArchiveViewProps {
  verb: string
  progress: ArchiveProgress
  /** Bytes per second so far. */
  rate: number
}

export function ArchiveView({ verb, progress, rate }: ArchiveViewProps) {
  const { bytes, total } = progress
  const fraction = total ? Math.min(1, bytes / total) : 0
  const filled = Math.round(fraction * ARCHIVE_BAR_WIDTH)
  const left = total !== undefined && rate > 0 && total > bytes ? Math.ceil((total - bytes) / rate) : 0
  return (
    <Box>
      <Text>
        {verb} [<Text color="cyan">{'█'.repeat(filled)}</Text>
        <Text dimColor>{'░'.repeat(ARCHIVE_BAR_WIDTH - filled)}</Text>] {formatBytes(bytes)}
        {total !== undefined ? ` of ${formatBytes(total)}` : ''}
        {rate > 0 ? `, ${formatBytes(rate)}/s` : ''}
        {left > 0 ? `, ETA ${left >= 60 ? `${Math.floor(left / 60)}m${String(left % 60).padStart(2, '0')}s` : `${left}s`}` : ''}
      </Text>
    </Box>
  )
}

export interface ArchiveViewHandle {
  update(p: ArchiveProgress): void
  done(): Promise<void>
}

export function startArchiveView(out: NodeJS.WritableStream, verb: string, now: () => number = Date.now): ArchiveViewHandle {
  const started = now()
  let last: ArchiveProgress = { bytes: 0 }
  let drawn = 0
  const props = (): ArchiveViewProps => {
    const seconds = (now() - started) / 1000
    return { verb, progress: last, rate: seconds > 0 ? last.bytes / seconds : 0 }
  }
  const instance = render(<ArchiveView {...props()} />, { stdout: out as NodeJS.WriteStream, patchConsole: false, exitOnCtrlC: false })
  return {
    update(p) {
      last = p
      // Many GB arrive in 1 MiB reports: redraw ten times a second at most.
      if (now() - drawn < 100) return
      drawn = now()
      instance.rerender(<ArchiveView {...props()} />)
    },
    async done() {
      instance.rerender(<ArchiveView {...props()} />)
      instance.unmount()
      await instance.waitUntilExit()
    },
  }
}
