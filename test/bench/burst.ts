// Memory under a burst of maximal reviews: `mirrorhook serve` (the built dist/, as the image
// runs it) gets N AdmissionReviews at once, each as large as the body limit allows (an
// UPDATE of a Pod with many containers, object and oldObject each about half the limit),
// each on its own HTTPS connection. Prints the resident memory before, the peak (the
// kernel's high-water mark, VmHWM) and how the reviews were answered.
//
//   npm run build && npx tsx test/bench/burst.ts [N=30] [reviewBytesInFlight=default] [rounds=3]
//
// reviewBytesInFlight 1073741824 lifts the bound (what the server did before it had one).
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { DEFAULT_BODY_LIMIT } from '../../server/http/config.js'

const N = Number(process.argv[2] ?? 30)
const BUDGET = process.argv[3] ? Number(process.argv[3]) : undefined
const ROUNDS = Number(process.argv[4] ?? 3)
const CLI = new URL('../../dist/server/cli.js', import.meta.url).pathname
const MiB = 1024 * 1024

// A Pod whose JSON is about `bytes` long: containers with env lists (many small objects,
// the costliest shape to parse), one image changed between oldObject and object.
function pod(bytes: number, image: string) {
  const container = (i: number) => ({
    name: `c${i}`,
    image: i === 0 ? image : `registry.example.com/team/app-${i}:1.${i}`,
    env: Array.from({ length: 20 }, (_, j) => ({ name: `VAR_${j}`, value: `value-${i}-${j}` })),
    resources: { requests: { cpu: '10m', memory: '16Mi' } },
  })
  const one = JSON.stringify(container(1000)).length + 1
  const count = Math.floor((bytes - 1000) / one)
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'big', namespace: 'shop', uid: 'u', annotations: {} },
    spec: { containers: Array.from({ length: count }, (_, i) => container(i)) },
  }
}

function maximalReview(uid: string): string {
  const half = Math.floor((DEFAULT_BODY_LIMIT - 4096) / 2)
  const body = JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'shop',
      operation: 'UPDATE',
      userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
      object: pod(half, 'nginx:1.27'),
      oldObject: pod(half, 'nginx:1.25'),
    },
  })
  return body.padEnd(DEFAULT_BODY_LIMIT - 16, ' ')
}

// V8 heap and memory outside it (Buffers), from the server's own process metrics.
async function heap(): Promise<string> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  const value = (name: string) => Number(new RegExp(`^mirrorhook_${name} ([\\d.e+]+)`, 'm').exec(text)?.[1] ?? 0) / MiB
  return `heap used ${value('nodejs_heap_size_used_bytes').toFixed(0)} MiB of ${value('nodejs_heap_size_total_bytes').toFixed(0)} MiB, external ${value('nodejs_external_memory_bytes').toFixed(0)} MiB`
}

async function memory(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') }
}

const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-burst-'))
const config = { reachability: { probes: { enabled: false } }, ...(BUDGET ? { server: { reviewBytesInFlight: BUDGET } } : {}) }
await writeFile(join(dir, 'config.yaml'), stringify(config))
const child = spawn(
  process.execPath,
  [CLI, 'serve', '--config', join(dir, 'config.yaml'), '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--dev-cert-dir', dir],
  { env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent', LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'inherit'] },
)
let out = ''
let metricsPort = 0
const port = await new Promise<number>((resolve, reject) => {
  child.stdout!.on('data', (chunk) => {
    out += chunk
    const m = /"port":(\d+),"metricsPort":(\d+)/.exec(out)
    if (m) {
      metricsPort = Number(m[2])
      resolve(Number(m[1]))
    }
    if (out.length > 1e6) out = ''
  })
  child.once('exit', (code) => reject(new Error(`server exited with ${code}`)))
})
const ca = await readFile(join(dir, 'ca.crt'), 'utf8')

function post(agent: Agent, body: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/mutate', method: 'POST', ca, agent, headers: { 'content-type': 'application/json' } },
      (res) => res.resume().on('end', () => resolve(res.statusCode ?? 0)),
    )
    req.on('error', () => resolve(0))
    req.end(body)
  })
}

const reviews = Array.from({ length: N }, (_, i) => maximalReview(`burst-${i}`))
const small = JSON.stringify({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: {
    uid: 'warm',
    namespace: 'shop',
    operation: 'CREATE',
    object: { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'nginx' }] } },
  },
})
const warm = new Agent({ keepAlive: true })
for (let i = 0; i < 50; i++) await post(warm, small)
warm.destroy()
const idle = await memory(child.pid!)
console.log(
  `body ${(reviews[0]!.length / MiB).toFixed(2)} MiB per review, ${N} at once, reviewBytesInFlight ${BUDGET ? `${(BUDGET / MiB).toFixed(0)} MiB` : 'default'}`,
)
console.log(`idle after warm-up: RSS ${(idle.rss / MiB).toFixed(0)} MiB`)
for (let round = 1; round <= ROUNDS; round++) {
  const agent = new Agent({ keepAlive: false, maxSockets: N })
  let peakRss = 0
  const sampler = setInterval(() => void memory(child.pid!).then((m) => (peakRss = Math.max(peakRss, m.rss))), 5)
  const started = performance.now()
  const statuses = await Promise.all(reviews.map((body) => post(agent, body)))
  const took = performance.now() - started
  clearInterval(sampler)
  agent.destroy()
  const after = await memory(child.pid!)
  const counts = Object.entries(statuses.reduce<Record<number, number>>((acc, s) => ((acc[s] = (acc[s] ?? 0) + 1), acc), {}))
    .map(([s, n]) => `${n}× ${s === '0' ? 'connection error' : `HTTP ${s}`}`)
    .join(', ')
  console.log(
    `round ${round}: ${counts} in ${(took / 1000).toFixed(1)} s; peak RSS (VmHWM) ${(after.hwm / MiB).toFixed(0)} MiB, sampled ${(peakRss / MiB).toFixed(0)} MiB; RSS after ${(after.rss / MiB).toFixed(0)} MiB; ${await heap()}`,
  )
}
child.kill('SIGTERM')
await new Promise((r) => child.once('exit', r))
await rm(dir, { recursive: true, force: true })
