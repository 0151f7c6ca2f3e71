// The terminal view of `dproxy status`: the daemon, the cache table, a
// headroom bar per registry rate limit, green while more than half of the
// limit is left, yellow above a fifth, red below, and each chained registry's
// upstream endpoints in the order asked (green up, red down). Pure presentation of a
// StatusSnapshot (src/control/status.ts); the CLI imports this module lazily,
// only when stdout is a terminal.

import { Box, render, Text, useApp } from 'ink'
import { useEffect, type ReactNode } from 'react'
import { formatBytes } from '../config/units.js'
import {
  chainedEndpoints,
  describeEndpoint,
  describeFailures,
  describeLimit,
  describeReading,
  formatAge,
  headroom,
  servedLast,
  type HeadroomLevel,
  type RateLimitRow,
  type StatusSnapshot,
} from '../control/status.js'
import type { EndpointStatus } from '../upstream/client.js'

const LABEL_WIDTH = 12
export const BAR_WIDTH = 20

const levelColor: Record<HeadroomLevel, string | undefined> = {
  ok: 'green',
  low: 'yellow',
  critical: 'red',
  unlimited: 'green',
  unknown: undefined,
}

function Row({ label, children }: { label: string; children: ReactNode }) {
  return (
    <Box>
      <Box width={LABEL_WIDTH} flexShrink={0}>
        <Text dimColor>{label}</Text>
      </Box>
      <Box>{children}</Box>
    </Box>
  )
}

/** `[██████████░░░░░░░░░░]`, filled in proportion to what is left. */
export function HeadroomBar({ row }: { row: Pick<RateLimitRow, 'limit' | 'remaining' | 'unlimited'> }) {
  const { fraction, level } = headroom(row)
  const filled = fraction === null ? (level === 'unlimited' ? BAR_WIDTH : 0) : Math.round(fraction * BAR_WIDTH)
  return (
    <Text>
      [<Text color={levelColor[level]}>{'█'.repeat(filled)}</Text>
      <Text dimColor>{'░'.repeat(BAR_WIDTH - filled)}</Text>]
    </Text>
  )
}

/** `  docker.io   [█████░░░] 25/100 left per 6h`: the registry in a column, the bar when the limit is known. */
export function LimitLine({ row, registryWidth }: { row: RateLimitRow; registryWidth: number }) {
  return (
    <Box>
      <Box width={registryWidth + 2} flexShrink={0}>
        <Text>{`  ${row.registry}`}</Text>
      </Box>
      {headroom(row).level === 'unknown' ? null : (
        <>
          <HeadroomBar row={row} />
          <Text> </Text>
        </>
      )}
      <Text>{describeLimit(row)}</Text>
    </Box>
  )
}

/**
 * The endpoints of each registry with a chain, in the order asked: the
 * registry once, then one line per endpoint, its health coloured.
 */
export function EndpointLines({ endpoints }: { endpoints: readonly EndpointStatus[] }) {
  const shown = chainedEndpoints(endpoints)
  const last = servedLast(shown)
  return (
    <>
      {shown.map((e) => (
        <Box key={`${e.registry} ${e.position}`} flexDirection="column">
          {e.position === 0 ? <Text>{`  ${e.registry}`}</Text> : null}
          <Text color={e.up ? undefined : 'red'}>
            {'    '}
            <Text color={e.up ? 'green' : 'red'}>{e.up ? '●' : '○'}</Text> {describeEndpoint(e, last)}
          </Text>
        </Box>
      ))}
    </>
  )
}

export function StatusView({ snapshot }: { snapshot: StatusSnapshot }) {
  const d = snapshot.daemon
  const c = snapshot.cache
  const registryWidth = Math.max(...snapshot.rateLimit.map((r) => r.registry.length)) + 2
  return (
    <Box flexDirection="column">
      <Row label="dproxy">
        {d.running ? (
          <Text>
            <Text color="green">running</Text> (pid {d.pid}, version {d.version}
            {d.uptimeSeconds === null ? '' : `, up ${formatAge(d.uptimeSeconds)}`})
          </Text>
        ) : (
          <Text color="yellow">not running</Text>
        )}
      </Row>
      {d.running ? (
        <Row label="listening">
          <Text>{d.listen.map((a) => `http://${a}`).join(', ')}</Text>
        </Row>
      ) : null}
      <Row label="cache dir">
        <Text>{snapshot.cacheDir}</Text>
      </Row>
      {d.logFile !== null ? (
        <Row label="log">
          <Text>{d.logFile}</Text>
        </Row>
      ) : null}

      <Box marginTop={1} flexDirection="column">
        <Row label="cache">
          <Text>
            <Text bold>{formatBytes(c.bytes)}</Text> in {c.blobs} blobs, {c.manifests} manifests, {c.tags} tags
          </Text>
        </Row>
        {c.notWritable !== undefined ? (
          <Row label="">
            <Text color="red">cache not writable: {c.notWritable}</Text>
          </Row>
        ) : null}
        {c.cacheHits === null ? (
          <Row label="traffic">
            <Text dimColor>unknown (counted by the running daemon)</Text>
          </Row>
        ) : (
          <>
            <Row label="hit ratio">
              <Text>
                <Text bold>{c.hitRatio === null ? 'no requests yet' : `${Math.round(c.hitRatio * 100)}%`}</Text> ({c.cacheHits}{' '}
                hits, {c.cacheMisses} misses)
              </Text>
            </Row>
            <Row label="served">
              <Text>
                {formatBytes(c.bytesFromCache ?? 0)} from cache, {formatBytes(c.bytesFromUpstream ?? 0)} from upstream
              </Text>
            </Row>
            <Row label="manifests">
              <Text>
                {c.upstreamManifestGets} upstream GETs, {c.upstreamManifestHeads} HEADs,{' '}
                <Text color="green">{c.manifestGetsAvoided} GETs avoided</Text>
              </Text>
            </Row>
          </>
        )}
      </Box>

      <Box marginTop={1} flexDirection="column">
        <Text dimColor>rate limits</Text>
        {snapshot.rateLimit.map((r) => (
          <Box key={r.registry} flexDirection="column">
            <LimitLine row={r} registryWidth={registryWidth} />
            {describeReading(r) ? (
              <Box marginLeft={registryWidth + 2}>
                <Text dimColor>{describeReading(r)}</Text>
              </Box>
            ) : null}
          </Box>
        ))}
      </Box>

      {chainedEndpoints(snapshot.endpoints ?? []).length > 0 ? (
        <Box marginTop={1} flexDirection="column">
          <Text dimColor>upstream endpoints (asked in this order)</Text>
          <EndpointLines endpoints={snapshot.endpoints ?? []} />
        </Box>
      ) : null}

      {snapshot.recentFailures.length > 0 ? (
        <Box marginTop={1} flexDirection="column">
          <Text dimColor>recent failures</Text>
          {describeFailures(snapshot.recentFailures).map((line, i) => (
            <Text key={i} color={line.startsWith(' ') ? 'red' : undefined}>{`  ${line}`}</Text>
          ))}
        </Box>
      ) : null}
    </Box>
  )
}

/** Renders once, then lets ink finish (it exits after the first frame). */
function Once({ snapshot }: { snapshot: StatusSnapshot }) {
  const { exit } = useApp()
  useEffect(() => exit(), [exit])
  return <StatusView snapshot={snapshot} />
}

export async function renderStatus(snapshot: StatusSnapshot, stdout: NodeJS.WritableStream): Promise<void> {
  const instance = render(<Once snapshot={snapshot} />, {
    stdout: stdout as NodeJS.WriteStream,
    patchConsole: false,
    exitOnCtrlC: false,
  })
  await instance.waitUntilExit()
}
