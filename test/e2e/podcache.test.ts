// One Pod watch for the whole process, counted by the real API server: learning in several
// opted-in namespaces and pre-pull share it, with one Namespace watch and one Event watch.
// The API server's own gauge of open long-running requests says how many watches there are
// (nothing else in this control plane watches: no controller-manager, no kubelet).
import t from 'tap'
import { join } from 'node:path'
import { CoreV1Api } from '@kubernetes/client-node'
import { imageCacheHolding } from '../support/kubefledged.js'
import { pino } from 'pino'
import { REPO_ROOT } from '../support/controlplane.js'
import { until as untilWithin } from '../support/helpers.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { createNamespace, startTestWebhook } from '../support/webhook.js'

const OWN = 'mirrorhook'
const CONFIG = {
  mirror: { prefix: 'm.daocloud.io' },
  registries: ['quay.io', 'gcr.io'],
  mode: 'auto',
  kubeFledged: { namespace: 'kube-fledged', podSweepSeconds: 1 },
  reachability: { probes: { enabled: false }, persistence: { enabled: false } },
}
const TIMEOUT =
  'failed to pull and unpack image "quay.io/acme/app:1": failed to resolve reference "quay.io/acme/app:1": dial tcp 54.1.2.3:443: i/o timeout'

const cp = await withControlPlane(t)

if (cp) {
  const kubeConfig = await cp.kubeConfig()
  const core = kubeConfig.makeApiClient(CoreV1Api)
  const logger = pino({ level: process.env.MIRRORHOOK_TEST_LOG_LEVEL ?? 'silent' })
  await createNamespace(cp, OWN, false)
  await createNamespace(cp, 'kube-fledged', false)
  const crd = await cp.kubectl(['apply', '-f', join(REPO_ROOT, 'test/fixtures/kubefledged/imagecache-crd.yaml')])
  if (crd.code !== 0) throw new Error(crd.stderr)
  for (const ns of ['team-a', 'team-b', 'team-c']) await createNamespace(cp, ns, true)
  await createNamespace(cp, 'elsewhere', false)

  const watches = async (): Promise<Record<string, number>> => {
    const text = (await cp.request('GET', '/metrics')).body
    const out: Record<string, number> = {}
    for (const line of text.split('\n')) {
      const m = /^apiserver_longrunning_requests\{(.*)\} (\d+)$/.exec(line)
      if (!m || !m[1]!.includes('verb="WATCH"')) continue
      const resource = /resource="([^"]*)"/.exec(m[1]!)?.[1] ?? ''
      const value = Number(m[2])
      if (value > 0) out[resource] = (out[resource] ?? 0) + value
    }
    return out
  }
  const until = <T>(what: string, fn: () => Promise<T | undefined>) => untilWithin(what, fn, 20_000)
  // The API server's own loopback informers watch some kinds too (namespaces): count what the webhook adds.
  const before = await watches()
  const added = async (): Promise<Record<string, number>> => {
    const now = await watches()
    const out: Record<string, number> = {}
    for (const k of ['pods', 'events', 'namespaces', 'imagecaches']) out[k] = (now[k] ?? 0) - (before[k] ?? 0)
    return out
  }

  // A Pod already failing when mirrorhook starts (a restart): learned from the first list.
  const early = await core.createNamespacedPod({
    namespace: 'team-c',
    body: { metadata: { name: 'early' }, spec: { containers: [{ name: 'app', image: 'gcr.io/acme/early:1' }] } },
  })
  early.status = {
    phase: 'Pending',
    containerStatuses: [
      {
        name: 'app',
        image: 'gcr.io/acme/early:1',
        imageID: '',
        ready: false,
        restartCount: 0,
        state: { waiting: { reason: 'ErrImagePull', message: TIMEOUT.replaceAll('quay.io/acme/app:1', 'gcr.io/acme/early:1') } },
      },
    ],
  }
  await core.replaceNamespacedPodStatus({ namespace: 'team-c', name: 'early', body: early })

  const webhook = await startTestWebhook({
    config: CONFIG,
    logger,
    extra: { kube: { kubeConfig, source: cp.kubeconfigPath }, env: { POD_NAMESPACE: OWN } },
  })
  t.teardown(() => webhook.stop())
  await webhook.server.reachability!.learnerSynced()

  t.test('learning in three namespaces and pre-pull: one Pod watch, one Event watch, one Namespace watch', async (t) => {
    const expected = { pods: 1, events: 1, namespaces: 1, imagecaches: 1 }
    const seen = await until('the watches open', async () => {
      const w = await added()
      return w.pods! >= 1 && w.events! >= 1 && w.namespaces! >= 1 && w.imagecaches! >= 1 ? w : undefined
    })
    t.same(seen, expected, 'per kind of object, one watch')
    t.same(webhook.server.reachability!.features.learning, true)
    t.equal(webhook.server.prepull!.available, true)

    // A namespace opting in later changes nothing on the API server's side.
    await createNamespace(cp, 'team-d', true)
    await until('team-d learned from', async () =>
      webhook.server.reachability!.learningNamespaces().includes('team-d') ? true : undefined,
    )
    t.same(webhook.server.reachability!.learningNamespaces(), ['team-a', 'team-b', 'team-c', 'team-d'])
    t.same(await added(), expected, 'a fourth namespace adds no watch')
  })

  t.test('a Pod failing before the start is learned from the first list', async (t) => {
    await until('gcr.io unreachable', async () =>
      webhook.server.reachability!.view().status('gcr.io').state === 'unreachable' ? true : undefined,
    )
    t.match(
      webhook.server.reachability!.view().status('gcr.io').evidence,
      /^pod status: i\/o timeout pulling gcr\.io\/acme\/early:1 \(pod team-c\/early\), since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
    )
  })

  t.test('the shared cache holds only the fields mirrorhook reads, and feeds pre-pull and learning', async (t) => {
    const mirror = 'm.daocloud.io/quay.io/acme/app:1'
    const rewritten = await core.createNamespacedPod({
      namespace: 'team-a',
      body: {
        metadata: {
          name: 'web',
          labels: { app: 'web' },
          annotations: { 'mirrorhook.io/original-images': '{"app":"quay.io/acme/app:1"}', 'example.com/big': 'x'.repeat(1000) },
        },
        spec: { containers: [{ name: 'app', image: mirror, env: [{ name: 'A', value: 'b' }] }] },
      },
    })
    const cached = await until('Pod in the shared cache', async () => webhook.server.pods!.get('team-a', 'web'))
    t.same(cached.metadata?.annotations, { 'mirrorhook.io/original-images': '{"app":"quay.io/acme/app:1"}' }, 'only mirrorhook annotations')
    t.same(cached.metadata?.labels, { app: 'web' })
    t.equal(cached.metadata?.uid, rewritten.metadata?.uid)
    t.equal(cached.metadata?.managedFields, undefined, 'no managedFields')
    t.same(cached.spec?.containers, [{ name: 'app', image: mirror }], 'containers: name and image only')

    // Pre-pull's sweep reads the image in use from the cache and creates its ImageCache.
    const cache = await until('ImageCache of the image in use', () => imageCacheHolding(cp, mirror))
    t.same(cache.spec.cacheSpec[0].images, [mirror])
    t.same(JSON.parse(cache.metadata.annotations['mirrorhook.io/originals']), { [mirror]: 'quay.io/acme/app:1' })

    const created = await core.createNamespacedPod({
      namespace: 'team-b',
      body: { metadata: { name: 'web' }, spec: { containers: [{ name: 'app', image: 'quay.io/acme/app:1' }] } },
    })

    // The kubelet's failed pull, in an opted-in namespace: learned through the shared watch.
    created.status = {
      phase: 'Pending',
      containerStatuses: [
        {
          name: 'app',
          image: 'quay.io/acme/app:1',
          imageID: '',
          ready: false,
          restartCount: 0,
          state: { waiting: { reason: 'ErrImagePull', message: TIMEOUT } },
        },
      ],
    }
    await core.replaceNamespacedPodStatus({ namespace: 'team-b', name: 'web', body: created })
    await until('quay.io unreachable', async () =>
      webhook.server.reachability!.view().status('quay.io').state === 'unreachable' ? true : undefined,
    )
    t.match(
      webhook.server.reachability!.view().status('quay.io').evidence,
      /^pod status: i\/o timeout pulling quay\.io\/acme\/app:1 \(pod team-b\/web\), since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
    )
  })
}
