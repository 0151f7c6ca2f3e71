// The one description of what dproxy keeps on disk. Every path the store
// touches is built by a function in this file, and every path found by
// walking the tree is recognised here too (what a file under repositories/
// stands for), so the tree below is the whole truth about the cache
// directory and its names (`_tags`, `_manifests`) are written nowhere else.
//
//   <cacheDir>/
//     layout.json                         {"version": 2}; written when the cache is created, checked
//                                         on open, raised by migrations (see LAYOUT_VERSION)
//     daemon.json                         the running daemon's lock: {pid, startedAt, listen,
//                                         url, version, logFile?}, created exclusively when it
//                                         starts and removed when it stops; a file whose pid is
//                                         dead is stale and taken over (daemon/lifecycle.ts).
//     daemon.json.takeover                short-lived guard held while removing a stale daemon.json
//     daemon.json.<pid>.tmp               daemon.json being rewritten (renamed over it)
//     cache.lock                          {"pid": N}: held while a CLI command (`dproxy cache clear`,
//                                         `prune`) changes the cache with no daemon running; created
//                                         with 'wx', taken over when its pid is dead (store/lock.ts)
//     blobs/<alg>/<hh>/<hex>              blob bytes exactly as upstream sent them, verified
//                                         against <alg>:<hex> before they were renamed here.
//                                         The file's atime is the last time a client was
//                                         served it (set explicitly, so noatime mounts don't
//                                         matter); eviction reads it.
//     manifests/<alg>/<hh>/<hex>          manifest bytes verbatim (never re-serialised); the
//                                         digest of the file is the name. atime as for blobs.
//     manifests/<alg>/<hh>/<hex>.type     the Content-Type upstream served it with, one line.
//                                         Written before the bytes, so a manifest file that
//                                         exists always has its type.
//     repositories/<registry>/<repo...>/
//       _tags/<tagfile>                   JSON {digest, mediaType, size, checkedAt}: what the
//                                         tag pointed at when upstream was last asked, and when.
//                                         <tagfile> is the tag with every upper-case letter
//                                         written as `!` and the letter in lower case (`V1` ->
//                                         `!v1`, `latest` -> `latest`): tags are case-sensitive
//                                         but macOS and Windows file systems are not, and `!`
//                                         never occurs in a tag, so no two tags share a file.
//       _manifests/<alg>/<hex>            empty marker: this repository references that manifest
//                                         (for listing images and clearing one image's content).
//                                         These markers are also what decides which blobs the
//                                         repository is served (links.ts): those its linked
//                                         manifests name (an index's children too, and their
//                                         blobs when cached), derived in memory on first use;
//                                         no other file records it, so a cache from before
//                                         that rule serves its images unchanged. What upstream
//                                         confirmed beyond them is kept in memory only.
//     tmp/<pid>-<what>-<random>           downloads in progress and files being written, named
//                                         by the pid of the process writing them. Readers may
//                                         follow a file here while it grows; it is renamed into
//                                         blobs/, manifests/ or repositories/ only once complete
//                                         (blobs: verified), and removed on failure. A file whose
//                                         pid is not a live process was left by a crash (kill -9,
//                                         power loss): the daemon removes those when it starts,
//                                         after taking daemon.json (so no other daemon writes
//                                         here), `cache clear` and `prune` remove them, and
//                                         `status` counts their bytes.
//
// Version 1 named tag files by the tag itself; a daemon opening such a cache
// renames those files and raises the version once it holds daemon.json
// (Store.open with `migrate`). Until then, readers (`status`, `cache ls`)
// use the names of the version they find.
//
// <hh> is the first two hex digits, to keep directories small. <registry> is the
// canonical registry host, URI-encoded (`localhost%3A5000`). Repository
// components match [a-z0-9]+([._-]|__)..., so they can never be `_tags`,
// `_manifests`, `.` or `..`, and names are validated before they get here.
//
// Access: the cache holds layers of private images pulled with `dproxy login`
// credentials, so nothing in it is for other local users. The cache dir is
// 0700 (created so; a looser one, left by an older dproxy or made by hand, is
// tightened when the store opens, with a one-line notice), and the store
// creates directories 0700 and files 0600 below it. The dir's mode alone
// already keeps everything below it unreachable; the modes of what is inside
// keep it so when the tree is copied or moved elsewhere.
//
// Several processes may use one cache dir (the daemon and the CLI): every write
// is a rename of a complete file, and readers open a file before they use it,
// so a concurrent delete never hands a reader a partial file (POSIX keeps an
// open file readable after unlink).

import { randomBytes } from 'node:crypto'
import { join, relative, sep } from 'node:path'
import type { Digest } from '../oci/digest.js'

/** The directory of a repository's tag files, and of its manifest links. */
const TAGS = '_tags'
const LINKS = '_manifests'

/** What a file under repositories/ stands for (Layout.repositoryFile). */
export type RepositoryFile =
  | {
      kind: 'tag'
      registry: string
      repository: string
      /** The file's name as it is on disk. */
      file: string
      /** The tag it stands for; undefined for a name this layout version never writes. */
      tag: string | undefined
    }
  | {
      kind: 'link'
      registry: string
      repository: string
      /** `<alg>:<hex>` from the path, not validated. */
      digest: string
    }

/** 2: case-safe tag file names. */
export const LAYOUT_VERSION = 2
/** Modes of what the store creates (before the umask, which can only tighten them). */
export const DIR_MODE = 0o700
export const FILE_MODE = 0o600

export class Layout {
  /** The version of the tree on disk, which decides the tag file names; the store sets it when it opens. */
  version: number = LAYOUT_VERSION

  constructor(readonly root: string) {}

  get versionFile(): string {
    return join(this.root, 'layout.json')
  }

  get cacheLock(): string {
    return join(this.root, 'cache.lock')
  }

  get daemonFile(): string {
    return join(this.root, 'daemon.json')
  }

  get blobsDir(): string {
    return join(this.root, 'blobs')
  }

  get manifestsDir(): string {
    return join(this.root, 'manifests')
  }

  get repositoriesDir(): string {
    return join(this.root, 'repositories')
  }

  get tmpDir(): string {
    return join(this.root, 'tmp')
  }

  blob(d: Digest): string {
    return join(this.root, 'blobs', d.algorithm, d.hex.slice(0, 2), d.hex)
  }

  manifest(d: Digest): string {
    return join(this.root, 'manifests', d.algorithm, d.hex.slice(0, 2), d.hex)
  }

  manifestType(d: Digest): string {
    return `${this.manifest(d)}.type`
  }

  repository(registry: string, repository: string): string {
    return join(this.root, 'repositories', encodeURIComponent(registry), ...repository.split('/'))
  }

  tagsDir(registry: string, repository: string): string {
    return join(this.repository(registry, repository), TAGS)
  }

  tag(registry: string, repository: string, tag: string): string {
    return join(this.tagsDir(registry, repository), this.version < 2 ? tag : tagFileName(tag))
  }

  /** The tag a file in a _tags directory stands for; undefined for a name this version never writes. */
  tagOfFile(name: string): string | undefined {
    if (this.version < 2) return name
    return /[A-Z]|![^a-z]|!$/.test(name) ? undefined : name.replace(/!([a-z])/g, (_, c: string) => c.toUpperCase())
  }

  /** A fresh name under tmp/ for a file this process writes; `label` says what it is to a human looking. */
  tempFile(label = 'w'): string {
    return join(this.tmpDir, `${process.pid}-${label}-${randomBytes(6).toString('hex')}`)
  }

  manifestLink(registry: string, repository: string, d: Digest): string {
    return join(this.manifestLinksDir(registry, repository), d.algorithm, d.hex)
  }

  /** The directory of a repository's manifest links (`<alg>/<hex>` below it). */
  manifestLinksDir(registry: string, repository: string): string {
    return join(this.repository(registry, repository), LINKS)
  }

  /**
   * What the file at `path` (under repositories/) stands for: a tag file
   * (repositories/<registry>/<repo...>/_tags/<tagfile>), a manifest link
   * (.../_manifests/<alg>/<hex>), or undefined for anything else.
   */
  repositoryFile(path: string): RepositoryFile | undefined {
    const parts = relative(this.repositoriesDir, path).split(sep)
    let registry: string
    try {
      registry = decodeURIComponent(parts[0] ?? '')
    } catch {
      return undefined
    }
    const t = parts.indexOf(TAGS)
    if (t > 1 && t === parts.length - 2) {
      const file = parts[t + 1]!
      return { kind: 'tag', registry, repository: parts.slice(1, t).join('/'), file, tag: this.tagOfFile(file) }
    }
    const m = parts.indexOf(LINKS)
    if (m > 1 && m === parts.length - 3) {
      return { kind: 'link', registry, repository: parts.slice(1, m).join('/'), digest: `${parts[m + 1]}:${parts[m + 2]}` }
    }
    return undefined
  }
}

/** `V1` -> `!v1`: see the tree above. */
export function tagFileName(tag: string): string {
  return tag.replace(/[A-Z]/g, (c) => `!${c.toLowerCase()}`)
}

/** The pid a temp file name carries, or undefined for a name without one (written by an older dproxy). */
export function tempFileOwner(name: string): number | undefined {
  const m = /^([1-9]\d{0,9})-/.exec(name)
  return m ? Number(m[1]) : undefined
}
