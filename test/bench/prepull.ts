// Pre-pull at scale against a real kube-apiserver: Pods with 10,000 distinct images
// are admitted through the webhook (a separate `mirrorhook serve` process), then the
// ImageCaches are counted. kube-fledged's controller is not run: this script writes the
// status it would write (Succeeded) on each new ImageCache, at once, so that the batches
// follow one another as they would. The pull Jobs kube-fledged would create are computed
// (one per image and node) for the layout measured and for one ImageCache per image.
// Run: npx tsx test/bench/prepull.ts [images] [writesPerSecond] [nodes]
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { startControlPlane } from '../support/controlplane.js'
import { get, requireBinaries, sample, spawnServe } from './common.js'
import { createNamespace, registerWebhook } from '../support/webhook.js'

const IMAGES = Number(process.argv[2] ?? 10_000)
const RATE = Number(process.argv[3] ?? 250)
const NODES = Number(process.argv[4] ?? 20)
// kube-fledged's image work queue: client-go's default controller rate limiter, 10 per second.
const KUBE_FLEDGED_JOBS_PER_SECOND = 10
const PER_POD = 10
const NS = 'kube-fledged'
const CACHES = `/apis/kubefledged.io/v1alpha2/namespaces/${NS}/imagecaches`
const ROOT = fileURLToPath(new URL('../..', import.meta.url))

requireBinaries()

const cp = await startControlPlane()
const work = await mkdtemp(join(tmpdir(), 'mirrorhook-bench-'))
let child: ReturnType<typeof spawn> | undefined
try {
  const crd = await cp.kubectl(['apply', '-f', join(ROOT, 'test/fixtures/kubefledged/imagecache-crd.yaml')])
  if (crd.code !== 0) throw new Error(crd.stderr)
  await createNamespace(cp, NS, false)
  await createNamespace(cp, 'bench', true)

  const configPath = join(work, 'config.yaml')
  await writeFile(
    configPath,
    stringify({
      mirror: { prefix: 'm.daocloud.io' },
      registries: ['*'],
      reachability: { enabled: false },
      kubeFledged: {
        namespace: NS,
        writesPerSecond: RATE,
        writeBurst: Math.max(10, Math.round(RATE / 5)),
        queueSize: 2 * IMAGES,
        batchSize: 200,
        podSweepSeconds: 60,
        unusedPurgeSeconds: 0,
        leaseDurationSeconds: 5,
      },
    }),
  )
  child = spawnServe(configPath, work, { KUBECONFIG: cp.kubeconfigPath })
  // The listening line (info) carries both ports; the rest of the output is read and dropped.
  const ports = await new Promise<{ port: number; metricsPort: number }>((resolve, reject) => {
    const lines = createInterface(child!.stdout!)
    lines.on('line', (line) => {
      try {
        const j = JSON.parse(line) as { port?: number; metricsPort?: number; msg?: string }
        if (j.port && j.metricsPort) resolve({ port: j.port, metricsPort: j.metricsPort })
      } catch {
        // not JSON
      }
    })
    child!.on('exit', (code) => reject(new Error(`mirrorhook exited with ${code}`)))
  })
  const metricsUrl = `http://127.0.0.1:${ports.metricsPort}/metrics`
  const caPem = await readFile(join(work, 'ca.crt'), 'utf8')
  await registerWebhook(cp, { url: `https://127.0.0.1:${ports.port}/mutate`, caPem }, 'bench')
  const idle = await get(metricsUrl)
  const rssIdle = sample(idle, 'mirrorhook_process_resident_memory_bytes')

  const images = Array.from({ length: IMAGES }, (_, i) => `docker.io/library/bench-${i}:1.0`)
  const mirrors = new Set(images.map((i) => `m.daocloud.io/${i}`))
  let peakRss = rssIdle
  let peakHeap = 0
  let firstWriteAt = 0
  const sampler = setInterval(() => {
    get(metricsUrl).then(
      (text) => {
        peakRss = Math.max(peakRss, sample(text, 'mirrorhook_process_resident_memory_bytes'))
        peakHeap = Math.max(peakHeap, sample(text, 'mirrorhook_nodejs_heap_size_used_bytes'))
        if (!firstWriteAt && sample(text, 'mirrorhook_prepull_api_writes_total') > 0) firstWriteAt = Date.now()
      },
      () => undefined,
    )
  }, 500)

  const t0 = Date.now()
  let next = 0
  const pods = Math.ceil(IMAGES / PER_POD)
  const worker = async () => {
    while (next < pods) {
      const p = next++
      const containers = images.slice(p * PER_POD, (p + 1) * PER_POD).map((image, i) => ({ name: `c${i}`, image }))
      const r = await cp.request('POST', '/api/v1/namespaces/bench/pods', {
        body: { apiVersion: 'v1', kind: 'Pod', metadata: { name: `bench-${p}` }, spec: { containers } },
      })
      if (r.status !== 201) throw new Error(`pod ${p}: ${r.status} ${r.body.slice(0, 200)}`)
      if (!String(r.json().spec.containers[0].image).startsWith('m.daocloud.io/')) throw new Error(`pod ${p} was not mutated`)
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  const admittedMs = Date.now() - t0

  // Drained: every image is in an ImageCache and nothing waits. Listing the ImageCaches is
  // cheap now (about images / imagesPerCache objects); each new one is marked Succeeded the
  // way kube-fledged's full update writes it.
  const list = async (): Promise<any[]> => {
    const items: any[] = []
    let cont = ''
    do {
      const r = await cp.request('GET', `${CACHES}?limit=2000${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`)
      const j = r.json()
      items.push(...j.items)
      cont = j.metadata?.continue ?? ''
    } while (cont)
    return items
  }
  let items: any[] = []
  for (;;) {
    items = await list()
    for (const o of items.filter((o) => !o.status)) {
      const at = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
      o.status = {
        status: 'Succeeded',
        reason: 'ImageCacheCreate',
        message: 'All requested images pulled succesfully to respective nodes',
        startTime: at,
        completionTime: at,
      }
      const r = await cp.request('PUT', `${CACHES}/${o.metadata.name}`, { body: o })
      if (r.status !== 200 && r.status !== 409) throw new Error(`status of ${o.metadata.name}: ${r.status} ${r.body.slice(0, 200)}`)
    }
    const held = items.reduce((n, o) => n + o.spec.cacheSpec[0].images.length, 0)
    const text = await get(metricsUrl)
    if (held >= IMAGES && sample(text, 'mirrorhook_prepull_queue_depth') === 0 && sample(text, 'mirrorhook_prepull_images_waiting') === 0)
      break
    if (Date.now() - t0 > 30 * 60_000) break
    await new Promise((r) => setTimeout(r, 200))
  }
  const drainMs = Date.now() - t0
  clearInterval(sampler)
  const final = await get(metricsUrl)
  const count = items.length
  const perImage = new Map<string, number>()
  for (const o of items) for (const l of o.spec.cacheSpec) for (const image of l.images) perImage.set(image, (perImage.get(image) ?? 0) + 1)
  const duplicates = [...perImage.values()].reduce((n, v) => n + (v - 1), 0) + [...perImage.keys()].filter((i) => !mirrors.has(i)).length
  const lost = [...mirrors].filter((m) => !perImage.has(m)).length
  const largest = Math.max(0, ...items.map((o) => o.spec.cacheSpec[0].images.length))
  const jobs = [...perImage.values()].reduce((n, v) => n + v, 0) * NODES
  const created = sample(final, 'mirrorhook_prepull_api_writes_total', 'result="created"')
  const allWrites = sample(final, 'mirrorhook_prepull_api_writes_total')
  const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`
  const rows: [string, string][] = [
    ['images admitted (distinct)', String(IMAGES)],
    ['Pods (10 containers each)', String(pods)],
    ['admission of all Pods', `${(admittedMs / 1000).toFixed(1)} s`],
    ['images in ImageCaches', String(perImage.size)],
    ['duplicates', String(duplicates)],
    ['lost', String(lost)],
    ['ImageCaches, batched (largest)', `${count} (${largest} images)`],
    ['ImageCaches, one per image (earlier layout)', String(IMAGES)],
    [`pull Jobs kube-fledged creates, batched (${NODES} nodes)`, String(jobs)],
    [`pull Jobs kube-fledged creates, one per image (${NODES} nodes)`, String(IMAGES * NODES)],
    [
      `  at kube-fledged's ${KUBE_FLEDGED_JOBS_PER_SECOND} Jobs/s (each layout, each 15-min refresh)`,
      `${((IMAGES * NODES) / KUBE_FLEDGED_JOBS_PER_SECOND / 60).toFixed(0)} min`,
    ],
    ['caches processed at once, batched / one per image', `1 / up to ${IMAGES}`],
    ['API writes (creates / all)', `${created} / ${allWrites}`],
    ['configured write rate', `${RATE}/s`],
    ['API writes per second (first write to drained)', (allWrites / ((t0 + drainMs - firstWriteAt) / 1000)).toFixed(1)],
    ['drained after the last admission', `${((drainMs - admittedMs) / 1000).toFixed(1)} s`],
    ['time to drain (first Pod to last cache)', `${(drainMs / 1000).toFixed(1)} s`],
    ['dropped', String(sample(final, 'mirrorhook_prepull_dropped_total'))],
    ['retries', String(sample(final, 'mirrorhook_prepull_retries_total'))],
    ['webhook RSS idle / peak / end', `${mb(rssIdle)} / ${mb(peakRss)} / ${mb(sample(final, 'mirrorhook_process_resident_memory_bytes'))}`],
    ['webhook heap used peak', mb(peakHeap)],
  ]
  for (const [k, v] of rows) console.log(`${k.padEnd(50)} ${v}`)
  if (duplicates !== 0 || lost !== 0) process.exitCode = 1
} finally {
  if (child?.pid) child.kill('SIGTERM')
  await cp.stop()
  await rm(work, { recursive: true, force: true })
}
