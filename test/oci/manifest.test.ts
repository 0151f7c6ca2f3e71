// The one manifest parser, as tables: every format the cache holds (Docker
// schema 2 and its list, OCI manifest and index, artifact manifests, schema 1),
// strict reading (warming) and lenient reading (listing the cache, archives),
// and the bounds a hostile manifest runs into.

import t from 'tap'
import { digestOf } from '../../src/oci/digest.js'
import { blobsOf, MANIFEST_SIZE_LIMIT, MAX_DESCRIPTORS, parseManifest, referencedDigests, type Manifest } from '../../src/oci/manifest.js'
import { DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST } from '../../src/oci/media-types.js'

const d1 = digestOf(Buffer.from('1'))
const d2 = digestOf(Buffer.from('2'))
const d3 = digestOf(Buffer.from('3'))
const json = (doc: unknown) => Buffer.from(JSON.stringify(doc))

/** The parse with digests as strings, so a table can say what it expects. */
function shape(m: Manifest) {
  const desc = (d: Manifest['manifests'][number]) => ({ ...d, digest: d.digest.value })
  return {
    mediaType: m.mediaType,
    index: m.index,
    manifests: m.manifests.map(desc),
    ...(m.config ? { config: desc(m.config) } : {}),
    layers: m.layers.map(desc),
    ...(m.subject ? { subject: desc(m.subject) } : {}),
  }
}

t.test('every format: children with platforms, config, layers, artifact blobs, schema 1, subject', async (t) => {
  const cases: Array<[string, unknown, string | undefined, object]> = [
    [
      'Docker schema 2',
      { schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: { mediaType: DOCKER_CONFIG, digest: d1, size: 10 }, layers: [{ mediaType: DOCKER_LAYER_GZIP, digest: d2, size: 20 }] },
      undefined,
      {
        mediaType: DOCKER_MANIFEST,
        index: false,
        manifests: [],
        config: { digest: d1, size: 10, mediaType: DOCKER_CONFIG },
        layers: [{ digest: d2, size: 20, mediaType: DOCKER_LAYER_GZIP }],
      },
    ],
    [
      'Docker manifest list, platforms with and without a variant',
      {
        schemaVersion: 2,
        mediaType: DOCKER_MANIFEST_LIST,
        manifests: [
          { mediaType: DOCKER_MANIFEST, digest: d1, size: 5, platform: { os: 'linux', architecture: 'amd64' } },
          { mediaType: DOCKER_MANIFEST, digest: d2, size: 6, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        ],
      },
      undefined,
      {
        mediaType: DOCKER_MANIFEST_LIST,
        index: true,
        manifests: [
          { digest: d1, size: 5, mediaType: DOCKER_MANIFEST, platform: { os: 'linux', architecture: 'amd64' } },
          { digest: d2, size: 6, mediaType: DOCKER_MANIFEST, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        ],
        layers: [],
      },
    ],
    [
      'OCI manifest without a mediaType field: the served type',
      { schemaVersion: 2, config: { digest: d1, size: 1 }, layers: [{ digest: d2, size: 2 }, { digest: d3, size: 3 }] },
      OCI_MANIFEST,
      { mediaType: OCI_MANIFEST, index: false, manifests: [], config: { digest: d1, size: 1 }, layers: [{ digest: d2, size: 2 }, { digest: d3, size: 3 }] },
    ],
    [
      'OCI index served as such, an attestation child (unknown/unknown)',
      { schemaVersion: 2, manifests: [{ digest: d1, size: 1, platform: { os: 'unknown', architecture: 'unknown' } }] },
      OCI_INDEX,
      { mediaType: OCI_INDEX, index: true, manifests: [{ digest: d1, size: 1, platform: { os: 'unknown', architecture: 'unknown' } }], layers: [] },
    ],
    [
      'index by its manifests[] alone (served with another type)',
      { manifests: [{ digest: d1, size: 1 }] },
      'application/json',
      { mediaType: 'application/json', index: true, manifests: [{ digest: d1, size: 1 }], layers: [] },
    ],
    [
      'OCI artifact manifest: blobs[], and a subject',
      { mediaType: 'application/vnd.oci.artifact.manifest.v1+json', blobs: [{ digest: d1, size: 7 }], subject: { digest: d3, size: 9, mediaType: OCI_MANIFEST } },
      undefined,
      {
        mediaType: 'application/vnd.oci.artifact.manifest.v1+json',
        index: false,
        manifests: [],
        layers: [{ digest: d1, size: 7 }],
        subject: { digest: d3, size: 9, mediaType: OCI_MANIFEST },
      },
    ],
    [
      'Docker schema 1: fsLayers[].blobSum, no sizes',
      { schemaVersion: 1, fsLayers: [{ blobSum: d1 }, { blobSum: d2 }] },
      'application/vnd.docker.distribution.manifest.v1+prettyjws',
      { mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws', index: false, manifests: [], layers: [{ digest: d1, size: 0 }, { digest: d2, size: 0 }] },
    ],
    [
      'sizes that are not whole non-negative numbers read as 0',
      { config: { digest: d1, size: -1 }, layers: [{ digest: d2, size: 1.5 }, { digest: d3, size: '9' }] },
      undefined,
      { mediaType: '', index: false, manifests: [], config: { digest: d1, size: 0 }, layers: [{ digest: d2, size: 0 }, { digest: d3, size: 0 }] },
    ],
  ]
  for (const [name, doc, served, want] of cases) {
    t.strictSame(shape(parseManifest(json(doc), served !== undefined ? { mediaType: served, strict: true } : { strict: true })), want, name)
  }
})

t.test('blobsOf: the config first, then the layers', async (t) => {
  const m = parseManifest(json({ config: { digest: d1 }, layers: [{ digest: d2 }], blobs: [{ digest: d3 }] }))
  t.strictSame(blobsOf(m).map((d) => d.digest.value), [d1, d2, d3])
  t.strictSame(blobsOf(parseManifest(json({ layers: [{ digest: d2 }] }))).map((d) => d.digest.value), [d2])
})

t.test('strict: a bad descriptor fails the manifest; lenient: it names nothing', async (t) => {
  const cases: Array<[string, unknown, { code: string; message?: RegExp }, object]> = [
    ['a layer without a digest', { layers: [{ size: 1 }, { digest: d2 }] }, { code: 'MANIFEST_INVALID', message: /has no digest/ }, { manifests: [], layers: [d2], config: null }],
    ['a child that is not an object', { manifests: [{ digest: d1 }, 7] }, { code: 'MANIFEST_INVALID', message: /has no digest/ }, { manifests: [d1], layers: [], config: null }],
    ['a path for a digest', { manifests: [{ digest: '../../etc' }] }, { code: 'DIGEST_INVALID' }, { manifests: [], layers: [], config: null }],
    ['a short digest', { config: { digest: 'sha256:short' } }, { code: 'DIGEST_INVALID' }, { manifests: [], layers: [], config: null }],
    ['a null config', { config: null, layers: [{ digest: d1 }] }, { code: 'MANIFEST_INVALID' }, { manifests: [], layers: [d1], config: null }],
  ]
  for (const [name, doc, error, lenient] of cases) {
    t.throws(() => parseManifest(json(doc), { strict: true }), error, `strict: ${name}`)
    const m = parseManifest(json(doc))
    const got = {
      manifests: m.manifests.map((d) => d.digest.value),
      layers: m.layers.map((d) => d.digest.value),
      config: m.config?.digest.value ?? null,
    }
    t.strictSame(got, lenient, `lenient: ${name}`)
  }
})

t.test('a platform whose fields do not look like platform names is no platform', async (t) => {
  const child = (platform: unknown) => parseManifest(json({ manifests: [{ digest: d1, platform }] })).manifests[0]!.platform
  t.strictSame(child({ os: 'linux', architecture: 'arm', variant: 'v7', 'os.version': '10' }), { os: 'linux', architecture: 'arm', variant: 'v7' })
  t.equal(child({ os: 'linux' }), undefined, 'no architecture')
  t.equal(child({ os: 'linux', architecture: '\u001b[31mred' }), undefined, 'a terminal escape')
  t.equal(child({ os: 'x'.repeat(65), architecture: 'amd64' }), undefined, 'too long')
  t.strictSame(child({ os: 'linux', architecture: 'amd64', variant: 7 }), { os: 'linux', architecture: 'amd64' }, 'a variant that is no string is left out')
  t.equal(child('linux/amd64'), undefined, 'a string')
})

t.test('bounds: size, descriptor count, and documents that are no manifest', async (t) => {
  const big = Buffer.alloc(MANIFEST_SIZE_LIMIT + 1, 0x20)
  t.throws(() => parseManifest(big), { code: 'MANIFEST_INVALID', message: /over the 8388608 byte limit/ })
  const many = json({ layers: Array.from({ length: MAX_DESCRIPTORS + 1 }, () => ({ digest: d1 })) })
  t.ok(many.length < MANIFEST_SIZE_LIMIT, 'within the size limit')
  t.throws(() => parseManifest(many), { code: 'MANIFEST_INVALID', message: /more than 10000 descriptors/ })
  t.equal(parseManifest(json({ layers: Array.from({ length: MAX_DESCRIPTORS }, () => ({ digest: d1 })) })).layers.length, MAX_DESCRIPTORS)
  for (const junk of ['not json', '[1,2]', 'null', '7', '"x"']) {
    t.throws(() => parseManifest(Buffer.from(junk)), { code: 'MANIFEST_INVALID' }, junk)
  }
  t.equal(parseManifest(json({ mediaType: 'not a media type' }), { mediaType: OCI_MANIFEST }).mediaType, OCI_MANIFEST, 'a malformed own type is not used')
})

t.test('referencedDigests: config, layers, manifests[], blobs[], schema1; junk names nothing', async (t) => {
  t.strictSame(referencedDigests(json({ config: { digest: d1 }, layers: [{ digest: d2 }, { digest: d2 }] })), {
    children: [],
    blobs: [d1, d2],
  })
  t.strictSame(referencedDigests(json({ manifests: [{ digest: d3 }, { digest: '../../etc' }, 7] })), {
    children: [d3],
    blobs: [],
  })
  t.strictSame(referencedDigests(json({ blobs: [{ digest: d1 }], fsLayers: [{ blobSum: d2 }] })).blobs, [d1, d2])
  t.strictSame(referencedDigests(Buffer.from('not json')), { children: [], blobs: [] })
  t.strictSame(referencedDigests(Buffer.from('[1,2]')), { children: [], blobs: [] })
  t.strictSame(referencedDigests(json({ config: { digest: 'sha256:short' } })).blobs, [])
  t.strictSame(referencedDigests(json({ subject: { digest: d1 }, layers: [{ digest: d2 }] })), { children: [], blobs: [d2] }, 'a subject is not part of the image')
})
