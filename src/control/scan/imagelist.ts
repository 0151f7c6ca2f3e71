// A plain list of images (`*.images`): one reference per line; blank lines
// and `#` comments (whole-line or after the reference) are ignored. The
// simplest way to prefetch images no other file names.

import type { ScanResult } from './types.js'

export function scanImageList(source: string, file: string): ScanResult {
  const out: ScanResult = { refs: [], problems: [] }
  source.split(/\r?\n/).forEach((text, i) => {
    const hash = text.search(/(?:^|\s)#/)
    const raw = (hash < 0 ? text : text.slice(0, hash)).trim()
    if (raw !== '') out.refs.push({ raw, file, line: i + 1, kind: 'image list' })
  })
  return out
}
