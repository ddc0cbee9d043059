// Scale benchmark on the simulated cluster: N kwok nodes, P Pods across M opted-in namespaces
// (one Deployment each, created by the ReplicaSet controller through admission), then deleted.
// Prints mirrorhook's memory (RSS of `mirrorhook serve`, sampled), its watches and its API
// request rate, as the API server's audit log records them for mirrorhook's identity alone.
//
//   npx tsx test/bench/cluster-scale.ts [--nodes 200] [--pods 5000] [--namespaces 50] [--images 50]
//
// mirrorhook runs as the operator runs it (`mirrorhook serve`, under tsx) with a ServiceAccount
// token of its own bound to cluster-admin; the API server's audit policy logs that user's requests
// only (when each arrives and when it ends), so the controllers', kwok's and the API server's own
// watches are not counted.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { stringify as toYaml } from 'yaml'
import { startCluster } from '../support/cluster.js'
import { freePort, REPO_ROOT } from '../support/controlplane.js'
import { webhookConfigurationFor } from '../support/webhook.js'

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : dflt
}
const NODES = arg('nodes', 200)
const PODS = arg('pods', 5000)
const NAMESPACES = arg('namespaces', 50)
const IMAGES = arg('images', 50)
const perNs = Math.ceil(PODS / NAMESPACES)
const t0 = Date.now()
const say = (m: string) => process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}\n`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const SA = 'system:serviceaccount:mirrorhook:mirrorhook'
const work = mkdtempSync(path.join(os.tmpdir(), 'mirrorhook-bench-scale-'))
const auditLog = path.join(work, 'audit.log')
const auditPolicy = path.join(work, 'audit-policy.yaml')
writeFileSync(
  auditPolicy,
  toYaml({
    apiVersion: 'audit.k8s.io/v1',
    kind: 'Policy',
    omitStages: ['ResponseStarted', 'Panic'],
    rules: [{ level: 'Metadata', users: [SA] }, { level: 'None' }],
  }),
)

say(`starting the cluster: ${NODES} kwok nodes`)
const cluster = await startCluster({
  nodes: NODES,
  registry: false,
  kubeFledged: false,
  controllers: { qps: 300 },
  apiserverArgs: [`--audit-policy-file=${auditPolicy}`, `--audit-log-path=${auditLog}`, '--audit-log-mode=blocking'],
})
const { cp } = cluster
let serve: ReturnType<typeof spawn> | null = null
try {
  const crd = await cp.kubectl(['apply', '-f', path.join(REPO_ROOT, 'test', 'fixtures', 'kubefledged', 'imagecache-crd.yaml')])
  if (crd.code !== 0) throw new Error(crd.stderr)
  for (const ns of ['mirrorhook', 'kube-fledged']) await cp.kubectl(['create', 'namespace', ns])
  say(`cluster up (${cluster.kwok.nodes.length} nodes Ready)`)

  // mirrorhook's identity: a ServiceAccount token (TokenRequest), bound to cluster-admin.
  await cp.kubectl(['-n', 'mirrorhook', 'create', 'serviceaccount', 'mirrorhook'])
  await cp.kubectl([
    'create',
    'clusterrolebinding',
    'mirrorhook-bench',
    '--clusterrole=cluster-admin',
    '--serviceaccount=mirrorhook:mirrorhook',
  ])
  const tok = await cp.kubectl(['-n', 'mirrorhook', 'create', 'token', 'mirrorhook', '--duration=2h'])
  if (tok.code !== 0) throw new Error(tok.stderr)
  const dir = work
  const kubeconfig = path.join(dir, 'kubeconfig')
  const kc = readFileSync(cp.kubeconfigPath, 'utf8').replace(/token: .*/, `token: ${tok.stdout.trim()}`)
  writeFileSync(kubeconfig, kc)
  writeFileSync(
    path.join(dir, 'config.yaml'),
    toYaml({
      mirror: { prefix: 'm.daocloud.io' },
      registries: ['docker.io'],
      mode: 'auto',
      reachability: { unknown: 'mirror', probes: { enabled: false } },
      kubeFledged: { namespace: 'kube-fledged' },
    }),
  )

  const port = await freePort()
  const metricsPort = await freePort()
  serve = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(REPO_ROOT, 'server', 'cli.ts'),
      'serve',
      '--config',
      path.join(dir, 'config.yaml'),
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--metrics-port',
      String(metricsPort),
      '--dev-cert-dir',
      dir,
    ],
    {
      env: { ...process.env, KUBECONFIG: kubeconfig, POD_NAMESPACE: 'mirrorhook', LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  )
  const rss = () => {
    try {
      return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${serve!.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024
    } catch {
      return 0
    }
  }
  for (let i = 0; ; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${metricsPort}/readyz`)
      if (r.status === 200) break
    } catch {}
    if (i > 240) throw new Error('mirrorhook serve did not become ready')
    await sleep(250)
  }
  const ca = readFileSync(path.join(dir, 'ca.crt'), 'utf8')
  const apply = await cp.kubectl(['apply', '-f', '-'], {
    input: JSON.stringify(webhookConfigurationFor(`https://127.0.0.1:${port}/mutate`, ca)),
  })
  if (apply.code !== 0) throw new Error(apply.stderr)
  await sleep(3_000)
  const idleRss = rss()
  const idleWatches = watches()
  say(`mirrorhook serve ready (pid ${serve.pid}), RSS ${idleRss.toFixed(0)} MiB, ${idleWatches} watches`)

  // Load: M opted-in namespaces, one Deployment of P/M replicas each, IMAGES distinct images.
  const list = {
    apiVersion: 'v1',
    kind: 'List',
    items: Array.from({ length: NAMESPACES }, (_, i) => [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: `load-${i}`, labels: { 'mirrorhook.io/enabled': 'true' } } },
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'app', namespace: `load-${i}` },
        spec: {
          replicas: perNs,
          selector: { matchLabels: { app: 'app' } },
          template: {
            metadata: { labels: { app: 'app' } },
            spec: { containers: [{ name: 'app', image: `nginx:1.${i % IMAGES}` }] },
          },
        },
      },
    ]).flat(),
  }
  let peakRss = idleRss
  let peakWatches = 0
  const samples: { at: number; flow: number }[] = []
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, rss())
  }, 500)
  const flowBefore = requests()
  const loadStart = Date.now()
  samples.push({ at: loadStart, flow: flowBefore })
  const created = await cp.kubectl(['apply', '-f', '-'], { input: JSON.stringify(list), timeoutMs: 300_000 })
  if (created.code !== 0) throw new Error(created.stderr)
  say(`${NAMESPACES} namespaces and Deployments created; waiting for ${perNs * NAMESPACES} Pods Running`)
  let running = 0
  for (;;) {
    running = await countPods('fieldSelector=status.phase%3DRunning&labelSelector=app%3Dapp')
    samples.push({ at: Date.now(), flow: requests() })
    peakWatches = Math.max(peakWatches, watches())
    if (running >= perNs * NAMESPACES) break
    if (Date.now() - loadStart > 1_800_000) throw new Error(`only ${running} Pods running after 30 min`)
    await sleep(5_000)
  }
  const upSeconds = (Date.now() - loadStart) / 1000
  say(`${running} Pods Running after ${upSeconds.toFixed(0)} s; mirrorhook RSS ${rss().toFixed(0)} MiB`)
  const admitted = await admissions()
  const flowUp = requests()

  const delStart = Date.now()
  const del = await cp.kubectl(['delete', 'namespace', ...Array.from({ length: NAMESPACES }, (_, i) => `load-${i}`), '--wait=false'])
  if (del.code !== 0) throw new Error(del.stderr)
  for (;;) {
    const left = await countPods('labelSelector=app%3Dapp')
    samples.push({ at: Date.now(), flow: requests() })
    if (left === 0) break
    if (Date.now() - delStart > 1_800_000) throw new Error(`${left} Pods left after 30 min`)
    await sleep(5_000)
  }
  const downSeconds = (Date.now() - delStart) / 1000
  await sleep(5_000)
  clearInterval(sampler)
  const flowEnd = requests()
  const endWatches = watches()
  let peakRate = 0
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!
    const b = samples[i]!
    peakRate = Math.max(peakRate, ((b.flow - a.flow) * 1000) / Math.max(1, b.at - a.at))
  }
  const caches = (await cp.request('GET', '/apis/kubefledged.io/v1alpha2/namespaces/kube-fledged/imagecaches')).json().items.length

  process.stdout.write(
    [
      '',
      `cluster: ${NODES} kwok nodes, ${perNs * NAMESPACES} Pods in ${NAMESPACES} opted-in namespaces, ${IMAGES} distinct images`,
      `Pods admitted through mirrorhook: ${admitted}; ImageCaches created: ${caches}`,
      `all Running ${upSeconds.toFixed(0)} s after the Deployments were created; all gone ${downSeconds.toFixed(0)} s after the namespaces were deleted`,
      `mirrorhook RSS: ${idleRss.toFixed(0)} MiB idle, ${peakRss.toFixed(0)} MiB peak, ${rss().toFixed(0)} MiB after`,
      `mirrorhook watches on the API server: ${idleWatches} idle, ${peakWatches} at peak, ${endWatches} after the namespaces are gone`,
      `mirrorhook API requests (audit log, watches included): ${flowUp - flowBefore} while creating (${((flowUp - flowBefore) / upSeconds).toFixed(1)}/s), ` +
        `${flowEnd - flowUp} while deleting (${((flowEnd - flowUp) / downSeconds).toFixed(1)}/s); peak ${peakRate.toFixed(1)}/s over 5 s`,
      '',
    ].join('\n'),
  )
} finally {
  if (serve?.pid) serve.kill('SIGTERM')
  await sleep(1_000)
  await cluster.stop()
}
process.exit(0)

/** Pods matching a query, counted from a Table without the objects (a few bytes a row). */
async function countPods(query: string): Promise<number> {
  const r = await cp.request('GET', `/api/v1/pods?${query}&includeObject=None`, {
    headers: { Accept: 'application/json;as=Table;v=v1;g=meta.k8s.io' },
  })
  return (r.json().rows ?? []).length
}
async function metricsText(): Promise<string> {
  return (await cp.request('GET', '/metrics', { headers: { Accept: 'text/plain' } })).body
}
function sum(text: string, name: string, match: (labels: string) => boolean): number {
  let n = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue
    const labels = line.slice(name.length + 1, line.lastIndexOf('}'))
    if (match(labels)) n += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return n
}
/** mirrorhook's requests and open watches, from the audit log (one line per request arriving, one per request ending). */
function audit(): { requests: number; watches: number } {
  let log = ''
  try {
    log = readFileSync(auditLog, 'utf8')
  } catch {}
  let requests = 0
  const open = new Set<string>()
  for (const line of log.split('\n')) {
    if (!line) continue
    let e: { auditID: string; stage: string; verb: string; user?: { username?: string } }
    try {
      e = JSON.parse(line)
    } catch {
      continue // a line being written
    }
    if (e.user?.username !== SA) continue
    if (e.stage === 'RequestReceived') {
      requests++
      if (e.verb === 'watch') open.add(e.auditID)
    } else if (e.stage === 'ResponseComplete') open.delete(e.auditID)
  }
  return { requests, watches: open.size }
}
function watches(): number {
  return audit().watches
}
function requests(): number {
  return audit().requests
}
async function admissions(): Promise<number> {
  return sum(await metricsText(), 'apiserver_admission_webhook_admission_duration_seconds_count', (l) =>
    l.includes('name="pods.mirrorhook.io"'),
  )
}
