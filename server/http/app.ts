// The two Fastify servers: the HTTPS webhook (admission and probes) and the
// plain-HTTP operations listener (metrics and probes for scrapers).
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify'
import type { Bindings, ChildLoggerOptions, Logger } from 'pino'
import type { ServerResponse } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import { TLS_OPTIONS, type KeyPair } from '../tls/reloader.js'
import { type Reservation, ReviewBudget } from './budget.js'
import { DEFAULT_BODY_LIMIT, serverSchema, type ServerConfig } from './config.js'
import type { AppDependencies } from './context.js'
import { healthPlugin } from './plugins/health.js'
import { metricsPlugin } from './plugins/metrics.js'
import { mutatePlugin } from './plugins/mutate.js'

export { DEFAULT_BODY_LIMIT }

export interface WebhookAppOptions extends AppDependencies {
  // Omitted only for in-process tests through inject().
  readonly tls?: KeyPair
  // Timeouts and limits; the schema's defaults when omitted.
  readonly server?: ServerConfig
}

export type WebhookApp = FastifyInstance

const draining = new WeakSet<FastifyInstance>()
const budgets = new WeakMap<FastifyInstance, ReviewBudget>()
const inFlight = new WeakMap<FastifyInstance, Set<ServerResponse>>()

/**
 * From now on every response closes its connection (`Connection: close`), and so do the
 * responses already under way, once they are sent (a graceful end: what was written is delivered).
 */
export function beginDrain(app: FastifyInstance): void {
  draining.add(app)
  for (const res of inFlight.get(app) ?? []) {
    const socket = res.socket
    if (res.writableFinished) socket?.end()
    else {
      // Not answered yet: the answer says so too (Node merges this header with the reply's own).
      if (!res.headersSent) res.setHeader('connection', 'close')
      res.once('finish', () => socket?.end())
    }
  }
}

export function reviewBudgetOf(app: WebhookApp): ReviewBudget | undefined {
  return budgets.get(app)
}

// Options of Node's own server: headers timeout (a silent fresh connection included), how
// often it checks the header and request timeouts (30 s by default, far too coarse), and
// the TLS handshake timeout.
function nodeServerOptions(s: ServerConfig) {
  const headersTimeout = s.headersTimeoutSeconds * 1000
  return {
    headersTimeout,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeout / 4))),
    handshakeTimeout: s.handshakeTimeoutSeconds * 1000,
  }
}

function commonOptions(s: ServerConfig) {
  return {
    // Between requests on a keep-alive connection.
    keepAliveTimeout: s.idleTimeoutSeconds * 1000,
    // From the first byte of a request to its last.
    requestTimeout: s.requestTimeoutSeconds * 1000,
    // No request may hold a socket silently either.
    connectionTimeout: s.requestTimeoutSeconds * 1000,
  }
}

// What a tracked response carries until it closes: the app's set of responses in flight and the
// review's memory reservation. Kept on the response and released by one shared listener, so that
// a request allocates no closure that would keep its request and reply alive until then.
const IN_FLIGHT = Symbol('mirrorhook.inFlight')
const RESERVATION = Symbol('mirrorhook.reservation')
type TrackedResponse = ServerResponse & { [IN_FLIGHT]?: Set<ServerResponse>; [RESERVATION]?: Reservation }

function untrack(this: TrackedResponse): void {
  this[IN_FLIGHT]?.delete(this)
  const reservation = this[RESERVATION]
  this[RESERVATION] = undefined
  reservation?.release()
}

/**
 * One synchronous `onRequest` hook per app (no promise per request): tracks the response until
 * it closes (for the drain), marks it `Connection: close` while draining, and with a budget
 * reserves the review's declared size before its body is read, given back when the response is
 * done or the connection is gone.
 */
function addRequestHook(
  app: FastifyInstance,
  review?: { budget: ReviewBudget; bodyLimit: number; metrics: AppDependencies['metrics']; logger: AppDependencies['logger'] },
): void {
  const responses = new Set<ServerResponse>()
  inFlight.set(app, responses)
  app.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void) => {
    const res = reply.raw as TrackedResponse
    if (draining.has(app)) reply.header('connection', 'close')
    responses.add(res)
    res[IN_FLIGHT] = responses
    res[RESERVATION] = undefined
    res.on('close', untrack)
    const method = request.method
    if (!review || (method !== 'POST' && method !== 'PUT' && method !== 'PATCH')) return done()
    const declared = Number(request.headers['content-length'])
    const bytes = Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, review.bodyLimit) : review.bodyLimit
    if (bytes === 0) return done()
    const reservation = review.budget.reserve(bytes)
    if (!reservation) {
      review.metrics.errors.inc({ stage: 'overload' })
      review.logger.warn(
        { waiting: review.budget.waiting, bytesInUse: review.budget.bytesInUse },
        'too many reviews waiting for memory: answered 503, the API server admits the Pod unchanged',
      )
      reply.code(503).header('connection', 'close').send({ error: 'too many reviews in progress' })
      return
    }
    res[RESERVATION] = reservation
    if (reservation.grantedAtOnce) return done()
    reservation.granted.then(
      (ok) => (ok ? done() : reply.code(503).send({ error: 'connection closed while waiting' })),
      (error: Error) => done(error),
    )
  })
}

type LogArgs = [obj: unknown, msg?: string, ...args: unknown[]]

/**
 * Fastify's logger for one request, made only when the request logs something: Fastify makes a
 * pino child (its bindings serialized) for every request, and the webhook logs its own line
 * instead (or nothing, for most requests).
 */
class RequestLogger {
  private made: Logger | undefined

  constructor(
    private readonly parent: Logger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  private get logger(): Logger {
    return (this.made ??= this.parent.child(this.bindings, this.options))
  }

  get level(): string {
    return this.made?.level ?? this.options.level ?? this.parent.level
  }

  set level(level: string) {
    this.logger.level = level
  }

  fatal(...args: LogArgs): void {
    this.logger.fatal(...(args as [unknown]))
  }
  error(...args: LogArgs): void {
    this.logger.error(...(args as [unknown]))
  }
  warn(...args: LogArgs): void {
    this.logger.warn(...(args as [unknown]))
  }
  info(...args: LogArgs): void {
    this.logger.info(...(args as [unknown]))
  }
  debug(...args: LogArgs): void {
    this.logger.debug(...(args as [unknown]))
  }
  trace(...args: LogArgs): void {
    this.logger.trace(...(args as [unknown]))
  }
  silent(): void {}
  child(bindings: Bindings, options?: ChildLoggerOptions): Logger {
    return this.logger.child(bindings, options)
  }
}

function requestLoggerFactory(logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
  return new RequestLogger(logger as Logger, bindings, options) as unknown as FastifyBaseLogger
}

/**
 * The webhook server's options, apart from its logger and certificate; `https` holds Node's TLS
 * and server options. Also what the benchmark's floor server runs with (test/bench/floor-server.mjs).
 */
export function webhookServerOptions(s: ServerConfig) {
  return {
    bodyLimit: s.bodyLimitBytes,
    ...commonOptions(s),
    // On close, idle keep-alive connections go at once; in-flight reviews finish first.
    forceCloseConnections: 'idle' as const,
    // A review arriving on an open connection while draining is still answered (and the
    // connection then closed): a 503 would admit the Pod unchanged.
    return503OnClosing: false,
    https: { ...TLS_OPTIONS, ...nodeServerOptions(s) },
  }
}

export async function buildWebhookApp(options: WebhookAppOptions): Promise<WebhookApp> {
  const s = options.server ?? serverSchema.parse({})
  const { https, ...serverOptions } = webhookServerOptions(s)
  const app = Fastify({
    loggerInstance: options.logger,
    // Each review is logged once, with its decision, by the mutate plugin.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: requestLoggerFactory,
    ...serverOptions,
    ...(options.tls ? { https: { ...options.tls, ...https } } : {}),
  }) as unknown as FastifyInstance
  // Review bodies held at once are bounded (see addRequestHook).
  const budget = new ReviewBudget(s.reviewBytesInFlight, s.maxWaitingReviews)
  budgets.set(app, budget)
  addRequestHook(app, { budget, bodyLimit: s.bodyLimitBytes, metrics: options.metrics, logger: options.logger })

  await app.register(healthPlugin, { readiness: options.readiness })
  await app.register(mutatePlugin, options)
  return app
}

export function httpsServerOf(app: WebhookApp): HttpsServer {
  return app.server as unknown as HttpsServer
}

export async function buildOpsApp(
  options: Pick<AppDependencies, 'logger' | 'metrics' | 'readiness'> & { server?: ServerConfig },
): Promise<FastifyInstance> {
  const s = options.server ?? serverSchema.parse({})
  const { headersTimeout, connectionsCheckingInterval } = nodeServerOptions(s)
  const app = Fastify({
    loggerInstance: options.logger,
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: requestLoggerFactory,
    ...commonOptions(s),
    http: { headersTimeout, connectionsCheckingInterval },
    forceCloseConnections: true,
  }) as unknown as FastifyInstance
  addRequestHook(app)
  await app.register(healthPlugin, { readiness: options.readiness })
  await app.register(metricsPlugin, { metrics: options.metrics })
  return app
}
