// Prometheus exposition of the process's metrics registry.
import type { FastifyPluginAsync } from 'fastify'
import type { Metrics } from '../../observability/metrics.js'

export const metricsPlugin: FastifyPluginAsync<{ metrics: Metrics }> = async (app, { metrics }) => {
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType)
    return metrics.registry.metrics()
  })
}
