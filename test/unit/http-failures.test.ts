// Fastify runs without a logger; a request that fails outside the mutate route's own error
// handler is still logged and counted by the webhook, and answered as Fastify answers it.
import t from 'tap'
import { Gauge } from 'prom-client'
import { buildOpsApp } from '../../server/http/app.js'
import { Metrics } from '../../server/observability/metrics.js'
import { Readiness } from '../../server/observability/readiness.js'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { capturingLogger } from '../support/helpers.js'
import { staticWebhookApp } from '../support/webhook-app.js'

async function httpErrors(metrics: Metrics): Promise<number> {
  const values = (await metrics.errors.get()).values
  return values.filter((v) => v.labels.stage === 'http').reduce((sum, v) => sum + v.value, 0)
}

t.test('a failing /metrics scrape: 500 with Fastify’s body, one error line, counted', async (t) => {
  const { logger, lines } = capturingLogger('info')
  const metrics = new Metrics()
  new Gauge({
    name: 'broken_gauge',
    help: 'fails when collected',
    registers: [metrics.registry],
    collect() {
      throw new Error('collector failed')
    },
  })
  const app = await buildOpsApp({ logger, metrics, readiness: new Readiness() })
  t.teardown(() => app.close())

  const res = await app.inject({ method: 'GET', url: '/metrics?x=1' })
  t.equal(res.statusCode, 500)
  t.match(res.json(), { statusCode: 500, message: 'collector failed' })
  const errors = lines.filter((l) => l.msg === 'request failed')
  t.equal(errors.length, 1)
  t.match(errors[0], { level: 50, method: 'GET', url: '/metrics?x=1', err: { message: 'collector failed' } })
  t.equal(await httpErrors(metrics), 1)
})

t.test('client errors are answered by Fastify and neither logged nor counted', async (t) => {
  const { logger, lines } = capturingLogger('debug')
  const metrics = new Metrics()
  const policy = compilePolicy(resolveConfig(undefined, {}))
  const app = await staticWebhookApp(policy, { logger, metrics })
  t.teardown(() => app.close())

  t.equal((await app.inject({ method: 'GET', url: '/nowhere' })).statusCode, 404)
  t.equal((await app.inject({ method: 'GET', url: '/mutate' })).statusCode, 404)
  // A malformed body on /mutate goes to the mutate route's own handler: a warning, no error.
  const malformed = await app.inject({ method: 'POST', url: '/mutate', headers: { 'content-type': 'application/json' }, payload: '{' })
  t.equal(malformed.statusCode, 400)
  t.same(
    lines.map((l) => l.msg),
    ['rejected a malformed admission request'],
  )
  t.equal(await httpErrors(metrics), 0)
})
