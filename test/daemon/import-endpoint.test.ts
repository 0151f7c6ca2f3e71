// POST /_dproxy/cache/import on a real daemon: an archive exported from
// another cache is imported and its tag recorded; what the endpoint refuses
// (method, content type, token, query, size by Content-Length and while
// streaming, a corrupt archive) changes nothing; a second import waits for
// no one (409); and a clear sent in the middle of an import runs after it, so
// it never removes blobs the import verified but had not tagged yet. An
// accepted import may take longer to arrive than the daemon's request
// timeout (and than the bound on its head); any other body that trickles in
// past it loses its connection.

import { connect } from 'node:net'
import { PassThrough, Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { request } from 'undici'
import type { Daemon } from '../../src/daemon/daemon.js'
import { ADMIN_TOKEN_HEADER } from '../../src/daemon/guard.js'
import { IMPORT_PATH } from '../../src/daemon/import-endpoint.js'
import { ARCHIVE_CONTENT_TYPE } from '../../src/store/oci-archive.js'
import type { EvictionSummary } from '../../src/store/evict.js'
import { exportArchive } from '../../src/store/archive-export.js'
import type { ImportSummary } from '../../src/store/archive-import.js'
import { Store } from '../../src/store/store.js'
import { hasBlob, putImage, tag } from '../helpers/cache.js'
import { startDaemon } from '../helpers/daemon.js'

type ErrorBody = { errors: Array<{ code: string; message: string }> }

/** An archive of docker.io/library/x:1, an image of two 300 KiB layers, made in a cache of its own. */
async function archive(t: Test) {
  const store = await Store.open(t.testdir())
  const image = await putImage(store, 'x', [300 * 1024, 300 * 1024])
  await tag(store, 'docker.io', 'library/x', '1', image.manifest, Date.parse('2026-01-01T00:00:00Z'))
  const sink = new PassThrough()
  const parts: Buffer[] = []
  sink.on('data', (c: Buffer) => parts.push(c))
  await exportArchive(store, { stream: sink })
  return { bytes: Buffer.concat(parts), image }
}

interface Sent {
  status: number
  body: unknown
}

/** POSTs `body` (bytes, or chunks as they come) as the CLI does, unless `headers` say otherwise. */
async function send(d: Daemon, body: Buffer | AsyncIterable<Buffer>, opts: { path?: string; method?: 'POST' | 'PUT'; headers?: Record<string, string> } = {}): Promise<Sent> {
  const res = await request(`${d.url}${opts.path ?? IMPORT_PATH}`, {
    method: opts.method ?? 'POST',
    headers: { [ADMIN_TOKEN_HEADER]: d.adminToken, 'content-type': ARCHIVE_CONTENT_TYPE, ...opts.headers },
    body: Buffer.isBuffer(body) ? body : Readable.from(body),
  })
  return { status: res.statusCode, body: await res.body.json() }
}

/** A request body sent in two parts: `first` at once, the rest when `release()` is called. */
function held(bytes: Buffer, first: number) {
  let release!: () => void
  const released = new Promise<void>((resolve) => (release = resolve))
  async function* body() {
    yield bytes.subarray(0, first)
    await released
    yield bytes.subarray(first)
  }
  return { body: body(), release }
}

/** Resolves when the daemon's maintenance is next asked to `name` (the call goes on as before). */
function whenCalled(d: Daemon, name: 'import' | 'clear'): Promise<void> {
  const m = d.maintenance as unknown as Record<string, (...args: unknown[]) => unknown>
  const original = m[name]!.bind(d.maintenance)
  return new Promise((resolve) => {
    m[name] = (...args) => {
      resolve()
      return original(...args)
    }
  })
}

async function until(t: Test, what: string, ok: () => Promise<boolean>) {
  for (let i = 0; i < 1000 && !(await ok()); i++) await new Promise((r) => setTimeout(r, 10))
  t.ok(await ok(), what)
}

t.test('an archive posted to the daemon is verified, stored and its tag recorded', async (t) => {
  const { bytes, image } = await archive(t)
  const d = await startDaemon(t, undefined)
  const res = await send(d, bytes)
  t.equal(res.status, 200)
  t.match(res.body as ImportSummary, { images: ['docker.io/library/x:1'], manifests: 1, blobs: 3, skipped: [] })
  t.equal((await d.store.getTag('docker.io', 'library/x', '1'))?.digest, image.manifest.digest)
  for (const b of image.layers) t.ok(await hasBlob(d.store, b), b.digest)

  const again = await send(d, bytes, { path: `${IMPORT_PATH}?force=1` })
  t.match(again.body as ImportSummary, { images: ['docker.io/library/x:1'], blobs: 0 }, 'force replaces the tag, the blobs are there')
})

t.test('refused requests change nothing', async (t) => {
  const { bytes } = await archive(t)
  const flipped = Buffer.from(bytes)
  flipped[bytes.length - 2048 - 1000]! ^= 1
  const d = await startDaemon(t, undefined, { maxImportBytes: bytes.length - 1 })
  const small = await startDaemon(t, undefined)
  const cases: Array<[string, Daemon, Buffer | (() => AsyncIterable<Buffer>), Parameters<typeof send>[2], number, string, RegExp]> = [
    ['PUT', small, bytes, { method: 'PUT' }, 405, 'UNSUPPORTED', /use POST/],
    ['another content type', small, bytes, { headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415, 'UNSUPPORTED', /takes Content-Type application\/vnd\.dproxy/],
    ['no token', small, bytes, { headers: { [ADMIN_TOKEN_HEADER]: 'wrong-wrong-wrong-wrong' } }, 403, 'DENIED', /needs the admin token/],
    ['an unknown query parameter', small, bytes, { path: `${IMPORT_PATH}?forse=1` }, 400, 'UNKNOWN', /unknown query parameter 'forse'/],
    ['a Content-Length over the bound', d, bytes, {}, 413, 'DENIED', /takes at most/],
    [
      'a chunked body past the bound',
      d,
      async function* () {
        yield bytes.subarray(0, 1000)
        yield bytes.subarray(1000)
      },
      {},
      413,
      'DENIED',
      /larger than/,
    ],
    ['a corrupt archive', small, flipped, {}, 400, 'ARCHIVE_INVALID', /blobs\/sha256\/[0-9a-f]{64}: blob sha256:[0-9a-f]{64}: content has digest/],
  ]
  for (const [what, daemon, body, opts, status, code, message] of cases) {
    const res = await send(daemon, typeof body === 'function' ? body() : body, opts)
    t.equal(res.status, status, what)
    t.match((res.body as ErrorBody).errors[0], { code, message }, what)
    t.equal((await daemon.store.stats()).tags, 0, `${what}: no tag recorded`)
  }
})

t.test('one import at a time: a second one is refused while the first runs', async (t) => {
  const { bytes } = await archive(t)
  const d = await startDaemon(t, undefined)
  const importStarted = whenCalled(d, 'import')
  const first = held(bytes, 4096)
  const running = send(d, first.body)
  await importStarted
  const second = await send(d, bytes)
  t.equal(second.status, 409)
  t.match((second.body as ErrorBody).errors[0], { code: 'CACHE_LOCKED', message: /another import/ })
  first.release()
  t.equal((await running).status, 200, 'the first one completes')
  t.equal((await send(d, bytes)).status, 200, 'and then another may run')
})

t.test('a clear sent during an import runs after it: no tag is left without the blobs it verified', async (t) => {
  const { bytes, image } = await archive(t)
  const d = await startDaemon(t, undefined)
  // Everything but the end blocks: every layer is verified and in the cache, no tag is recorded yet.
  const importing = held(bytes, bytes.length - 1024)
  const running = send(d, importing.body)
  await until(t, 'the layers are stored', async () => (await Promise.all(image.layers.map((b) => hasBlob(d.store, b)))).every(Boolean))
  const asked = whenCalled(d, 'clear')
  const clearing = request(`${d.url}/_dproxy/cache`, { method: 'DELETE', headers: { [ADMIN_TOKEN_HEADER]: d.adminToken } })
  await asked
  importing.release()
  t.equal((await running).status, 200)
  const cleared = (await (await clearing).body.json()) as EvictionSummary
  t.strictSame(cleared.images.map((i) => `${i.registry}/${i.repository}:${i.tag}`), ['docker.io/library/x:1'], 'the clear saw the imported image whole')
  t.equal(await d.store.getTag('docker.io', 'library/x', '1'), undefined, 'and cleared its tag with its blobs')
})

/**
 * Sends a request whose `Content-Length`-byte body comes one byte at a time,
 * `everyMs` apart, until the daemon closes the connection or it is all sent.
 * Resolves with how many body bytes went out and whether the daemon closed first.
 */
async function trickle(d: Daemon, head: string, length: number, everyMs: number): Promise<{ sent: number; cut: boolean }> {
  const socket = connect(d.port, '127.0.0.1')
  let closed = false
  socket.on('close', () => (closed = true))
  socket.on('error', () => {})
  socket.on('data', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write(`${head}Host: 127.0.0.1:${d.port}\r\nContent-Length: ${length}\r\n\r\n`)
  let sent = 0
  while (sent < length && !closed) {
    await sleep(everyMs)
    if (!closed) socket.write('x')
    sent++
  }
  const cut = closed
  socket.destroy()
  return { sent, cut }
}

t.test('an accepted import may take longer than the request timeout; other slow bodies are cut', async (t) => {
  const { bytes, image } = await archive(t)
  // The head's bound as short: it ends where the head does, so an accepted import's long body is not cut by it.
  const d = await startDaemon(t, undefined, { requestTimeoutMs: 200, headersTimeoutMs: 200 })
  async function* slowly() {
    const step = Math.ceil(bytes.length / 6)
    for (let off = 0; off < bytes.length; off += step) {
      yield bytes.subarray(off, off + step)
      await sleep(100)
    }
  }
  const res = await send(d, slowly())
  t.equal(res.status, 200, 'the import completes, its body having taken about three times the timeout')
  t.equal((await d.store.getTag('docker.io', 'library/x', '1'))?.digest, image.manifest.digest)

  const get = await trickle(d, 'GET /v2/ HTTP/1.1\r\n', 100, 20)
  t.ok(get.cut && get.sent < 100, `a registry GET with a trickling body is cut (after ${get.sent} of 100 bytes)`)
  const refused = await trickle(d, `POST ${IMPORT_PATH} HTTP/1.1\r\nContent-Type: ${ARCHIVE_CONTENT_TYPE}\r\n`, 100, 20)
  t.ok(refused.cut && refused.sent < 100, `so is an import without the admin token (after ${refused.sent} of 100 bytes)`)
})
