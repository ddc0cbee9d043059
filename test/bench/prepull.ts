// Pre-pull at scale against a real kube-apiserver: Pods with 10,000 distinct images
// are admitted through the webhook (a separate `mirrorhook serve` process), then the
// ImageCaches are counted. Run: npx tsx test/bench/prepull.ts [images] [writesPerSecond]
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { imageCacheName } from '../../server/prepull/imagecache.js'
import { startControlPlane } from '../support/controlplane.js'
import { get, requireBinaries, sample, spawnServe } from './common.js'
import { createNamespace, registerWebhook } from '../support/webhook.js'

const IMAGES = Number(process.argv[2] ?? 10_000)
const RATE = Number(process.argv[3] ?? 250)
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

  // Drained: the webhook wrote (or found) every image and its queue is empty. Polled from its
  // metrics: listing 10,000 objects repeatedly would load the API server being measured.
  for (;;) {
    const text = await get(metricsUrl)
    const written =
      sample(text, 'mirrorhook_prepull_api_writes_total', 'result="created"') +
      sample(text, 'mirrorhook_prepull_api_writes_total', 'result="already-exists"')
    if (written >= IMAGES && sample(text, 'mirrorhook_prepull_queue_depth') === 0) break
    if (Date.now() - t0 > 30 * 60_000) break
    await new Promise((r) => setTimeout(r, 100))
  }
  const drainMs = Date.now() - t0
  clearInterval(sampler)
  const final = await get(metricsUrl)
  const items: any[] = []
  let cont = ''
  do {
    const r = await cp.request('GET', `${CACHES}?limit=2000${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`)
    const j = r.json()
    items.push(...j.items)
    cont = j.metadata?.continue ?? ''
  } while (cont)
  const count = items.length
  const names: string[] = items.map((o) => `${o.metadata.name} ${o.spec.cacheSpec.map((l: any) => l.images.join(',')).join(';')}`)

  const perImage = new Map<string, number>()
  for (const line of names) for (const image of line.split(' ')[1]!.split(/[;,]/)) perImage.set(image, (perImage.get(image) ?? 0) + 1)
  const duplicates = [...perImage.values()].reduce((n, v) => n + (v - 1), 0) + [...perImage.keys()].filter((i) => !mirrors.has(i)).length
  const lost = [...mirrors].filter((m) => !perImage.has(m)).length
  const misnamed = names.filter((l) => {
    const [name, image] = l.split(' ')
    return name !== imageCacheName(image!)
  }).length
  const created = sample(final, 'mirrorhook_prepull_api_writes_total', 'result="created"')
  const allWrites = sample(final, 'mirrorhook_prepull_api_writes_total')
  const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`
  const rows: [string, string][] = [
    ['images admitted (distinct)', String(IMAGES)],
    ['Pods (10 containers each)', String(pods)],
    ['admission of all Pods', `${(admittedMs / 1000).toFixed(1)} s`],
    ['images cached (ImageCaches)', String(count)],
    ['duplicates', String(duplicates)],
    ['lost', String(lost)],
    ['names not derived from the image', String(misnamed)],
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
