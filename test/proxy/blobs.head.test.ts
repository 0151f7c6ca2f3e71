// A blob HEAD on a cold blob through the real daemon, when upstream's HEAD
// carries no Content-Length: the client is answered as a GET would be, with
// the blob's size, never a 502. The size comes from a one-byte ranged GET
// when upstream honours Range, else from the blob itself once downloaded.
// The faults are the Hub shim's CDN listener's; what went upstream is counted there.

import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { get, settled, startDaemon } from '../helpers/daemon.js'
import type { Logger } from '../../src/log.js'
import { parseDigest } from '../../src/oci/digest.js'

function recordingLogger(): Logger & { errors: string[] } {
  const errors: string[] = []
  return { errors, info() {}, warn() {}, error: (m) => errors.push(m) }
}

t.test('a cold blob HEAD whose upstream HEAD has no Content-Length: the size from a one-byte ranged GET', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const log = recordingLogger()
  const d = await startDaemon(t, up, { log })
  const layer = up.images.alpine.blobs.find((b) => b.kind === 'layer')!
  up.hub.inject({ kind: 'headNoLength', digest: layer.digest })
  const head = await get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`, {}, 'HEAD')
  t.equal(head.status, 200)
  t.equal(Number(head.headers['content-length']), layer.size)
  t.equal(head.headers['docker-content-digest'], layer.digest)
  t.strictSame(up.hub.pendingFaults(), [], 'the HEAD reached the CDN and went without Content-Length')
  t.equal(up.hub.counts.cdnBytes[layer.digest], 1, 'one byte of the blob went upstream')
  t.strictSame(log.errors, [], 'nothing logged at error level')

  const get1 = await get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`)
  t.equal(get1.status, 200)
  t.equal(get1.body.length, layer.size, 'the GET agrees with the HEAD')
})

t.test('no Content-Length on the HEAD and Range ignored, chunked: the HEAD answers once the blob is here', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const log = recordingLogger()
  const d = await startDaemon(t, up, { log })
  const layer = up.images.alpine.blobs.find((b) => b.kind === 'layer')!
  up.hub.inject({ kind: 'headNoLength', digest: layer.digest })
  up.hub.inject({ kind: 'ignoreRange', digest: layer.digest, length: 'none' })
  const head = await get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`, {}, 'HEAD')
  t.equal(head.status, 200)
  t.equal(Number(head.headers['content-length']), layer.size)
  t.strictSame(up.hub.pendingFaults(), [])
  await settled(d)
  t.equal(await d.store.statBlob(parseDigest(layer.digest)), layer.size, 'the blob was fetched, verified and cached')
  t.strictSame(log.errors, [], 'nothing logged at error level')

  up.hub.resetCounts()
  const again = await get(`${d.url}/v2/library/alpine/blobs/${layer.digest}`, {}, 'HEAD')
  t.equal(Number(again.headers['content-length']), layer.size)
  t.strictSame(up.hub.counts.requests, [], 'from the cache now')
})
