import t from 'tap'
import { SingleFlight } from '../src/singleflight.js'

/** A call that settles when the test says so, counting how often it ran. */
function gate<V>() {
  let runs = 0
  let settle!: { resolve: (v: V) => void; reject: (e: Error) => void }
  const fn = () => {
    runs++
    return new Promise<V>((resolve, reject) => (settle = { resolve, reject }))
  }
  return { fn, runs: () => runs, settle: () => settle }
}

t.test('concurrent calls for one key run once and share the result; other keys run on their own', async (t) => {
  const flights = new SingleFlight<string>()
  const a = gate<string>()
  const b = gate<string>()
  const calls = [flights.do('a', a.fn), flights.do('a', a.fn), flights.do('a', a.fn), flights.do('b', b.fn)]
  t.equal(a.runs(), 1)
  t.equal(b.runs(), 1)
  t.equal(flights.size, 2)
  a.settle().resolve('A')
  b.settle().resolve('B')
  t.same(await Promise.all(calls), ['A', 'A', 'A', 'B'])
  t.equal(flights.size, 0, 'settled calls are forgotten')
})

t.test('a failure reaches every waiter once, and the next call runs afresh', async (t) => {
  const flights = new SingleFlight<number>()
  const g = gate<number>()
  const first = flights.do('k', g.fn)
  const second = flights.do('k', g.fn)
  g.settle().reject(new Error('upstream said no'))
  await t.rejects(first, /upstream said no/)
  await t.rejects(second, /upstream said no/)
  t.equal(flights.size, 0)
  const again = flights.do('k', g.fn)
  t.equal(g.runs(), 2, 'not the remembered failure')
  g.settle().resolve(7)
  t.equal(await again, 7)
})
