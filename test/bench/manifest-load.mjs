// Load generator for the manifest measurement: GETs one URL from a fixed number
// of keep-alive connections until a request count or a time limit is reached,
// and prints one JSON line with what it saw. It runs in its own process so its
// CPU is not shared with the Hub shim that lives in the bench process (dproxy's
// tag checks go there). Usage: node manifest-load.mjs '{"url":...,"accept":...,
// "concurrency":8,"durationMs":5000,"maxRequests":2000}'; "ca":"<file>" trusts
// that CA for an https url.

import { readFileSync } from 'node:fs'
import { Pool } from 'undici'

const { url, accept, concurrency, durationMs, maxRequests, ca } = JSON.parse(process.argv[2])
const target = new URL(url)
const pool = new Pool(target.origin, { connections: concurrency, ...(ca ? { connect: { ca: readFileSync(ca, 'utf8') } } : {}) })
const statuses = {}
const errors = {}
let started = 0
let ok = 0
let bytes = 0

const t0 = performance.now()
const deadline = t0 + durationMs

async function worker() {
  while (started < maxRequests && performance.now() < deadline) {
    started++
    try {
      const res = await pool.request({ path: target.pathname + target.search, method: 'GET', headers: { accept } })
      const body = Buffer.from(await res.body.arrayBuffer())
      statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
      if (res.statusCode === 200 && body.length > 0) {
        ok++
        bytes += body.length
      }
    } catch (err) {
      const key = err?.code ?? String(err)
      errors[key] = (errors[key] ?? 0) + 1
    }
  }
}

await Promise.all(Array.from({ length: concurrency }, worker))
const elapsedMs = performance.now() - t0
await pool.close()
process.stdout.write(
  JSON.stringify({ requests: started, ok, bytes, statuses, errors, elapsedMs, rps: ok / (elapsedMs / 1000) }) + '\n',
)
