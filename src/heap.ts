// V8 heap settings for the long-running daemon, applied by `dproxy serve`
// before the daemon starts, so that it has them however it was started: from
// a terminal, by `dproxy start`, by systemd or launchd.
//
// Node lets the young generation grow to 16 MiB semi-spaces under load; while
// clients stream blobs that costs the daemon about 55 MB of peak RSS and buys
// no throughput. `--max-semi-space-size=1` prevents it, but only when node
// starts, and a foreground `serve` or a service unit runs plain
// `node bin/dproxy.js` (a flag in the bin's shebang needs `env -S`, which not
// every env has, e.g. busybox's; re-executing costs a second process). V8
// reads its growth factor each time it considers growing the new space, so a
// factor of 1 keeps the semi-spaces near the size they had when it was set
// (4 MiB of new space once the CLI's modules have loaded, not 32).
//
// The first upstream download used to cost a spike of some 30 MB of native
// memory (bench: 16 clients on a cold blob, peaking at 126 MB): V8 re-compiling
// undici's HTTP parser, WebAssembly with one very large function, with its
// optimizing compiler. Its baseline compiler's code parses as fast for what a
// daemon downloads (few headers, long bodies; measured against 256 MiB bodies
// on loopback), so a tuned process keeps that code (--liftoff-only). V8 reads
// the flag when a module is compiled, and undici's parser is compiled on the
// first upstream request, after tuneHeap().
//
// After a load the daemon kept what it grew: the send pool drops its buffers
// once idle, but their memory comes back only with a full collection, which an
// idle V8 may not run for minutes (bench: RSS flat at 139 MB for 60 s after
// 64 clients). collectGarbage() runs one. `gc` is not exposed without
// --expose-gc; setting the flag at run time makes a new context carry it. One
// collection finds the buffers dead, but V8 frees array buffer memory in a
// sweep it finishes at its next collection, which an idle daemon may not run
// for many seconds (bench: 17 MB given back some 10 s after the pool was
// dropped), so collectGarbage() runs a second one. Only
// a process that called tuneHeap() collects, so embedding the daemon (tests)
// changes nothing.

import v8 from 'node:v8'
import vm from 'node:vm'

let tuned = false
let gc: (() => void) | undefined

export function tuneHeap(): void {
  v8.setFlagsFromString('--semi-space-growth-factor=1')
  v8.setFlagsFromString('--liftoff-only')
  tuned = true
}

/** A full garbage collection that frees dead buffers' memory, in a process that called tuneHeap(); otherwise nothing. */
export function collectGarbage(): void {
  if (!tuned) return
  if (!gc) {
    v8.setFlagsFromString('--expose-gc')
    gc = vm.runInNewContext('gc') as () => void
  }
  gc()
  gc()
}
