// The media types dproxy names itself. Manifests are asked for with all four
// manifest types at once (HEAD and GET alike): without the list and index types
// a registry down-converts a multi-arch image to one platform, and a HEAD and a
// GET with different Accept headers give digests that do not compare.

export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'

export const MANIFEST_MEDIA_TYPES = [DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX] as const

export const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json'
export const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip'

/** The two types whose descriptors are other manifests (one per platform). */
export function isIndexMediaType(mediaType: string): boolean {
  return mediaType === DOCKER_MANIFEST_LIST || mediaType === OCI_INDEX
}
