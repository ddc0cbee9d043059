// A scaled-out node on the simulated cluster (kube-apiserver, controllers, kwok nodes, the
// kube-fledged stand-in with its periodic refresh off): kwok makes the new Node Ready, mirrorhook
// refreshes the ImageCaches it should hold, and the stand-in pulls them onto it within seconds.
import t from 'tap'
import { Watch } from '@kubernetes/client-node'
import { batchName, buildImageCache } from '../../server/prepull/imagecache.js'
import { withCluster } from '../support/tap-cluster.js'
import { capturingLogger, waitFor } from '../support/helpers.js'
import { startTestWebhook } from '../support/webhook.js'

const NS = 'kube-fledged'
// kube-fledged's refresh annotation.
const REFRESH_ANNOTATION = 'kubefledged.io/refresh-imagecache'
const CACHES = `/apis/kubefledged.io/v1alpha2/namespaces/${NS}/imagecaches`
const HOSTNAME = 'kubernetes.io/hostname'

const cluster = await withCluster(t, {
  nodes: 1,
  registry: false,
  // A pull Pod that completes within milliseconds of its Job can beat kube-fledged's record of the
  // Job (the lost completion the stand-in reproduces); the cache then fails at the deadline. A pull
  // takes time on a real node: half a second here, as in story and kubefledged-batch.
  timing: { podStartDelayMs: 500 },
  kubeFledged: {
    imagePullDeadlineMs: 20_000,
    // Off: a pull onto the new node can only come from mirrorhook's refresh.
    refreshFrequencyMs: 0,
    busyboxImage: 'mirror.example/docker.io/senthilrch/busybox:1.35.0',
    criClientImage: 'mirror.example/docker.io/senthilrch/kubefledged-cri-client:v0.10.0',
  },
})

if (cluster) {
  const { cp, kwok } = cluster
  const get = async (name: string) => (await cp.request('GET', `${CACHES}/${name}`)).json()
  const terminal = (name: string) =>
    waitFor(`${name} processed`, async () => {
      const o = await get(name)
      return o.status?.status && o.status.status !== 'Processing' && !o.metadata.annotations?.[REFRESH_ANNOTATION] ? o : undefined
    })
  // Every pull Job the stand-in creates: cache name and node.
  const jobs: { cache: string; node: string; at: number }[] = []
  const watch = await new Watch(await cp.kubeConfig()).watch(
    `/apis/batch/v1/namespaces/${NS}/jobs`,
    {},
    (phase, job: any) => {
      if (phase === 'ADDED')
        jobs.push({ cache: job.metadata.labels?.imagecache, node: job.spec.template.spec.nodeSelector?.[HOSTNAME], at: Date.now() })
    },
    () => {},
  )
  t.teardown(() => watch.abort())

  const settings = { namespace: NS, imagePullSecrets: [] as string[] }
  // Without a nodeSelector, a batch as pre-pull creates it with this configuration; with one, a cache
  // of two node pools' lists (the second pool has no node): pre-pull leaves a layout other than its
  // own (one list, the configured nodeSelector) alone, node refresh handles any.
  const create = async (image: string, nodeSelector?: Record<string, string>) => {
    const body = buildImageCache(batchName(Date.now()), [image], new Map([[image, image]]), settings)
    if (nodeSelector)
      body.spec.cacheSpec = [
        { images: [image], nodeSelector },
        { images: [image], nodeSelector: { pool: 'spare' } },
      ]
    const r = await cp.request('POST', CACHES, { body })
    if (r.status !== 201) throw new Error(`create: HTTP ${r.status} ${r.body}`)
    return body.metadata.name!
  }
  const all = await create('mirror.example/docker.io/library/nginx:1.27')
  const cpu = await create('mirror.example/docker.io/library/redis:7', { pool: 'cpu' })
  const gpu = await create('mirror.example/docker.io/library/cuda-app:1', { pool: 'gpu' })
  const first = kwok.nodes[0]!
  const log = capturingLogger('info')
  // Stopped before the cluster (teardowns run last-registered first).
  let stopWebhook: (() => Promise<unknown>) | undefined
  t.teardown(async () => {
    await stopWebhook?.()
  })

  t.test('before mirrorhook: pulled onto the one node, the pool caches select none', async (t) => {
    t.equal((await terminal(all)).status.status, 'Succeeded')
    await terminal(cpu)
    await terminal(gpu)
    t.same(
      jobs.map((j) => [j.cache, j.node]),
      [[all, first]],
    )
    const w = await startTestWebhook({
      config: {
        mirror: { prefix: 'mirror.example' },
        registries: ['*'],
        reachability: { enabled: false },
        remediation: { enabled: false },
        kubeFledged: { namespace: NS, unusedPurgeSeconds: 0, nodes: { quietSeconds: 1, maxWaitSeconds: 5 } },
      },
      logger: log.logger,
      extra: { kube: { kubeConfig: await cp.kubeConfig(), source: 'e2e' } },
    })
    stopWebhook = () => w.stop()
    await waitFor('pre-pull synced', () => w.server.prepull?.synced)
    await waitFor('Nodes listed', () => w.server.nodes?.synced)
  })

  t.test('a node joining the cpu pool gets the images of the caches it should hold, in seconds', async (t) => {
    const started = Date.now()
    await kwok.addNodes(['scale-1'], { pool: 'cpu' })
    const ready = Date.now()
    const pulled = await waitFor('pull Jobs on the new node', () => {
      const on = jobs.filter((j) => j.node === 'scale-1')
      return on.length === 2 ? on : undefined
    })
    t.same(pulled.map((j) => j.cache).sort(), [all, cpu].sort(), 'the cache for every node and the cpu pool cache')
    t.equal((await terminal(all)).status.status, 'Succeeded')
    t.equal((await terminal(cpu)).status.status, 'Succeeded')
    const burst = await waitFor('the burst line', () => log.lines.find((l) => /nodes changed/.test(l.msg ?? '')))
    const { level: _level, time: _time, pid: _pid, hostname: _hostname, ...fields } = burst
    t.same(fields, {
      component: 'prepull-nodes',
      nodes: ['scale-1'],
      nodeCount: 1,
      nodesReady: 1,
      nodesLostImages: 0,
      refreshed: { 'node-ready': 2 },
      waiting: 0,
      msg: 'nodes changed: asked kube-fledged to refresh the ImageCaches they should hold',
    })
    const gpuNow = await get(gpu)
    t.same(
      [gpuNow.metadata.annotations?.[REFRESH_ANNOTATION], gpuNow.status.reason],
      [undefined, 'ImageCacheCreate'],
      'the gpu pool cache: not refreshed',
    )
    // kwok nodes report no images, so kube-fledged's "already there" test finds nothing: the refresh
    // of the cache for every node pulls onto the first node again (a kubelet would list it, and the
    // refresh would skip it).
    t.same(
      jobs.filter((j) => j.node === first).map((j) => j.cache),
      [all, all],
      'the first node: the refreshed cache for every node again, nothing else',
    )
    const lastJob = Math.max(...pulled.map((j) => j.at))
    t.comment(`node Ready ${ready - started} ms after it was created; pull Jobs on it ${lastJob - ready} ms after it was Ready`)
  })
}
