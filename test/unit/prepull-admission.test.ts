// What admission hands to pre-pull, the configuration section, and which Pod images count as in use.
import t from 'tap'
import { KubeConfig } from '@kubernetes/client-node'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { admit, type AdmissionRequest } from '../../server/admission/review.js'
import { ConfigError } from '../../server/core/config.js'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { ManualClock } from '../support/clock.js'
import { Prepull } from '../../server/prepull/prepull.js'
import { rewrittenImagesOf } from '../../server/prepull/kubeapi.js'

const config = resolveConfig({ mirror: { prefix: 'm.daocloud.io' }, registries: ['*'] }, {})
const policy = compilePolicy(config)

function kubeConfig(): KubeConfig {
  const kc = new KubeConfig()
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: 'https://127.0.0.1:1', skipTLSVerify: false }],
    users: [{ name: 'u', token: 'unused' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  })
  return kc
}

function prepull() {
  const registry = new Registry()
  const clock = new ManualClock()
  // Never started: no request leaves the process.
  const p = new Prepull({ kubeConfig: kubeConfig(), config: config.kubeFledged, logger: pino({ level: 'silent' }), registry, clock })
  return { p, registry }
}

function event(spec: Record<string, unknown>, extra: Partial<AdmissionRequest> = {}, labels: Record<string, string> = {}) {
  const request: AdmissionRequest = {
    uid: 'u1',
    kind: { kind: 'Pod', version: 'v1', group: '' },
    resource: { resource: 'pods', version: 'v1', group: '' },
    namespace: 'shop',
    operation: 'CREATE',
    object: { metadata: { name: 'p', labels }, spec },
    ...extra,
  }
  return { request, result: admit(request, policy, staticReachability(policy)) }
}

async function offers(registry: Registry): Promise<Record<string, number>> {
  const values = (await registry.getSingleMetric('mirrorhook_prepull_offers_total')!.get()).values
  return Object.fromEntries(values.map((v) => [String(v.labels.result), v.value]))
}

t.test('the mirror references of init and regular containers are queued; kept images and debug containers are not', async (t) => {
  const { p, registry } = prepull()
  p.onAdmitted(
    event({
      initContainers: [{ name: 'init', image: 'busybox:1.36' }],
      containers: [
        { name: 'web', image: 'nginx:1.25' },
        { name: 'mirrored', image: 'm.daocloud.io/docker.io/library/redis:7' },
        { name: 'again', image: 'docker.io/library/nginx:1.25' },
      ],
      ephemeralContainers: [{ name: 'debug', image: 'alpine:3' }],
    }),
  )
  t.strictSame(p.queue.stats().ready, 2)
  t.equal(p.queue.has('m.daocloud.io/docker.io/library/busybox:1.36'), true)
  t.equal(p.queue.has('m.daocloud.io/docker.io/library/nginx:1.25'), true)
  t.equal(p.queue.has('m.daocloud.io/docker.io/library/redis:7'), false, 'not rewritten by this Pod: not its business')
  t.equal(p.queue.has('m.daocloud.io/docker.io/library/alpine:3'), false, 'ephemeral debug containers are not pre-pulled')
  t.strictSame(await offers(registry), { queued: 2, duplicate: 1 })
  t.equal(p.usage.original('m.daocloud.io/docker.io/library/nginx:1.25'), 'nginx:1.25')
})

t.test('a dry-run event is refused and counted (the server never sends one)', async (t) => {
  const { p, registry } = prepull()
  p.onAdmitted(event({ containers: [{ name: 'web', image: 'nginx:1.25' }] }, { dryRun: true }))
  t.equal(p.queue.size, 0)
  const refused = (await registry.getSingleMetric('mirrorhook_prepull_dry_run_refused_total')!.get()).values[0]!.value
  t.equal(refused, 1)
})

t.test("kube-fledged's own pull Pods queue nothing", async (t) => {
  const { p } = prepull()
  const e = event(
    {
      initContainers: [{ name: 'busybox', image: 'senthilrch/busybox:1.35.0' }],
      containers: [{ name: 'imagepuller', image: 'm.daocloud.io/docker.io/library/nginx:1.25' }],
    },
    {},
    { app: 'kubefledged', kubefledged: 'kubefledged-image-manager', imagecache: 'mirrorhook-x', controller: 'kubefledged-controller' },
  )
  t.equal(e.result.plans.find((pl) => pl.name === 'busybox')?.decision.action, 'rewrite', 'its busybox follows the normal rules')
  t.equal(e.result.plans.find((pl) => pl.name === 'imagepuller')?.decision.action, 'keep', 'the cached image is not rewritten again')
  p.onAdmitted(e)
  t.equal(p.queue.size, 0)
})

t.test('past the queue bound admissions are dropped and counted, admission goes on', async (t) => {
  const small = resolveConfig({ kubeFledged: { queueSize: 2 } }, {})
  const registry = new Registry()
  const p = new Prepull({
    kubeConfig: kubeConfig(),
    config: small.kubeFledged,
    logger: pino({ level: 'silent' }),
    registry,
    clock: new ManualClock(),
  })
  p.onAdmitted(event({ containers: ['a', 'b', 'c', 'd'].map((n) => ({ name: n, image: `${n}:1` })) }))
  t.equal(p.queue.size, 2)
  t.strictSame(await offers(registry), { queued: 2, dropped: 2 })
  const dropped = (await registry.getSingleMetric('mirrorhook_prepull_dropped_total')!.get()).values
  t.strictSame(
    dropped.map((v) => [v.labels.source, v.value]),
    [['admission', 2]],
  )
})

t.test('configuration: defaults, KUBE_FLEDGED_NAMESPACE, validation', async (t) => {
  const d = resolveConfig(undefined, {}).kubeFledged
  t.strictSame(d, {
    enabled: true,
    namespace: 'kube-fledged',
    nodes: {
      enabled: true,
      quietSeconds: 5,
      maxWaitSeconds: 30,
      nodeStatusMaxImages: 50,
      collectedRefreshSeconds: 600,
      busyRetrySeconds: 5,
    },
    imagePullSecrets: [],
    dedupeSeconds: 600,
    writesPerSecond: 5,
    writeBurst: 10,
    queueSize: 10_000,
    batchSize: 50,
    unusedPurgeSeconds: 7 * 24 * 3600,
    podSweepSeconds: 300,
    refreshBackoffSeconds: 60,
    refreshBackoffMaxSeconds: 3600,
    crdPollSeconds: 30,
    imagesPerCache: 100,
    batchWaitSeconds: 600,
    lease: 'mirrorhook-prepull',
    leaseDurationSeconds: 15,
  })
  t.equal(resolveConfig(undefined, { KUBE_FLEDGED_NAMESPACE: 'fledged' }).kubeFledged.namespace, 'fledged')
  const file = resolveConfig(
    {
      kubeFledged: {
        enabled: false,
        nodeSelector: { 'node-role.kubernetes.io/worker': '' },
        imagePullSecrets: ['pull'],
        writesPerSecond: 2,
      },
    },
    { KUBE_FLEDGED_NAMESPACE: 'kf' },
  ).kubeFledged
  t.strictSame(file, {
    enabled: false,
    namespace: 'kf',
    nodeSelector: { 'node-role.kubernetes.io/worker': '' },
    nodes: {
      enabled: true,
      quietSeconds: 5,
      maxWaitSeconds: 30,
      nodeStatusMaxImages: 50,
      collectedRefreshSeconds: 600,
      busyRetrySeconds: 5,
    },
    imagePullSecrets: ['pull'],
    dedupeSeconds: 600,
    writesPerSecond: 2,
    writeBurst: 10,
    queueSize: 10000,
    batchSize: 50,
    unusedPurgeSeconds: 604800,
    podSweepSeconds: 300,
    refreshBackoffSeconds: 60,
    refreshBackoffMaxSeconds: 3600,
    crdPollSeconds: 30,
    imagesPerCache: 100,
    batchWaitSeconds: 600,
    lease: 'mirrorhook-prepull',
    leaseDurationSeconds: 15,
  })
  const problems = (input: unknown) => {
    try {
      resolveConfig(input, {})
      return []
    } catch (e) {
      return (e as ConfigError).problems
    }
  }
  t.strictSame(problems({ kubeFledged: { nodeSelector: { 'bad key!': 'x' } } }), [
    'kubeFledged.nodeSelector.bad key!: Invalid key in record',
  ])
  t.strictSame(problems({ kubeFledged: { writesPerSecond: 0 } }), ['kubeFledged.writesPerSecond: Too small: expected number to be >0'])
  t.strictSame(problems({ kubeFledged: { namespace: 'Not_A_Namespace' } }), ['kubeFledged.namespace: must be a namespace name'])
  t.strictSame(problems({ kubeFledged: { typo: 1 } }), ['kubeFledged.typo: unknown key'])
})

t.test('images in use: what mirrorhook rewrote in a Pod, by the original-images annotation', async (t) => {
  const pod = {
    metadata: {
      annotations: { 'mirrorhook.io/original-images': JSON.stringify({ web: 'nginx:1.25', init: 'busybox:1.36', debug: 'alpine:3' }) },
    },
    spec: {
      initContainers: [{ name: 'init', image: 'm.daocloud.io/docker.io/library/busybox:1.36' }],
      containers: [
        { name: 'web', image: 'm.daocloud.io/docker.io/library/nginx:1.25' },
        { name: 'side', image: 'quay.io/org/side:1' },
      ],
    },
  }
  t.strictSame(
    [...rewrittenImagesOf(pod)],
    [
      ['m.daocloud.io/docker.io/library/busybox:1.36', 'busybox:1.36'],
      ['m.daocloud.io/docker.io/library/nginx:1.25', 'nginx:1.25'],
    ],
  )
  t.strictSame(
    [
      ...rewrittenImagesOf({
        ...pod,
        metadata: { ...pod.metadata, labels: { app: 'kubefledged', kubefledged: 'kubefledged-image-manager' } },
      }),
    ],
    [],
  )
  t.strictSame([...rewrittenImagesOf({ metadata: { annotations: { 'mirrorhook.io/original-images': 'not json' } }, spec: pod.spec })], [])
  t.strictSame([...rewrittenImagesOf({ spec: pod.spec })], [], 'no annotation: not rewritten by mirrorhook')
})
