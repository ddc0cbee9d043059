// The whole story on a simulated cluster, with the tests playing no part but kube-fledged's
// (a stand-in following its code, test/support/kubefledged.ts): kwok nodes that cannot reach
// Docker Hub, kube-controller-manager and kube-scheduler, a real OCI registry over TLS as the
// mirror, and mirrorhook registered as the project's webhook configuration registers it.
import t from 'tap'
import { ListWatch, Watch, type KubernetesObject } from '@kubernetes/client-node'
import { pino } from 'pino'
import { UNREACHABLE_IP } from '../support/kwok-stages.js'
import { hasManifest, pushImage } from '../support/registry.js'
import { withCluster } from '../support/tap-cluster.js'
import { createNamespace, registerWebhook, startTestWebhook } from '../support/webhook.js'
import { waitFor as pollFor } from '../support/helpers.js'
import { imageCacheHolding } from '../support/kubefledged.js'

const cluster = await withCluster(t, {
  nodes: 3,
  unreachable: { registries: ['docker.io'] },
  // Pods start and complete after half a second, not within milliseconds.
  timing: { podStartDelayMs: 500 },
  // A lost completion would otherwise cost 5 minutes.
  kubeFledged: { imagePullDeadlineMs: 60_000 },
})

// Cluster steps (scheduling, kwok Stages, controllers) get 60 s.
const waitFor = <T>(what: string, check: () => Promise<T | undefined | false>, ms = 60_000) => pollFor(what, check, ms)

if (cluster) {
  const { cp, kwok } = cluster
  const registry = cluster.registry!
  const MIRROR = registry.host
  const nginxMirror = `${MIRROR}/docker.io/library/nginx:1.25`
  // kube-fledged's BUSYBOX_IMAGE (senthilrch/busybox, on Docker Hub) is replaced by the library busybox a mirror serves.
  const busyboxMirror = `${MIRROR}/docker.io/library/busybox:1.35.0`
  // What containerd says through the CRI on a node that cannot reach Docker Hub.
  const PULL_ERROR =
    'rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "docker.io/library/nginx:1.25": ' +
    'failed to resolve reference "docker.io/library/nginx:1.25": failed to do request: ' +
    `Head "https://registry-1.docker.io/v2/library/nginx/manifests/1.25": dial tcp ${UNREACHABLE_IP}:443: i/o timeout`

  // The mirror really holds the images (pushed through the OCI distribution API).
  await pushImage(registry, 'docker.io/library/nginx', '1.25')
  await pushImage(registry, 'docker.io/library/busybox', '1.35.0')

  const deployment = (namespace: string, replicas: number) => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'web', namespace },
    spec: {
      replicas,
      selector: { matchLabels: { app: 'web' } },
      template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] } },
    },
  })
  const create = async (obj: unknown) => {
    const r = await cp.kubectl(['create', '-f', '-'], { input: JSON.stringify(obj) })
    if (r.code !== 0) throw new Error(r.stderr)
  }
  const pods = async (namespace: string, selector = 'app=web'): Promise<any[]> =>
    (await cp.request('GET', `/api/v1/namespaces/${namespace}/pods?labelSelector=${encodeURIComponent(selector)}`)).json().items
  const waiting = (p: any) => p.status?.containerStatuses?.[0]?.state?.waiting
  const running = (p: any) => p.status?.phase === 'Running' && p.status.containerStatuses?.[0]?.state?.running !== undefined

  await createNamespace(cp, 'baseline', true)
  await createNamespace(cp, 'shop', true)
  // kube-fledged's namespace is opted in too: its pull Jobs' busybox comes from Docker Hub.
  await createNamespace(cp, 'kube-fledged', true)
  await createNamespace(cp, 'mirrorhook', false)

  t.test('without mirrorhook: the Pods of a Deployment wait in ErrImagePull with containerd’s error', async (t) => {
    await create(deployment('baseline', 2))
    const failing = await waitFor('2 Pods scheduled on kwok nodes, waiting in ErrImagePull', async () => {
      const ps = await pods('baseline')
      return ps.length === 2 && ps.every((p) => waiting(p)?.reason === 'ErrImagePull') ? ps : undefined
    })
    for (const p of failing) {
      t.equal(p.spec.containers[0].image, 'nginx:1.25', 'the image as written')
      t.ok(kwok.nodes.includes(p.spec.nodeName), `${p.metadata.name} is on a kwok node`)
      t.equal(p.status.phase, 'Pending')
      t.equal(waiting(p).message, PULL_ERROR)
    }
    const backoff = await waitFor('then ImagePullBackOff, as the kubelet backs off', async () => {
      const p = (await pods('baseline')).find((p) => waiting(p)?.reason === 'ImagePullBackOff')
      return p
    })
    t.equal(waiting(backoff).message, `Back-off pulling image "nginx:1.25": ErrImagePull: ${PULL_ERROR}`)
  })

  t.test('with mirrorhook: mirror references, scheduled and running, pre-pulled by kube-fledged, a scale-out at once', async (t) => {
    // The cache's pull Pods, seen as they come and go (kube-fledged deletes its Jobs when done).
    const pullPods = new Map<string, any>()
    const kc = await cp.kubeConfig()
    const lw = new ListWatch<KubernetesObject>(
      '/api/v1/namespaces/kube-fledged/pods',
      new Watch(kc),
      async () => {
        const r = (await cp.request('GET', '/api/v1/namespaces/kube-fledged/pods')).json()
        return { metadata: { resourceVersion: r.metadata.resourceVersion }, items: r.items }
      },
      false,
    )
    const seen = (p: any) => pullPods.set(p.metadata.name, p)
    lw.on('add', seen)
    lw.on('update', seen)
    await lw.start()
    t.teardown(() => lw.stop())

    const webhook = await startTestWebhook({
      config: {
        mirror: { prefix: MIRROR },
        registries: ['docker.io'],
        mode: 'auto',
        reachability: { unknown: 'mirror', probes: { enabled: false }, persistence: { enabled: false } },
        kubeFledged: {
          namespace: 'kube-fledged',
          writesPerSecond: 50,
          writeBurst: 20,
          podSweepSeconds: 2,
          crdPollSeconds: 1,
          refreshBackoffSeconds: 1,
          refreshBackoffMaxSeconds: 4,
          unusedPurgeSeconds: 0,
        },
      },
      logger: pino({ level: process.env.MIRRORHOOK_TEST_LOG_LEVEL ?? 'silent' }),
      extra: { kube: { kubeConfig: kc, source: cp.kubeconfigPath }, metricsPort: 0, env: { POD_NAMESPACE: 'mirrorhook' } },
    })
    t.teardown(() => webhook.stop())
    await registerWebhook(cp, webhook, 'shop', 'busybox:1.36')

    await create(deployment('shop', 2))
    const up = await waitFor('2 Pods running with the mirror reference', async () => {
      const ps = await pods('shop')
      return ps.length === 2 && ps.every(running) ? ps : undefined
    })
    for (const p of up) {
      t.equal(p.spec.containers[0].image, nginxMirror)
      t.equal(p.metadata.annotations['mirrorhook.io/original-images'], '{"web":"nginx:1.25"}')
      t.ok(kwok.nodes.includes(p.spec.nodeName), `${p.metadata.name} is on a kwok node`)
    }
    t.ok(await hasManifest(registry, 'docker.io/library/nginx', '1.25'), 'the mirror serves that reference')

    const cache = await waitFor('the ImageCache, Succeeded', async () => {
      const c = await imageCacheHolding(cp, nginxMirror)
      return c?.status?.status === 'Succeeded' ? c : undefined
    })
    const name = cache.metadata.name
    t.same(cache.spec.cacheSpec, [{ images: [nginxMirror] }])
    t.equal(cache.status.reason, 'ImageCacheCreate')
    t.equal(cache.status.message, 'All requested images pulled succesfully to respective nodes')

    const jobs = [...pullPods.values()].filter((p) => p.metadata.labels?.imagecache === name)
    t.same(
      jobs.map((p) => p.spec.nodeSelector['kubernetes.io/hostname']).sort(),
      [...kwok.nodes].sort(),
      'one pull Job per node, pinned to it',
    )
    for (const p of jobs) {
      t.same(
        [p.spec.initContainers[0].image, p.spec.containers[0].image],
        [busyboxMirror, nginxMirror],
        "kube-fledged's busybox replaced by the library one, through the mirror (its BUSYBOX_IMAGE is on Docker Hub)",
      )
      const { app, kubefledged, controller, imagecache } = p.metadata.labels
      t.strictSame(
        { app, kubefledged, controller, imagecache },
        { app: 'kubefledged', kubefledged: 'kubefledged-image-manager', controller: 'kubefledged-controller', imagecache: name },
        "kube-fledged's labels on its pull Job's Pod",
      )
      t.strictSame(
        Object.keys(p.metadata.labels).sort(),
        [
          'app',
          'batch.kubernetes.io/controller-uid',
          'batch.kubernetes.io/job-name',
          'controller',
          'controller-uid',
          'imagecache',
          'job-name',
          'kubefledged',
        ],
        'and the Job controller’s, nothing else',
      )
    }
    t.same(
      jobs.map((p) => p.status?.phase),
      ['Succeeded', 'Succeeded', 'Succeeded'],
      'kwok completed every pull Pod',
    )
    await waitFor('mirrorhook reports the image cached', async () => webhook.server.prepull!.stateOf(nginxMirror)?.state === 'cached')
    t.equal(webhook.server.prepull!.stateOf(nginxMirror)?.state, 'cached')

    const scale = await cp.kubectl(['-n', 'shop', 'scale', 'deployment/web', '--replicas=5'])
    t.equal(scale.code, 0, scale.stderr)
    const scaled = await waitFor(
      '5 Pods running',
      async () => {
        const ps = await pods('shop')
        return ps.length === 5 && ps.every(running) ? ps : undefined
      },
      30_000,
    )
    t.same(
      scaled.map((p) => p.spec.containers[0].image),
      Array(5).fill(nginxMirror),
    )

    // The baseline's Pods, recreated by their ReplicaSet through admission, run too.
    const del = await cp.kubectl(['-n', 'baseline', 'delete', 'pods', '-l', 'app=web', '--wait=false'])
    t.equal(del.code, 0, del.stderr)
    const recreated = await waitFor('the baseline Pods recreated with the mirror, running', async () => {
      const ps = (await pods('baseline')).filter((p) => !p.metadata.deletionTimestamp)
      return ps.length === 2 && ps.every(running) ? ps : undefined
    })
    t.same(
      recreated.map((p) => p.spec.containers[0].image),
      [nginxMirror, nginxMirror],
    )
  })
}
