// Liveness and readiness probes.
import type { FastifyPluginAsync } from 'fastify'
import type { Readiness } from '../../observability/readiness.js'

export const healthPlugin: FastifyPluginAsync<{ readiness: Readiness }> = async (app, { readiness }) => {
  app.get('/healthz', async () => ({ status: 'ok' }))
  app.get('/readyz', async (_request, reply) => {
    const { ready, reasons } = readiness.state
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', reasons })
  })
}
