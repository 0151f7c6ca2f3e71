// Builds cache contents the way the daemon leaves them, through the real
// Store: blobs written and verified, manifests stored byte for byte (small
// JSON documents whose descriptors name real stored blobs), tag records and
// repository links; plus setting a file's atime / mtime to a chosen moment.

import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import type { Store } from '../../src/store/store.js'
import { parseDigest, type Digest } from '../../src/oci/digest.js'

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'

export function digestOf(bytes: Buffer | string): Digest {
  return parseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`)
}

export interface Descriptor {
  mediaType: string
  digest: string
  size: number
}

export async function putBlob(store: Store, bytes: Buffer | string): Promise<Descriptor> {
  const data = Buffer.from(bytes)
  const d = digestOf(data)
  const w = await store.createBlobWriter(d, data.length)
  await w.write(data)
  await w.commit()
  return { mediaType: 'application/octet-stream', digest: d.value, size: data.length }
}

/** Stores a manifest with `config` and `layers`; returns its descriptor. */
export async function putManifest(store: Store, config: Descriptor, layers: Descriptor[]): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }))
  const d = digestOf(bytes)
  await store.putManifest(d, bytes, OCI_MANIFEST)
  return { mediaType: OCI_MANIFEST, digest: d.value, size: bytes.length }
}

export async function putIndex(store: Store, children: Descriptor[]): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: children }))
  const d = digestOf(bytes)
  await store.putManifest(d, bytes, OCI_INDEX)
  return { mediaType: OCI_INDEX, digest: d.value, size: bytes.length }
}

/** Points `registry/repository:tag` at a manifest and links it, as a pull does. */
export async function tag(store: Store, registry: string, repository: string, name: string, m: Descriptor, checkedAt = 0): Promise<void> {
  await store.putTag(registry, repository, name, { digest: m.digest, mediaType: m.mediaType, size: m.size, checkedAt })
  await store.linkManifest(registry, repository, parseDigest(m.digest))
}

export async function link(store: Store, registry: string, repository: string, m: Descriptor): Promise<void> {
  await store.linkManifest(registry, repository, parseDigest(m.digest))
}

/** A small image: a config blob, the given layers (shared ones by descriptor) and its manifest. */
export async function putImage(store: Store, seed: string, layers: Array<Descriptor | number>): Promise<{ manifest: Descriptor; config: Descriptor; layers: Descriptor[] }> {
  const config = await putBlob(store, JSON.stringify({ architecture: 'amd64', os: 'linux', seed }))
  const ls: Descriptor[] = []
  for (const [i, l] of layers.entries()) ls.push(typeof l === 'number' ? await putBlob(store, Buffer.alloc(l, `${seed}-${i}`)) : l)
  return { manifest: await putManifest(store, config, ls), config, layers: ls }
}

/** Sets a manifest's times: `used` as atime, `stored` as mtime (ms since the epoch). */
export async function manifestTimes(store: Store, m: Descriptor, used: number, stored: number): Promise<void> {
  await fs.utimes(store.layout.manifest(parseDigest(m.digest)), used / 1000, stored / 1000)
}

export async function blobTimes(store: Store, b: Descriptor, used: number, stored: number): Promise<void> {
  await fs.utimes(store.blobPath(parseDigest(b.digest)), used / 1000, stored / 1000)
}

export async function hasBlob(store: Store, b: Descriptor): Promise<boolean> {
  return (await store.statBlob(parseDigest(b.digest))) !== undefined
}

export async function hasManifest(store: Store, m: Descriptor): Promise<boolean> {
  return store.hasManifest(parseDigest(m.digest))
}
