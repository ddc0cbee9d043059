// What watching Pods costs the webhook and the API server: 5,000 Pods in 50 opted-in
// namespaces, created directly through a real kube-apiserver (no nodes: Pods stay Pending),
// a tenth of them reporting a failed pull as a kubelet would, plus Pulled events. The webhook
// (a separate `mirrorhook serve` process with learning and pre-pull on) runs under its own
// ServiceAccount; the API server's audit log counts every request that identity makes, and
// the API server's own metrics say how many watches are open.
// Run: npx tsx test/bench/podcache.ts [pods] [namespaces] [steadySeconds] [podSweepSeconds]
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { startControlPlane } from '../support/controlplane.js'
import { get, requireBinaries, sample, spawnServe } from './common.js'
import { createNamespace } from '../support/webhook.js'

const PODS = Number(process.argv[2] ?? 5_000)
const NAMESPACES = Number(process.argv[3] ?? 50)
const STEADY_S = Number(process.argv[4] ?? 180)
const SWEEP_S = Number(process.argv[5] ?? 60)
const IMAGES = 100
const OWN_NS = 'mirrorhook'
const SA = `system:serviceaccount:${OWN_NS}:mirrorhook`
const ROOT = fileURLToPath(new URL('../..', import.meta.url))

requireBinaries()

const work = await mkdtemp(join(tmpdir(), 'mirrorhook-bench-podcache-'))
const auditLog = join(work, 'audit.log')
const auditPolicy = join(work, 'audit-policy.yaml')
// One line per request the webhook's identity makes, written when the request arrives.
await writeFile(
  auditPolicy,
  stringify({
    apiVersion: 'audit.k8s.io/v1',
    kind: 'Policy',
    omitStages: ['ResponseStarted', 'ResponseComplete', 'Panic'],
    rules: [{ level: 'Metadata', users: [SA] }, { level: 'None' }],
  }),
)
const cp = await startControlPlane({
  apiserverArgs: [`--audit-policy-file=${auditPolicy}`, `--audit-log-path=${auditLog}`, '--audit-log-mode=blocking'],
})
let child: ReturnType<typeof spawn> | undefined
try {
  const crd = await cp.kubectl(['apply', '-f', join(ROOT, 'test/fixtures/kubefledged/imagecache-crd.yaml')])
  if (crd.code !== 0) throw new Error(crd.stderr)
  await createNamespace(cp, 'kube-fledged', false)
  await createNamespace(cp, OWN_NS, false)
  for (const args of [
    ['create', 'serviceaccount', 'mirrorhook', '-n', OWN_NS],
    ['create', 'clusterrolebinding', 'mirrorhook-bench', '--clusterrole=cluster-admin', `--serviceaccount=${OWN_NS}:mirrorhook`],
  ]) {
    const r = await cp.kubectl(args)
    if (r.code !== 0) throw new Error(r.stderr)
  }
  const token = (await cp.kubectl(['create', 'token', 'mirrorhook', '-n', OWN_NS, '--duration=2h'])).stdout.trim()
  const kubeconfig = join(work, 'kubeconfig')
  await writeFile(
    kubeconfig,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'bench', cluster: { server: cp.server, 'certificate-authority-data': Buffer.from(cp.caPem).toString('base64') } }],
      users: [{ name: 'mirrorhook', user: { token } }],
      contexts: [{ name: 'bench', context: { cluster: 'bench', user: 'mirrorhook' } }],
      'current-context': 'bench',
    }),
  )
  const namespaces = Array.from({ length: NAMESPACES }, (_, i) => `team-${i}`)
  for (const ns of namespaces) await createNamespace(cp, ns, true)

  const configPath = join(work, 'config.yaml')
  await writeFile(
    configPath,
    stringify({
      mirror: { prefix: 'm.daocloud.io' },
      registries: ['*'],
      mode: 'auto',
      // No registry is contacted: only the cluster teaches.
      reachability: { probes: { enabled: false } },
      kubeFledged: { namespace: 'kube-fledged', podSweepSeconds: SWEEP_S },
    }),
  )
  // The API server's own loopback informers hold watches too: counted before the webhook starts.
  const baseline = (await cp.request('GET', '/metrics')).body
  const t0 = Date.now()
  child = spawnServe(configPath, work, { KUBECONFIG: kubeconfig, POD_NAMESPACE: OWN_NS })
  const metricsPort = await new Promise<number>((resolve, reject) => {
    const lines = createInterface(child!.stdout!)
    lines.on('line', (line) => {
      try {
        const j = JSON.parse(line) as { metricsPort?: number }
        if (j.metricsPort) resolve(j.metricsPort)
      } catch {
        // not JSON
      }
    })
    child!.on('exit', (code) => reject(new Error(`mirrorhook exited with ${code}`)))
  })
  const metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`
  // Settled: the namespaces were seen and kube-fledged found.
  for (let i = 0; i < 100 && sample(await get(metricsUrl), 'mirrorhook_kubefledged_available') !== 1; i++)
    await new Promise((r) => setTimeout(r, 100))
  await new Promise((r) => setTimeout(r, 3_000))
  const idle = await get(metricsUrl)
  const rssIdle = sample(idle, 'mirrorhook_process_resident_memory_bytes')
  const heapIdle = sample(idle, 'mirrorhook_nodejs_heap_size_used_bytes')
  let peakRss = rssIdle
  let peakHeap = heapIdle
  const sampler = setInterval(() => {
    get(metricsUrl).then(
      (text) => {
        peakRss = Math.max(peakRss, sample(text, 'mirrorhook_process_resident_memory_bytes'))
        peakHeap = Math.max(peakHeap, sample(text, 'mirrorhook_nodejs_heap_size_used_bytes'))
      },
      () => undefined,
    )
  }, 500)

  // Pods as a ReplicaSet would own them, rewritten by mirrorhook at admission (the annotation).
  const tPods = Date.now()
  let next = 0
  const worker = async () => {
    while (next < PODS) {
      const p = next++
      const ns = namespaces[p % NAMESPACES]!
      const images = [`docker.io/library/app-${p % IMAGES}:1.0`, `quay.io/acme/sidecar-${p % 10}:2.3`]
      const containers = images.map((image, i) => ({
        name: `c${i}`,
        image: `m.daocloud.io/${image}`,
        resources: { requests: { cpu: '10m', memory: '16Mi' } },
        env: [{ name: 'MODE', value: 'bench' }],
      }))
      const original = Object.fromEntries(images.map((image, i) => [`c${i}`, image]))
      const r = await cp.request('POST', `/api/v1/namespaces/${ns}/pods`, {
        body: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: {
            name: `app-${p}`,
            labels: { app: `app-${p % IMAGES}`, 'pod-template-hash': 'abc123' },
            annotations: { 'mirrorhook.io/original-images': JSON.stringify(original) },
            ownerReferences: [
              { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `app-${p % IMAGES}-abc123`, uid: randomUUID(), controller: true },
            ],
          },
          spec: { containers },
        },
      })
      if (r.status !== 201) throw new Error(`pod ${p}: ${r.status} ${r.body.slice(0, 200)}`)
      if (p % 10 === 0) {
        // A failed pull, written as the kubelet writes it.
        const pod = r.json()
        pod.status = {
          phase: 'Pending',
          containerStatuses: containers.map((c) => ({
            name: c.name,
            image: c.image,
            imageID: '',
            ready: false,
            restartCount: 0,
            state: {
              waiting: {
                reason: 'ErrImagePull',
                message: `failed to pull and unpack image "${c.image}": failed to resolve reference "${c.image}": dial tcp 10.0.0.9:443: i/o timeout`,
              },
            },
          })),
        }
        const s = await cp.request('PUT', `/api/v1/namespaces/${ns}/pods/app-${p}/status`, { body: pod })
        if (s.status !== 200) throw new Error(`pod ${p} status: ${s.status} ${s.body.slice(0, 200)}`)
        const now = new Date().toISOString()
        const e = await cp.request('POST', `/api/v1/namespaces/${ns}/events`, {
          body: {
            apiVersion: 'v1',
            kind: 'Event',
            metadata: { name: `app-${p}.pulled` },
            involvedObject: { kind: 'Pod', namespace: ns, name: `app-${p}`, uid: pod.metadata.uid },
            reason: 'Pulled',
            type: 'Normal',
            message: `Successfully pulled image "${c0(containers)}" in 1.2s (1.2s including waiting). Image size: 1000 bytes.`,
            source: { component: 'kubelet', host: 'node-1' },
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        })
        if (e.status !== 201) throw new Error(`event ${p}: ${e.status} ${e.body.slice(0, 200)}`)
      }
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  const podsMs = Date.now() - tPods
  const afterPods = await get(metricsUrl)
  const tSteady = Date.now()
  await new Promise((r) => setTimeout(r, STEADY_S * 1000))
  clearInterval(sampler)
  const tEnd = Date.now()
  const final = await get(metricsUrl)
  const apiMetrics = (await cp.request('GET', '/metrics')).body

  // Audit: one line per request of the webhook, by phase and by verb/resource.
  const phases = { start: new Map<string, number>(), pods: new Map<string, number>(), steady: new Map<string, number>() }
  for (const line of (await readFile(auditLog, 'utf8')).split('\n')) {
    if (!line) continue
    const e = JSON.parse(line) as {
      verb: string
      objectRef?: { resource?: string; subresource?: string }
      requestReceivedTimestamp: string
    }
    const at = new Date(e.requestReceivedTimestamp).getTime()
    const key = `${e.verb} ${e.objectRef?.resource ?? '-'}${e.objectRef?.subresource ? `/${e.objectRef.subresource}` : ''}`
    const phase = at < tPods ? phases.start : at < tSteady ? phases.pods : at <= tEnd ? phases.steady : undefined
    phase?.set(key, (phase.get(key) ?? 0) + 1)
  }
  const fmt = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k}=${v}`)
      .join(', ') || 'none'
  const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0)
  const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`
  const watches = (resource: string) =>
    sample(apiMetrics, 'apiserver_longrunning_requests', ['verb="WATCH"', `resource="${resource}"`]) -
    sample(baseline, 'apiserver_longrunning_requests', ['verb="WATCH"', `resource="${resource}"`])
  const listBytes = sample(apiMetrics, 'apiserver_response_sizes_sum', ['verb="LIST"', 'resource="pods"'])
  const rows: [string, string][] = [
    ['Pods / opted-in namespaces', `${PODS} / ${NAMESPACES} (${PODS / 10} with a failed pull, ${PODS / 10} Pulled events)`],
    ['podSweepSeconds / steady window', `${SWEEP_S} s / ${STEADY_S} s`],
    ['creating the Pods took', `${(podsMs / 1000).toFixed(1)} s`],
    [
      'watches the webhook holds at the end: pods / events / namespaces',
      `${watches('pods')} / ${watches('events')} / ${watches('namespaces')}`,
    ],
    ['webhook requests at start-up', `${total(phases.start)}: ${fmt(phases.start)}`],
    ['webhook requests while Pods were created', `${total(phases.pods)}: ${fmt(phases.pods)}`],
    ['webhook requests in the steady window', `${total(phases.steady)}: ${fmt(phases.steady)}`],
    ['bytes of Pod LIST answers (API server, all clients)', mb(listBytes)],
    [
      'webhook RSS idle / after the Pods / end / peak',
      `${mb(rssIdle)} / ${mb(sample(afterPods, 'mirrorhook_process_resident_memory_bytes'))} / ${mb(sample(final, 'mirrorhook_process_resident_memory_bytes'))} / ${mb(peakRss)}`,
    ],
    [
      'webhook heap used idle / end / peak',
      `${mb(heapIdle)} / ${mb(sample(final, 'mirrorhook_nodejs_heap_size_used_bytes'))} / ${mb(peakHeap)}`,
    ],
    [
      'learning observations (pod / event)',
      `${sample(final, 'mirrorhook_reachability_observations_total', ['source="pod"'])} / ${sample(final, 'mirrorhook_reachability_observations_total', ['source="event"'])}`,
    ],
    [
      'pre-pull images in use / ImageCaches created',
      `${sample(final, 'mirrorhook_prepull_images_in_use')} / ${sample(final, 'mirrorhook_prepull_api_writes_total', ['result="created"'])}`,
    ],
    ['elapsed since the webhook started', `${((tEnd - t0) / 1000).toFixed(0)} s`],
  ]
  for (const [k, v] of rows) console.log(`${k.padEnd(54)} ${v}`)
} finally {
  if (child?.pid) child.kill('SIGTERM')
  await cp.stop()
  await rm(work, { recursive: true, force: true })
}

function c0(containers: { image: string }[]): string {
  return containers[0]!.image
}
