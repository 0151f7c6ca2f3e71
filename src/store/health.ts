// Whether the cache can be written, and why not. A full disk, a read-only
// mount or lost permissions must not take the proxy down: what is cached is
// still served and new content streams past the cache (proxy/). What the
// operator needs is the cause, once: one log line per cause however many
// requests hit it, and the reason in `dproxy status` until a write succeeds
// again. Such failures become CACHE_UNAVAILABLE errors, so nothing reports a
// full disk as "upstream unavailable: ENOSPC".

import type { Clock } from '../clock.js'
import { DproxyError } from '../errors.js'
import type { Logger } from '../log.js'

/** fs error codes that say "the disk", with the words status and logs use for them. */
const DISK_CONDITIONS: Readonly<Record<string, string>> = {
  ENOSPC: 'disk full',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large for the disk',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EIO: 'I/O error',
}

export interface DiskFailure {
  /** `disk full (ENOSPC)` */
  reason: string
  /** ms since epoch of the first failure since the cache was last writable. */
  since: number
}

/** The words for an fs error that is a disk condition, `disk full (ENOSPC)`; undefined for any other error. */
export function diskCondition(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null)?.code
  const words = code === undefined ? undefined : DISK_CONDITIONS[code]
  return words === undefined ? undefined : `${words} (${code})`
}

export class DiskHealth {
  private current: DiskFailure | undefined
  private readonly logged = new Set<string>()

  constructor(
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** Why the cache is not writable; undefined while it is. */
  get failure(): DiskFailure | undefined {
    return this.current
  }

  /**
   * Records a failed write. Returns the error to throw: CACHE_UNAVAILABLE for
   * a disk condition, anything else unchanged. `what` names the thing (no path:
   * the message can reach a client); `path` goes to the log only.
   */
  writeFailed(err: unknown, what: string, path: string): unknown {
    const reason = diskCondition(err)
    if (reason === undefined) return err
    this.current ??= { reason, since: this.clock.now() }
    if (!this.logged.has(reason)) {
      this.logged.add(reason)
      this.log.warn(`cache not writable: ${reason} at ${path}; serving what is cached, new content is not kept until this is fixed`)
    }
    return new DproxyError('CACHE_UNAVAILABLE', `cache ${reason}: cannot store ${what}`, { cause: err })
  }

  /** Turns a failed read into CACHE_UNAVAILABLE when it is a disk condition. */
  readFailed(err: unknown, what: string): unknown {
    const reason = diskCondition(err)
    return reason === undefined ? err : new DproxyError('CACHE_UNAVAILABLE', `cache ${reason}: cannot read ${what}`, { cause: err })
  }

  /** A write of data went through: the cache is writable (again). */
  writeSucceeded(): void {
    if (this.current === undefined) return
    this.log.info(`cache writable again (was: ${this.current.reason})`)
    this.current = undefined
    this.logged.clear()
  }
}
