// Pod-level rules and the patch at their edges, called directly: where the namespace comes from,
// nameless and imageless containers, plans that do not fit the Pod, the original-images
// annotation's parsing, placement and size limit (exact bytes), warning clipping, and dry-run of
// templates. Expected values are written out.
import t from 'tap'
import jsonpatch from 'fast-json-patch'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { annotationsSize, ENABLED_LABEL, type ImagePlan, mutatePod, planSpec, podSkipReason, warningsFor } from '../../server/core/pod.js'
import { planManifest } from '../../server/core/manifests.js'

type Obj = Record<string, unknown>

const policy = compilePolicy(resolveConfig({}, {}))
const view = staticReachability(policy)
const KEY = 'mirrorhook.io/original-images'

function rewrite(name: string, index: number, original: string, field: ImagePlan['field'] = 'containers', pullSecret?: string): ImagePlan {
  return {
    field,
    index,
    name,
    decision: {
      action: 'rewrite',
      original,
      rewritten: `m.daocloud.io/docker.io/library/${original}`,
      registry: 'docker.io',
      reason: 'mode always',
    },
    ...(pullSecret ? { pullSecret } : {}),
  }
}

t.test('podSkipReason: the namespace from the metadata when the request names none', async (t) => {
  const pod = { metadata: { namespace: 'kube-system' } }
  const excluded = { code: 'excluded-namespace', reason: 'namespace kube-system is excluded' }
  t.strictSame(podSkipReason(pod, undefined, policy), excluded)
  t.strictSame(podSkipReason(pod, '', policy), excluded)
  t.equal(podSkipReason(pod, 'shop', policy), undefined, 'the request namespace wins')
  t.equal(podSkipReason({ metadata: { namespace: 7 } }, undefined, policy), undefined)
  t.equal(podSkipReason({ metadata: { namespace: 'shop' } }, undefined, policy), undefined)
  t.strictSame(podSkipReason({ metadata: { ownerReferences: [{ kind: 'Operator', name: 'db', controller: true }] } }, 'shop', policy), {
    code: 'owner-kind',
    reason: 'the Pod is controlled by Operator db, which is not in podOwners',
  })
  t.equal(
    podSkipReason({ metadata: { ownerReferences: [{ kind: 'Operator', name: 'db' }] } }, 'shop', policy),
    undefined,
    'not the controller',
  )
  t.equal(podSkipReason({ metadata: { ownerReferences: 'Operator' } }, 'shop', policy), undefined)
})

t.test('planSpec: nameless containers are named by position; entries without an image are passed over', async (t) => {
  const spec = {
    containers: [
      { image: 'nginx:1.25' },
      'not a container',
      { name: 'empty', image: '' },
      { name: 'num', image: 5 },
      { name: 'web', image: 'redis:7' },
    ],
  }
  t.strictSame(
    planSpec(spec, policy, view).map((p) => [p.field, p.index, p.name, p.decision.action]),
    [
      ['containers', 0, '#0', 'rewrite'],
      ['containers', 4, 'web', 'rewrite'],
    ],
  )
  t.strictSame(warningsFor(planSpec(spec, policy, view)), [
    'mirrorhook: #0: nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (mode always)',
    'mirrorhook: web: redis:7 -> m.daocloud.io/docker.io/library/redis:7 (mode always)',
  ])
  // On UPDATE a nameless container is compared by its position name too.
  const old = { containers: [{ image: 'nginx:1.25' }, { name: 'web', image: 'redis:6' }] }
  t.strictSame(
    planSpec({ containers: [{ image: 'nginx:1.25' }, { name: 'web', image: 'redis:7' }] }, policy, view, { oldSpec: old }).map(
      (p) => p.name,
    ),
    ['#0', 'web'],
    'an old container without a name is not matched by name',
  )
})

t.test('mutatePod: plans that do not fit the Pod are passed over', async (t) => {
  const pod = { spec: { containers: [{ name: 'web', image: 'nginx:1.25' }, 'x'] } }
  t.strictSame(mutatePod(pod, [rewrite('ghost', 5, 'nginx:1.25'), rewrite('x', 1, 'nginx:1.25')], { annotate: false }), { patch: [] })
  t.strictSame(mutatePod(pod, [rewrite('init', 0, 'nginx:1.25', 'initContainers')], { annotate: false }), { patch: [] })
  t.strictSame(mutatePod({ spec: 'x' }, [rewrite('web', 0, 'nginx:1.25')], { annotate: true }), { patch: [] })
})

t.test('mutatePod: a pull Secret is added to a list, never over something that is not one', async (t) => {
  const plans = [rewrite('web', 0, 'nginx:1.25', 'containers', 'harbor-pull')]
  const notList = { spec: { imagePullSecrets: 'harbor-pull', containers: [{ name: 'web', image: 'nginx:1.25' }] } }
  t.strictSame(mutatePod(notList, plans, { annotate: false }).patch, [
    { op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' },
  ])
  const none = { spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] } }
  t.strictSame(
    mutatePod(none, [rewrite('web', 0, 'nginx:1.25')], { annotate: false }).patch,
    [{ op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' }],
    'no Secret needed: imagePullSecrets untouched',
  )
  const listed = { spec: { imagePullSecrets: ['odd', { name: 'a' }], containers: [{ name: 'web', image: 'nginx:1.25' }] } }
  t.strictSame(mutatePod(listed, plans, { annotate: false }).patch, [
    { op: 'add', path: '/spec/imagePullSecrets/2', value: { name: 'harbor-pull' } },
    { op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' },
  ])
})

t.test('the annotation: where it goes, depending on what exists', async (t) => {
  const plans = [rewrite('web', 0, 'nginx:1.25')]
  const containers = [{ name: 'web', image: 'nginx:1.25' }]
  const value = '{"web":"nginx:1.25"}'
  const ops = (pod: Obj) => mutatePod(pod, plans, { annotate: true }).patch.filter((op) => !op.path.startsWith('/spec'))
  t.strictSame(ops({ spec: { containers } }), [{ op: 'add', path: '/metadata', value: { annotations: { [KEY]: value } } }])
  t.strictSame(ops({ metadata: {}, spec: { containers } }), [{ op: 'add', path: '/metadata/annotations', value: { [KEY]: value } }])
  t.strictSame(ops({ metadata: { annotations: { a: 'b' } }, spec: { containers } }), [
    { op: 'add', path: '/metadata/annotations/mirrorhook.io~1original-images', value },
  ])
  t.strictSame(ops({ metadata: { annotations: { [KEY]: '{}' } }, spec: { containers } }), [
    { op: 'replace', path: '/metadata/annotations/mirrorhook.io~1original-images', value },
  ])
})

t.test('the annotation keeps earlier string entries of an object only', async (t) => {
  const plans = [rewrite('web', 0, 'nginx:1.25')]
  const value = (existing: unknown) => {
    const pod = { metadata: { annotations: { [KEY]: existing } }, spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] } }
    const patched = jsonpatch.applyPatch(structuredClone(pod), mutatePod(pod, plans, { annotate: true }).patch, true, false).newDocument
    return patched.metadata.annotations[KEY]
  }
  t.equal(value('{"side":"redis:7","n":1,"o":{}}'), '{"side":"redis:7","web":"nginx:1.25"}')
  t.equal(value('["redis:7"]'), '{"web":"nginx:1.25"}', 'an array is not an object of originals')
  t.equal(value('"redis:7"'), '{"web":"nginx:1.25"}')
  t.equal(value('not json'), '{"web":"nginx:1.25"}')
  t.equal(value(['{"side":"redis:7"}']), '{"web":"nginx:1.25"}', 'a value that is not a string is not parsed')
})

t.test('metadata or annotations that are not objects: no annotation, and a warning says why', async (t) => {
  const plans = [rewrite('web', 0, 'nginx:1.25')]
  const containers = [{ name: 'web', image: 'nginx:1.25' }]
  const skipped = 'the Pod metadata or its annotations are not an object'
  for (const metadata of ['x', [], null]) {
    const m = mutatePod({ metadata, spec: { containers } }, plans, { annotate: true })
    t.equal(m.annotationSkipped, skipped, JSON.stringify(metadata))
    t.strictSame(
      m.patch.map((op) => op.path),
      ['/spec/containers/0/image'],
    )
  }
  const m = mutatePod({ metadata: { annotations: 'x' }, spec: { containers } }, plans, { annotate: true })
  t.equal(m.annotationSkipped, skipped)
  t.strictSame(warningsFor(plans, m), [
    'mirrorhook: annotation mirrorhook.io/original-images not written: the Pod metadata or its annotations are not an object; the originals are in the rewrite warnings and the webhook log',
    'mirrorhook: web: nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (mode always)',
  ])
  t.equal(mutatePod({ metadata: 'x', spec: { containers } }, plans, { annotate: false }).annotationSkipped, undefined, 'not annotating')
})

t.test('the 256 KiB limit, to the byte; the annotation being replaced does not count twice', async (t) => {
  // key (29 bytes) + value {"web":"nginx:1.25"} (20 bytes) = 49 bytes.
  const plans = [rewrite('web', 0, 'nginx:1.25')]
  const containers = [{ name: 'web', image: 'nginx:1.25' }]
  const limit = 262144
  const filler = (bytes: number) => ({ f: 'x'.repeat(bytes - 1) })
  const at = (annotations: Obj) => mutatePod({ metadata: { annotations }, spec: { containers } }, plans, { annotate: true })
  t.equal(at(filler(limit - 49)).annotationSkipped, undefined, 'exactly the limit')
  t.equal(at(filler(limit - 48)).annotationSkipped, "the Pod's annotations would take 262145 bytes, over the API server's 256 KiB limit")
  const old = '{"web":"nginx:1.24","side":"redis:7"}'
  t.equal(
    at({ ...filler(limit - 66), [KEY]: old }).annotationSkipped,
    undefined,
    'the old value (37 bytes) is replaced, not added to: others 262078 + key 29 + merged {"web":"nginx:1.25","side":"redis:7"} 37 = 262144',
  )
  t.equal(
    at({ ...filler(limit - 65), [KEY]: old }).annotationSkipped,
    "the Pod's annotations would take 262145 bytes, over the API server's 256 KiB limit",
  )
  t.equal(annotationsSize({ a: 'bc', dé: 'é', n: 12 }), 3 + 3 + 2 + 1 + 2)
})

t.test('warnings: clipped to 256 characters; kept images warn only for the codes an operator would ask about', async (t) => {
  const long = (n: number): ImagePlan => ({
    field: 'containers',
    index: 0,
    name: 'web',
    decision: { action: 'keep', original: 'x', code: 'inexpressible', reason: 'r'.repeat(n) },
  })
  // 'mirrorhook: web: x left unchanged: ' is 35 characters.
  t.equal(warningsFor([long(221)])[0], `mirrorhook: web: x left unchanged: ${'r'.repeat(221)}`)
  t.equal(warningsFor([long(221)])[0]!.length, 256)
  t.equal(warningsFor([long(222)])[0], `mirrorhook: web: x left unchanged: ${'r'.repeat(220)}…`)
  t.equal(warningsFor([long(222)])[0]!.length, 256)
  const kept = (code: string): ImagePlan =>
    ({ field: 'containers', index: 0, name: 'c', decision: { action: 'keep', original: 'i', code, reason: code } }) as ImagePlan
  const warned = [
    'unparseable',
    'inexpressible',
    'mirror-unreachable',
    'mirror-refused',
    'needs-credentials',
    'pull-policy-never',
    'mutable-tag',
    'mirror-credentials-missing',
  ]
  const silent = ['already-mirrored', 'no-proxy', 'not-eligible', 'no-mirror', 'reachable', 'kube-fledged-pull']
  t.strictSame(
    warningsFor([...warned, ...silent].map(kept)),
    warned.map((code) => `mirrorhook: c: i left unchanged: ${code}`),
  )
  t.strictSame(warningsFor([]), [])
})

t.test('dry-run of a template: its namespace, its owner references ignored, a skipped annotation reported', async (t) => {
  const deployment = (metadata: Obj, template: Obj) => ({
    kind: 'Deployment',
    metadata: { name: 'web', ...metadata },
    spec: { template: { ...template, spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] } } },
  })
  t.strictSame(planManifest(deployment({ namespace: 'kube-system' }, {}), policy, view), {
    kind: 'Deployment',
    name: 'web',
    plans: [],
    patch: [],
    skip: { code: 'excluded-namespace', reason: 'namespace kube-system is excluded' },
  })
  t.equal(planManifest(deployment({ namespace: 5 }, {}), policy, view).plans.length, 1, 'a namespace that is not a string is none')
  const owned = planManifest(
    deployment({ namespace: 'shop' }, { metadata: { ownerReferences: [{ kind: 'Operator', name: 'x', controller: true }] } }),
    policy,
    view,
  )
  t.equal(owned.skip, undefined, "a template's owner references are not judged")
  t.strictSame(
    owned.plans.map((p) => p.decision.action),
    ['rewrite'],
  )
  const bad = planManifest(deployment({ namespace: 'shop' }, { metadata: { annotations: 'x' } }), policy, view)
  t.equal(bad.annotationSkipped, 'the Pod metadata or its annotations are not an object')
  t.strictSame(
    bad.patch.map((op) => op.path),
    ['/spec/template/spec/containers/0/image'],
  )
  const pod = planManifest(
    { kind: 'Pod', metadata: { name: 'p', ownerReferences: [{ kind: 'Operator', controller: true }] }, spec: { containers: [] } },
    policy,
    view,
  )
  t.strictSame(
    pod.skip,
    { code: 'owner-kind', reason: 'the Pod is controlled by Operator , which is not in podOwners' },
    'a Pod is judged whole',
  )
})

t.test('the namespace label operators set', async (t) => {
  t.equal(ENABLED_LABEL, 'mirrorhook.io/enabled')
})

t.test("dry-run of a Pod manifest reads the Pod's own metadata: a kube-fledged pull Job gets the busybox substitute", async (t) => {
  const pod = {
    kind: 'Pod',
    metadata: {
      name: 'ic-web-x7k2p',
      namespace: 'kube-fledged',
      labels: { imagecache: 'ic-web', kubefledged: 'kubefledged-image-manager' },
    },
    spec: { initContainers: [{ name: 'busybox', image: 'senthilrch/busybox:1.35.0' }], containers: [] },
  }
  t.strictSame(
    planManifest(pod, policy, view).plans.map((p) => (p.decision.action === 'rewrite' ? p.decision.rewritten : p.decision.code)),
    ['m.daocloud.io/docker.io/library/busybox:1.35.0'],
  )
})
