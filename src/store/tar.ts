// The tar format, as much of it as an OCI image layout archive needs: writing
// ustar headers for regular files (a pax header only when a name does not fit,
// as for sha512 blob names), and reading what other tools write (ustar, pax
// and GNU long names, directories, a size in base-256). No tar package is
// installed and none is needed: this is a few hundred bytes of header logic.
//
// Both directions stream. The writer produces headers and padding between the
// caller's data chunks; the reader hands out each entry's body as an async
// iterable over the input, so an entry of many gigabytes never sits in memory.
// The input may reuse one buffer for every chunk (reading a file that way is
// much cheaper than fresh memory per read): a piece the reader hands out is
// good until the next is asked for, and what it keeps longer it copies.
// Anything the input names is hostile: header checksums are checked, sizes are
// bounded by what a header can say, pax and long-name bodies are capped, and a
// stream that ends early is refused as truncated, naming the entry it cut.

import { DproxyError, truncate } from '../errors.js'

export const BLOCK = 512
/** Cap on the body of a pax or GNU long-name header: a name, not data. */
const MAX_META = 64 * 1024

/** The header (pax extension first when needed) of a regular file `name` of `size` bytes. */
export function fileHeader(name: string, size: number, mtimeSec = 0): Buffer {
  const nameBytes = Buffer.byteLength(name)
  if (nameBytes <= 100 && /^[\x20-\x7e]*$/.test(name)) return ustarHeader(name, size, '0', mtimeSec)
  // A pax record: "<len> path=<name>\n", where <len> counts itself.
  const body = `path=${name}\n`
  let len = Buffer.byteLength(body) + 3
  while (String(len).length + 1 + Buffer.byteLength(body) !== len) len = String(len).length + 1 + Buffer.byteLength(body)
  const record = Buffer.from(`${len} ${body}`)
  const short = `PaxHeaders/${name.slice(-80).replace(/[^\x20-\x7e]/g, '_')}`
  return Buffer.concat([ustarHeader(short, record.length, 'x', mtimeSec), record, padding(record.length), ustarHeader(short, size, '0', mtimeSec)])
}

/** Zero bytes that round `size` up to whole blocks. */
export function padding(size: number): Buffer {
  const rest = size % BLOCK
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest)
}

/** The two zero blocks that end an archive. */
export function endOfArchive(): Buffer {
  return Buffer.alloc(2 * BLOCK)
}

function ustarHeader(name: string, size: number, type: string, mtimeSec: number): Buffer {
  const h = Buffer.alloc(BLOCK)
  h.write(name.slice(0, 100), 0, 100, 'utf8')
  octal(h, 100, 8, 0o644)
  octal(h, 108, 8, 0)
  octal(h, 116, 8, 0)
  if (size < 8 ** 11) octal(h, 124, 12, size)
  else base256(h, 124, 12, size)
  octal(h, 136, 12, Math.max(0, Math.floor(mtimeSec)))
  h.write(type, 156, 1, 'ascii')
  h.write('ustar\x0000', 257, 8, 'binary')
  h.fill(0x20, 148, 156)
  octal(h, 148, 7, checksum(h))
  h[155] = 0x20
  return h
}

function octal(h: Buffer, off: number, len: number, value: number): void {
  h.write(value.toString(8).padStart(len - 1, '0'), off, len - 1, 'ascii')
  h[off + len - 1] = 0
}

function base256(h: Buffer, off: number, len: number, value: number): void {
  let v = value
  for (let i = off + len - 1; i > off; i--) {
    h[i] = v % 256
    v = Math.floor(v / 256)
  }
  h[off] = 0x80
}

function checksum(h: Buffer): number {
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!
  return sum
}

// ---- reading

export interface TarEntry {
  /** The path as the archive names it, with a leading `./` removed. */
  name: string
  size: number
  /** 'file', 'directory', or 'other' (links, devices: their bodies are skipped). */
  type: 'file' | 'directory' | 'other'
  /** The body; read it (or not) before asking for the next entry. */
  body: AsyncIterable<Buffer>
}

function invalid(message: string, entry?: string): DproxyError {
  return new DproxyError('ARCHIVE_INVALID', entry !== undefined ? `${truncate(entry)}: ${message}` : message, {
    detail: entry !== undefined ? { entry: truncate(entry) } : undefined,
  })
}

/** Reads exact byte counts from a stream of chunks. */
class Source {
  private chunk: Buffer = Buffer.alloc(0)
  private readonly it: AsyncIterator<Buffer | Uint8Array | string>
  /** Bytes consumed so far (for progress). */
  position = 0

  constructor(input: AsyncIterable<Buffer | Uint8Array | string>) {
    this.it = input[Symbol.asyncIterator]()
  }

  private async fill(): Promise<boolean> {
    while (this.chunk.length === 0) {
      const next = await this.it.next()
      if (next.done) return false
      this.chunk = typeof next.value === 'string' ? Buffer.from(next.value) : Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength)
    }
    return true
  }

  /** Up to `max` bytes, at least one; undefined at the end of the input. */
  async some(max: number): Promise<Buffer | undefined> {
    if (!(await this.fill())) return undefined
    const out = this.chunk.length <= max ? this.chunk : this.chunk.subarray(0, max)
    this.chunk = this.chunk.subarray(out.length)
    this.position += out.length
    return out
  }

  /**
   * Exactly `n` bytes, or undefined when the input ends first. Bytes that
   * span input chunks are copied as they come: the input may reuse a chunk's
   * memory once the next one is asked for.
   */
  async exactly(n: number): Promise<Buffer | undefined> {
    const first = await this.some(n)
    if (!first || first.length === n) return first
    const out = Buffer.allocUnsafe(n)
    let got = first.copy(out)
    while (got < n) {
      const part = await this.some(n - got)
      if (!part) return undefined
      got += part.copy(out, got)
    }
    return out
  }

  async skip(n: number, entry: string): Promise<void> {
    let left = n
    while (left > 0) {
      const part = await this.some(left)
      if (!part) throw invalid('the archive ends inside this entry (truncated)', entry)
      left -= part.length
    }
  }
}

/**
 * The entries of a tar stream, in order. Throws ARCHIVE_INVALID on a bad
 * header checksum, an archive that ends without its end blocks, or an entry
 * cut short (naming it).
 */
export async function* readTar(input: AsyncIterable<Buffer | Uint8Array | string>): AsyncGenerator<TarEntry> {
  const src = new Source(input)
  let longName: string | undefined
  let pax: Record<string, string> = {}
  let global: Record<string, string> = {}
  let previous = '(the start of the archive)'
  for (;;) {
    const h = await src.exactly(BLOCK)
    if (!h) throw invalid(`the archive ends after ${previous} without its end blocks (truncated)`)
    if (h.every((b) => b === 0)) return
    const rawName = cString(h, 0, 100)
    if (checksum(h) !== readOctal(h, 148, 8)) throw invalid(`bad tar header checksum after ${previous}`, rawName || '(unnamed)')
    const type = String.fromCharCode(h[156]!)
    const prefix = h.subarray(257, 262).toString('latin1') === 'ustar' ? cString(h, 345, 155) : ''
    const headerName = prefix ? `${prefix}/${rawName}` : rawName
    const meta = { ...global, ...pax }
    const size = meta.size !== undefined ? paxSize(meta.size, headerName) : readSize(h, headerName)
    const name = (longName ?? meta.path ?? headerName).replace(/^(\.\/)+/, '')
    if (type === 'x' || type === 'g' || type === 'L') {
      if (size > MAX_META) throw invalid(`extended header of ${size} bytes (at most ${MAX_META})`, headerName)
      const body = await src.exactly(size)
      if (!body) throw invalid('the archive ends inside this entry (truncated)', headerName)
      await src.skip(padding(size).length, headerName)
      if (type === 'L') longName = cString(body, 0, body.length)
      else if (type === 'x') pax = { ...pax, ...parsePax(body, headerName) }
      else global = { ...global, ...parsePax(body, headerName) }
      continue
    }
    longName = undefined
    pax = {}
    previous = name
    const kind = type === '0' || type === '\0' || type === '7' ? 'file' : type === '5' ? 'directory' : 'other'
    let left = kind === 'directory' ? 0 : size
    const body = (async function* () {
      while (left > 0) {
        const part = await src.some(Math.min(left, 4 << 20))
        if (!part) throw invalid(`the archive ends inside this entry, ${left} of its ${size} bytes missing (truncated)`, name)
        left -= part.length
        yield part
      }
    })()
    yield { name, size, type: kind, body }
    // Whatever the consumer left unread.
    await src.skip(left, name)
    left = 0
    await src.skip(kind === 'directory' ? 0 : padding(size).length, name)
  }
}

function cString(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off)
  return b.toString('utf8', off, end < 0 || end > off + len ? off + len : end)
}

function readOctal(h: Buffer, off: number, len: number): number {
  const text = h.toString('latin1', off, off + len).replace(/[\0 ]+$/, '').replace(/^[\0 ]+/, '')
  return /^[0-7]{1,12}$/.test(text) ? parseInt(text, 8) : Number.NaN
}

function readSize(h: Buffer, entry: string): number {
  if ((h[124]! & 0x80) !== 0) {
    let v = h[124]! & 0x7f
    for (let i = 125; i < 136; i++) v = v * 256 + h[i]!
    if (!Number.isSafeInteger(v)) throw invalid('entry size out of range', entry)
    return v
  }
  const v = readOctal(h, 124, 12)
  if (Number.isNaN(v)) throw invalid('bad entry size in tar header', entry)
  return v
}

function paxSize(text: string, entry: string): number {
  if (!/^\d{1,15}$/.test(text)) throw invalid(`bad pax size '${truncate(text)}'`, entry)
  return Number(text)
}

/** "<len> <key>=<value>\n" records. */
function parsePax(body: Buffer, entry: string): Record<string, string> {
  const out: Record<string, string> = {}
  let off = 0
  while (off < body.length) {
    const space = body.indexOf(0x20, off)
    const len = space > off ? Number(body.toString('latin1', off, space)) : Number.NaN
    if (!Number.isSafeInteger(len) || len <= 0 || off + len > body.length) throw invalid('bad pax header record', entry)
    const record = body.toString('utf8', space + 1, off + len - 1)
    const eq = record.indexOf('=')
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1)
    off += len
  }
  return out
}
