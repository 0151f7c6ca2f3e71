import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { CacheMaintenance } from '../../src/daemon/maintenance.js'
import type { Logger } from '../../src/log.js'
import { newCounters } from '../../src/proxy/counters.js'
import { parseImageSelector } from '../../src/store/evict.js'
import { Store } from '../../src/store/store.js'
import { blobTimes, hasBlob, hasManifest, manifestTimes, putBlob, putImage, tag } from '../helpers/cache.js'

const HOUR = 3_600_000
const DAY = 24 * HOUR

function collectingLogger(): Logger & { lines: string[] } {
  const lines: string[] = []
  return { lines, info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`), error: (m) => lines.push(`error ${m}`) }
}

async function setup(t: Test) {
  let now = Math.floor(Date.now() / 1000) * 1000
  const clock = { now: () => now }
  const store = await Store.open(t.testdir(), { clock })
  const image = async (name: string, usedAgo: number, size = 10_000) => {
    const img = await putImage(store, name, [size])
    await tag(store, 'docker.io', `library/${name}`, '1', img.manifest)
    await manifestTimes(store, img.manifest, now - usedAgo, now - usedAgo)
    return img
  }
  return { store, clock, image, advance: (ms: number) => (now += ms), counters: newCounters(), log: collectingLogger() }
}

/** Waits (bounded) until `check` holds. */
async function until(check: () => Promise<boolean>, ms = 3000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return true
    await sleep(20)
  }
  return check()
}

t.test('autoPrune applies the ttl and logs what it evicted', async (t) => {
  const s = await setup(t)
  const stale = await s.image('stale', 3 * DAY)
  const fresh = await s.image('fresh', HOUR)
  const m = new CacheMaintenance({ store: s.store, clock: s.clock, log: s.log, counters: s.counters, ttlMs: DAY })
  const summary = await m.autoPrune()
  t.strictSame(summary?.images.map((i) => i.repository), ['library/stale'])
  t.notOk(await hasManifest(s.store, stale.manifest))
  t.ok(await hasManifest(s.store, fresh.manifest))
  t.match(s.log.lines.join('\n'), /info evicted 1 image\(s\).*freed, cache now/)
  await m.stop()
  t.equal(await m.autoPrune(), undefined, 'nothing after stop')
})

t.test('without limits nothing is scheduled and autoPrune does nothing', async (t) => {
  const s = await setup(t)
  const old = await s.image('old', 300 * DAY)
  const m = new CacheMaintenance({ store: s.store, clock: s.clock, log: s.log, counters: s.counters, intervalMs: 10 })
  t.equal(m.limited, false)
  m.start()
  t.equal(await m.autoPrune(), undefined)
  await sleep(50)
  t.ok(await hasManifest(s.store, old.manifest))
  await m.stop()
})

t.test('start prunes at once and then on every interval; stop clears the timer', async (t) => {
  const s = await setup(t)
  const first = await s.image('first', 2 * DAY)
  const m = new CacheMaintenance({ store: s.store, clock: s.clock, log: s.log, counters: s.counters, ttlMs: DAY, intervalMs: 50 })
  m.start()
  t.ok(await until(async () => !(await hasManifest(s.store, first.manifest))), 'pruned at start')
  const second = await s.image('second', 0)
  s.advance(2 * DAY)
  t.ok(await until(async () => !(await hasManifest(s.store, second.manifest))), 'pruned by the interval timer')
  await m.stop()
  const third = await s.image('third', 0)
  s.advance(2 * DAY)
  await sleep(200)
  t.ok(await hasManifest(s.store, third.manifest), 'no pruning after stop')
})

t.test('check: prunes for size only when downloads may have pushed the cache over, at most once per gap', async (t) => {
  const s = await setup(t)
  const old = await s.image('old', 2 * HOUR, 40_000)
  const recent = await s.image('recent', 5 * 60_000, 40_000)
  const total = (await s.store.stats()).bytes
  const m = new CacheMaintenance({
    store: s.store,
    clock: s.clock,
    log: s.log,
    counters: s.counters,
    maxSizeBytes: total + 10_000,
    minGapMs: 60_000,
  })
  m.check()
  t.ok(await hasManifest(s.store, old.manifest), 'nothing known yet: no size check before the first prune')
  t.match(await m.autoPrune(), { images: [], fits: true, remainingBytes: total })

  s.counters.bytesFromUpstream += 5_000
  m.check()
  await m.autoPrune() // waits for a prune check() may have started (there is none: under the limit)
  t.ok(await hasManifest(s.store, old.manifest), 'under the limit: nothing')

  const more = await s.image('more', 0, 40_000) // what the daemon just downloaded
  s.counters.bytesFromUpstream += 45_000
  m.check()
  t.ok(await until(async () => !(await hasManifest(s.store, old.manifest))), 'over: the least recently used image goes')
  t.ok(await hasManifest(s.store, recent.manifest), 'used within the last 10 minutes: kept')
  t.ok(await hasManifest(s.store, more.manifest))

  // Still over (what is left was used recently) but within the gap: no new prune.
  await s.image('again', 3 * HOUR, 40_000)
  s.counters.bytesFromUpstream += 100_000
  m.check()
  await sleep(100)
  t.equal((await s.store.listTags('docker.io', 'library/again')).length, 1, 'throttled by minGapMs')
  s.advance(61_000)
  m.check()
  t.ok(await until(async () => (await s.store.listTags('docker.io', 'library/again')).length === 0), 'after the gap it prunes again')
  await m.stop()
})

t.test('clear and prune requests run one at a time', async (t) => {
  const s = await setup(t)
  await s.image('a', HOUR)
  await s.image('b', HOUR)
  const total = (await s.store.stats()).bytes
  const m = new CacheMaintenance({ store: s.store, clock: s.clock, log: s.log, counters: s.counters })
  const [one, all, again] = await Promise.all([
    m.clear({ image: parseImageSelector('a') }, false),
    m.clear({}, false),
    m.prune({ maxSizeBytes: 0 }),
  ])
  t.equal(one.images.length, 1)
  t.equal(all.images.length, 1, 'the second saw the first one done')
  t.equal(one.bytes + all.bytes, total, 'every byte freed exactly once')
  t.match(again, { images: [], bytes: 0, fits: true })
  await m.stop()
})

t.test('a prune that ran while downloads were in flight keeps counting their bytes', async (t) => {
  const s = await setup(t)
  const old = await s.image('old', 2 * HOUR, 40_000)
  const total = (await s.store.stats()).bytes
  let inflight = 1
  s.counters.bytesFromUpstream = 50_000 // a layer downloading into tmp/, not yet in the cache
  const m = new CacheMaintenance({
    store: s.store,
    clock: s.clock,
    log: s.log,
    counters: s.counters,
    maxSizeBytes: total + 10_000,
    downloading: () => inflight,
  })
  t.match(await m.autoPrune(), { images: [], fits: true }, 'the scan cannot see the download yet')
  await s.image('landed', 0, 50_000) // the download commits
  inflight = 0
  m.check()
  t.ok(await until(async () => !(await hasManifest(s.store, old.manifest))), 'its bytes were still counted: pruned')
  await m.stop()
})

t.test('makeRoom, for a download that found the disk full: unreferenced files and the configured limits, shared by concurrent askers', async (t) => {
  const s = await setup(t)
  const kept = await s.image('kept', 300 * DAY)
  const orphan = await putBlob(s.store, Buffer.alloc(50_000, 3))
  await blobTimes(s.store, orphan, s.clock.now() - DAY, s.clock.now() - DAY)
  const m = new CacheMaintenance({ store: s.store, clock: s.clock, log: s.log, counters: s.counters })
  const [a, b] = await Promise.all([m.makeRoom(), m.makeRoom()])
  t.equal(a, 50_000, 'the orphan\'s bytes freed')
  t.equal(b, 50_000, 'one run for both')
  t.notOk(await hasBlob(s.store, orphan))
  t.ok(await hasManifest(s.store, kept.manifest), 'no image without a limit that says so')
  t.match(s.log.lines.join('\n'), /info cache disk full: evicted 0 image\(s\), 1 unreferenced file\(s\)/)
  t.equal(await m.makeRoom(), 0, 'nothing more to free')

  const limited = new CacheMaintenance({ store: s.store, clock: s.clock, log: s.log, counters: s.counters, maxSizeBytes: 0 })
  t.ok((await limited.makeRoom()) > 0, 'with a size limit, least recently used images go')
  t.notOk(await hasManifest(s.store, kept.manifest))
  await limited.stop()
  t.equal(await limited.makeRoom(), 0, 'nothing after stop')
  await m.stop()
})
