// The webhook app for in-process tests (inject()): a fixed policy, reachability as the policy
// states it (nothing learnt), fresh readiness.
import type { Logger } from 'pino'
import type { Policy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { buildWebhookApp, type WebhookApp } from '../../server/http/app.js'
import type { AppDependencies } from '../../server/http/context.js'
import { Metrics } from '../../server/observability/metrics.js'
import { Readiness } from '../../server/observability/readiness.js'

export function staticWebhookApp(
  policy: Policy,
  deps: { logger: Logger; metrics?: Metrics; onAdmitted?: AppDependencies['onAdmitted'] },
): Promise<WebhookApp> {
  return buildWebhookApp({
    logger: deps.logger,
    metrics: deps.metrics ?? new Metrics(),
    readiness: new Readiness(),
    context: () => ({ policy, reachability: staticReachability(policy) }),
    ...(deps.onAdmitted ? { onAdmitted: deps.onAdmitted } : {}),
  })
}
