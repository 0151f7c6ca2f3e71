// The CLI side of the daemon's event stream (daemon/event-stream.ts): reads
// GET /_dproxy/events (through AdminClient, like every admin call) as
// Server-Sent Events and yields each event parsed.

import type { AdminClient } from './admin-client.js'

export interface StreamEvent {
  event: string
  data: unknown
}

/** Yields the daemon's events until `signal` aborts or the daemon ends the stream. */
export async function* daemonEvents(client: AdminClient, signal: AbortSignal): AsyncGenerator<StreamEvent> {
  let body: AsyncIterable<Uint8Array>
  try {
    body = await client.eventStream(signal)
  } catch (err) {
    if (signal.aborted) return
    throw err
  }
  const decoder = new TextDecoder()
  let buffered = ''
  try {
    for await (const chunk of body) {
      buffered += decoder.decode(chunk, { stream: true })
      let end: number
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const block = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        const parsed = parseBlock(block)
        if (parsed) yield parsed
      }
    }
  } catch (err) {
    if (!signal.aborted) throw err
  }
}

function parseBlock(block: string): StreamEvent | undefined {
  let event = 'message'
  const data: string[] = []
  for (const line of block.split('\n')) {
    if (line.startsWith('event: ')) event = line.slice(7)
    else if (line.startsWith('data: ')) data.push(line.slice(6))
  }
  if (data.length === 0) return undefined
  try {
    return { event, data: JSON.parse(data.join('\n')) as unknown }
  } catch {
    return undefined
  }
}
