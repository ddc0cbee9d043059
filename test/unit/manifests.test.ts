// Where the offline dry-run finds Pod specs in workload manifests (server/core/manifests.ts),
// in process: each kind's template gets exactly the images admission would give its Pods.
import t from 'tap'
import jsonpatch from 'fast-json-patch'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { planManifest } from '../../server/core/manifests.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'

function plan(doc: unknown, input: ConfigInput = { mode: 'always' }) {
  const policy = compilePolicy(resolveConfig(input, {}))
  const result = planManifest(doc, policy, staticReachability(policy))
  const patched = jsonpatch.applyPatch(structuredClone(doc), jsonpatch.deepClone(result.patch), true, false).newDocument
  return { result, patched: patched as any }
}

const podSpec = () => ({
  initContainers: [{ name: 'init', image: 'busybox:1.36' }],
  containers: [
    { name: 'web', image: 'nginx:1.25' },
    { name: 'corp', image: 'registry.corp.example/app:1' },
  ],
})
const template = () => ({ metadata: { labels: { app: 'web' } }, spec: podSpec() })

const MIRRORED = {
  init: 'm.daocloud.io/docker.io/library/busybox:1.36',
  web: 'm.daocloud.io/docker.io/library/nginx:1.25',
}
const ORIGINALS = '{"init":"busybox:1.36","web":"nginx:1.25"}'

t.test('every workload kind: its Pod template is rewritten and annotated', async (t) => {
  const cases: [string, unknown, (d: any) => any][] = [
    ['Pod', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web' }, spec: podSpec() }, (d) => d],
    ...(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'ReplicationController', 'Job'].map((kind) => [
      kind,
      { kind, metadata: { name: 'web' }, spec: { template: template() } },
      (d: any) => d.spec.template,
    ]) as [string, unknown, (d: any) => any][]),
    [
      'CronJob',
      { kind: 'CronJob', metadata: { name: 'web' }, spec: { jobTemplate: { spec: { template: template() } } } },
      (d) => d.spec.jobTemplate.spec.template,
    ],
    ['PodTemplate', { kind: 'PodTemplate', metadata: { name: 'web' }, template: template() }, (d) => d.template],
  ]
  for (const [kind, doc, podOf] of cases) {
    const { result, patched } = plan(doc)
    t.equal(result.kind, kind)
    t.equal(result.name, 'web', `${kind}: name`)
    t.equal(result.unsupported, undefined, `${kind}: supported`)
    t.equal(result.skip, undefined, `${kind}: not skipped`)
    t.strictSame(
      result.plans.map((p) => [p.field, p.index, p.name, p.decision.action]),
      [
        ['initContainers', 0, 'init', 'rewrite'],
        ['containers', 0, 'web', 'rewrite'],
        ['containers', 1, 'corp', 'keep'],
      ],
      `${kind}: one decision per image`,
    )
    const pod = podOf(patched)
    t.strictSame(
      [pod.spec.initContainers[0].image, pod.spec.containers[0].image, pod.spec.containers[1].image],
      [MIRRORED.init, MIRRORED.web, 'registry.corp.example/app:1'],
      `${kind}: images`,
    )
    t.equal(pod.metadata.annotations['mirrorhook.io/original-images'], ORIGINALS, `${kind}: originals`)
    const rest = structuredClone(patched)
    const restPod = podOf(rest)
    delete restPod.metadata.annotations
    restPod.spec.initContainers[0].image = 'busybox:1.36'
    restPod.spec.containers[0].image = 'nginx:1.25'
    t.strictSame(rest, doc, `${kind}: nothing else changes`)
  }
})

t.test('names: metadata.name, else generateName with *, else (unnamed); kind missing is (no kind)', async (t) => {
  t.equal(plan({ kind: 'Pod', metadata: { generateName: 'web-' }, spec: podSpec() }).result.name, 'web-*')
  t.equal(plan({ kind: 'Pod', spec: podSpec() }).result.name, '(unnamed)')
  t.equal(plan({ kind: 'Pod', metadata: { name: 7 }, spec: podSpec() }).result.name, '(unnamed)')
  t.strictSame(plan({ metadata: { name: 'x' } }).result, { kind: '(no kind)', name: 'x', plans: [], patch: [], unsupported: true })
  t.strictSame(plan('a string').result, { kind: '(no kind)', name: '(unnamed)', plans: [], patch: [], unsupported: true })
  t.strictSame(plan(null).result, { kind: '(no kind)', name: '(unnamed)', plans: [], patch: [], unsupported: true })
})

t.test('documents without a Pod spec mirrorhook knows are unsupported and unchanged', async (t) => {
  const docs = [
    { kind: 'Service', metadata: { name: 's' }, spec: { ports: [] } },
    { kind: 'Deployment', metadata: { name: 'd' }, spec: {} },
    { kind: 'Deployment', metadata: { name: 'd' }, spec: { template: { spec: 'nope' } } },
    { kind: 'CronJob', metadata: { name: 'c' }, spec: { jobTemplate: { template: template() } } },
    { kind: 'Pod', metadata: { name: 'p' } },
    { kind: 'Pod', metadata: { name: 'p' }, spec: [] },
  ]
  for (const doc of docs) {
    const { result, patched } = plan(doc)
    t.strictSame(
      result,
      { kind: doc.kind, name: doc.metadata.name, plans: [], patch: [], unsupported: true },
      `${doc.kind} ${JSON.stringify(doc.spec)}`,
    )
    t.strictSame(patched, doc)
  }
})

t.test('Pod rules apply to templates: the skip label, excluded namespaces; owners only to Pods', async (t) => {
  const skipped = plan({
    kind: 'Deployment',
    metadata: { name: 'd' },
    spec: { template: { metadata: { labels: { 'mirrorhook.io/skip': 'true' } }, spec: podSpec() } },
  }).result
  t.strictSame(skipped, {
    kind: 'Deployment',
    name: 'd',
    plans: [],
    patch: [],
    skip: { code: 'skip-label', reason: 'the Pod is labelled mirrorhook.io/skip=true' },
  })
  const excluded = plan({ kind: 'Deployment', metadata: { name: 'd', namespace: 'kube-system' }, spec: { template: template() } }).result
  t.strictSame(excluded.skip, { code: 'excluded-namespace', reason: 'namespace kube-system is excluded' })
  const excludedPod = plan({ kind: 'Pod', metadata: { name: 'p', namespace: 'kube-system' }, spec: podSpec() }).result
  t.strictSame(excludedPod.skip, { code: 'excluded-namespace', reason: 'namespace kube-system is excluded' })

  // A template's Pods get their owner (the workload's ReplicaSet, …) only when created: not judged here.
  const operatorOwner = [{ apiVersion: 'x/v1', kind: 'Cluster', name: 'pg', uid: '1', controller: true }]
  const templated = plan({
    kind: 'Deployment',
    metadata: { name: 'd' },
    spec: { template: { metadata: { ownerReferences: operatorOwner }, spec: podSpec() } },
  })
  t.equal(templated.result.skip, undefined, 'a template is not judged by owner')
  t.equal(templated.patched.spec.template.spec.containers[0].image, MIRRORED.web)
  t.strictSame(templated.patched.spec.template.metadata.ownerReferences, operatorOwner, 'the template keeps its metadata')
  const ownedPod = plan({ kind: 'Pod', metadata: { name: 'p', ownerReferences: operatorOwner }, spec: podSpec() }).result
  t.strictSame(ownedPod.skip, { code: 'owner-kind', reason: 'the Pod is controlled by Cluster pg, which is not in podOwners' })
})

t.test('a template without metadata gets it, with the annotation', async (t) => {
  const { patched } = plan({ kind: 'Job', metadata: { name: 'j' }, spec: { template: { spec: podSpec() } } })
  t.strictSame(patched.spec.template.metadata, { annotations: { 'mirrorhook.io/original-images': ORIGINALS } })
})
