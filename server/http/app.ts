// The two Fastify servers: the HTTPS webhook (admission and probes) and the
// plain-HTTP operations listener (metrics and probes for scrapers).
import Fastify, { type FastifyInstance, LogController } from 'fastify'
import type { Server as HttpsServer } from 'node:https'
import { TLS_OPTIONS, type KeyPair } from '../tls/reloader.js'
import type { AppDependencies } from './context.js'
import { healthPlugin } from './plugins/health.js'
import { metricsPlugin } from './plugins/metrics.js'
import { mutatePlugin } from './plugins/mutate.js'

// The API server sends the Pod twice at most (object and oldObject), each under etcd's 1.5 MiB limit.
export const DEFAULT_BODY_LIMIT = 6 * 1024 * 1024

export interface WebhookAppOptions extends AppDependencies {
  // Omitted only for in-process tests through inject().
  readonly tls?: KeyPair
  readonly bodyLimit?: number
}

export type WebhookApp = FastifyInstance

export async function buildWebhookApp(options: WebhookAppOptions): Promise<WebhookApp> {
  const app = Fastify({
    loggerInstance: options.logger,
    // Each review is logged once, with its decision, by the mutate plugin.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: options.bodyLimit ?? DEFAULT_BODY_LIMIT,
    // The API server keeps connections open between reviews; keep them longer than its idle timeout.
    keepAliveTimeout: 95_000,
    requestTimeout: 30_000,
    // On close, idle keep-alive connections go at once; in-flight reviews finish first.
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    ...(options.tls ? { https: { ...options.tls, ...TLS_OPTIONS } } : {}),
  }) as unknown as FastifyInstance
  await app.register(healthPlugin, { readiness: options.readiness })
  await app.register(mutatePlugin, options)
  return app
}

export function httpsServerOf(app: WebhookApp): HttpsServer {
  return app.server as unknown as HttpsServer
}

export async function buildOpsApp(options: Pick<AppDependencies, 'logger' | 'metrics' | 'readiness'>): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: options.logger,
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
  }) as unknown as FastifyInstance
  await app.register(healthPlugin, { readiness: options.readiness })
  await app.register(metricsPlugin, { metrics: options.metrics })
  return app
}
