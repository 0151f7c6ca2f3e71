// Test helpers around a real Daemon: start one on an ephemeral loopback port
// with a t.testdir cache pointed at the upstream fixture, and pull images
// through it the way a client does (manifest, child manifests, every blob),
// verifying every digest on the way.

import { createHash } from 'node:crypto'
import { get as httpGet } from 'node:http'
import { request } from 'undici'
import { Daemon, type DaemonOptions } from '../../src/daemon/daemon.js'
import { ACCEPT_ALL_MANIFESTS, type FixtureImage } from '../fixtures/images.js'
import type { Upstream } from '../fixtures/upstream.js'
import type { Test } from 'tap'

type TapLike = Pick<Test, 'testdir' | 'teardown'>

export async function startDaemon(
  t: TapLike,
  up: Pick<Upstream, 'hubUrl' | 'registryUrl'> | undefined,
  options: Partial<DaemonOptions> = {},
): Promise<Daemon> {
  const daemon = await Daemon.start({
    hosts: ['127.0.0.1'],
    port: 0,
    cacheDir: options.cacheDir ?? t.testdir(),
    upstreams: up ? { 'docker.io': up.hubUrl, 'registry.test:5000': up.registryUrl } : {},
    timeouts: { connectMs: 2000, headersMs: 5000, bodyMs: 5000 },
    shutdownGraceMs: 1000,
    ...options,
  })
  t.teardown(() => daemon.stop(0))
  return daemon
}

export interface Fetched {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

export async function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Fetched> {
  const res = await request(url, { method: method as 'GET', headers })
  const body = Buffer.from(await res.body.arrayBuffer())
  return { status: res.statusCode, headers: res.headers, body }
}

export function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}

/**
 * Pulls `name:ref` through the daemon like a client: the manifest, for an
 * index every child manifest, and every blob. Throws on any status other than
 * 200 or any digest mismatch; returns the digests fetched.
 */
export async function pull(base: string, name: string, ref: string): Promise<{ manifest: Fetched; digests: string[] }> {
  const manifest = await get(`${base}/v2/${name}/manifests/${ref}`, { accept: ACCEPT_ALL_MANIFESTS })
  if (manifest.status !== 200) throw new Error(`GET manifest ${name}:${ref}: ${manifest.status} ${manifest.body}`)
  const digests: string[] = []
  const queue: Buffer[] = [manifest.body]
  while (queue.length > 0) {
    const doc = JSON.parse(queue.shift()!.toString()) as {
      manifests?: Array<{ digest: string }>
      config?: { digest: string }
      layers?: Array<{ digest: string }>
    }
    for (const child of doc.manifests ?? []) {
      const m = await get(`${base}/v2/${name}/manifests/${child.digest}`, { accept: ACCEPT_ALL_MANIFESTS })
      if (m.status !== 200 || sha256(m.body) !== child.digest) throw new Error(`child ${child.digest}: ${m.status}`)
      queue.push(m.body)
    }
    for (const blob of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) {
      const b = await get(`${base}/v2/${name}/blobs/${blob.digest}`)
      if (b.status !== 200) throw new Error(`blob ${blob.digest}: ${b.status} ${b.body.subarray(0, 200)}`)
      if (sha256(b.body) !== blob.digest) throw new Error(`blob ${blob.digest}: wrong content`)
      digests.push(blob.digest)
    }
  }
  return { manifest, digests }
}

/** The digests of every blob of a fixture image. */
export function blobDigests(image: FixtureImage): string[] {
  return image.blobs.map((b) => b.digest)
}

/**
 * Waits until the daemon has no download in progress. A client may have all
 * its bytes (verified) while the daemon still flushes and renames the file
 * into the cache; tests that inspect or change the cache wait for that.
 */
export async function settled(d: Daemon, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (d.blobs.inflight > 0) {
    if (Date.now() > until) throw new Error(`daemon still has ${d.blobs.inflight} downloads after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

export interface RawFetched extends Fetched {
  /** The whole message arrived (every Content-Length byte, or the terminating chunk); false for a cut connection. */
  complete: boolean
  /** Why the request failed before any response came. */
  error?: Error
}

/**
 * GET with node:http, which says whether the response was complete: a client
 * must be able to tell a cut connection from a short body, chunked or not.
 * Never rejects: a connection cut before the response is status 0.
 */
export function getRaw(url: string, headers: Record<string, string> = {}): Promise<RawFetched> {
  return new Promise((resolve, reject) => {
    let responded = false
    const req = httpGet(url, { headers }, (res) => {
      responded = true
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', () => {})
      res.on('close', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete }),
      )
    })
    // Cut before the response even began: a failure the client sees, like any other cut.
    req.on('error', (err) => (responded ? undefined : resolve({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error: err })))
  })
}

/** The OCI error code of a response, or undefined when its body is not an OCI error. */
export function codeOf(body: Buffer): string | undefined {
  try {
    return (JSON.parse(body.toString()) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code
  } catch {
    return undefined
  }
}

/**
 * Under repositories that lack it, a digest the cache holds (`cached`) and one
 * it never fetched (`notCached`) get the same refusal: status, and for a GET
 * the same code and words, so the answer does not tell what the cache holds.
 */
export async function refusedAlike(
  t: Test,
  base: string,
  route: 'blobs' | 'manifests',
  cached: string,
  notCached: string,
  headers: Record<string, string> = {},
): Promise<void> {
  for (const repository of ['private/secret', 'nobody/here']) {
    for (const method of ['GET', 'HEAD']) {
      const a = await get(`${base}/v2/${repository}/${route}/${cached}`, headers, method)
      const b = await get(`${base}/v2/${repository}/${route}/${notCached}`, headers, method)
      t.equal(a.status, b.status, `${method} ${repository}: the same status (${b.status})`)
      t.ok(a.status === 401 || a.status === 404, `${method} ${repository}: refused`)
      if (method === 'GET') {
        t.equal(codeOf(a.body), codeOf(b.body), `${method} ${repository}: the same code (${codeOf(b.body)})`)
        t.equal(a.body.toString().replaceAll(cached, 'X'), b.body.toString().replaceAll(notCached, 'X'), `${method} ${repository}: the same words`)
      }
    }
  }
}
