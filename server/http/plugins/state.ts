// GET /state on the operations listener: each registry's state, the evidence
// and since when, the mirror's refusals and the probe schedule.
import type { FastifyPluginAsync } from 'fastify'
import type { StateSnapshot } from '../../reachability/snapshot.js'

export const statePlugin: FastifyPluginAsync<{ snapshot: () => StateSnapshot }> = async (app, { snapshot }) => {
  app.get('/state', async (_request, reply) => {
    reply.header('cache-control', 'no-store')
    return snapshot()
  })
}
