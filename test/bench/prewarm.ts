// Pre-warm at scale against a real kube-apiserver and a real OCI registry (distribution): 200
// Deployments over 50 repositories with 300 tags each. One run (the scheduled run's code, started
// directly): its time, the registry requests per repository, the ImageCaches created, memory.
// Run: npx tsx test/bench/prewarm.ts [workloads] [repositories] [tags] [requestsPerSecond]
import https from 'node:https'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { Registry as Metrics } from 'prom-client'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { kubeFledgedSchema } from '../../server/prepull/config.js'
import { Prepull } from '../../server/prepull/prepull.js'
import { Prewarmer } from '../../server/prewarm/prewarmer.js'
import { startControlPlane } from '../support/controlplane.js'
import { pushImage, startRegistry } from '../support/registry.js'
import { createNamespace } from '../support/webhook.js'
import { requireBinaries } from './common.js'

const WORKLOADS = Number(process.argv[2] ?? 200)
const REPOSITORIES = Number(process.argv[3] ?? 50)
const TAGS = Number(process.argv[4] ?? 300)
// The registry entry's request rate (its default when not given).
const RATE = process.argv[5] === undefined ? undefined : Number(process.argv[5])
const KF = 'kube-fledged'
const CACHES = `/apis/kubefledged.io/v1alpha2/namespaces/${KF}/imagecaches`
const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const MiB = 1024 * 1024

requireBinaries()

// Tag i of a repository: semver 1.<i / 10>.<i % 10>, so 1.29.9 is the newest of 300.
const tagOf = (i: number) => `1.${Math.floor(i / 10)}.${i % 10}`

const cp = await startControlPlane()
const reg = await startRegistry()
const agent = new https.Agent({ keepAlive: true, maxSockets: 16, ca: reg.caPem })
try {
  const crd = await cp.kubectl(['apply', '-f', join(ROOT, 'test/fixtures/kubefledged/imagecache-crd.yaml')])
  if (crd.code !== 0) throw new Error(crd.stderr)
  for (const ns of [KF, 'mirrorhook', 'bench']) await createNamespace(cp, ns, false)

  // Cheap tags: one image per repository, then its manifest PUT again under every other tag.
  const pushStarted = Date.now()
  const putManifest = (repository: string, tag: string, body: Buffer) =>
    new Promise<void>((resolve, reject) => {
      const req = https.request(
        `${reg.url}/v2/${repository}/manifests/${tag}`,
        { method: 'PUT', agent, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json', 'Content-Length': body.length } },
        (res) => {
          res.resume()
          res.on('end', () => (res.statusCode === 201 ? resolve() : reject(new Error(`PUT ${repository}:${tag}: HTTP ${res.statusCode}`))))
        },
      )
      req.on('error', reject)
      req.end(body)
    })
  for (let r = 0; r < REPOSITORIES; r++) {
    const repository = `bench/app-${r}`
    await pushImage(reg, repository, tagOf(0))
    const manifest = await new Promise<Buffer>((resolve, reject) =>
      https
        .get(
          `${reg.url}/v2/${repository}/manifests/${tagOf(0)}`,
          { agent, headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } },
          (res) => {
            const chunks: Buffer[] = []
            res.on('data', (c) => chunks.push(c))
            res.on('end', () => resolve(Buffer.concat(chunks)))
          },
        )
        .on('error', reject),
    )
    const tags = [...Array.from({ length: TAGS - 1 }, (_, i) => tagOf(i + 1)), 'latest']
    for (let i = 0; i < tags.length; i += 16) await Promise.all(tags.slice(i, i + 16).map((tag) => putManifest(repository, tag, manifest)))
  }
  const pushSeconds = (Date.now() - pushStarted) / 1000

  // Workloads: repository w % REPOSITORIES, each on an older tag (four current tags per repository at 200/50).
  for (let w = 0; w < WORKLOADS; w++) {
    const image = `${reg.host}/bench/app-${w % REPOSITORIES}:${tagOf(10 * Math.floor(w / REPOSITORIES))}`
    const r = await cp.request('POST', '/apis/apps/v1/namespaces/bench/deployments', {
      body: {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: `w-${w}`, namespace: 'bench' },
        spec: {
          selector: { matchLabels: { app: `w-${w}` } },
          template: { metadata: { labels: { app: `w-${w}` } }, spec: { containers: [{ name: 'app', image }] } },
        },
      },
    })
    if (r.status !== 201) throw new Error(`deployment w-${w}: HTTP ${r.status} ${r.body}`)
  }

  const kubeConfig = await cp.kubeConfig()
  const metrics = new Metrics()
  const prepull = new Prepull({
    kubeConfig,
    config: kubeFledgedSchema.parse({ namespace: KF, writesPerSecond: 100, writeBurst: 50, crdPollSeconds: 1, unusedPurgeSeconds: 0 }),
    logger: pino({ level: 'silent' }),
    registry: metrics,
  })
  prepull.start()
  const config = resolveConfig({
    mode: 'always',
    mirror: { prefix: 'mirror.example' },
    registries: ['docker.io'],
    reachability: { enabled: false },
    remediation: { enabled: false },
    prewarm: {
      enabled: true,
      namespaces: ['bench'],
      registries: { [reg.host]: { api: 'oci', order: 'semver', caFile: reg.caFile, ...(RATE ? { requestsPerSecond: RATE } : {}) } },
    },
  })
  const policy = compilePolicy(config)
  const prewarmer = new Prewarmer({
    kubeConfig,
    config,
    policy,
    reachability: () => staticReachability(policy),
    prepull,
    namespace: 'mirrorhook',
    logger: pino({ level: 'warn' }),
    registry: metrics,
  })
  global.gc?.()
  const before = process.memoryUsage()
  let peakRss = before.rss
  let peakHeap = before.heapUsed
  const sampler = setInterval(() => {
    const m = process.memoryUsage()
    peakRss = Math.max(peakRss, m.rss)
    peakHeap = Math.max(peakHeap, m.heapUsed)
  }, 20)
  const started = performance.now()
  const report = await prewarmer.runNow()
  const runMs = performance.now() - started
  clearInterval(sampler)
  const requests = (await metrics.getSingleMetric('mirrorhook_prewarm_registry_requests_total')!.get()).values.reduce(
    (n, v) => n + v.value,
    0,
  )

  // The ImageCaches, written by pre-pull at its configured rate.
  const cachesStarted = performance.now()
  let caches = 0
  for (const deadline = Date.now() + 300_000; Date.now() < deadline;) {
    caches = (await cp.request('GET', CACHES)).json().items.length
    if (caches >= report.images) break
    await new Promise((r) => setTimeout(r, 250))
  }
  const cachesMs = performance.now() - cachesStarted

  // A second run: the same answers, every image already cached.
  const second = performance.now()
  const again = await prewarmer.runNow()
  const secondMs = performance.now() - second
  const requests2 =
    (await metrics.getSingleMetric('mirrorhook_prewarm_registry_requests_total')!.get()).values.reduce((n, v) => n + v.value, 0) - requests

  const out = {
    workloads: WORKLOADS,
    repositories: REPOSITORIES,
    tagsPerRepository: TAGS,
    requestsPerSecond: RATE ?? 'default',
    pushSeconds: Math.round(pushSeconds),
    run: {
      result: report.result,
      ms: Math.round(runMs),
      containers: report.containers,
      images: report.images,
      newerTags: report.newerTags,
    },
    registryRequests: {
      total: requests,
      perRepository: +(requests / REPOSITORIES).toFixed(2),
      questions: report.registries[reg.host]?.questions,
    },
    imageCaches: { created: caches, msAfterRun: Math.round(cachesMs) },
    memory: {
      rssBeforeMiB: +(before.rss / MiB).toFixed(1),
      rssPeakMiB: +(peakRss / MiB).toFixed(1),
      heapBeforeMiB: +(before.heapUsed / MiB).toFixed(1),
      heapPeakMiB: +(peakHeap / MiB).toFixed(1),
    },
    secondRun: { result: again.result, ms: Math.round(secondMs), registryRequests: requests2 },
  }
  console.log(JSON.stringify(out, null, 2))
  await prewarmer.stop()
  await prepull.stop()
} finally {
  agent.destroy()
  await reg.stop()
  await cp.stop()
}
