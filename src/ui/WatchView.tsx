// The terminal view of `dproxy top` (status --watch on a terminal): the
// downloads in progress with a bar each, the last requests with their cache
// result, hit ratio and bytes saved, rate-limit headroom per registry, each
// chained registry's upstream endpoints (up or down since when, the last
// error, which one served last), and the recent failures per image (where a failure a mirror-mode client hid shows
// up). WatchView is pure: it draws a WatchState (control/watch-state.ts);
// WatchApp folds the daemon's events into one and quits on `q` or Ctrl-C. It
// redraws as events come, which the daemon's once-a-second snapshot paces.
// The CLI imports this module only on a terminal.

import { Box, render, Text, useApp, useInput, useStdin } from 'ink'
import { useEffect, useRef, useState, type ReactNode } from 'react'
import { formatBytes } from '../config/units.js'
import type { StreamEvent } from '../control/events.js'
import { chainedEndpoints, describeFailures } from '../control/status.js'
import { foldEvent, hitRatio, initialWatchState, type DownloadRow, type WatchState } from '../control/watch-state.js'
import type { CacheResult } from '../registry/note.js'
import { EndpointLines, LimitLine } from './StatusView.js'

export const DOWNLOAD_BAR_WIDTH = 20

const cacheColor: Record<CacheResult, string> = { hit: 'green', miss: 'yellow', stale: 'magenta', joined: 'cyan' }

function Section({ title, children }: { title: string; children: ReactNode }) {
  return (
    <Box marginTop={1} flexDirection="column">
      <Text dimColor>{title}</Text>
      {children}
    </Box>
  )
}

/** `[████░░░░]`, or an empty bar while upstream has not said the size. */
export function DownloadBar({ download }: { download: Pick<DownloadRow, 'written' | 'size'> }) {
  const { written, size } = download
  const filled = size !== undefined && size > 0 ? Math.round(Math.min(1, written / size) * DOWNLOAD_BAR_WIDTH) : 0
  return (
    <Text>
      [<Text color="cyan">{'█'.repeat(filled)}</Text>
      <Text dimColor>{'░'.repeat(DOWNLOAD_BAR_WIDTH - filled)}</Text>]
    </Text>
  )
}

/** `1.2MB/4.5MB, 800kB/s, 2 waiting` */
export function describeDownload(d: DownloadRow): string {
  const total = d.size === undefined ? '?' : formatBytes(d.size)
  const rate = d.rate === undefined ? '' : `, ${formatBytes(d.rate)}/s`
  return `${formatBytes(d.written)}/${total}${rate}, ${d.clients} waiting`
}

/** `keys`: whether q is read (stdin is a terminal); without it only Ctrl-C (SIGINT) ends the view. */
export function WatchView({ state, source, keys = true }: { state: WatchState; source: string; keys?: boolean }) {
  const c = state.counters
  const ratio = c ? hitRatio(c) : null
  const imageWidth = Math.max(10, ...state.downloads.map((d) => d.image.length)) + 2
  const registryWidth = Math.max(10, ...state.rateLimit.map((r) => r.registry.length)) + 2
  return (
    <Box flexDirection="column">
      <Text>
        <Text bold>dproxy top</Text>
        <Text dimColor>
          {' '}
          {source}
          {state.ended ? ' (the stream ended)' : state.at === undefined ? ' (connecting)' : ''} · {keys ? 'q' : 'Ctrl-C'} quits
        </Text>
      </Text>

      <Section title="downloads">
        {state.downloads.length === 0 ? <Text dimColor>  none in progress</Text> : null}
        {state.downloads.map((d) => (
          <Box key={d.digest}>
            <Box width={imageWidth + 2} flexShrink={0}>
              <Text wrap="truncate-end">{`  ${d.image}`}</Text>
            </Box>
            <Text dimColor>{d.digest.slice(7, 19)} </Text>
            <DownloadBar download={d} />
            <Text> {describeDownload(d)}</Text>
          </Box>
        ))}
      </Section>

      <Section title="requests">
        {state.requests.length === 0 ? <Text dimColor>  none yet</Text> : null}
        {state.requests.map((r, i) => (
          <Box key={`${r.time}-${i}`}>
            <Box width={8} flexShrink={0}>
              <Text color={r.cache ? cacheColor[r.cache] : undefined}>{`  ${r.cache ?? '-'}`}</Text>
            </Box>
            <Text wrap="truncate-middle">
              {r.complete ? r.status : `${r.status}(cut)`} {r.method} {r.path} {formatBytes(r.bytes)} {Math.round(r.durationMs)}ms
            </Text>
          </Box>
        ))}
      </Section>

      <Section title="traffic">
        <Text>
          {'  hit ratio '}
          <Text bold>{ratio === null ? 'no requests yet' : `${Math.round(ratio * 100)}%`}</Text>
          {c && ratio !== null ? ` (${c.cacheHits} hits, ${c.cacheMisses} misses)` : ''}
        </Text>
        <Text>
          {'  saved     '}
          <Text color="green">{formatBytes(c?.bytesFromCache ?? 0)}</Text> served from cache, {formatBytes(c?.bytesFromUpstream ?? 0)} from
          upstream
        </Text>
      </Section>

      <Section title="rate limits">
        {state.rateLimit.length === 0 ? <Text dimColor>  no reading yet (taken on the next upstream manifest request)</Text> : null}
        {state.rateLimit.map((r) => (
          <LimitLine key={r.registry} row={r} registryWidth={registryWidth} />
        ))}
      </Section>

      {chainedEndpoints(state.endpoints).length > 0 ? (
        <Section title="upstream endpoints">
          <EndpointLines endpoints={state.endpoints} />
        </Section>
      ) : null}

      {state.recentFailures.length > 0 ? (
        <Section title="recent failures">
          {describeFailures(state.recentFailures, 1).map((line, i) => (
            <Text key={i} color={line.startsWith(' ') ? 'red' : undefined}>{`  ${line}`}</Text>
          ))}
        </Section>
      ) : null}
    </Box>
  )
}

export interface WatchAppProps {
  events: AsyncIterable<StreamEvent>
  /** Where the events come from, for the header: the daemon's URL. */
  source: string
  /** Called once when the user quits, so the caller can stop the stream. */
  onQuit: () => void
}

/** Folds the events into the view until the stream ends or the user quits. */
export function WatchApp({ events, source, onQuit }: WatchAppProps) {
  const { exit } = useApp()
  const { isRawModeSupported } = useStdin()
  const [state, setState] = useState(initialWatchState)
  const quitting = useRef(false)
  const quit = () => {
    if (quitting.current) return
    quitting.current = true
    onQuit()
    exit()
  }
  useInput(
    (input, key) => {
      if (input === 'q' || (key.ctrl && input === 'c')) quit()
    },
    { isActive: isRawModeSupported === true },
  )
  useEffect(() => {
    let live = true
    void (async () => {
      try {
        for await (const e of events) {
          if (!live) return
          setState((s) => foldEvent(s, e))
        }
        if (live && !quitting.current) {
          setState((s) => ({ ...s, ended: true }))
          exit()
        }
      } catch (err) {
        if (live && !quitting.current) exit(err instanceof Error ? err : new Error(String(err)))
      }
    })()
    return () => {
      live = false
    }
  }, [events, exit])
  return <WatchView state={state} source={source} keys={isRawModeSupported === true} />
}

/** Draws the live view on `stdout` until the user quits or the stream ends; rejects when the stream fails. */
export async function watchLive(
  props: WatchAppProps & { stdout: NodeJS.WritableStream; stdin: NodeJS.ReadableStream },
): Promise<void> {
  const { stdout, stdin, ...app } = props
  const instance = render(<WatchApp {...app} />, {
    stdout: stdout as NodeJS.WriteStream,
    stdin: stdin as NodeJS.ReadStream,
    patchConsole: false,
    exitOnCtrlC: false,
  })
  await instance.waitUntilExit()
}
