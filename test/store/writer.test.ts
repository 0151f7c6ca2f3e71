// The verifying writer of the file store (writer.ts), on disk: what it does
// not commit leaves no temp file, a large blob is flushed while it is
// written and a failed early flush fails the commit, and a write the full
// disk refused is retried in place or the writer goes on only checking.
// What every store's writer must do is in the contract (contract.ts).

import { createHash } from 'node:crypto'
import { promises as fs } from 'node:fs'
import t from 'tap'
import type * as FsModule from 'node:fs'
import { Store } from '../../src/store/store.js'
import { SYNC_STEP } from '../../src/store/writer.js'
import { parseDigest } from '../../src/oci/digest.js'

const sha = (b: Buffer | string) => parseDigest(`sha256:${createHash('sha256').update(b).digest('hex')}`)

// The contract (contract.ts) says such writes are never committed; on disk, they leave no file either.
t.test('a write that fails verification or is aborted leaves no temp file', async (t) => {
  const store = await Store.open(t.testdir())
  const data = Buffer.from('the right content')
  const wrong = await store.createBlobWriter(sha(data), data.length)
  await wrong.write(Buffer.from('the wrong content'))
  await t.rejects(wrong.commit(), { code: 'DIGEST_INVALID' })
  const aborted = await store.createBlobWriter(sha(data))
  await aborted.write(data)
  await aborted.abort()
  t.strictSame(await fs.readdir(store.layout.tmpDir), [], 'every temp file removed')
})

/** node:fs whose blob temp files (opened 'wx') are handed to `patch` before the writer sees them. */
async function tempFileFs(patch: (fh: FsModule.promises.FileHandle) => void): Promise<typeof FsModule> {
  const real = await import('node:fs')
  const p = real.promises
  return {
    ...real,
    promises: {
      ...p,
      open: async (...args: Parameters<typeof p.open>) => {
        const fh = await p.open(...args)
        if (args[1] === 'wx') patch(fh)
        return fh
      },
    },
  } as typeof FsModule
}

/** node:fs whose blob temp files count their datasync calls, the first `failing` of them failing with EIO. */
function countingFs(counts: { syncs: number; failing: number }): Promise<typeof FsModule> {
  return tempFileFs((fh) => {
    const datasync = fh.datasync.bind(fh)
    fh.datasync = async () => {
      if (++counts.syncs <= counts.failing) throw Object.assign(new Error('EIO: injected'), { code: 'EIO' })
      return datasync()
    }
  })
}

// A large blob is flushed while it is written, so that commit() waits only for
// the last part; a failed early flush fails the commit even when the last one
// succeeds (the kernel may have dropped the pages that did not make it).
t.test('a large blob is flushed to disk while it is written; a failed flush fails its commit', async (t) => {
  const data = Buffer.alloc(2 * SYNC_STEP + 1, 7)
  const d = sha(data)
  const write = async (failing: number) => {
    const counts = { syncs: 0, failing }
    // tap's mocks reach direct imports only: the store comes with a writer that has the counting node:fs.
    const { Store: Counted } = await t.mockImport<typeof import('../../src/store/store.js')>('../../src/store/store.js', {
      '../../src/store/writer.js': await t.mockImport('../../src/store/writer.js', { 'node:fs': await countingFs(counts) }),
    })
    const store = await Counted.open(t.testdir())
    const w = await store.createBlobWriter(d, data.length)
    for (let off = 0; off < data.length; off += 1 << 20) await w.write(data.subarray(off, off + (1 << 20)))
    const before = counts.syncs
    const committed = await w.commit().then(
      () => undefined,
      (err: unknown) => err,
    )
    return { store, before, after: counts.syncs, committed }
  }
  const ok = await write(0)
  t.ok(ok.before >= 1, `flushed before commit (${ok.before} times)`)
  t.ok(ok.after > ok.before, 'and once more at commit')
  t.equal(ok.committed, undefined)
  t.equal(await ok.store.statBlob(d), data.length)

  const bad = await write(1)
  t.match(bad.committed, { message: /EIO/ }, 'the early failure is the commit\'s')
  t.equal(await bad.store.statBlob(d), undefined, 'not in the cache')
  t.strictSame(await fs.readdir(bad.store.layout.tmpDir), [], 'no temp file left')
})

/** node:fs whose blob temp files refuse writes with ENOSPC while `disk.full`. */
function fillingFs(disk: { full: boolean }): Promise<typeof FsModule> {
  return tempFileFs((fh) => {
    const writev = fh.writev.bind(fh)
    fh.writev = (async (buffers: NodeJS.ArrayBufferView[], position?: number) => {
      if (disk.full) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })
      return writev(buffers, position)
    }) as typeof fh.writev
  })
}

t.test('a write the full disk refused is written again in place by retry(), or the writer stops storing and only checks', async (t) => {
  const disk = { full: false }
  const { Store: Filling } = await t.mockImport<typeof import('../../src/store/store.js')>('../../src/store/store.js', {
    '../../src/store/writer.js': await t.mockImport('../../src/store/writer.js', { 'node:fs': await fillingFs(disk) }),
  })
  const data = Buffer.from('the first part, the refused part, and the rest')
  const d = sha(data)
  const parts = [data.subarray(0, 16), data.subarray(16, 34), data.subarray(34)]

  const store = await Filling.open(t.testdir())
  const retried = await store.createBlobWriter(d, data.length)
  await retried.write(parts[0]!)
  disk.full = true
  await t.rejects(retried.write(parts[1]!), { code: 'CACHE_UNAVAILABLE' })
  await t.rejects(retried.retry!(), { code: 'CACHE_UNAVAILABLE' }, 'still full')
  disk.full = false
  await retried.retry!()
  await retried.write(parts[2]!)
  await retried.commit()
  const stored = Buffer.alloc(data.length)
  const h = (await store.openBlob(d))!
  await h.read(stored, 0, data.length, 0)
  await h.close()
  t.ok(stored.equals(data), 'the blob is byte for byte what was written, the retried part in its place')
  await store.deleteBlob(d)

  const stopped = await store.createBlobWriter(d, data.length)
  await stopped.write(parts[0]!)
  const reader = await stopped.follow()
  disk.full = true
  await t.rejects(stopped.write(parts[1]!), { code: 'CACHE_UNAVAILABLE' })
  await stopped.stopStoring!()
  t.strictSame(await fs.readdir(store.layout.tmpDir), [], 'the temp file is gone')
  await stopped.write(parts[2]!)
  t.equal(stopped.written, data.length, 'every byte taken')
  await stopped.verify()
  await t.rejects(stopped.commit(), { code: 'CACHE_UNAVAILABLE' }, 'nothing to commit')
  await t.rejects(stopped.follow(), { code: 'CACHE_UNAVAILABLE' })
  const prefix = Buffer.alloc(16)
  t.equal(await reader.read(prefix, 0, 16, 0), 16, 'a reader opened before still reads what was stored')
  t.ok(prefix.equals(parts[0]!))
  await reader.close()
  t.equal(await store.statBlob(d), undefined)

  disk.full = false
  const wrong = await store.createBlobWriter(d, data.length)
  await wrong.write(parts[0]!)
  disk.full = true
  await t.rejects(wrong.write(Buffer.from(parts[1]!).fill(0)), { code: 'CACHE_UNAVAILABLE' })
  await wrong.stopStoring!()
  await wrong.write(parts[2]!)
  await t.rejects(wrong.verify(), { code: 'DIGEST_INVALID' }, 'still checked after it stopped storing')
})
