// Hocuspocus (in memory: no persistence extension) for the roomsync peer benchmarks.
// Usage: node js/hocuspocus-server.mjs HOST PORT   (run from bench/peers/, see servers.py)
import { Server } from '@hocuspocus/server'

const [host = '127.0.0.1', port = '1234'] = process.argv.slice(2)

const server = new Server({
  address: host,
  port: Number(port),
  quiet: true,
  stopOnSignals: true,
})

await server.listen()
console.log(`hocuspocus listening on ${host}:${port}`)
