// Where the CPU of one review goes inside the process, without TLS or sockets: mirrorhook's webhook
// app and the floor's bare Fastify app (as test/bench/floor-server.mjs builds it) answer the same
// review through Fastify's inject, alternately; then the pieces of mirrorhook's handler one by one.
// CPU time of the process (process.cpuUsage) per review, so the machine's load distorts it little.
// Figures, not a test:
//   npx tsx test/bench/handler.ts [--reviews 20000] [--rounds 5] [--file review-10-images.json]
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify from 'fastify'
import { admit, parseAdmissionReview, responseJson } from '../../server/admission/review.js'
import { parseReviewText } from '../../server/admission/review-text.js'
import { decisionLogFields } from '../../server/http/plugins/mutate.js'
import { createLogger, stdoutDestination } from '../../server/observability/logger.js'
import { startServer } from '../../server/serve.js'
import { ensureDevCertificates } from '../../server/tls/devcerts.js'

const args = process.argv.slice(2)
const option = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1]! : fallback)
const REVIEWS = Number(option('reviews', '20000'))
const ROUNDS = Number(option('rounds', '5'))
const FILE = option('file', 'review-10-images.json')
// Every review with new tags (no decision or outcome repeats), as floor.ts's "cold".
const COLD = args.includes('--cold')

const root = join(import.meta.dirname, '..', '..')
const body = readFileSync(join(root, 'test', 'fixtures', 'bench', FILE), 'utf8')
const work = mkdtempSync(join(tmpdir(), 'mirrorhook-handler-'))
const certs = await ensureDevCertificates(join(work, 'certs'))
const configFile = join(work, 'mirrorhook.yaml')
writeFileSync(configFile, 'mode: auto\nreachability:\n  probes:\n    enabled: false\nkubeFledged:\n  enabled: false\n')

// The log goes where the floor benchmark's goes: a file descriptor nobody waits on (/dev/null here).
const nullFd = openSync('/dev/null', 'w')
const logger = createLogger('info', stdoutDestination(undefined, nullFd))
const server = await startServer({
  configPath: configFile,
  port: 0,
  host: '127.0.0.1',
  tlsCertFile: certs.certFile,
  tlsKeyFile: certs.keyFile,
  certReloadIntervalMs: 60_000,
  shutdownDelayMs: 0,
  env: { HOME: join(work, 'home'), KUBECONFIG: join(work, 'no-kubeconfig') },
  logger,
  kube: null,
})
const response = (
  await server.webhook.inject({ method: 'POST', url: '/mutate', headers: { 'content-type': 'application/json' }, payload: body })
).body

const floor = Fastify({ logger: false })
floor.post('/mutate', async (_request, reply) => reply.type('application/json; charset=utf-8').send(response))
await floor.ready()

const rows: Record<string, number[]> = {}
const add = (name: string, v: number) => (rows[name] ??= []).push(v)

function cpuPer(n: number, fn: () => void): number {
  const start = process.cpuUsage()
  for (let i = 0; i < n; i++) fn()
  const used = process.cpuUsage(start)
  return (used.user + used.system) / n
}

async function cpuPerAsync(name: string, n: number, fn: () => Promise<unknown>): Promise<void> {
  const start = process.cpuUsage()
  for (let i = 0; i < n; i += 16) await Promise.all(Array.from({ length: Math.min(16, n - i) }, fn))
  const used = process.cpuUsage(start)
  await new Promise((r) => setImmediate(r))
  add(name, (used.user + used.system) / n)
}

let tagged = 0
const nextBody = () => (COLD ? body.replace(/:v?(\d+\.[\d.]+)/g, (_m, tag: string) => `:${tag}-${++tagged}`) : body)
const inject = (app: typeof floor) => () =>
  app.inject({ method: 'POST', url: '/mutate', headers: { 'content-type': 'application/json' }, payload: nextBody() })

const policy = server.config.policy
const reachability = server.reachability!.view()
const parsed = parseAdmissionReview(JSON.parse(body))
if (!parsed.ok) throw new Error(parsed.message)
const review = parsed.review
const result = admit(review.request, policy, reachability)

for (let round = 0; round < ROUNDS; round++) {
  await cpuPerAsync('inject: mirrorhook', REVIEWS, inject(server.webhook as unknown as typeof floor))
  await cpuPerAsync('inject: floor', REVIEWS, inject(floor))
  add(
    'JSON.parse',
    cpuPer(REVIEWS, () => JSON.parse(body)),
  )
  add(
    'parseReviewText',
    cpuPer(REVIEWS, () => parseReviewText(body)),
  )
  const object = JSON.parse(body)
  add(
    'parseAdmissionReview',
    cpuPer(REVIEWS, () => parseAdmissionReview(object)),
  )
  add(
    'admit (decisions reused)',
    cpuPer(REVIEWS, () => admit(review.request, policy, reachability)),
  )
  add(
    'responseJson',
    cpuPer(REVIEWS, () => responseJson(review, result.patch, result.warnings)),
  )
  add(
    'decisionLogFields',
    cpuPer(REVIEWS, () => decisionLogFields(result)),
  )
  add(
    'log line',
    cpuPer(REVIEWS, () => logger.info({ uid: review.request.uid, pod: 'web-*', ...decisionLogFields(result) }, 'admission decided')),
  )
  add(
    'metrics',
    cpuPer(REVIEWS, () => {
      server.metrics.latency.observe(0.00002)
      server.metrics.countReview(result.outcome, false)
    }),
  )
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
console.log(`${FILE}: ${REVIEWS} reviews × ${ROUNDS} rounds, CPU µs per review (median, range)`)
for (const [name, xs] of Object.entries(rows)) {
  console.log(`  ${name.padEnd(28)} ${median(xs).toFixed(1).padStart(7)}  (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`)
}
await floor.close()
await server.close()
closeSync(nullFd)
