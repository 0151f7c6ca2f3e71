// /metrics against the real upstream fixture: the exposition passes
// `promtool check metrics`, its upstream request counts are the ones the Hub
// shim itself recorded, a real Prometheus server scraping the daemon answers
// PromQL with those same counts, and the endpoint keeps to loopback unless a
// metrics address is given.

import { spawn, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { freePort } from '../fixtures/registry.js'
import type { RequestLogEntry } from '../fixtures/hub.js'
import { startUpstream } from '../fixtures/upstream.js'
import { blobDigests, get, pull, settled, startDaemon } from '../helpers/daemon.js'

const PROMTOOL = '/usr/bin/promtool'
const PROMETHEUS = '/usr/bin/prometheus'

/** What the shim saw, as dproxy's kind and status labels: `manifest_get 200` -> count. */
function hubCalls(requests: RequestLogEntry[]): Map<string, number> {
  const out = new Map<string, number>()
  for (const r of requests) {
    const path = r.path.split('?')[0]!
    const kind =
      r.listener === 'cdn' || path.includes('/blobs/')
        ? 'blob'
        : path === '/v2/'
          ? 'ping'
          : path.startsWith('/token')
            ? 'token'
            : path.includes('/manifests/')
              ? r.method === 'HEAD'
                ? 'manifest_head'
                : 'manifest_get'
              : 'tags'
    const key = `${kind} ${r.status}`
    out.set(key, (out.get(key) ?? 0) + 1)
  }
  return out
}

/** `dproxy_upstream_requests_total` from an exposition, as the same map. */
function metricCalls(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const m of text.matchAll(/^dproxy_upstream_requests_total\{registry="docker\.io",kind="(\w+)",status="(\w+)"\} (\d+)$/gm)) {
    out.set(`${m[1]} ${m[2]}`, Number(m[3]))
  }
  return out
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

t.test('the exposition passes promtool and counts what reached the upstream', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'library/alpine', 'latest')
  await pull(d.url, 'library/alpine', 'latest')
  await settled(d)

  const res = await get(`${d.url}/metrics`)
  t.equal(res.status, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  const text = res.body.toString()
  const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' })
  t.equal(check.status, 0, `promtool check metrics: ${check.stdout}${check.stderr}`)

  t.strictSame(Object.fromEntries(metricCalls(text)), Object.fromEntries(hubCalls(up.hub.counts.requests)), 'upstream requests by kind and status')
  t.equal(sample(text, 'dproxy_manifest_gets_spent_total'), up.hub.counts.manifestGet)
  t.equal(sample(text, 'dproxy_manifest_gets_avoided_total'), 1, 'the second pull cost a HEAD, no GET')
  const blobs = blobDigests(up.images.alpine).length
  t.equal(sample(text, 'dproxy_cache_requests_total{kind="blob",result="miss"}'), blobs)
  t.equal(sample(text, 'dproxy_cache_requests_total{kind="blob",result="hit"}'), blobs)
  t.equal(sample(text, 'dproxy_cache_requests_total{kind="manifest",result="miss"}'), 1)
  t.equal(sample(text, 'dproxy_cache_requests_total{kind="manifest",result="hit"}'), 1)
  t.equal(sample(text, 'dproxy_http_requests_total{route="blob",method="GET",status="200"}'), 2 * blobs)
  t.equal(sample(text, 'dproxy_http_request_duration_seconds_count{route="blob"}'), 2 * blobs)
  t.equal(sample(text, 'dproxy_cache_blobs'), blobs)
  t.equal(sample(text, 'dproxy_cache_manifests'), 1)
  t.equal(sample(text, 'dproxy_cache_writable'), 1)
  t.equal(sample(text, 'dproxy_downloads_in_flight'), 0)
  t.equal(sample(text, 'dproxy_rate_limit_remaining{registry="docker.io"}'), up.hub.remaining())
  t.ok((sample(text, 'dproxy_disk_free_bytes') ?? 0) > 0)
  const sent = up.images.alpine.blobs.reduce((n, b) => n + b.size, 0)
  t.equal(sample(text, 'dproxy_cache_sent_bytes_total'), sent, 'the second pull came from the cache')
  t.equal(sample(text, 'dproxy_upstream_received_bytes_total'), sent)
})

t.test('a Prometheus server scraping the daemon answers PromQL with the upstream fixture counts', async (t) => {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const d = await startDaemon(t, up)
  await pull(d.url, 'library/alpine', 'latest')
  await pull(d.url, 'bitnami/redis', '7.2')
  await pull(d.url, 'library/alpine', 'latest')
  await settled(d)

  const dir = t.testdir({ storage: {} })
  const config = join(dir, 'prometheus.yml')
  writeFileSync(
    config,
    ['global:', '  scrape_interval: 1s', 'scrape_configs:', '  - job_name: dproxy', '    static_configs:', `      - targets: ['127.0.0.1:${d.port}']`, ''].join('\n'),
  )
  const port = await freePort()
  const prom = spawn(
    PROMETHEUS,
    [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'storage')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let log = ''
  prom.stderr!.on('data', (c: Buffer) => (log += c.toString()))
  t.teardown(() => {
    if (prom.exitCode === null && prom.signalCode === null) process.kill(prom.pid!, 'SIGKILL')
  })

  const query = async (promql: string): Promise<number | undefined> => {
    const res = await request(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(promql)}`).catch(() => undefined)
    // Prometheus answers 503 "Service Unavailable" until it is ready: no answer yet.
    if (!res || res.statusCode !== 200) {
      await res?.body.dump()
      return undefined
    }
    const body = (await res.body.json()) as { status: string; data?: { result: Array<{ value: [number, string] }> } }
    const v = body.data?.result[0]?.value[1]
    return v === undefined ? undefined : Number(v)
  }
  // Bounded: Prometheus starts, then scrapes once a second.
  const wanted = up.hub.counts.manifestGet
  let got: number | undefined
  for (let i = 0; i < 300 && got === undefined; i++) {
    got = await query('sum(dproxy_upstream_requests_total{kind="manifest_get"})')
    if (got === undefined) await new Promise((r) => setTimeout(r, 100))
  }
  t.equal(got, wanted, `manifest GETs the shim counted (prometheus log: ${log.slice(0, 500)})`)
  const hub = hubCalls(up.hub.counts.requests)
  const cdn = [...hub].filter(([k]) => k.startsWith('blob ')).reduce((n, [, v]) => n + v, 0)
  t.equal(await query('sum(dproxy_upstream_requests_total{kind="blob"})'), cdn, 'blob requests, front and CDN')
  t.equal(await query('sum(dproxy_upstream_requests_total{kind="token"})'), up.hub.counts.tokenRequests)
  t.equal(await query('sum(dproxy_upstream_requests_total{kind="manifest_head"})'), up.hub.counts.manifestHead)
  t.equal(await query('dproxy_manifest_gets_spent_total'), up.hub.counts.manifestGet)
  t.equal(await query('dproxy_rate_limit_remaining{registry="docker.io"}'), up.hub.remaining())
})

t.test('/metrics keeps to loopback and this machine; --metrics-address serves only /metrics', async (t) => {
  const d = await startDaemon(t, undefined, { metricsAddress: { host: '127.0.0.1', port: 0 } })
  const refused = await get(`${d.url}/metrics`, { host: 'evil.example' })
  t.equal(refused.status, 421, 'a rebound name is refused')
  const page = await get(`${d.url}/metrics`, { origin: 'http://evil.example' })
  t.equal(page.status, 403, 'a web page is refused')
  t.equal((await get(`${d.url}/metrics`, {}, 'POST')).status, 405)

  const m = d.metricsListening!
  const own = await get(`http://127.0.0.1:${m.port}/metrics`, { host: 'metrics.internal:9464' })
  t.equal(own.status, 200, 'the metrics listener takes the names a scraper uses')
  t.match(own.body.toString(), /^# HELP dproxy_http_requests_total/m)
  t.equal((await get(`http://127.0.0.1:${m.port}/v2/`)).status, 404, 'and nothing but /metrics')
  t.equal((await get(`http://127.0.0.1:${m.port}/_dproxy/status`)).status, 404)
})
