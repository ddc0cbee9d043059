import t from 'tap'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { askRegistries } from '../../server/prewarm/ask.js'
import { imagesOf, type WorkloadImage } from '../../server/prewarm/collect.js'
import { entriesOf, planRows, questionsFor, registryTable, type Answer } from '../../server/prewarm/plan.js'
import type { Resolution, TagResolver } from '../../server/prewarm/registry-api.js'

const template = (containers: unknown[], initContainers?: unknown[]) => ({
  spec: { containers, ...(initContainers ? { initContainers } : {}) },
})

t.test('images of each kind: every init container and container, in order', async (t) => {
  const meta = (name: string) => ({ name, namespace: 'shop' })
  const deployment = {
    metadata: meta('web'),
    spec: {
      template: template(
        [
          { name: 'app', image: 'internal.corp/shop/web:1.2.0' },
          { name: 'proxy', image: 'nginx:1.27' },
        ],
        [{ name: 'migrate', image: 'internal.corp/shop/migrate:3' }],
      ),
    },
  }
  const cronJob = {
    metadata: meta('report'),
    spec: { jobTemplate: { spec: { template: template([{ name: 'run', image: 'internal.corp/shop/report:0.9' }]) } } },
  }
  t.strictSame(imagesOf('Deployments', deployment), [
    { kind: 'Deployment', namespace: 'shop', name: 'web', container: 'migrate', init: true, image: 'internal.corp/shop/migrate:3' },
    { kind: 'Deployment', namespace: 'shop', name: 'web', container: 'app', init: false, image: 'internal.corp/shop/web:1.2.0' },
    { kind: 'Deployment', namespace: 'shop', name: 'web', container: 'proxy', init: false, image: 'nginx:1.27' },
  ])
  t.strictSame(
    imagesOf('StatefulSets', { ...deployment, metadata: meta('db') }).map((i) => `${i.kind}/${i.name}/${i.container}`),
    ['StatefulSet/db/migrate', 'StatefulSet/db/app', 'StatefulSet/db/proxy'],
  )
  t.strictSame(imagesOf('DaemonSets', { metadata: meta('agent'), spec: { template: template([{ name: 'a', image: 'agent:1' }]) } }), [
    { kind: 'DaemonSet', namespace: 'shop', name: 'agent', container: 'a', init: false, image: 'agent:1' },
  ])
  t.strictSame(imagesOf('CronJobs', cronJob), [
    { kind: 'CronJob', namespace: 'shop', name: 'report', container: 'run', init: false, image: 'internal.corp/shop/report:0.9' },
  ])
  // A CronJob read as a Deployment has no spec.template: nothing, no crash.
  t.strictSame(imagesOf('Deployments', cronJob), [])
  // Malformed entries are passed over.
  t.strictSame(
    imagesOf('Deployments', {
      metadata: meta('odd'),
      spec: {
        template: template([null, 'x', { name: 'e', image: '' }, { name: 'n', image: 7 }, { name: 'ok', image: 'ok:1' }], 'x' as never),
      },
    }),
    [{ kind: 'Deployment', namespace: 'shop', name: 'odd', container: 'ok', init: false, image: 'ok:1' }],
  )
  t.strictSame(imagesOf('Deployments', null), [])
  t.strictSame(imagesOf('Deployments', { metadata: {}, spec: { template: template([{ name: 'a', image: 'a:1' }]) } }), [])
})

const config = resolveConfig({
  mode: 'always',
  mirror: { prefix: 'm.daocloud.io', hosts: { 'mirrored.corp:5000': 'mirror.example/corp' } },
  registries: ['docker.io', 'mirrored.corp:5000'],
  prewarm: {
    registries: {
      'internal.corp': { api: 'oci', order: 'semver' },
      'Mirrored.Corp:5000': { api: 'harbor', order: 'push-time' },
    },
  },
})
const policy = compilePolicy(config)
const table = registryTable(config.prewarm.registries)
const w = (name: string, image: string, container = 'app'): WorkloadImage => ({
  kind: 'Deployment',
  namespace: 'shop',
  name,
  container,
  init: false,
  image,
})
const workloads = [
  w('web', 'internal.corp/shop/web:1.2.0'),
  w('web-canary', 'internal.corp/shop/web:1.2.0'),
  w('api', 'mirrored.corp:5000/shop/api:v2.0.0'),
  w('worker', 'internal.corp/shop/worker:5.0.0'),
  w('pinned', 'internal.corp/shop/web@sha256:' + 'a'.repeat(64)),
  w('proxy', 'nginx:1.27'),
  w('bad', 'internal.corp/Shop/Web:1'),
  w('untagged', 'internal.corp/shop/tool'),
]

t.test('questions: configured registries only, one per repository and current tag, never a digest', async (t) => {
  t.strictSame(questionsFor(workloads, table), [
    { registry: 'internal.corp', repository: 'shop/web', currentTag: '1.2.0' },
    { registry: 'Mirrored.Corp:5000', repository: 'shop/api', currentTag: 'v2.0.0' },
    { registry: 'internal.corp', repository: 'shop/worker', currentTag: '5.0.0' },
    { registry: 'internal.corp', repository: 'shop/tool', currentTag: undefined },
  ])
})

t.test('the plan: newest and current through admission’s decision, and why', async (t) => {
  const answers = new Map<string, Answer>([
    [
      'internal.corp/shop/web:1.2.0',
      { resolution: { newest: { tag: '1.3.0', order: 'semver', evidence: '1.3.0 > 1.2.0' }, reason: 'newest of 4', requests: 1 } },
    ],
    [
      'Mirrored.Corp:5000/shop/api:v2.0.0',
      {
        resolution: {
          newest: { tag: 'v2.1.0', order: 'push-time', evidence: 'pushed 2026-11-28T10:00:00Z' },
          reason: 'newest',
          requests: 2,
        },
      },
    ],
    [
      'internal.corp/shop/worker:5.0.0',
      { resolution: { newest: { tag: '5.0.0', order: 'semver', evidence: 'no higher version' }, reason: 'current', requests: 1 } },
    ],
    ['internal.corp/shop/tool:', { error: 'connect ECONNREFUSED 10.0.0.1:443' }],
  ])
  const rows = planRows(workloads, { current: true, policy, reachability: staticReachability(policy), table, answers })
  const brief = rows.map((r) => [r.workload.name, r.tag, r.pulls.map((p) => `${p.role} ${p.pull}`), r.skipped ?? ''])
  t.strictSame(brief, [
    ['web', '1.3.0 (semver: 1.3.0 > 1.2.0)', ['current internal.corp/shop/web:1.2.0', 'newest internal.corp/shop/web:1.3.0'], ''],
    ['web-canary', '1.3.0 (semver: 1.3.0 > 1.2.0)', ['current internal.corp/shop/web:1.2.0', 'newest internal.corp/shop/web:1.3.0'], ''],
    [
      'api',
      'v2.1.0 (push-time: pushed 2026-11-28T10:00:00Z)',
      ['current mirror.example/corp/shop/api:v2.0.0', 'newest mirror.example/corp/shop/api:v2.1.0'],
      '',
    ],
    ['worker', '5.0.0 is the newest (semver: no higher version)', ['current internal.corp/shop/worker:5.0.0'], ''],
    ['pinned', 'pinned by digest: no newer tag looked for', ['current internal.corp/shop/web@sha256:' + 'a'.repeat(64)], ''],
    ['proxy', 'registry docker.io is not in prewarm.registries: not asked', ['current m.daocloud.io/docker.io/library/nginx:1.27'], ''],
    ['bad', '-', [], 'not a valid image reference'],
    ['untagged', 'registry internal.corp not answering: connect ECONNREFUSED 10.0.0.1:443', ['current internal.corp/shop/tool'], ''],
  ])
  t.equal(rows[2]!.pulls[1]!.decision, 'mirrored: mode always')
  t.equal(rows[0]!.pulls[0]!.decision, 'as is: registry internal.corp is not in the configured registries')
  t.strictSame(entriesOf(rows), [
    { image: 'internal.corp/shop/web:1.2.0' },
    { image: 'internal.corp/shop/web:1.3.0' },
    { image: 'mirror.example/corp/shop/api:v2.0.0', original: 'mirrored.corp:5000/shop/api:v2.0.0' },
    { image: 'mirror.example/corp/shop/api:v2.1.0', original: 'mirrored.corp:5000/shop/api:v2.1.0' },
    { image: 'internal.corp/shop/worker:5.0.0' },
    { image: 'internal.corp/shop/web@sha256:' + 'a'.repeat(64) },
    { image: 'm.daocloud.io/docker.io/library/nginx:1.27', original: 'nginx:1.27' },
    { image: 'internal.corp/shop/tool' },
  ])
  // current: false warms only the newer tags.
  const newestOnly = planRows(workloads, { current: false, policy, reachability: staticReachability(policy), table, answers })
  t.strictSame(entriesOf(newestOnly), [
    { image: 'internal.corp/shop/web:1.3.0' },
    { image: 'mirror.example/corp/shop/api:v2.1.0', original: 'mirrored.corp:5000/shop/api:v2.1.0' },
  ])
})

t.test('asking: concurrency bounded, a registry down after two errors in a row is not asked again this run', async (t) => {
  const calls: string[] = []
  let inFlight = 0
  let maxInFlight = 0
  const answering = (tags: Record<string, string>): TagResolver => ({
    async newest(repository): Promise<Resolution> {
      calls.push(`up ${repository}`)
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      await new Promise((r) => setImmediate(r))
      inFlight--
      const tag = tags[repository]
      return tag ? { newest: { tag, order: 'semver', evidence: 'x' }, reason: 'ok', requests: 2 } : { reason: 'no tags', requests: 1 }
    },
  })
  const down: TagResolver = {
    async newest(repository) {
      calls.push(`down ${repository}`)
      throw new Error('connect ECONNREFUSED 127.0.0.1:1')
    },
  }
  const questions = [
    ...['a', 'b', 'c', 'd', 'e'].map((r) => ({ registry: 'up.corp', repository: r, currentTag: '1.0.0' })),
    ...['p', 'q', 'r', 's'].map((r) => ({ registry: 'down.corp', repository: r, currentTag: '1.0.0' })),
  ]
  const asked = await askRegistries(
    questions,
    new Map([
      ['up.corp', answering({ a: '1.1.0', b: '1.0.0', c: '2.0.0' })],
      ['down.corp', down],
    ]),
    2,
  )
  t.equal(maxInFlight, 2)
  t.strictSame(calls.filter((c) => c.startsWith('down')).length, 2)
  t.strictSame(Object.fromEntries(asked.registries), {
    'up.corp': { questions: 5, requests: 8, newer: 2, same: 3, errors: 0 },
    'down.corp': { questions: 4, requests: 0, newer: 0, same: 0, errors: 2, down: 'connect ECONNREFUSED 127.0.0.1:1' },
  })
  t.strictSame(asked.answers.get('down.corp/s:1.0.0'), { error: 'not asked: connect ECONNREFUSED 127.0.0.1:1' })
  t.strictSame(asked.answers.get('down.corp/p:1.0.0'), { error: 'connect ECONNREFUSED 127.0.0.1:1' })
})

t.test("the plan follows admission's per-container rules: pull policy Never and private images keep their name", async (t) => {
  const base = { kind: 'Deployment', namespace: 'shop', init: false }
  const images: WorkloadImage[] = [
    { ...base, name: 'plain', container: 'app', image: 'mirrored.corp:5000/shop/api:v2.0.0' },
    { ...base, name: 'never', container: 'app', image: 'mirrored.corp:5000/shop/api:v2.0.0', pullPolicy: 'Never' },
    { ...base, name: 'private', container: 'app', image: 'mirrored.corp:5000/shop/api:v2.0.0', pullSecrets: [{ name: 'corp-pull' }] },
  ]
  const answers = new Map<string, Answer>([
    [
      'Mirrored.Corp:5000/shop/api:v2.0.0',
      { resolution: { newest: { tag: 'v2.1.0', order: 'push-time', evidence: 'pushed later' }, reason: '', requests: 1 } },
    ],
  ])
  const rows = planRows(images, { current: true, policy, reachability: staticReachability(policy), table, answers })
  t.strictSame(
    rows.map((r) => [r.workload.name, r.pulls.map((p) => p.pull)]),
    [
      ['plain', ['mirror.example/corp/shop/api:v2.0.0', 'mirror.example/corp/shop/api:v2.1.0']],
      ['never', ['mirrored.corp:5000/shop/api:v2.0.0', 'mirrored.corp:5000/shop/api:v2.1.0']],
      ['private', ['mirrored.corp:5000/shop/api:v2.0.0', 'mirrored.corp:5000/shop/api:v2.1.0']],
    ],
  )
  t.equal(rows[1]!.pulls[0]!.decision, 'as is: imagePullPolicy is Never: the node must already have the image under this name')
  t.strictSame(
    imagesOf('Deployments', {
      metadata: { name: 'd', namespace: 'shop' },
      spec: {
        template: { spec: { imagePullSecrets: [{ name: 's' }], containers: [{ name: 'a', image: 'a:1', imagePullPolicy: 'Always' }] } },
      },
    }),
    [
      {
        kind: 'Deployment',
        namespace: 'shop',
        name: 'd',
        container: 'a',
        init: false,
        image: 'a:1',
        pullPolicy: 'Always',
        pullSecrets: [{ name: 's' }],
      },
    ],
  )
})
