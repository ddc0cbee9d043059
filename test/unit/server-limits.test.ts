// Slow and idle clients on both listeners are cut at the configured timeouts; a shutdown
// closes keep-alive connections, answers in-flight reviews and ends within the drain
// timeout; review bodies held at once are bounded. Real sockets on loopback.
import t from 'tap'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { request as httpRequest, Agent as HttpAgent } from 'node:http'
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import tls from 'node:tls'
import { pino } from 'pino'
import { stringify } from 'yaml'
import { reviewBudgetOf } from '../../server/http/app.js'
import { startServer, type RunningServer } from '../../server/serve.js'
import { podReview, until } from '../support/helpers.js'

interface Logged {
  msg: string
  [key: string]: unknown
}

function captureLogger() {
  const lines: Logged[] = []
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Logged)
      done()
    },
  })
  return { logger: pino({ level: 'info' }, stream), lines }
}

async function serve(
  t: { teardown(fn: () => unknown): void },
  server: Record<string, number>,
  logger = pino({ level: 'silent' }),
): Promise<RunningServer & { ca: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-limits-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const configPath = join(dir, 'config.yaml')
  await writeFile(configPath, stringify({ reachability: { enabled: false }, server }))
  const running = await startServer({
    configPath,
    port: 0,
    host: '127.0.0.1',
    metricsPort: 0,
    devCertDir: dir,
    certReloadIntervalMs: 60_000,
    shutdownDelayMs: 0,
    env: {},
    logger,
    kube: null,
  })
  t.teardown(() => running.close())
  return Object.assign(running, { ca: await readFile(running.caFile!, 'utf8') })
}

// A client socket that records whether the server closed it, and what it was sent.
interface Watched {
  socket: net.Socket
  received: string
  closedAt?: number
  openedAt: number
}

function watch(socket: net.Socket): Watched {
  const w: Watched = { socket, received: '', openedAt: Date.now() }
  socket.on('data', (d) => (w.received += d.toString()))
  socket.on('close', () => (w.closedAt = Date.now()))
  socket.on('error', () => undefined)
  return w
}

const closedByServer = (w: Watched, what: string) => until(what, async () => w.closedAt, 15_000)

function tlsConnect(port: number): Promise<Watched> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false })
    const watched = watch(socket)
    socket.once('secureConnect', () => resolve(watched))
    socket.once('error', reject)
  })
}

function tcpConnect(port: number): Promise<Watched> {
  return new Promise((resolve, reject) => {
    // Watched (and timed) from before the connection exists: a lower bound on when the server cut it.
    const watched = watch(new net.Socket())
    const socket = watched.socket.connect(port, '127.0.0.1')
    socket.once('connect', () => resolve(watched))
    socket.once('error', reject)
  })
}

// Writes one byte of `text` every `everyMs` until the socket closes; never finishes.
function trickle(w: Watched, text: string, everyMs = 100): void {
  let i = 0
  const timer = setInterval(() => {
    if (w.socket.destroyed || i >= text.length) return clearInterval(timer)
    w.socket.write(text[i++]!)
  }, everyMs)
  w.socket.once('close', () => clearInterval(timer))
}

const REVIEW = JSON.stringify(podReview('limits-1', ['nginx:1.25']))

t.test('slow and idle clients are cut at the configured timeouts, on both ports', async (t) => {
  const server = await serve(t, {
    handshakeTimeoutSeconds: 0.5,
    headersTimeoutSeconds: 0.5,
    requestTimeoutSeconds: 1,
    idleTimeoutSeconds: 0.5,
  })
  const https = server.port
  const ops = server.metricsPort!

  const silentTcp = await tcpConnect(https)
  const silentTls = await tlsConnect(https)
  const slowHeaders = await tlsConnect(https)
  trickle(slowHeaders, 'POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n')
  const slowBody = await tlsConnect(https)
  slowBody.socket.write(`POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${REVIEW.length}\r\n\r\n`)
  trickle(slowBody, REVIEW)
  const chunked = await tlsConnect(https)
  chunked.socket.write('POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n')
  trickle(
    chunked,
    REVIEW.split('')
      .map((c) => `1\r\n${c}\r\n`)
      .join(''),
    20,
  )
  const opsSilent = await tcpConnect(ops)
  const opsSlow = await tcpConnect(ops)
  trickle(opsSlow, 'GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n')

  await closedByServer(silentTcp, 'a TCP connection that never starts TLS to be closed')
  await closedByServer(silentTls, 'a TLS connection that never sends a request to be closed')
  await closedByServer(slowHeaders, 'trickled headers to be cut')
  await closedByServer(slowBody, 'a trickled body to be cut')
  await closedByServer(chunked, 'a trickled chunked body to be cut')
  await closedByServer(opsSilent, 'a silent connection to the ops port to be closed')
  await closedByServer(opsSlow, 'trickled headers on the ops port to be cut')

  t.equal(silentTcp.received, '', 'no TLS handshake, nothing said')
  for (const [name, w] of Object.entries({ silentTls, slowHeaders, slowBody, chunked, opsSilent, opsSlow })) {
    t.match(w.received, /^HTTP\/1\.1 408 Request Timeout\r\n/, `${name}: 408`)
  }
  // Never before the configured timeout (a lower bound, not a speed figure).
  t.ok(slowBody.closedAt! - slowBody.openedAt >= 1000, 'the body had the whole request timeout')
  t.ok(silentTcp.closedAt! - silentTcp.openedAt >= 500, 'the handshake had the whole handshake timeout')

  // Keep-alive connections that stay idle after an answer are closed, on both ports.
  const idleHttps = await tlsConnect(https)
  idleHttps.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
  const idleOps = await tcpConnect(ops)
  idleOps.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
  await closedByServer(idleHttps, 'an idle keep-alive HTTPS connection to be closed')
  await closedByServer(idleOps, 'an idle keep-alive ops connection to be closed')
  t.match(idleHttps.received, /^HTTP\/1\.1 200 OK\r\n[^]*keep-alive/i, 'answered, kept alive, then closed when idle')
  t.match(idleOps.received, /^HTTP\/1\.1 200 OK\r\n/)

  // The listener still serves.
  const res = await fetch(`http://127.0.0.1:${ops}/healthz`)
  t.equal(res.status, 200)
})

t.test('timeouts are validated like the rest of the configuration', async (t) => {
  await t.rejects(
    serve(t, { headersTimeoutSeconds: 20, requestTimeoutSeconds: 10 }),
    /server\.headersTimeoutSeconds: headersTimeoutSeconds must not exceed requestTimeoutSeconds/,
  )
  await t.rejects(serve(t, { requestTimeoutSeconds: 0 }), /server\.requestTimeoutSeconds: /)
  await t.rejects(serve(t, { idleTimeout: 5 }), /server\.idleTimeout: unknown key/)
})

function post(port: number, ca: string, agent: HttpsAgent, body = REVIEW) {
  return new Promise<{ status: number; connection?: string; body: string }>((resolve, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port, path: '/mutate', method: 'POST', ca, agent, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = ''
        res.on('data', (c) => (text += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: text }))
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

t.test('shutdown: idle keep-alive connections closed, in-flight review answered with Connection: close, final steps run', async (t) => {
  const { logger, lines } = captureLogger()
  const server = await serve(t, { drainTimeoutSeconds: 20 }, logger)
  // Clients that keep their connections (as the API server does for 90 s).
  const keepAlive = new HttpsAgent({ keepAlive: true, keepAliveMsecs: 60_000, maxSockets: 4 })
  t.teardown(() => keepAlive.destroy())
  const first = await post(server.port, server.ca, keepAlive)
  t.equal(first.status, 200)
  t.equal(first.connection, 'keep-alive')
  const idleSockets = Object.values(keepAlive.freeSockets).flat()
  t.equal(idleSockets.length, 1, 'one idle keep-alive connection')
  const idleClosed = once(idleSockets[0]!, 'close')
  const opsAgent = new HttpAgent({ keepAlive: true })
  t.teardown(() => opsAgent.destroy())
  await new Promise<void>((resolve) =>
    httpRequest({ port: server.metricsPort, host: '127.0.0.1', path: '/metrics', agent: opsAgent }, (r) =>
      r.resume().on('end', resolve),
    ).end(),
  )
  const opsIdle = Object.values(opsAgent.freeSockets).flat()[0]!
  const opsClosed = once(opsIdle, 'close')

  // A review whose body is still arriving when the shutdown begins.
  const inFlight = await tlsConnect(server.port)
  inFlight.socket.write(`POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${REVIEW.length}\r\n\r\n`)
  inFlight.socket.write(REVIEW.slice(0, 10))
  await until('the review to be reading its body', async () => (reviewBudgetOf(server.webhook)!.bytesInUse > 0 ? true : undefined))

  const closing = server.close()
  await idleClosed
  await opsClosed
  t.pass('idle keep-alive connections on both ports were closed by the server')
  inFlight.socket.write(REVIEW.slice(10))
  await closedByServer(inFlight, 'the in-flight connection to be closed after its answer')
  t.match(inFlight.received, /^HTTP\/1\.1 200 OK\r\n/, 'the in-flight review is answered')
  t.match(inFlight.received, /\r\nconnection: close\r\n/i, 'with Connection: close')
  t.match(inFlight.received, /"uid":"limits-1","allowed":true/)
  await closing
  const stopped = lines.find((l) => l.msg === 'stopped')
  t.strictSame(stopped?.steps, [], 'no cluster: no final steps configured')
  t.equal(lines.filter((l) => l.msg.startsWith('drain timeout reached')).length, 0, 'finished before the drain timeout')
})

t.test('shutdown: a request that never completes is cut at the drain timeout', async (t) => {
  const { logger, lines } = captureLogger()
  const server = await serve(t, { drainTimeoutSeconds: 0.5, requestTimeoutSeconds: 60, headersTimeoutSeconds: 60 }, logger)
  const stuck = await tlsConnect(server.port)
  stuck.socket.write(`POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${REVIEW.length}\r\n\r\n{`)
  await until('the review to be reading its body', async () => (reviewBudgetOf(server.webhook)!.bytesInUse > 0 ? true : undefined))
  await server.close()
  await closedByServer(stuck, 'the stuck connection to be closed')
  const timedOut = lines.filter((l) => l.msg.startsWith('drain timeout reached'))
  t.strictSame(
    timedOut.map((l) => ({ msg: l.msg, drainMs: l.drainMs, open: l.open })),
    [{ msg: 'drain timeout reached: closing the remaining connections', drainMs: 500, open: 1 }],
  )
  t.equal(lines.filter((l) => l.msg === 'stopped').length, 1)
})

// A review padded with JSON whitespace to exactly `size` bytes.
function reviewOfSize(uid: string, size: number): string {
  const body = JSON.stringify(podReview(uid, ['nginx:1.25']))
  return body + ' '.repeat(size - body.length)
}

t.test('review bodies held at once are bounded: later reviews wait unread, one too many is refused', async (t) => {
  const { logger, lines } = captureLogger()
  const server = await serve(t, { reviewBytesInFlight: 65_536, maxWaitingReviews: 1, bodyLimitBytes: 65_536 }, logger)
  const budget = reviewBudgetOf(server.webhook)!
  const size = 40_000
  const head = `POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${size}\r\n\r\n`

  const a = await tlsConnect(server.port)
  a.socket.write(head)
  await until('A to reserve its body', async () => (budget.bytesInUse === size ? true : undefined))
  const b = await tlsConnect(server.port)
  b.socket.write(head)
  await until('B to wait', async () => (budget.waiting === 1 ? true : undefined))
  t.equal(budget.bytesInUse, size, 'B holds nothing while it waits')

  const c = await tlsConnect(server.port)
  c.socket.write(head)
  await closedByServer(c, 'C to be refused')
  t.match(c.received, /^HTTP\/1\.1 503 Service Unavailable\r\n/, 'the waiting line is full: 503 at once')
  t.equal(lines.filter((l) => l.msg.startsWith('too many reviews waiting')).length, 1, 'C refused, logged once')
  t.equal((await server.metrics.errors.get()).values.find((v) => v.labels.stage === 'overload')?.value, 1)

  const bodyA = reviewOfSize('a', size)
  a.socket.write(bodyA)
  await until('A to be answered', async () => (a.received.includes('"uid":"a"') ? true : undefined))
  await until('B to get its turn', async () => (budget.waiting === 0 && budget.bytesInUse === size ? true : undefined))
  b.socket.write(reviewOfSize('b', size))
  await until('B to be answered', async () => (b.received.includes('"uid":"b"') ? true : undefined))
  t.match(a.received, /^HTTP\/1\.1 200 OK\r\n/)
  t.match(b.received, /^HTTP\/1\.1 200 OK\r\n/)
  await until('everything given back', async () => (budget.bytesInUse === 0 ? true : undefined))

  // A client that gives up while waiting leaves the line.
  const d = await tlsConnect(server.port)
  d.socket.write(`POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n`)
  await until('D to reserve', async () => (budget.bytesInUse === 60_000 ? true : undefined))
  const e = await tlsConnect(server.port)
  e.socket.write(head)
  await until('E to wait', async () => (budget.waiting === 1 ? true : undefined))
  e.socket.destroy()
  await until('E to leave the line', async () => (budget.waiting === 0 ? true : undefined))
  d.socket.destroy()
  await until('D to give its bytes back', async () => (budget.bytesInUse === 0 ? true : undefined))

  // Over the body limit: 413 without reading it.
  const big = await tlsConnect(server.port)
  big.socket.write(`POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 65537\r\n\r\n`)
  await until('the oversized review to be refused', async () => (big.received.startsWith('HTTP/1.1 413') ? true : undefined))
  big.socket.destroy()
})
