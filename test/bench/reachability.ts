// Reachability figures (not a test):
//   npx tsx test/bench/reachability.ts
// 1. decision cost with the learned view against the static one;
// 2. probe latency against a loopback TLS registry;
// 3. how long a down registry takes to be noticed and a recovered one to be used again;
// 4. the size of the shared state at the table's limits (a ConfigMap holds at most 1 MiB).
import { once } from 'node:events'
import https from 'node:https'
import net, { type AddressInfo } from 'node:net'
import { pino } from 'pino'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { decideImage, staticReachability, type ReachabilityView } from '../../server/core/rewrite.js'
import { probeRegistry, type LookupFunction } from '../../server/reachability/probe.js'
import { ReachabilityService } from '../../server/reachability/service.js'
import { forStorage, tableToSnapshot } from '../../server/reachability/snapshot.js'
import { MAX_REFUSALS, MAX_REGISTRIES, StateTable } from '../../server/reachability/state.js'
import { createCa, issueServing } from '../../server/tls/certs.js'

const lookup: LookupFunction = (_host, options, callback) =>
  options.all ? callback(null, [{ address: '127.0.0.1', family: 4 }]) : callback(null, '127.0.0.1', 4)

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

async function decisions(): Promise<void> {
  const policy = compilePolicy(resolveConfig(undefined, {}))
  const service = new ReachabilityService({ policy, logger: pino({ level: 'silent' }), namespace: 'x' })
  const now = Date.now()
  // A full table: every DaoCloud registry known plus passive entries.
  for (let i = 0; i < MAX_REGISTRIES; i++)
    service.observe(`r${i}.example`, { at: now, source: 'pod', outcome: 'fail', detail: 'i/o timeout' })
  for (const r of ['docker.io', 'ghcr.io', 'quay.io'])
    service.observe(r, { at: now, source: 'probe', outcome: 'fail', detail: 'connection refused' })
  const images = ['nginx:1.25', 'ghcr.io/org/app:1', 'quay.io/a/b@sha256:' + 'a'.repeat(64), 'registry.k8s.io/pause:3.10']
  const measure = (view: ReachabilityView) => {
    const n = 200_000
    for (let i = 0; i < 20_000; i++) decideImage(images[i % 4]!, policy, view)
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) decideImage(images[i % 4]!, policy, view)
    return Number(process.hrtime.bigint() - t0) / 1e3 / n
  }
  const staticUs = measure(staticReachability(policy))
  const learnedUs = measure(service.view())
  console.log(
    `decision per image: static view ${staticUs.toFixed(2)} µs, learned view (${MAX_REGISTRIES} registries known) ${learnedUs.toFixed(2)} µs`,
  )
}

async function probes(): Promise<void> {
  const ca = await createCa('bench', 1)
  const tls = await issueServing(ca, { dnsNames: ['registry.test'], validDays: 1 })
  const server = https.createServer({ cert: tls.certPem, key: tls.keyPem }, (_q, r) => r.writeHead(401).end())
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  const samples: number[] = []
  for (let i = 0; i < 300; i++) {
    const r = await probeRegistry(`registry.test:${port}`, { timeoutMs: 2000, ca: ca.certPem, lookup, env: {} })
    if (!r.ok) throw new Error(r.detail)
    samples.push(r.durationMs)
  }
  samples.sort((a, b) => a - b)
  console.log(
    `probe GET /v2/ over TLS on loopback (new connection each): p50 ${percentile(samples, 50).toFixed(1)} ms, p99 ${percentile(samples, 99).toFixed(1)} ms`,
  )

  // Detection and recovery through the service with fast settings.
  const closedPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port
      s.close(() => resolve(p))
    })
  })
  const name = `registry.test:${closedPort}`
  const policy = compilePolicy(
    resolveConfig(
      {
        mirror: { hosts: { [name]: `registry.test:${port}/mirror` } },
        registries: [name],
        mode: 'auto',
        reachability: {
          probes: { intervalSeconds: 1, recheckSeconds: 0.2, timeoutSeconds: 1, maxBackoffSeconds: 4, jitter: 0, successThreshold: 2 },
        },
      },
      {},
    ),
  )
  const service = new ReachabilityService({
    policy,
    logger: pino({ level: 'silent' }),
    namespace: 'x',
    probe: { ca: ca.certPem, lookup, env: {} },
  })
  const started = Date.now()
  await service.start()
  const waitFor = async (state: string) => {
    while (service.view().status(name).state !== state) await new Promise((r) => setTimeout(r, 5))
    return Date.now()
  }
  const down = await waitFor('unreachable')
  console.log(`refused registry noticed ${down - started} ms after start (first probes are spread over up to 1 s)`)
  const back = https.createServer({ cert: tls.certPem, key: tls.keyPem }, (_q, r) => r.writeHead(401).end())
  back.listen(closedPort, '127.0.0.1')
  await once(back, 'listening')
  const upAt = Date.now()
  const reachable = await waitFor('reachable')
  console.log(
    `recovered registry used directly again ${reachable - upAt} ms after it came back (interval 1 s, backoff, then 2 successes ${0.2} s apart)`,
  )
  await service.stop()
  back.close()
  server.close()
}

function stateSize(): void {
  const table = new StateTable({ ttlMs: 1_800_000, refusalTtlMs: 21_600_000, failureThreshold: 2, successThreshold: 2, holdMs: 600_000 })
  const now = Date.now()
  const detail = 'i/o timeout pulling registry.example/team/some-service:1.2.3 (pod namespace-name/some-service-7d9f8c6b5-x2x4z)'
  for (let i = 0; i < MAX_REGISTRIES; i++) {
    for (let k = 0; k < 5; k++) table.observe(`registry-${i}.example.com`, { at: now + k, source: 'pod', outcome: 'fail', detail })
  }
  for (let i = 0; i < MAX_REFUSALS; i++)
    table.refuse(`m.daocloud.io/docker.io/org-${i}/image-${i}`, 'not in the mirror allowlist (pod ns/pod-1234)', now)
  const full = tableToSnapshot(table, now)
  const stored = forStorage(full)
  const kib = (v: unknown) => (Buffer.byteLength(JSON.stringify(v)) / 1024).toFixed(0)
  console.log(
    `state at the limits (${MAX_REGISTRIES} registries with 5 observations each, ${MAX_REFUSALS} refusals): GET /state ${kib(full)} KiB; ` +
      `ConfigMap copy ${kib(stored)} KiB with ${stored.registries.length} registries and ${stored.refusals.length} refusals (limit 1024 KiB)`,
  )
}

await decisions()
await probes()
stateSize()
