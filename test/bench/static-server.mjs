// The throughput baseline: about the least a Node HTTP server can do to send
// one file (fs.createReadStream piped into the response, default buffer sizes).
// It runs as its own process, like dproxy, so the two are compared on equal
// terms. Usage: node static-server.mjs FILE PORT (listens on 127.0.0.1).

import { createReadStream, statSync } from 'node:fs'
import { createServer } from 'node:http'
import { basename } from 'node:path'
import { pipeline } from 'node:stream'

const [file, port] = process.argv.slice(2)
const size = statSync(file).size
const path = '/' + basename(file)

const server = createServer((req, res) => {
  if (req.url !== path) {
    res.writeHead(404).end()
    return
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size })
  if (req.method === 'HEAD') {
    res.end()
    return
  }
  pipeline(createReadStream(file), res, () => {})
})
server.listen(Number(port), '127.0.0.1')
process.on('SIGTERM', () => {
  server.close()
  server.closeAllConnections()
})
