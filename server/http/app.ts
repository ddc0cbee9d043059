// The two Fastify servers: the HTTPS webhook (admission and probes) and the
// plain-HTTP operations listener (metrics and probes for scrapers).
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type ServerOptions as HttpServerOptions,
  type ServerResponse,
} from 'node:http'
import type { Socket } from 'node:net'
import { createServer as createHttpsServer, type Server as HttpsServer, type ServerOptions as HttpsServerOptions } from 'node:https'
import { clipForLog } from '../observability/logger.js'
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

type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void

// On a connection, the response it is writing; on that response, its connection and the review's
// memory reservation. Set per request and cleared by one shared listener when the response closes:
// no closure per request, and no set that every request adds to and deletes from (each rehash of
// such a set leaves the previous table, once old, pointing at the next, and the requests in them
// then survive young collections: measured, after a burst of new Pods, 0.5 MB promoted per young
// collection and 0.9 of the throughput, for good).
const ANSWERING = Symbol('mirrorhook.answering')
const CONNECTION = Symbol('mirrorhook.connection')
const RESERVATION = Symbol('mirrorhook.reservation')
type TrackedSocket = Socket & { [ANSWERING]?: ServerResponse }
type TrackedResponse = ServerResponse & { [CONNECTION]?: TrackedSocket; [RESERVATION]?: Reservation }

function untrack(this: TrackedResponse): void {
  const socket = this[CONNECTION]
  if (socket?.[ANSWERING] === this) socket[ANSWERING] = undefined
  this[CONNECTION] = undefined
  const reservation = this[RESERVATION]
  this[RESERVATION] = undefined
  reservation?.release()
}

interface ReviewLimits {
  readonly budget: ReviewBudget
  readonly bodyLimit: number
  readonly metrics: AppDependencies['metrics']
  readonly logger: AppDependencies['logger']
}

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH'])

function refuse(res: ServerResponse, error: string): void {
  if (res.headersSent || res.destroyed) return
  res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', connection: 'close' })
  res.end(JSON.stringify({ error }))
}

/**
 * In front of Fastify's request handler, on the server itself (Fastify's `serverFactory`), so
 * that a request pays for no Fastify hook: tracks each connection's response until it closes
 * (for the drain), marks it `Connection: close` while draining, and with review limits reserves
 * the review's declared size before Fastify reads its body. The bytes are given back when the
 * response is done or the connection is gone. A review that must wait reaches Fastify once its
 * bytes are reserved; one too many is answered 503 here, and the API server admits the Pod
 * unchanged.
 */
class RequestGate {
  // Connections that sent a request, until they close.
  private readonly connections = new Set<TrackedSocket>()
  private draining = false

  constructor(readonly review?: ReviewLimits) {}

  wrap(next: RequestHandler): RequestHandler {
    return (req, res) => this.pass(req, res, next)
  }

  private pass(req: IncomingMessage, res: TrackedResponse, next: RequestHandler): void {
    if (this.draining) res.setHeader('connection', 'close')
    const socket: TrackedSocket = req.socket
    if (!this.connections.has(socket)) {
      this.connections.add(socket)
      socket.once('close', () => this.connections.delete(socket))
    }
    socket[ANSWERING] = res
    res[CONNECTION] = socket
    res[RESERVATION] = undefined
    res.on('close', untrack)
    const review = this.review
    if (!review || !BODY_METHODS.has(req.method ?? '')) return next(req, res)
    const declared = Number(req.headers['content-length'])
    const bytes = Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, review.bodyLimit) : review.bodyLimit
    if (bytes === 0) return next(req, res)
    const reservation = review.budget.reserve(bytes)
    if (!reservation) {
      review.metrics.errors.inc({ stage: 'overload' })
      review.logger.warn(
        { waiting: review.budget.waiting, bytesInUse: review.budget.bytesInUse },
        'too many reviews waiting for memory: answered 503, the API server admits the Pod unchanged',
      )
      return refuse(res, 'too many reviews in progress')
    }
    res[RESERVATION] = reservation
    if (reservation.grantedAtOnce) return next(req, res)
    reservation.granted.then(
      (ok) => (ok ? next(req, res) : refuse(res, 'connection closed while waiting')),
      () => refuse(res, 'connection closed while waiting'),
    )
  }

  /**
   * From now on every response closes its connection (`Connection: close`), and so do the
   * responses already under way, once they are sent (a graceful end: what was written is delivered).
   */
  drain(): void {
    this.draining = true
    for (const socket of this.connections) {
      const res = socket[ANSWERING]
      // Idle connections are closed when the server closes.
      if (!res) continue
      if (res.writableFinished) socket.end()
      else {
        // Not answered yet: the answer says so too (Node merges this header with the reply's own).
        if (!res.headersSent) res.setHeader('connection', 'close')
        res.once('finish', () => socket.end())
      }
    }
  }
}

const gates = new WeakMap<FastifyInstance, RequestGate>()

export function beginDrain(app: FastifyInstance): void {
  gates.get(app)?.drain()
}

export function reviewBudgetOf(app: WebhookApp): ReviewBudget | undefined {
  return gates.get(app)?.review?.budget
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

/**
 * Fastify's `serverFactory`: the server Fastify would make from these options (lib/server.js,
 * getServerInstance: HTTPS with TLS options, else HTTP with Node's options, then the three
 * timeouts), with the gate in front of Fastify's handler.
 */
function gatedServerFactory(gate: RequestGate, node: { https?: HttpsServerOptions; http?: HttpServerOptions }) {
  return (handler: RequestHandler, opts: { keepAliveTimeout?: number; requestTimeout?: number; connectionTimeout?: number }) => {
    const gated = gate.wrap(handler)
    const server = node.https ? createHttpsServer(node.https, gated) : createHttpServer(node.http ?? {}, gated)
    server.keepAliveTimeout = opts.keepAliveTimeout ?? server.keepAliveTimeout
    server.requestTimeout = opts.requestTimeout ?? server.requestTimeout
    server.setTimeout(opts.connectionTimeout ?? 0)
    return server
  }
}

/**
 * Requests that fail outside a route's own error handler (the mutate plugin has its own): a
 * server error is logged and counted, then Fastify answers as usual. Fastify itself logs nothing:
 * it runs without a logger, which spares every request a child logger and two response
 * listeners; the webhook writes its own lines.
 */
function logFailures(app: FastifyInstance, deps: Pick<AppDependencies, 'logger' | 'metrics'>): void {
  app.setErrorHandler((error: Error & { statusCode?: number }, request: FastifyRequest) => {
    if (!(error.statusCode && error.statusCode < 500)) {
      deps.metrics.errors.inc({ stage: 'http' })
      deps.logger.error({ err: error, method: request.method, url: clipForLog(request.url) }, 'request failed')
    }
    // To Fastify's own error handler.
    throw error
  })
}

/**
 * The webhook server's options, apart from its certificate; `https` holds Node's TLS and server
 * options. Also what the benchmark's floor server runs with (test/bench/floor-server.mjs).
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
  // Review bodies held at once are bounded (see RequestGate).
  const budget = new ReviewBudget(s.reviewBytesInFlight, s.maxWaitingReviews)
  const gate = new RequestGate({ budget, bodyLimit: s.bodyLimitBytes, metrics: options.metrics, logger: options.logger })
  const app = Fastify({
    ...serverOptions,
    serverFactory: gatedServerFactory(gate, options.tls ? { https: { ...options.tls, ...https } } : {}),
  }) as unknown as FastifyInstance
  gates.set(app, gate)
  logFailures(app, options)
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
  const gate = new RequestGate()
  const app = Fastify({
    ...commonOptions(s),
    forceCloseConnections: true,
    serverFactory: gatedServerFactory(gate, { http: { headersTimeout, connectionsCheckingInterval } }),
  }) as unknown as FastifyInstance
  gates.set(app, gate)
  logFailures(app, options)
  await app.register(healthPlugin, { readiness: options.readiness })
  await app.register(metricsPlugin, { metrics: options.metrics })
  return app
}
