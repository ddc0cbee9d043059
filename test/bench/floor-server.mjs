// The floor for `npm run bench:floor`: a bare Fastify 5 HTTPS server with mirrorhook's certificate,
// TLS options and server options (webhookServerOptions, imported from the build, so they cannot
// drift: timeouts, body limit, handshake and header timeouts) that parses the
// same JSON body and answers POST /mutate with fixed response bytes, chosen by the request's uid.
// Plain JavaScript so that nothing but node and Fastify run in it.
//   node test/bench/floor-server.mjs PORT CERT KEY RESPONSES.json
import { readFileSync } from 'node:fs'
import Fastify from 'fastify'
import { webhookServerOptions } from '../../dist/server/http/app.js'
import { serverSchema } from '../../dist/server/http/config.js'

const [port, certFile, keyFile, responsesFile] = process.argv.slice(2)
// uid -> exact response body mirrorhook sent for that review
const responses = new Map(Object.entries(JSON.parse(readFileSync(responsesFile, 'utf8'))))

// mirrorhook's own options with the configuration's defaults (the benchmark's configuration sets none).
const { https, ...serverOptions } = webhookServerOptions(serverSchema.parse({}))
const app = Fastify({
  logger: false,
  ...serverOptions,
  https: { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), ...https },
})
app.get('/readyz', async () => ({ ready: true }))
app.post('/mutate', async (request, reply) => {
  const body = request.body
  const uid = body && body.request ? body.request.uid : undefined
  const bytes = responses.get(uid) ?? responses.values().next().value
  return reply.type('application/json; charset=utf-8').send(bytes)
})
await app.listen({ port: Number(port), host: '127.0.0.1' })
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)))
