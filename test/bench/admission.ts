// Admission speed and memory, printed as figures (not a test).
//   npx tsx test/bench/admission.ts [reviews]
// 1. the pure decision (admit + response) for a typical Pod, in-process;
// 2. the same reviews over real HTTPS on loopback with keep-alive, as the API server sends them.
import { Agent, request } from 'node:https'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { admit, buildResponse, type AdmissionReview } from '../../server/admission/review.js'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { startServer } from '../../server/serve.js'

const count = Number(process.argv[2] ?? 50_000)

function reviewFor(i: number): AdmissionReview {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `uid-${i}`,
      namespace: 'shop',
      operation: 'CREATE',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      object: {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          generateName: 'web-',
          labels: { app: 'web' },
          ownerReferences: [{ kind: 'ReplicaSet', name: 'web-1', controller: true }],
        },
        spec: {
          initContainers: [{ name: 'migrate', image: `ghcr.io/example/migrate:v${i % 50}` }],
          containers: [
            { name: 'web', image: `nginx:1.${i % 30}` },
            { name: 'sidecar', image: `registry.k8s.io/sidecar@sha256:${(i % 16).toString(16).repeat(64)}` },
            { name: 'internal', image: 'harbor.corp.example/team/api:2.1' },
          ],
        },
      },
    },
  }
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

function report(label: string, samples: Float64Array, totalMs: number): void {
  const sorted = samples.slice().sort()
  console.log(
    `${label}: ${samples.length} reviews in ${totalMs.toFixed(0)} ms = ${Math.round((samples.length / totalMs) * 1000)} reviews/s; ` +
      `per review p50 ${(percentile(sorted, 50) * 1000).toFixed(1)} µs, p99 ${(percentile(sorted, 99) * 1000).toFixed(1)} µs, ` +
      `max ${(percentile(sorted, 100) * 1000).toFixed(1)} µs`,
  )
}

const policy = compilePolicy(resolveConfig({ noProxy: ['.corp.example'] }, {}))
const reachability = staticReachability(policy)
const reviews = Array.from({ length: count }, (_, i) => reviewFor(i))

// Warm-up so the figures describe the steady state.
for (let i = 0; i < 2000; i++) admit(reviews[i % count]!.request, policy, reachability)
global.gc?.()
const heapBefore = process.memoryUsage().heapUsed
const inProcess = new Float64Array(count)
const t0 = performance.now()
for (let i = 0; i < count; i++) {
  const s = performance.now()
  const review = reviews[i]!
  const result = admit(review.request, policy, reachability)
  JSON.stringify(buildResponse(review, result.patch, result.warnings))
  inProcess[i] = performance.now() - s
}
report('decision (admit + response JSON), in-process', inProcess, performance.now() - t0)
console.log(`heap growth over the run: ${((process.memoryUsage().heapUsed - heapBefore) / 1024 / 1024).toFixed(1)} MiB (garbage included)`)

// The embedded defaults without network: no registry probes, no pre-pull, no cluster.
const work = await mkdtemp(join(tmpdir(), 'mirrorhook-bench-'))
const configPath = join(work, 'config.yaml')
await writeFile(configPath, 'mode: auto\nreachability:\n  probes:\n    enabled: false\nkubeFledged:\n  enabled: false\n')
const server = await startServer({
  configPath,
  port: 0,
  host: '127.0.0.1',
  devCertDir: work,
  certReloadIntervalMs: 60_000,
  shutdownDelayMs: 0,
  env: {},
  logger: pino({ level: 'warn' }),
  kube: null,
})
const ca = await readFile(server.caFile!, 'utf8')
const agent = new Agent({ keepAlive: true, maxSockets: 8, ca })
const bodies = reviews.map((r) => JSON.stringify(r))

function post(body: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: server.port, path: '/mutate', method: 'POST', agent, headers: { 'content-type': 'application/json' } },
      (res) => {
        res.resume()
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))))
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

const httpsCount = Math.min(count, 20_000)
const overHttps = new Float64Array(httpsCount)
const concurrency = 8
let next = 0
const t1 = performance.now()
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < httpsCount) {
      const i = next++
      const s = performance.now()
      await post(bodies[i]!)
      overHttps[i] = performance.now() - s
    }
  }),
)
report(`round trip over HTTPS, keep-alive, ${concurrency} concurrent`, overHttps, performance.now() - t1)
const latency = (await server.metrics.latency.get()).values
const sum = latency.find((v) => v.metricName === 'mirrorhook_admission_duration_seconds_sum')?.value ?? 0
const n = latency.find((v) => v.metricName === 'mirrorhook_admission_duration_seconds_count')?.value ?? 1
console.log(`server-side decision time (histogram mean): ${((sum / n) * 1e6).toFixed(1)} µs`)
console.log(
  `process RSS: ${(process.memoryUsage().rss / 1024 / 1024).toFixed(0)} MiB, heap used: ${(process.memoryUsage().heapUsed / 1024 / 1024).toFixed(0)} MiB`,
)
agent.destroy()
await server.close()
