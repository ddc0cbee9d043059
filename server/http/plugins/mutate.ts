// POST /mutate: the admission endpoint. Fails open: any internal error
// allows the Pod unchanged, is logged and counted.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { admit, buildResponse, parseAdmissionReview, type AdmissionRequest } from '../../admission/review.js'
import type { AppDependencies } from '../context.js'

function podName(req: AdmissionRequest): string | undefined {
  if (req.name) return req.name
  const meta = (req.object as { metadata?: { name?: unknown; generateName?: unknown } } | undefined)?.metadata
  if (typeof meta?.name === 'string') return meta.name
  if (typeof meta?.generateName === 'string') return `${meta.generateName}*`
  return undefined
}

export const mutatePlugin: FastifyPluginAsync<AppDependencies> = async (app, deps) => {
  const { metrics, logger } = deps

  // Malformed JSON and wrong content types answer 400 with what is wrong.
  app.setErrorHandler((error: { statusCode?: number; message: string }, _request: FastifyRequest, reply: FastifyReply) => {
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500
    if (status < 500) {
      metrics.reviews.inc({ outcome: 'invalid', dry_run: 'unknown' })
      logger.warn({ err: error.message }, 'rejected a malformed admission request')
      return reply.code(status).send({ error: error.message })
    }
    metrics.errors.inc({ stage: 'http' })
    logger.error({ err: error }, 'admission endpoint failed')
    return reply.code(500).send({ error: 'internal error' })
  })

  app.post('/mutate', async (request, reply) => {
    const parsed = parseAdmissionReview(request.body)
    if (!parsed.ok) {
      metrics.reviews.inc({ outcome: 'invalid', dry_run: 'unknown' })
      logger.warn({ reason: parsed.message }, 'rejected a malformed AdmissionReview')
      return reply.code(400).send({ error: `malformed AdmissionReview: ${parsed.message}` })
    }
    const review = parsed.review
    const req = review.request
    const dryRun = req.dryRun === true
    const log = logger.child({ uid: req.uid, namespace: req.namespace, pod: podName(req), operation: req.operation, dryRun })
    const started = process.hrtime.bigint()
    try {
      const { policy, reachability } = deps.context()
      const result = admit(req, policy, reachability)
      const body = buildResponse(review, result.patch, result.warnings)
      metrics.latency.observe(Number(process.hrtime.bigint() - started) / 1e9)
      metrics.reviews.inc({ outcome: result.outcome, dry_run: String(dryRun) })
      for (const plan of result.plans) {
        if (plan.decision.action === 'rewrite') metrics.rewrites.inc({ registry: plan.decision.registry })
        else metrics.kept.inc({ reason: plan.decision.code })
      }
      if (result.outcome === 'mutated' || result.warnings.length > 0) {
        log.info(
          {
            outcome: result.outcome,
            images: result.plans.map((p) => ({ container: p.name, ...p.decision })),
          },
          'admission decided',
        )
      } else {
        log.debug({ outcome: result.outcome, skip: result.skip, ignored: result.ignoredBecause }, 'admission decided')
      }
      if (!dryRun && deps.onAdmitted) {
        try {
          deps.onAdmitted({ request: req, result })
        } catch (error) {
          metrics.errors.inc({ stage: 'after-admission' })
          log.error({ err: error }, 'post-admission hook failed; the Pod is admitted as decided')
        }
      }
      return body
    } catch (error) {
      metrics.errors.inc({ stage: 'admission' })
      metrics.reviews.inc({ outcome: 'error', dry_run: String(dryRun) })
      log.error({ err: error }, 'admission failed; allowing the Pod unchanged')
      return buildResponse(review, [], [])
    }
  })
}
