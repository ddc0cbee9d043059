// Remediation at scale against a real kube-apiserver: 1,000 Pods of 100 ReplicaSets fail to
// pull (status written through pods/status as the kubelet writes a network failure), two
// `mirrorhook serve` replicas share one Lease; the Pods' evictions are timed from the moment the
// failure was written. Run: npx tsx test/bench/remediation.ts [pods] [owners] [writesPerSecond]
import type { ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { Watch } from '@kubernetes/client-node'
import { stringify } from 'yaml'
import { startControlPlane } from '../support/controlplane.js'
import { get, requireBinaries, sample, spawnServe } from './common.js'
import { createNamespace } from '../support/webhook.js'

const PODS = Number(process.argv[2] ?? 1000)
const OWNERS = Number(process.argv[3] ?? 100)
const RATE = Number(process.argv[4] ?? 20)
const NS = 'bench'
const ERROR =
  'rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "docker.io/library/nginx:1.25": ' +
  'failed to resolve reference "docker.io/library/nginx:1.25": failed to do request: ' +
  'Head "https://registry-1.docker.io/v2/library/nginx/manifests/1.25": dial tcp 203.0.113.10:443: i/o timeout'

requireBinaries()

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
const mb = (b: number) => `${(b / 1048576).toFixed(0)} MiB`

const cp = await startControlPlane()
const work = await mkdtemp(join(tmpdir(), 'mirrorhook-bench-'))
const children: ChildProcess[] = []
try {
  await createNamespace(cp, 'mirrorhook', false)
  await createNamespace(cp, NS, true)
  const configPath = join(work, 'config.yaml')
  await writeFile(
    configPath,
    stringify({
      mirror: { prefix: 'm.daocloud.io' },
      registries: ['docker.io'],
      mode: 'always',
      imageCheckIntervalSeconds: 5,
      reachability: { probes: { enabled: false }, persistence: { enabled: false } },
      kubeFledged: { enabled: false },
      remediation: { minFailingSeconds: 0, perOwnerPerHour: Math.ceil(PODS / OWNERS), writesPerSecond: RATE, writeBurst: 10, recent: 0 },
    }),
  )
  const startReplica = async () => {
    const child = spawnServe(configPath, work, { KUBECONFIG: cp.kubeconfigPath, POD_NAMESPACE: 'mirrorhook' })
    children.push(child)
    return new Promise<string>((resolve, reject) => {
      createInterface(child.stdout!).on('line', (line) => {
        try {
          const j = JSON.parse(line) as { metricsPort?: number }
          if (j.metricsPort) resolve(`http://127.0.0.1:${j.metricsPort}/metrics`)
        } catch {
          // not JSON
        }
      })
      child.on('exit', (code) => reject(new Error(`mirrorhook exited with ${code}`)))
    })
  }
  const metricsUrls = await Promise.all([startReplica(), startReplica()])
  const peakRss = [0, 0]
  const sampler = setInterval(() => {
    metricsUrls.forEach((u, i) =>
      get(u).then(
        (text) => (peakRss[i] = Math.max(peakRss[i]!, sample(text, 'mirrorhook_process_resident_memory_bytes'))),
        () => undefined,
      ),
    )
  }, 500)
  const idle = await Promise.all(metricsUrls.map(get))
  const rssIdle = idle.map((t) => sample(t, 'mirrorhook_process_resident_memory_bytes'))

  // Evictions of Pods with no node delete them at once: the watch times each one.
  const deletedAt = new Map<string, number>()
  const kc = await cp.kubeConfig()
  const watch = await new Watch(kc).watch(
    `/api/v1/namespaces/${NS}/pods`,
    {},
    (type, obj: { metadata: { name: string } }) => {
      if (type === 'DELETED') deletedAt.set(obj.metadata.name, Date.now())
    },
    () => undefined,
  )

  const failedAt = new Map<string, number>()
  let next = 0
  const worker = async () => {
    while (next < PODS) {
      const i = next++
      const owner = i % OWNERS
      const name = `web-${owner}-${i}`
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          namespace: NS,
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'ReplicaSet',
              name: `web-${owner}`,
              uid: `00000000-0000-0000-0000-${String(owner).padStart(12, '0')}`,
              controller: true,
            },
          ],
        },
        spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] },
      }
      const created = await cp.request('POST', `/api/v1/namespaces/${NS}/pods`, { body: pod })
      if (created.status !== 201) throw new Error(`create ${name}: ${created.status} ${created.body}`)
      const status = {
        status: {
          phase: 'Pending',
          containerStatuses: [
            {
              name: 'web',
              image: 'nginx:1.25',
              imageID: '',
              ready: false,
              restartCount: 0,
              state: { waiting: { reason: 'ErrImagePull', message: ERROR } },
            },
          ],
        },
      }
      const patched = await cp.request('PATCH', `/api/v1/namespaces/${NS}/pods/${name}/status`, {
        body: status,
        headers: { 'Content-Type': 'application/merge-patch+json' },
      })
      if (patched.status !== 200) throw new Error(`status ${name}: ${patched.status} ${patched.body}`)
      failedAt.set(name, Date.now())
    }
  }
  const t0 = Date.now()
  await Promise.all(Array.from({ length: 16 }, worker))
  const createdMs = Date.now() - t0
  const deadline = Date.now() + Math.max(120_000, (PODS / RATE) * 3000)
  while (deletedAt.size < PODS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250))
  // A little more, to see any second action.
  await new Promise((r) => setTimeout(r, 6000))
  clearInterval(sampler)
  watch.abort()

  const latencies = [...failedAt].flatMap(([name, at]) => (deletedAt.has(name) ? [deletedAt.get(name)! - at] : [])).sort((a, b) => a - b)
  const times = [...deletedAt.values()].sort((a, b) => a - b)
  const finals = await Promise.all(metricsUrls.map(get))
  const evictions = finals.map((t) => sample(t, 'mirrorhook_remediations_total', 'action="evict",result="success"'))
  const events = (
    await cp.request('GET', `/api/v1/namespaces/${NS}/events?fieldSelector=${encodeURIComponent('reason=MirrorhookRemediated')}`)
  ).json().items as { involvedObject: { uid: string } }[]
  const perPod = new Map<string, number>()
  for (const e of events) perPod.set(e.involvedObject.uid, (perPod.get(e.involvedObject.uid) ?? 0) + 1)
  const twice = [...perPod.values()].filter((n) => n > 1).length
  const spanS = ((times.at(-1) ?? 0) - (times[0] ?? 0)) / 1000
  const rows: [string, string][] = [
    ['failing Pods / owners (ReplicaSets)', `${PODS} / ${OWNERS}`],
    ['Pods created and failed (16 writers)', `${(createdMs / 1000).toFixed(1)} s`],
    ['Pods evicted', String(deletedAt.size)],
    ['evictions by replica', evictions.join(' / ')],
    ['Pods acted on twice (Events per Pod UID > 1)', String(twice)],
    [
      'failure written → evicted p50 / p99 / max',
      `${(pct(latencies, 50) / 1000).toFixed(1)} s / ${(pct(latencies, 99) / 1000).toFixed(1)} s / ${((latencies.at(-1) ?? NaN) / 1000).toFixed(1)} s`,
    ],
    ['evictions per second (first to last) / configured', `${(Math.max(0, times.length - 1) / spanS).toFixed(1)} / ${RATE}`],
    ['webhook RSS idle / peak (replica 0)', `${mb(rssIdle[0]!)} / ${mb(peakRss[0]!)}`],
    ['webhook RSS idle / peak (replica 1)', `${mb(rssIdle[1]!)} / ${mb(peakRss[1]!)}`],
  ]
  for (const [k, v] of rows) console.log(`${k.padEnd(50)} ${v}`)
  if (twice !== 0 || deletedAt.size !== PODS) process.exitCode = 1
} finally {
  for (const c of children) if (c.pid) c.kill('SIGTERM')
  await cp.stop()
  await rm(work, { recursive: true, force: true })
}
