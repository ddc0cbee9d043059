import { mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseAdmissionReview } from '../../server/admission/review.js'
import { createLogger, stdoutDestination } from '../../server/observability/logger.js'
import { startServer } from '../../server/serve.js'
import { ensureDevCertificates } from '../../server/tls/devcerts.js'
import { OutcomeMemo, podShape } from '../../server/http/outcome-memo.js'

const FILE = process.argv[2] ?? 'review-10-kept.json'
const body = readFileSync(join('/work/main/test/fixtures/bench', FILE), 'utf8')
const work = mkdtempSync(join(tmpdir(), 'mb-'))
const certs = await ensureDevCertificates(join(work, 'certs'))
const configFile = join(work, 'mirrorhook.yaml')
writeFileSync(configFile, readFileSync('/tmp/mirrorhook-floor-9oxsR9/mirrorhook.yaml'))
const logger = createLogger('info', stdoutDestination(undefined, openSync('/dev/null', 'w')))
const server = await startServer({ configPath: configFile, port: 0, host: '127.0.0.1', tlsCertFile: certs.certFile, tlsKeyFile: certs.keyFile, certReloadIntervalMs: 60_000, shutdownDelayMs: 0, env: { HOME: join(work, 'home'), KUBECONFIG: join(work, 'nk') }, logger, kube: null })
const bodies = Array.from({ length: 256 }, (_, i) => JSON.parse(body.replace(/"uid":"4b6f0d2e-8a1c-4e3b-9f7d-5c2a1e0b3d0k"/, `"uid":"4b6f0d2e-8a1c-4e3b-9f7d-${String(i).padStart(12, '0')}"`)))
const reviews = bodies.map((b) => { const p = parseAdmissionReview(b); if (!p.ok) throw new Error(p.message); return p.review })
const context = { policy: server.config.policy, reachability: server.reachability!.view() }
const memo = new OutcomeMemo(() => ({}))
let sink: unknown
function cpu(name: string, n: number, fn: (i: number) => unknown) {
  for (let i = 0; i < 2000; i++) sink = fn(i & 255)
  const r: number[] = []
  for (let k = 0; k < 5; k++) {
    const s = process.cpuUsage(); for (let i = 0; i < n; i++) sink = fn(i & 255); const u = process.cpuUsage(s); r.push((u.user + u.system) * 1000 / n)
  }
  r.sort((a, b) => a - b)
  console.log(`${name.padEnd(30)} ${r[2]!.toFixed(0).padStart(6)} ns  (${r[0]!.toFixed(0)}–${r[4]!.toFixed(0)})`)
}
const N = 200000
cpu('parseAdmissionReview', N, (i) => parseAdmissionReview(bodies[i]))
cpu('podShape', N, (i) => podShape(reviews[i]!, context))
cpu('memo.admit', N, (i) => memo.admit(reviews[i]!, context))
cpu('reachability.generation', N, () => context.reachability.generation?.())
cpu('performance.now x2', N, () => performance.now() - performance.now())
const m = server.metrics
cpu('latency.observe', N, () => m.latency.observe(0.00002))
cpu('countReview', N, () => m.countReview('unchanged', false))
cpu('countKept', N, () => m.countKept('not-mirrored', 10))
cpu('isLevelEnabled', N, () => logger.isLevelEnabled('debug'))
cpu('includes \\u', N / 10, () => body.includes('\\u'))
cpu('regex', N / 10, () => /__proto__|constructor/.test(body))
cpu('JSON.parse', N / 20, () => JSON.parse(body))
await server.close()
