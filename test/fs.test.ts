// The filesystem facts in src/fs.ts, on a real directory.

import path from 'node:path'
import t from 'tap'
import { diskSpace, isNotFound, removeFile } from '../src/fs.js'

t.test('diskSpace: free and total bytes of the file system, undefined where there is none', async (t) => {
  const dir = t.testdir()
  const space = await diskSpace(dir)
  t.ok(space !== undefined && space.total > 0 && space.free > 0 && space.free <= space.total, JSON.stringify(space))
  t.equal(await diskSpace(path.join(dir, 'missing')), undefined)
})

t.test('removeFile: true when it removed the file, false when it was already gone', async (t) => {
  const dir = t.testdir({ f: 'x' })
  t.equal(await removeFile(path.join(dir, 'f')), true)
  t.equal(await removeFile(path.join(dir, 'f')), false)
  t.ok(isNotFound(Object.assign(new Error('gone'), { code: 'ENOENT' })))
  t.notOk(isNotFound(Object.assign(new Error('denied'), { code: 'EACCES' })))
})
