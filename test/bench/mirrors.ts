// The decision with several mirrors and allowlists, printed as figures (not a test).
//   npx tsx test/bench/mirrors.ts [decisions]
// Uncached (a view without a generation) and memoised, for: one mirror; two mirrors with the
// first down; two mirrors whose first has DaoCloud's published allowlist (737 patterns).
import { readFileSync } from 'node:fs'
import { resolveConfig } from '../../server/config/config.js'
import { type LoadedAllowlist, parseAllowlist, withAllowlists } from '../../server/core/allowlist.js'
import { compilePolicy } from '../../server/core/policy.js'
import { decideImage, type ReachabilityView } from '../../server/core/rewrite.js'

const count = Number(process.argv[2] ?? 200_000)
const text = readFileSync(new URL('../fixtures/daocloud-allows.txt', import.meta.url), 'utf8')
const images = ['nginx:1.27', 'quay.io/prometheus/node-exporter:v1.8.0', 'ghcr.io/acme/app:2', 'registry.k8s.io/pause:3.10', 'acme/web:5']

let started = performance.now()
const { list } = parseAllowlist(text)
console.log(`parse ${list.patterns} patterns: ${(performance.now() - started).toFixed(2)} ms`)
started = performance.now()
let allowed = 0
for (let i = 0; i < count; i++) if (list.allows(`docker.io/library/${i % 2 ? 'nginx' : 'none'}`)) allowed++
console.log(`allowlist match: ${(((performance.now() - started) / count) * 1e6).toFixed(0)} ns each (${allowed} allowed)`)

const A = 'm.daocloud.io'
const B = 'harbor.corp.example/proxy'
const loaded: LoadedAllowlist = { list, source: 'allows.txt' }
const base = (down: string[]): ReachabilityView => ({
  status: (r) => ({
    state: down.includes(r) ? 'unreachable' : r === A || r === 'harbor.corp.example' ? 'reachable' : 'unreachable',
    evidence: 'bench',
  }),
})
const cases: [string, ReturnType<typeof compilePolicy>, ReachabilityView][] = [
  ['one mirror', compilePolicy(resolveConfig({ mode: 'auto', mirror: { prefix: A } }, {})), base([])],
  ['two mirrors, first down', compilePolicy(resolveConfig({ mode: 'auto', mirror: { prefix: [A, B] } }, {})), base([A])],
  [
    'two mirrors, first with the published allowlist',
    compilePolicy(resolveConfig({ mode: 'auto', mirror: { prefix: [A, B] } }, {})),
    withAllowlists(base([]), { get: (m) => (m === A ? loaded : undefined), version: 1 }),
  ],
]
for (const [name, policy, view] of cases) {
  for (const memo of [false, true]) {
    const v: ReachabilityView = memo ? { ...view, generation: () => 1 } : { ...view, generation: undefined }
    for (let i = 0; i < 1000; i++) decideImage(images[i % images.length]!, policy, v)
    const t0 = performance.now()
    for (let i = 0; i < count; i++) decideImage(images[i % images.length]!, policy, v)
    const ns = ((performance.now() - t0) / count) * 1e6
    console.log(`${name}, ${memo ? 'memoised' : 'uncached'}: ${ns.toFixed(0)} ns per decision`)
  }
}
