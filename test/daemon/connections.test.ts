// The bounds on open connections, against a real daemon with raw sockets: a
// connection that sends nothing, half a request line, or headers one byte a
// second is closed by the daemon once the head's bound passes (a small bound
// here, so that the test runs fast; the assertions only say "closed by the
// daemon before a generous limit"); a source holding its bound of
// connections gets the next one closed while its others work and other
// sources still get in; past the bound in total, every source is refused.

import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { connectionLimits, HEADERS_TIMEOUT_MS, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT } from '../../src/daemon/connections.js'
import type { Daemon } from '../../src/daemon/daemon.js'
import { startDaemon } from '../helpers/daemon.js'
import { pingV2, trickleHead, type Watched, watchRaw } from '../helpers/raw-http.js'

/** A plain connection and what the daemon did with it. */
interface Raw extends Watched {
  socket: Socket
}

async function open(t: Test, d: Daemon, localAddress = '127.0.0.1'): Promise<Raw> {
  // Half open allowed: the daemon's FIN does not make this side close, as with a client that ignores it.
  const socket = connect({ host: '127.0.0.1', port: d.port, localAddress, allowHalfOpen: true })
  t.teardown(() => socket.destroy())
  const watched = watchRaw(socket)
  await new Promise<void>((resolve) => {
    socket.once('connect', resolve)
    socket.once('close', resolve)
  })
  return { socket, ...watched }
}

t.test('the defaults, and options that are not positive whole numbers are refused', async (t) => {
  t.strictSame(connectionLimits({}), { headersTimeoutMs: HEADERS_TIMEOUT_MS, perClient: MAX_CONNECTIONS_PER_CLIENT, total: MAX_CONNECTIONS })
  t.equal(HEADERS_TIMEOUT_MS, 30_000)
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    t.throws(() => connectionLimits({ headersTimeoutMs: bad }), { code: 'CONFIG_INVALID', message: /headersTimeoutMs/ }, `headersTimeoutMs ${bad}`)
    t.throws(() => connectionLimits({ maxConnectionsPerClient: bad }), { code: 'CONFIG_INVALID' }, `maxConnectionsPerClient ${bad}`)
  }
})

t.test('a request head that does not arrive within the bound loses its connection', async (t) => {
  const d = await startDaemon(t, undefined, { headersTimeoutMs: 2500 })
  const idle = await open(t, d)
  const partial = await open(t, d)
  partial.socket.write('GET /v2/ HT')
  const trickled = await open(t, d)
  trickled.socket.write('GET /v2/ HTTP/1.1\r\n')
  const trickling = trickleHead(trickled, d.port)
  const [a, b, c] = await Promise.all([idle.closedByServer(), partial.closedByServer(), trickled.closedByServer()])
  t.ok(a, 'idle after connecting: closed by the daemon')
  t.ok(b, 'half a request line: closed by the daemon')
  t.ok(c, 'headers trickled a byte a second: closed by the daemon')
  const { sent, length } = await trickling
  t.ok(sent < length, `the trickled head never completed (${sent} of ${length} bytes sent)`)
  t.match(partial.received(), /^HTTP\/1\.1 408 /, 'a started request hears 408')
  t.ok(await partial.releasedByServer(), 'and the daemon lets go of the socket though the client keeps its side open')

  const legit = await open(t, d)
  t.equal(await pingV2(legit, d.port), 'HTTP/1.1 200 OK', 'a whole request is answered')
  await sleep(3000)
  t.equal(await pingV2(legit, d.port), 'HTTP/1.1 200 OK', 'and its keep-alive connection, idle past the head bound between requests, still serves the next')
})

t.test('a source at its bound gets the next connection closed; its others work, and other sources get in', async (t) => {
  const d = await startDaemon(t, undefined, { maxConnectionsPerClient: 3 })
  const held = [await open(t, d), await open(t, d), await open(t, d)]
  const over = await open(t, d)
  t.ok(await over.closedByServer(), 'the fourth connection from 127.0.0.1 is closed by the daemon')
  t.equal(over.received(), '', 'without an answer')
  for (const [i, raw] of held.entries()) t.equal(await pingV2(raw, d.port), 'HTTP/1.1 200 OK', `connection ${i + 1} from 127.0.0.1 still works`)
  const other = await open(t, d, '127.0.0.2')
  t.equal(await pingV2(other, d.port), 'HTTP/1.1 200 OK', 'a connection from 127.0.0.2 works')

  held[0]!.socket.destroy()
  const again = await until(async () => {
    const raw = await open(t, d)
    if ((await pingV2(raw, d.port)) === 'HTTP/1.1 200 OK') return true
    raw.socket.destroy()
    return false
  })
  t.ok(again, 'once one of them closed, 127.0.0.1 gets a connection again')
})

t.test('at the bound in total, every source is refused', async (t) => {
  const d = await startDaemon(t, undefined, { maxConnectionsPerClient: 2, maxConnections: 3 })
  const held = [await open(t, d), await open(t, d), await open(t, d, '127.0.0.2')]
  const over = await open(t, d, '127.0.0.3')
  t.ok(await over.closedByServer(), 'a connection from a third source is closed by the daemon')
  for (const raw of held) t.equal(await pingV2(raw, d.port), 'HTTP/1.1 200 OK', 'the others work')
})

async function until(ok: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    if (await ok()) return true
    await sleep(10)
  }
  return false
}
