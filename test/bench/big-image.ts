// A 512 MiB image for the throughput and memory measurements. library/big:1
// (100 MiB) is too small to show a steady transfer rate or whether memory
// stays flat while a blob streams, so the bench builds a bigger one the way
// the fixtures build theirs (a ustar archive of AES-256-CTR bytes, which is
// deterministic and fast, as a plain-tar OCI layer) but never holds it in
// memory: the archive is written to a temp file while it is hashed, then PUT
// to the registry straight from that file. The same file is what the static
// baseline servers send, so both sides move identical bytes.

import { createCipheriv, createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { request } from 'undici'
import { MediaType, sha256, type FixtureBlob, type FixtureImage } from '../fixtures/images.js'
import { pushImage } from '../fixtures/registry.js'

/** The layer is exactly this long: one tar header, the file, two zero blocks. */
export const BIG_BLOB_BYTES = 512 * 1024 * 1024
const CHUNK = 1 << 20
const MTIME = 1_700_000_000
const FILE_IN_TAR = 'var/lib/dproxy-bench-512.bin'

export interface BigImage {
  repository: string
  tag: string
  layerDigest: string
  layerSize: number
  /** The layer's bytes on disk. */
  file: string
}

/** A ustar header for one regular file (format per POSIX pax/ustar; numbers are NUL-terminated octal). */
function tarHeader(path: string, size: number): Buffer {
  const h = Buffer.alloc(512)
  const octal = (value: number, offset: number, width: number) =>
    h.write(value.toString(8).padStart(width - 1, '0') + '\0', offset, width, 'ascii')
  h.write(path, 0, 100, 'utf8')
  octal(0o644, 100, 8)
  octal(0, 108, 8)
  octal(0, 116, 8)
  octal(size, 124, 12)
  octal(MTIME, 136, 12)
  h.write('0', 156, 'ascii')
  h.write('ustar\0' + '00', 257, 'ascii')
  h.write('root', 265, 'ascii')
  h.write('root', 297, 'ascii')
  // The checksum is summed with its own field counted as spaces.
  h.fill(' ', 148, 156)
  const sum = h.reduce((acc, b) => acc + b, 0)
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii')
  return h
}

/** Writes the layer to `file`; returns its digest. */
async function writeLayer(file: string): Promise<string> {
  const contentSize = BIG_BLOB_BYTES - 512 - 1024
  const hash = createHash('sha256')
  const key = createHash('sha256').update('dproxy-bench:big512').digest()
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  const zeros = Buffer.alloc(CHUNK)
  // Hashed on the way to the file, so the 512 MiB are generated and read once.
  function* chunks(): Generator<Buffer> {
    const hashed = (c: Buffer) => (hash.update(c), c)
    yield hashed(tarHeader(FILE_IN_TAR, contentSize))
    for (let left = contentSize; left > 0; left -= CHUNK) {
      yield hashed(cipher.update(zeros.subarray(0, Math.min(CHUNK, left))))
    }
    yield hashed(Buffer.alloc(1024))
  }
  await pipeline(Readable.from(chunks()), createWriteStream(file))
  return 'sha256:' + hash.digest('hex')
}

async function pushLayer(registryUrl: string, repository: string, file: string, digest: string): Promise<void> {
  const start = await request(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST' })
  await start.body.dump()
  const location = start.headers.location
  if (start.statusCode !== 202 || typeof location !== 'string') {
    throw new Error(`POST upload to ${repository}: ${start.statusCode}`)
  }
  const put = new URL(location, registryUrl)
  put.searchParams.set('digest', digest)
  const res = await request(put, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(BIG_BLOB_BYTES) },
    body: createReadStream(file, { highWaterMark: CHUNK }),
  })
  const body = await res.body.text()
  if (res.statusCode !== 201) throw new Error(`PUT blob ${digest}: ${res.statusCode} ${body.slice(0, 300)}`)
}

/** Builds `library/big512:1` into `file` and pushes it into the plain registry at `registryUrl`. */
export async function pushBigImage(registryUrl: string, file: string): Promise<BigImage> {
  const repository = 'library/big512'
  const tag = '1'
  const layerDigest = await writeLayer(file)
  await pushLayer(registryUrl, repository, file, layerDigest)

  const configBytes = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: new Date(MTIME * 1000).toISOString(),
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: [layerDigest] },
    }),
  )
  const config: FixtureBlob = {
    digest: sha256(configBytes),
    size: configBytes.length,
    mediaType: MediaType.ociConfig,
    kind: 'config',
    data: configBytes,
  }
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: config.mediaType, size: config.size, digest: config.digest },
      layers: [{ mediaType: MediaType.ociLayer, size: BIG_BLOB_BYTES, digest: layerDigest }],
    }),
  )
  // pushImage sends the blobs it is given; the layer is already there, so it is given only the config.
  const image: FixtureImage = {
    repository,
    tag,
    ref: `${repository}:${tag}`,
    digest: sha256(manifest),
    mediaType: MediaType.ociManifest,
    manifest,
    size: manifest.length,
    blobs: [config],
    children: [],
  }
  await pushImage(registryUrl, image)
  return { repository, tag, layerDigest, layerSize: BIG_BLOB_BYTES, file }
}
