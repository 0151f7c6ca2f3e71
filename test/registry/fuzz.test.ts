// Fuzzing the inbound API: a few thousand requests, generated from a fixed
// seed, with mutated targets, methods, headers and ranges, sent over raw
// sockets (so that requests undici would refuse to send get through) to a
// real daemon in front of the upstream fixture. Whatever a client sends,
// dproxy must not crash, must not answer 5xx for the client's own mistake,
// and every error it writes is the OCI JSON envelope, small, with no internal
// detail. A failure prints the request that caused it; the seed makes it
// reproducible.

import { connect } from 'node:net'
import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { get, pull, settled, startDaemon } from '../helpers/daemon.js'
import type { Logger } from '../../src/log.js'

const SEED = 0x5eed_d9
const REQUESTS = 3000
const WORKERS = 8
/** An error body larger than this quotes too much of what the client sent. */
const ERROR_BODY_LIMIT = 2048

/** xorshift32: small, fast, and the same sequence on every machine. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x / 2 ** 32
  }
}

interface RawRequest {
  method: string
  target: string
  version: string
  headers: Array<[string, string]>
  body: string
}

interface RawResponse {
  status: number
  headers: Record<string, string>
  body: Buffer
}

/** Only these registries are mapped to the fixture: any other name would make dproxy resolve a host. */
const MAPPED = new Set(['docker.io', 'registry.test:5000'])

/**
 * True when the request cannot make dproxy contact anything but the fixture:
 * no name component and no `ns` that looks like another registry host.
 */
function staysLocal(target: string): boolean {
  const q = target.indexOf('?')
  const path = q < 0 ? target : target.slice(0, q)
  const components = path.split('/').slice(0, -1)
  for (const c of components) {
    if (MAPPED.has(c)) continue
    if (/[.:]/.test(c) || /localhost/i.test(c)) return false
  }
  if (q >= 0) {
    for (const ns of new URLSearchParams(target.slice(q + 1)).getAll('ns')) if (!MAPPED.has(ns)) return false
  }
  return true
}

function generator(seed: number, seeds: string[], blobDigest: string) {
  const rnd = prng(seed)
  const int = (n: number) => Math.floor(rnd() * n)
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!
  const tokens = ['/', '//', '\\', '%', '%2e', '%2F', '..', '.', '?', '&', '#', ';', ':', '@', '~', '*', 'A', 'é', '\u2028',
    '%00', 'sha256:', 'ns=', '?ns=docker.io', '?n=-1', '?n=99999999999', '?last=', 'tags/list', 'manifests', 'blobs',
    'dependency_proxy/containers/', '_tags', 'x'.repeat(300)]
  const whole = ['/', '//', '///', '/\\x', '\\', '*', '/v2', '/v2//', '/v2/./x/manifests/a', '/v2/%2e%2e/x/blobs/a',
    '/v2/a/manifests/' + 'V'.repeat(200), '/v2/' + 'a/'.repeat(300) + 'manifests/x', '/v2/a/blobs/sha256:' + 'f'.repeat(64),
    '/v2/a/blobs/sha512:' + 'f'.repeat(64), 'http://127.0.0.1/v2/', '/v2/library/alpine/blobs/' + blobDigest + '/x', '/?',
    '/v2/?ns=', '/v2/a/tags/list?n=0&n=1', '/_dproxy/', '/_dproxy/status', '/_dproxy/status/../../v2/']
  const methods = ['GET', 'GET', 'GET', 'HEAD', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'get', 'FOO',
    'G ET', '']
  const ranges = ['bytes=0-0', 'bytes=0-', 'bytes=-1', 'bytes=5-1', 'bytes=999999999-', 'bytes=-0', 'bytes=0-1,2-3',
    'items=0-1', 'bytes=' + '9'.repeat(5000) + '-', 'bytes=99999999999999999999-', 'bytes=1e3-', 'bytes= 1-2', '',
    'bytes=-99999999999999999999999', 'bytes=--1', 'bytes=0x10-']
  const accepts = ['*/*', 'application/vnd.oci.image.index.v1+json', 'text/html', '', 'x'.repeat(3000), 'a/b;q=abc']

  const mutate = (s: string): string => {
    let out = s
    for (let i = int(4); i > 0; i--) {
      const at = int(out.length + 1)
      switch (int(4)) {
        case 0:
          out = out.slice(0, at) + pick(tokens) + out.slice(at)
          break
        case 1:
          out = out.slice(0, at) + out.slice(at + 1 + int(8))
          break
        case 2:
          out = out.slice(0, at) + out.slice(at, at + int(12)) + out.slice(at)
          break
        default:
          out = out.slice(0, at) + String.fromCharCode(0x21 + int(0x5e)) + out.slice(at)
      }
    }
    return out
  }

  const target = (): string => {
    for (let tries = 0; tries < 20; tries++) {
      const r = rnd()
      const candidate = r < 0.15 ? pick(whole) : r < 0.35 ? pick(seeds) : mutate(pick(seeds))
      if (staysLocal(candidate)) return candidate
    }
    return '/v2/'
  }

  return (): RawRequest => {
    const method = pick(methods)
    const headers: Array<[string, string]> = []
    if (rnd() < 0.9) headers.push(['host', rnd() < 0.9 ? '127.0.0.1' : pick(['', 'evil.example', 'x'.repeat(500), '[::1]'])])
    if (rnd() < 0.5) headers.push(['range', pick(ranges)])
    if (rnd() < 0.3) headers.push(['accept', pick(accepts)])
    if (rnd() < 0.1) headers.push(['if-none-match', pick(['"x"', '*', '"sha256:' + '0'.repeat(64) + '"'])])
    if (rnd() < 0.05) headers.push(['authorization', pick(['Bearer x', 'Basic !!!', 'Basic ' + 'A'.repeat(2000)])])
    if (rnd() < 0.05) headers.push(['x-fuzz', 'y'.repeat(int(2) === 0 ? 20_000 : 200)])
    if (rnd() < 0.03) headers.push(['bad header', 'v'])
    if (rnd() < 0.03) headers.push(['x-ctl', 'a\u0001b'])
    if (rnd() < 0.03) headers.push(['expect', '100-continue'])
    let body = ''
    if (rnd() < 0.1) {
      body = 'z'.repeat(int(100))
      if (rnd() < 0.5) {
        headers.push(['transfer-encoding', 'chunked'])
        body = `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`
      } else headers.push(['content-length', String(body.length)])
    }
    headers.push(['connection', 'close'])
    const version = rnd() < 0.95 ? 'HTTP/1.1' : pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/9', 'http/1.1'])
    return { method, target: target(), version, headers, body }
  }
}

function describe(req: RawRequest): string {
  const cut = (s: string) => (s.length > 120 ? `${s.slice(0, 117)}...` : s)
  return `${req.method} ${cut(JSON.stringify(req.target))} ${req.version} ${cut(JSON.stringify(req.headers))}`
}

/** Sends one request as raw bytes and reads until the server closes; undefined when it closed without a response. */
function send(port: number, req: RawRequest): Promise<RawResponse | undefined> {
  const head = `${req.method} ${req.target} ${req.version}\r\n` + req.headers.map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n'
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error('no answer within 10 s'))
    }, 10_000)
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => {})
    socket.on('close', () => {
      clearTimeout(timer)
      resolve(parse(Buffer.concat(chunks), req.method))
    })
    socket.write(head + req.body)
  })
}

function parse(raw: Buffer, method: string): RawResponse | undefined {
  let rest = raw
  for (;;) {
    const end = rest.indexOf('\r\n\r\n')
    if (end < 0) return undefined
    const lines = rest.subarray(0, end).toString('latin1').split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')
    if (!m) return undefined
    const status = Number(m[1])
    const headers: Record<string, string> = {}
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    rest = rest.subarray(end + 4)
    if (status >= 100 && status < 200) continue
    const length = Number(headers['content-length'] ?? rest.length)
    return { status, headers, body: method.toUpperCase() === 'HEAD' ? Buffer.alloc(0) : rest.subarray(0, length) }
  }
}

/** Why a response breaks the rules, or undefined when it keeps them. */
function violation(req: RawRequest, res: RawResponse | undefined): string | undefined {
  if (!res) return 'closed without an answer'
  if (res.status >= 500) return `answered ${res.status}: ${res.body.subarray(0, 300)}`
  if (res.status < 400 || req.method.toUpperCase() === 'HEAD') return undefined
  if (!/^application\/json/.test(res.headers['content-type'] ?? '')) return `error ${res.status} without a JSON content type`
  if (res.body.length > ERROR_BODY_LIMIT) return `error body of ${res.body.length} bytes`
  let doc: unknown
  try {
    doc = JSON.parse(res.body.toString('utf8'))
  } catch {
    return `error ${res.status} body is not JSON: ${res.body.subarray(0, 200)}`
  }
  const first = (doc as { errors?: Array<{ code?: unknown; message?: unknown }> }).errors?.[0]
  if (typeof first?.code !== 'string' || typeof first.message !== 'string') {
    return `error ${res.status} body is not an OCI error: ${res.body.subarray(0, 200)}`
  }
  return undefined
}

t.test(`${REQUESTS} fuzzed requests: no crash, no 5xx, every error in OCI JSON`, async (t) => {
  const up = await startUpstream({ hub: { unlimited: true } })
  t.teardown(() => up.stop())
  const errors: string[] = []
  const log: Logger = { info() {}, warn() {}, error: (m) => errors.push(m) }
  const d = await startDaemon(t, up, { log })
  const { alpine, redis } = up.images
  const layer = alpine.blobs[0]!.digest
  const seeds = [
    '/v2/',
    '/v2/alpine/manifests/latest',
    `/v2/library/alpine/manifests/${alpine.digest}`,
    `/v2/library/alpine/blobs/${layer}`,
    `/v2/bitnami/redis/blobs/${redis.blobs[0]!.digest}`,
    '/v2/library/alpine/tags/list',
    '/v2/library/alpine/tags/list?n=1&last=a',
    '/v2/library/alpine/manifests/latest?ns=docker.io',
    '/v2/registry.test:5000/library/alpine/manifests/latest',
    '/v2/group/dependency_proxy/containers/alpine/manifests/latest',
    '/v2/nosuch/repo/manifests/v1',
    `/v2/nosuch/repo/manifests/${alpine.digest}`,
    `/v2/library/alpine/blobs/sha256:${'0'.repeat(64)}`,
  ]
  const next = generator(SEED, seeds, layer)
  const requests = Array.from({ length: REQUESTS }, next)
  const failures: string[] = []
  const statuses = new Map<number, number>()
  let i = 0
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (i < requests.length) {
        const req = requests[i++]!
        const res = await send(d.port, req).catch((err: Error) => {
          failures.push(`${describe(req)}: ${err.message}`)
          return null
        })
        if (res === null) continue
        if (res) statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
        const why = violation(req, res)
        if (why) failures.push(`${describe(req)}: ${why}`)
      }
    }),
  )
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}`)
  t.strictSame(failures.slice(0, 20), [], `no violations (${failures.length} in all, seed ${SEED})`)
  t.strictSame(errors.slice(0, 5), [], 'nothing logged as an error')
  t.ok([...statuses.keys()].some((s) => s >= 400), 'the fuzzer did provoke errors')

  const v2 = await get(`${d.url}/v2/`)
  t.equal(v2.status, 200, 'the daemon still answers')
  await pull(d.url, 'alpine', 'latest')
  await settled(d)
})

t.test('targets new URL() rejects are a client error, not a 500', async (t) => {
  const d = await startDaemon(t, undefined)
  for (const method of ['GET', 'HEAD', 'DELETE']) {
    for (const target of ['//', '///', '/\\x', '//v2/']) {
      const req: RawRequest = { method, target, version: 'HTTP/1.1', headers: [['host', '127.0.0.1'], ['connection', 'close']], body: '' }
      const res = await send(d.port, req)
      t.ok(res && res.status >= 400 && res.status < 500, `${method} ${target}: ${res?.status}`)
      t.equal(violation(req, res), undefined, `${method} ${target}: OCI JSON`)
    }
  }
})

t.test('a request the HTTP parser refuses still gets an OCI error', async (t) => {
  const d = await startDaemon(t, undefined)
  const cases: Array<[RawRequest, number]> = [
    [{ method: 'FOO', target: '/v2/', version: 'HTTP/1.1', headers: [['host', 'x']], body: '' }, 400],
    [{ method: 'GET', target: '/v2/', version: 'HTTP/1.1', headers: [['bad header', 'x']], body: '' }, 400],
    [{ method: 'GET', target: '/v2/', version: 'HTTP/1.1', headers: [['x', 'y'.repeat(20_000)]], body: '' }, 431],
    [{ method: 'GET', target: '/v2/', version: 'HTTP/1.1', headers: [], body: '' }, 200],
  ]
  for (const [req, status] of cases) {
    const res = await send(d.port, { ...req, headers: [...req.headers, ['connection', 'close']] })
    t.equal(res?.status, status, describe(req))
    t.equal(violation(req, res), undefined, describe(req))
  }
})
