// The tar writer and reader: what one writes the other reads back (a pax
// header for a name over 100 bytes), GNU tar reads ours and we read GNU tar's
// (directories, long names), and a bad checksum or a cut stream is refused
// naming the entry.

import { execFileSync } from 'node:child_process'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { isDproxyError } from '../../src/errors.js'
import { endOfArchive, fileHeader, padding, readTar } from '../../src/store/tar.js'

function archive(files: Array<[string, Buffer]>): Buffer {
  const parts: Buffer[] = []
  for (const [name, data] of files) parts.push(fileHeader(name, data.length, 1_700_000_000), data, padding(data.length))
  parts.push(endOfArchive())
  return Buffer.concat(parts)
}

async function entries(input: Buffer | AsyncIterable<Buffer>): Promise<Array<{ name: string; type: string; data: Buffer }>> {
  const out: Array<{ name: string; type: string; data: Buffer }> = []
  const source = Buffer.isBuffer(input) ? chunks(input, 777) : input
  for await (const e of readTar(source)) {
    const parts: Buffer[] = []
    for await (const p of e.body) parts.push(p)
    out.push({ name: e.name, type: e.type, data: Buffer.concat(parts) })
  }
  return out
}

/** The buffer in odd-sized chunks, so headers and bodies straddle them. */
async function* chunks(b: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size)
}

/** The message of the ARCHIVE_INVALID `p` rejects with. */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    if (isDproxyError(err, 'ARCHIVE_INVALID')) return err.message
    throw err
  }
  throw new Error('expected ARCHIVE_INVALID, got success')
}

const long = `blobs/sha512/${'ab'.repeat(64)}`

t.test('round trip, a pax header for a long name', async (t) => {
  const files: Array<[string, Buffer]> = [
    ['oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}')],
    ['empty', Buffer.alloc(0)],
    ['blobs/sha256/exact', Buffer.alloc(1024, 7)],
    [long, Buffer.from('x'.repeat(1000))],
  ]
  const got = await entries(archive(files))
  t.strictSame(got.map((e) => [e.name, e.data.toString('hex')]), files.map(([n, d]) => [n, d.toString('hex')]))
})

t.test('GNU tar reads ours, we read GNU tar', async (t) => {
  const dir = t.testdir({ src: { 'oci-layout': '{}', blobs: { sha256: { abc: 'hello' } } } })
  const ours = join(dir, 'ours.tar')
  await fs.writeFile(ours, archive([['a', Buffer.from('one')], [long, Buffer.from('two')]]))
  const listed = execFileSync('tar', ['-tf', ours], { encoding: 'utf8' }).trim().split('\n')
  t.strictSame(listed, ['a', long])

  await fs.writeFile(join(dir, 'src', long.replace(/\//g, '_')), 'long')
  for (const format of ['gnu', 'pax']) {
    const theirs = execFileSync('tar', ['-c', `--format=${format}`, '-C', join(dir, 'src'), '.'])
    const got = await entries(theirs)
    const files = got.filter((e) => e.type === 'file').map((e) => `${e.name}=${e.data}`).sort()
    t.strictSame(files, ['blobs/sha256/abc=hello', `${long.replace(/\//g, '_')}=long`, 'oci-layout={}'], format)
    t.ok(got.some((e) => e.type === 'directory' && e.name.replace(/\/$/, '') === 'blobs'), `${format}: directories are entries`)
  }
})

t.test('a bad checksum or a cut stream is refused naming the entry', async (t) => {
  const good = archive([['first', Buffer.from('1')], ['second', Buffer.alloc(5000, 1)]])
  const flipped = Buffer.from(good)
  flipped[512 + 512 + 10]! ^= 0x40 // the name of the second header
  t.match(await failure(entries(flipped)), /checksum after first/)

  const cut = good.subarray(0, 512 * 3 + 100)
  t.match(await failure(entries(cut)), /^second: .*truncated/)
  t.match(await failure(entries(good.subarray(0, 1024))), /after first without its end blocks/)
})

t.test('an entry left unread is skipped', async (t) => {
  const good = archive([['a', Buffer.alloc(3000, 1)], ['b', Buffer.from('b')]])
  const names: string[] = []
  for await (const e of readTar(chunks(good, 100))) names.push(e.name)
  t.strictSame(names, ['a', 'b'])
})
