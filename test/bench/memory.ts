// Memory of another process, read from /proc/<pid>/status. VmHWM is the
// kernel's own peak of resident memory, so it cannot miss a short spike; the
// sampler (VmRSS every 20 ms) shows the same from outside and still works where
// the peak cannot be reset. Writing "5" to /proc/<pid>/clear_refs resets VmHWM
// to the current RSS (Linux 4.0+, needs to own the process or be root), which
// lets one daemon be measured in several phases.

import { readFileSync, writeFileSync } from 'node:fs'

export interface MemoryReading {
  /** Resident set size now, in bytes. */
  rss: number
  /** Peak resident set size since start or the last resetPeak(), in bytes. */
  hwm: number
  /** The anonymous part of rss (heaps, buffers), in bytes: what the daemon's own allocations cost. */
  anon: number
  /** The file-backed part of rss (node's binary and libraries), in bytes. */
  file: number
}

function field(status: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status)
  if (!m) throw new Error(`/proc status has no ${name} line`)
  return Number(m[1]) * 1024
}

export function readMemory(pid: number): MemoryReading {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return {
    rss: field(status, 'VmRSS'),
    hwm: field(status, 'VmHWM'),
    anon: field(status, 'RssAnon'),
    file: field(status, 'RssFile'),
  }
}

export interface Settled {
  /** Milliseconds from the start of polling until rss was at or under the limit; undefined if it never was. */
  ms: number | undefined
  /** The last reading: the one under the limit, or the one when time ran out. */
  reading: MemoryReading
  /** [ms since start, rss bytes], one per poll, for the JSON. */
  trace: Array<[number, number]>
}

/** Reads rss every `everyMs` until it is at or under `limit` bytes, for at most `withinMs`. */
export async function waitForRssUnder(pid: number, limit: number, withinMs: number, everyMs = 1000): Promise<Settled> {
  const started = performance.now()
  const trace: Array<[number, number]> = []
  for (;;) {
    const reading = readMemory(pid)
    const ms = Math.round(performance.now() - started)
    trace.push([ms, reading.rss])
    if (reading.rss <= limit) return { ms, reading, trace }
    if (ms + everyMs > withinMs) return { ms: undefined, reading, trace }
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

/** The executable name the kernel reports, to make sure we measure node and not a wrapper. */
export function processName(pid: number): string {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return /^Name:\s+(\S+)$/m.exec(status)?.[1] ?? '?'
}

/** Resets VmHWM to the current RSS; false when the kernel refuses. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
    return true
  } catch {
    return false
  }
}

export interface SampledPeak {
  /** Largest VmRSS seen by the sampler, in bytes. */
  maxRss: number
  samples: number
  /** VmHWM when the sampler stopped, in bytes. */
  hwm: number
}

/**
 * Samples VmRSS on a timer. The reads are synchronous on purpose: a /proc read
 * takes microseconds, and a sync read cannot pile up behind a busy event loop.
 */
export class RssSampler {
  private timer: NodeJS.Timeout | undefined
  private maxRss = 0
  private samples = 0

  constructor(
    private readonly pid: number,
    private readonly intervalMs = 20,
  ) {}

  start(): void {
    this.sample()
    this.timer = setInterval(() => this.sample(), this.intervalMs)
  }

  stop(): SampledPeak {
    clearInterval(this.timer)
    this.sample()
    return { maxRss: this.maxRss, samples: this.samples, hwm: readMemory(this.pid).hwm }
  }

  private sample(): void {
    try {
      this.maxRss = Math.max(this.maxRss, readMemory(this.pid).rss)
      this.samples++
    } catch {
      // The process is gone; the caller finds out from its own requests.
    }
  }
}
