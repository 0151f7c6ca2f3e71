// The access log through a real daemon in front of the Hub fixture: a miss
// names the upstream endpoint that answered it and the status it answered
// with, in the text line and in the fields; a hit names none; an error keeps
// the upstream status behind it.

import t from 'tap'
import type { LogLevel, Logger } from '../../src/log.js'
import { ACCEPT_ALL_MANIFESTS } from '../fixtures/images.js'
import { startUpstream } from '../fixtures/upstream.js'
import { get, pull, settled, startDaemon } from '../helpers/daemon.js'

interface Line {
  level: LogLevel
  message: string
  fields: Record<string, unknown>
}

function collecting(): { log: Logger; lines: Line[] } {
  const lines: Line[] = []
  const plain = (level: LogLevel) => (message: string) => lines.push({ level, message, fields: {} })
  return {
    lines,
    log: {
      info: plain('info'),
      warn: plain('warn'),
      error: plain('error'),
      debug: plain('debug'),
      record: (level, message, fields) => lines.push({ level, message, fields }),
    },
  }
}

t.test('a miss names the upstream that answered and its status; a hit names none', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const { log, lines } = collecting()
  const d = await startDaemon(t, up, { accessLog: true, log })
  const image = up.images.alpine
  const blob = image.blobs[0]!
  const requestsOf = (path: string) => lines.filter((l) => l.fields['path'] === path)
  const endpoint = up.hubUrl.replace(/\/+$/, '')

  await pull(d.url, 'alpine', 'latest')
  await settled(d)
  const manifestPath = '/v2/alpine/manifests/latest'
  const blobPath = `/v2/alpine/blobs/${blob.digest}`
  const [manifestMiss] = requestsOf(manifestPath)
  const [blobMiss] = requestsOf(blobPath)
  t.match(manifestMiss?.message, new RegExp(` miss upstream=200@${endpoint} `), 'manifest miss line: status and endpoint')
  t.match(blobMiss?.message, new RegExp(` miss upstream=200@${endpoint} `), 'blob miss line: status and endpoint (the registry asked, not the CDN it redirected to)')
  t.match(blobMiss?.fields, { cache: 'miss', upstreamStatus: 200, upstreamEndpoint: endpoint }, 'and the same in the fields')

  await pull(d.url, 'alpine', 'latest')
  const manifestAgain = requestsOf(manifestPath)[1]
  const blobHit = requestsOf(blobPath)[1]
  t.match(blobHit?.message, / hit upstream=- /, 'blob hit line: upstream=-')
  t.match(blobHit?.fields, { cache: 'hit', upstreamStatus: null, upstreamEndpoint: null })
  t.match(manifestAgain?.message, / hit upstream=- /, 'a tag revalidated with a HEAD and served from the cache is a hit: upstream=-')

  const missing = await get(`${d.url}/v2/library/nothere/manifests/latest`, { accept: ACCEPT_ALL_MANIFESTS })
  t.equal(missing.status, 404)
  const [notFound] = requestsOf('/v2/library/nothere/manifests/latest')
  t.match(notFound?.message, / - upstream=404 /, 'an error keeps the upstream status behind it')
})

t.test('with client auth, the line and the fields name the user; a failed login names none', async (t) => {
  const { log, lines } = collecting()
  const d = await startDaemon(t, undefined, { accessLog: true, log, clientAuth: { secret: async () => 'pw-secret-1' } })
  const basic = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`
  t.equal((await get(`${d.url}/v2/`, { authorization: basic('dproxy', 'pw-secret-1') })).status, 200)
  t.equal((await get(`${d.url}/v2/`, { authorization: basic('dproxy', 'wrong') })).status, 401)
  const [ok, failed] = lines.filter((l) => l.fields['path'] === '/v2/')
  t.match(ok?.message, / upstream=- user=dproxy "/)
  t.equal(ok?.fields['user'], 'dproxy')
  t.notMatch(failed?.message, /user=/)
  t.equal(failed?.fields['user'], undefined)
  t.notMatch(JSON.stringify(lines), /pw-secret-1|wrong/, 'no password in any line')
})
