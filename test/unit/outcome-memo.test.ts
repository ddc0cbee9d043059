// The memo of admission outcomes by Pod shape: reused only for what the decision reads, never
// across a change of state, bounded, and never answering one review with another's uid.
import t from 'tap'
import { admit, type AdmissionReview, responseJson } from '../../server/admission/review.js'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability, type ReachabilityView } from '../../server/core/rewrite.js'
import type { AdmissionContext } from '../../server/http/context.js'
import { OutcomeMemo, podShape, sameJson, sameShape, shapeFits } from '../../server/http/outcome-memo.js'
import { podCreateReview } from '../support/helpers.js'

const policy = compilePolicy(resolveConfig(undefined, {}))
const securedPolicy = compilePolicy(
  resolveConfig({ mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { 'harbor.corp.example': 'harbor-pull' } } }, {}),
)

type Obj = Record<string, unknown>

// A ReplicaSet's Pod as the API server sends it: what differs per Pod is the uid, the name and the token volume.
function review(uid: string, change: (pod: Obj) => void = () => {}, request: Obj = {}): AdmissionReview {
  const token = `kube-api-access-${uid}`
  const mounts = [{ name: token, mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true }]
  const pod: Obj = {
    metadata: {
      generateName: 'web-7d9f-',
      name: `web-7d9f-${uid}`,
      namespace: 'shop',
      labels: { app: 'web', 'pod-template-hash': '7d9f' },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-7d9f', uid: 'rs-1', controller: true }],
    },
    spec: {
      initContainers: [{ name: 'init', image: 'busybox:1.36', volumeMounts: mounts }],
      containers: [
        { name: 'web', image: 'nginx:1.27.3', imagePullPolicy: 'IfNotPresent', volumeMounts: mounts },
        { name: 'metrics', image: 'quay.io/prometheus/node-exporter:v1.8.2', volumeMounts: mounts },
      ],
      volumes: [{ name: token, projected: { sources: [] } }],
    },
  }
  change(pod)
  return podCreateReview(uid, pod, request) as AdmissionReview
}

function context(reachability: ReachabilityView = staticReachability(policy), p = policy): AdmissionContext {
  return { policy: p, reachability }
}

// A view whose generation the test sets.
function steppedView(): ReachabilityView & { step(): void } {
  let generation = 0
  const base = staticReachability(policy)
  return { ...base, generation: () => generation, step: () => (generation += 1) }
}

function fresh(r: AdmissionReview, c: AdmissionContext) {
  const result = admit(r.request, c.policy, c.reachability, c.secrets)
  return { result, body: responseJson(r, result.patch, result.warnings) }
}

const countDerived = () => {
  let calls = 0
  return {
    derive: (result: { outcome: string }) => {
      calls += 1
      return `${result.outcome} #${calls}`
    },
    calls: () => calls,
  }
}

t.test('from the third Pod of a shape on, the outcome is reused, each review with its own uid in the response', async (t) => {
  const counter = countDerived()
  const memo = new OutcomeMemo(counter.derive)
  const c = context()
  const first = memo.admit(review('pod-a'), c)
  t.equal(first.reused, false)
  t.equal(memo.size, 1, 'seen once: the key is kept, not the outcome')
  const second = memo.admit(review('pod-b'), c)
  t.equal(second.reused, false, 'seen twice: decided and kept')
  const third = memo.admit(review('pod-c'), c)
  t.equal(third.reused, true)
  t.equal(third.result, second.result, 'the same outcome object')
  t.equal(third.derived, 'mutated #2', 'derived once per decision')
  t.equal(counter.calls(), 2)
  const expected = fresh(review('pod-c'), c)
  t.equal(third.body.toString(), expected.body, 'the bytes a fresh decision answers for pod-c')
  const answered = JSON.parse(third.body.toString())
  answered.response.patch = JSON.parse(Buffer.from(answered.response.patch, 'base64').toString('utf8'))
  t.strictSame(answered, {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    response: {
      uid: 'pod-c',
      allowed: true,
      patchType: 'JSONPatch',
      patch: [
        { op: 'replace', path: '/spec/containers/1/image', value: 'm.daocloud.io/quay.io/prometheus/node-exporter:v1.8.2' },
        { op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.27.3' },
        { op: 'replace', path: '/spec/initContainers/0/image', value: 'm.daocloud.io/docker.io/library/busybox:1.36' },
        {
          op: 'add',
          path: '/metadata/annotations',
          value: {
            'mirrorhook.io/original-images':
              '{"init":"busybox:1.36","web":"nginx:1.27.3","metrics":"quay.io/prometheus/node-exporter:v1.8.2"}',
          },
        },
      ],
      warnings: [
        'mirrorhook: init: busybox:1.36 -> m.daocloud.io/docker.io/library/busybox:1.36 (registry docker.io is unknown (not listed in config unreachable); reachability.unknown is mirror)',
        'mirrorhook: web: nginx:1.27.3 -> m.daocloud.io/docker.io/library/nginx:1.27.3 (registry docker.io is unknown (not listed in config unreachable); reachability.unknown is mirror)',
        'mirrorhook: metrics: quay.io/prometheus/node-exporter:v1.8.2 -> m.daocloud.io/quay.io/prometheus/node-exporter:v1.8.2 (registry quay.io is unknown (not listed in config unreachable); reachability.unknown is mirror)',
      ],
    },
  })
  t.notMatch(third.body.toString(), /pod-[ab]/, "never an earlier review's uid")
  t.strictSame(third.result, expected.result)
  t.equal(third.result.outcome, 'mutated')
  t.equal(third.result.patch.length, 4, 'three images and the annotation')
  t.equal(memo.size, 1)
})

t.test('a uid that needs escaping is spliced in as JSON', async (t) => {
  const memo = new OutcomeMemo(() => undefined)
  const c = context()
  memo.admit(review('plain'), c)
  memo.admit(review('plain-2'), c)
  const odd = review('a"b\\c\u2028')
  const out = memo.admit(odd, c)
  t.equal(out.reused, true)
  t.equal(out.body.toString(), fresh(odd, c).body)
  t.equal((JSON.parse(out.body.toString()) as { response: { uid: string } }).response.uid, 'a"b\\c\u2028')
})

t.test('a new generation, policy, view or set of pull Secret copies decides afresh', async (t) => {
  const memo = new OutcomeMemo(() => undefined)
  const view = steppedView()
  const c = context(view)
  const twice = (uid: string, ctx: AdmissionContext) => [
    memo.admit(review(`${uid}a`), ctx).reused,
    memo.admit(review(`${uid}b`), ctx).reused,
  ]
  t.strictSame(twice('1', c), [false, false])
  t.equal(memo.admit(review('2'), c).reused, true)
  view.step()
  t.strictSame(twice('3', c), [false, false], 'generation changed')
  t.equal(memo.size, 1, 'the older outcomes are gone')
  t.equal(memo.admit(review('4'), c).reused, true)
  t.strictSame(twice('5', context(view, compilePolicy(resolveConfig(undefined, {})))), [false, false], 'another policy')
  t.strictSame(twice('6', context(steppedView())), [false, false], 'another view')
  const withSecrets: AdmissionContext = { ...context(view), secrets: { has: () => true } }
  t.strictSame(twice('7', withSecrets), [false, false], 'pull Secret copies appeared')
  t.equal(memo.admit(review('8'), withSecrets).reused, true)
})

t.test('a view without a generation, an UPDATE and a subresource are decided every time', async (t) => {
  const memo = new OutcomeMemo(() => undefined)
  const { generation: _omitted, ...noGeneration } = staticReachability(policy)
  const plain = context(noGeneration)
  for (const uid of ['1', '2', '3']) t.equal(memo.admit(review(uid), plain).reused, false, `no generation ${uid}`)
  const c = context()
  for (const uid of ['1', '2', '3']) {
    const update = review(uid, () => {}, { operation: 'UPDATE', oldObject: review('old').request.object })
    const out = memo.admit(update, c)
    t.equal(out.reused, false, `UPDATE ${uid}`)
    t.equal(out.body.toString(), fresh(update, c).body)
    t.equal(
      memo.admit(
        review(uid, () => {}, { subResource: 'ephemeralcontainers' }),
        c,
      ).reused,
      false,
      `subresource ${uid}`,
    )
  }
  t.equal(memo.size, 0)
})

t.test('bounded: the oldest shape goes first', async (t) => {
  const memo = new OutcomeMemo(() => undefined, 2)
  const c = context()
  const shape = (tag: string) => (pod: Obj) => {
    ;((pod.spec as Obj).containers as Obj[])[0]!.image = `nginx:${tag}`
  }
  for (const round of ['a', 'b']) {
    for (const tag of ['1.26', '1.27']) t.equal(memo.admit(review(`${round}-${tag}`, shape(tag)), c).reused, false)
  }
  t.equal(memo.size, 2)
  t.equal(memo.admit(review('c-1.26', shape('1.26')), c).reused, true)
  t.equal(memo.admit(review('a-1.25', shape('1.25')), c).reused, false, 'a third shape')
  t.equal(memo.size, 2, 'pushes the oldest out')
  t.equal(memo.admit(review('d-1.27', shape('1.27')), c).reused, true)
  t.equal(memo.admit(review('d-1.26', shape('1.26')), c).reused, false, 'evicted')
  const none = new OutcomeMemo(() => undefined, 0)
  t.strictSame(
    ['x', 'y', 'z'].map((uid) => none.admit(review(uid), c).reused),
    [false, false, false],
    'capacity 0 keeps nothing',
  )
  t.equal(none.size, 0)
})

t.test('every field the decision reads makes another shape; what it does not read does not', async (t) => {
  const c = context()
  const base = podShape(review('u'), c)!
  const sameAsBase = (r: AdmissionReview) => sameShape(podShape(r, c)!, base)
  const containers = (pod: Obj) => (pod.spec as Obj).containers as unknown[]
  const metadata = (pod: Obj) => pod.metadata as Obj
  // Each change alone, applied to the same Pod: [what, change, same key expected].
  const changes: [string, (pod: Obj) => void, boolean][] = [
    ['the Pod name', (pod) => (metadata(pod).name = 'other'), true],
    ['the token volume and mounts', (pod) => ((pod.spec as Obj).volumes = []), true],
    ['a container resource', (pod) => ((containers(pod)[0] as Obj).resources = { limits: { cpu: '1' } }), true],
    ['managedFields', (pod) => (metadata(pod).managedFields = [{ time: 'now' }]), true],
    ['an image', (pod) => ((containers(pod)[0] as Obj).image = 'nginx:1.27.4'), false],
    ['a container name', (pod) => ((containers(pod)[0] as Obj).name = 'www'), false],
    ['imagePullPolicy', (pod) => ((containers(pod)[0] as Obj).imagePullPolicy = 'Never'), false],
    ['imagePullPolicy absent', (pod) => delete (containers(pod)[0] as Obj).imagePullPolicy, false],
    ['an entry that is not a container before the others', (pod) => containers(pod).unshift(7), false],
    ['the order of containers', (pod) => containers(pod).reverse(), false],
    ['no init containers', (pod) => delete (pod.spec as Obj).initContainers, false],
    ['init containers not a list', (pod) => ((pod.spec as Obj).initContainers = {}), false],
    ['ephemeral containers', (pod) => ((pod.spec as Obj).ephemeralContainers = [{ name: 'dbg', image: 'busybox:1.36' }]), false],
    ['imagePullSecrets', (pod) => ((pod.spec as Obj).imagePullSecrets = [{ name: 'regcred' }]), false],
    ['the skip label', (pod) => ((metadata(pod).labels as Obj)['mirrorhook.io/skip'] = 'true'), false],
    ['no labels', (pod) => delete metadata(pod).labels, false],
    ['labels null', (pod) => (metadata(pod).labels = null), false],
    ['annotations', (pod) => (metadata(pod).annotations = { a: 'b' }), false],
    ['annotations null', (pod) => (metadata(pod).annotations = null), false],
    ['the original-images annotation', (pod) => (metadata(pod).annotations = { 'mirrorhook.io/original-images': '{}' }), false],
    ['the owner', (pod) => (metadata(pod).ownerReferences = [{ kind: 'Job', name: 'j', controller: true }]), false],
    ["the Pod's namespace", (pod) => (metadata(pod).namespace = 'kube-system'), false],
    ['no metadata', (pod) => delete pod.metadata, false],
  ]
  const memo = new OutcomeMemo(() => undefined)
  memo.admit(review('seed-1'), c)
  memo.admit(review('seed-2'), c)
  for (const [what, change, same] of changes) {
    const r = review('u', change)
    t.equal(sameAsBase(r), same, `${what}: ${same ? 'the same shape' : 'another shape'}`)
    // Whatever the key, the memo answers what a fresh decision answers, twice.
    for (const uid of ['m1', 'm2', 'm3']) {
      const again = review(uid, change)
      const out = memo.admit(again, c)
      const expected = fresh(again, c)
      t.equal(out.body.toString(), expected.body, `${what}: response (${uid})`)
      t.strictSame(out.result, expected.result, `${what}: result (${uid})`)
    }
  }
  // The request's own fields.
  t.equal(sameAsBase(review('u', () => {}, { namespace: 'kube-system' })), false, 'the request namespace')
  t.equal(sameAsBase(review('u', () => {}, { kind: { kind: 'Deployment' } })), false, 'the kind')
  t.equal(sameAsBase(review('u', () => {}, { dryRun: true })), true, 'dry-run is not read by the decision')
  t.equal(
    podShape(
      review('u', (pod) => (pod.metadata = 'x')),
      c,
    ),
    undefined,
    'metadata that is not an object: not keyed',
  )
})

t.test('whether each mirror pull Secret is copied to the namespace is part of the shape', async (t) => {
  const copied = new Set<string>()
  const c: AdmissionContext = {
    policy: securedPolicy,
    reachability: staticReachability(securedPolicy),
    secrets: { has: (ns, name) => copied.has(`${ns}/${name}`) },
  }
  const memo = new OutcomeMemo(() => undefined)
  const before = memo.admit(review('1'), c)
  t.equal(before.result.outcome, 'unchanged', 'no copy yet: kept')
  copied.add('shop/harbor-pull')
  const after = memo.admit(review('2'), c)
  t.equal(after.reused, false)
  t.equal(after.result.outcome, 'mutated', 'the copy exists: rewritten')
  t.equal(after.body.toString(), fresh(review('2'), c).body)
  t.equal(memo.admit(review('3'), c).reused, false)
  t.equal(memo.admit(review('4'), c).reused, true)
})

t.test('a key over the bound is not kept', async (t) => {
  const memo = new OutcomeMemo(() => undefined)
  const c = context()
  const huge = (pod: Obj) => (((pod.metadata as Obj).annotations = { big: 'x'.repeat(20_000) }), undefined)
  t.strictSame(podShape(review('1', huge), c)?.anchor, 'shop nginx:1.27.3', 'a shape, too big to keep')
  t.equal(memo.admit(review('1', huge), c).reused, false)
  t.equal(memo.admit(review('2', huge), c).reused, false)
  t.equal(memo.admit(review('3', huge), c).reused, false)
  t.equal(memo.size, 0)
})

t.test('sameJson: the same JSON value, object keys in any order', async (t) => {
  const cases: [unknown, unknown, boolean][] = [
    ['a', 'a', true],
    ['a', 'b', false],
    [1, '1', false],
    [null, null, true],
    [null, {}, false],
    [{}, null, false],
    [undefined, null, false],
    [[], {}, false],
    [{}, [], false],
    [[1, 2], [1, 2], true],
    [[1, 2], [2, 1], false],
    [[1], [1, 1], false],
    [{ a: 1, b: 2 }, { b: 2, a: 1 }, true],
    [{ a: 1 }, { a: 1, b: 2 }, false],
    [{ a: 1, b: 2 }, { a: 1 }, false],
    [{ a: 1, b: undefined }, { a: 1, c: undefined }, false],
    [{ a: { b: [{ c: 'd' }] } }, { a: { b: [{ c: 'd' }] } }, true],
    [{ a: { b: [{ c: 'd' }] } }, { a: { b: [{ c: 'e' }] } }, false],
  ]
  t.strictSame(
    cases.map(([a, b]) => sameJson(a, b)),
    cases.map(([, , same]) => same),
  )
})

t.test('a shape nested deeper than the bound is not kept, and comparing against it stays shallow', async (t) => {
  const memo = new OutcomeMemo(() => undefined)
  const c = context()
  let deep: unknown = 'x'
  for (let i = 0; i < 100_000; i++) deep = { d: deep }
  const nested = (pod: Obj) => (((pod.metadata as Obj).ownerReferences = [deep]), undefined)
  t.equal(shapeFits(podShape(review('1', nested), c)!), false)
  let shallow: unknown = 'x'
  for (let i = 0; i < 30; i++) shallow = { d: shallow }
  t.equal(
    shapeFits(
      podShape(
        review('1', (pod) => ((pod.metadata as Obj).ownerReferences = [shallow])),
        c,
      )!,
    ),
    true,
  )
  memo.admit(review('a'), c)
  t.strictSame(
    ['1', '2', '3'].map((uid) => memo.admit(review(uid, nested), c).reused),
    [false, false, false],
  )
  t.equal(memo.size, 1, 'only the plain shape')
})

t.test('Pods of many ReplicaSets of one image in one namespace: the newest shapes are kept', async (t) => {
  const memo = new OutcomeMemo(() => undefined)
  const c = context()
  const replicaSet = (hash: string) => (pod: Obj) => (((pod.metadata as Obj).labels = { app: 'web', 'pod-template-hash': hash }), undefined)
  const hashes = Array.from({ length: 16 }, (_, i) => `h${i}`)
  for (const round of ['a', 'b']) for (const hash of hashes) memo.admit(review(`${round}-${hash}`, replicaSet(hash)), c)
  t.equal(memo.size, 16)
  t.strictSame(
    hashes.map((hash) => memo.admit(review(`c-${hash}`, replicaSet(hash)), c).reused),
    hashes.map(() => true),
  )
  t.equal(memo.admit(review('a-h16', replicaSet('h16')), c).reused, false)
  t.equal(memo.size, 16, 'sixteen shapes per namespace and first image')
  t.equal(memo.admit(review('d-h0', replicaSet('h0')), c).reused, false, 'the oldest was pushed out')
  t.equal(memo.admit(review('d-h2', replicaSet('h2')), c).reused, true)
})

t.test('capacity 1: a new shape of the same anchor replaces the kept one', async (t) => {
  const memo = new OutcomeMemo(() => undefined, 1)
  const c = context()
  const hash = (h: string) => (pod: Obj) => (((pod.metadata as Obj).labels = { 'pod-template-hash': h }), undefined)
  t.strictSame(
    ['1', '2', '3'].map((uid) => memo.admit(review(uid, hash('x')), c).reused),
    [false, false, true],
  )
  t.equal(memo.admit(review('4', hash('y')), c).reused, false)
  t.equal(memo.size, 1)
  t.equal(memo.admit(review('5', hash('x')), c).reused, false, 'pushed out')
})
