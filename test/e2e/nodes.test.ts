// New nodes and collected images against a real kube-apiserver with kube-fledged's real ImageCache
// CRD: Node objects are created and their status written here the way a kubelet writes it; the
// ImageCaches' status is written the way kube-fledged writes it (a full update, no status subresource).
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { batchName, buildImageCache } from '../../server/prepull/imagecache.js'
import type { ControlPlane } from '../support/controlplane.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { capturingLogger, type LogLine, metric, waitFor } from '../support/helpers.js'
import { createNamespace, startTestWebhook } from '../support/webhook.js'

const CRD = fileURLToPath(new URL('../fixtures/kubefledged/imagecache-crd.yaml', import.meta.url))
const NS = 'kube-fledged'
// kube-fledged's refresh annotation.
const REFRESH_ANNOTATION = 'kubefledged.io/refresh-imagecache'
const CACHES = `/apis/kubefledged.io/v1alpha2/namespaces/${NS}/imagecaches`
const mirror = (ref: string) => `m.daocloud.io/docker.io/library/${ref}`

const cp = await withControlPlane(t)

if (cp) {
  const c: ControlPlane = cp
  const kube = { kubeConfig: await c.kubeConfig(), source: 'e2e' }
  await createNamespace(c, NS, false)
  const apply = await c.kubectl(['apply', '-f', CRD])
  if (apply.code !== 0) throw new Error(apply.stderr)
  const established = await c.kubectl(['wait', '--for=condition=established', '--timeout=60s', 'crd/imagecaches.kubefledged.io'])
  if (established.code !== 0) throw new Error(established.stderr)

  const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z')
  const get = async (name: string) => {
    const r = await c.request('GET', `${CACHES}/${name}`)
    if (r.status !== 200) throw new Error(`GET ${name}: ${r.status} ${r.body}`)
    return r.json()
  }
  const refreshOf = async (name: string): Promise<string | undefined> => (await get(name)).metadata.annotations?.[REFRESH_ANNOTATION]
  // kube-fledged's status write: a full update.
  const setStatus = async (name: string, status: string, removeRefresh = false) => {
    const obj = await get(name)
    obj.status = {
      status,
      reason: 'ImageCacheRefresh',
      message: status,
      startTime: now(),
      ...(status === 'Processing' ? {} : { completionTime: now() }),
    }
    if (removeRefresh) delete obj.metadata.annotations[REFRESH_ANNOTATION]
    const r = await c.request('PUT', `${CACHES}/${name}`, { body: obj })
    if (r.status !== 200) throw new Error(`PUT ${name}: ${r.status} ${r.body}`)
  }
  // A managed cache: without a nodeSelector, a batch as pre-pull creates it with this configuration; with
  // one, a cache of two node pools' lists (the second pool has no node). Pre-pull leaves a layout other
  // than its own (one list, the configured nodeSelector) alone; node refresh handles any.
  const createCache = async (image: string, nodeSelector: Record<string, string> | undefined, status: string) => {
    const body = buildImageCache(batchName(Date.now()), [image], new Map([[image, image]]), { namespace: NS, imagePullSecrets: [] })
    if (nodeSelector)
      body.spec.cacheSpec = [
        { images: [image], nodeSelector },
        { images: [image], nodeSelector: { pool: 'spare' } },
      ]
    const r = await c.request('POST', CACHES, { body })
    if (r.status !== 201) throw new Error(`POST: ${r.status} ${r.body}`)
    await setStatus(body.metadata.name!, status)
    return body.metadata.name!
  }
  const createNode = async (name: string, labels: Record<string, string>) => {
    const r = await c.kubectl(['create', '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'kubernetes.io/hostname': name, ...labels } } }),
    })
    if (r.code !== 0) throw new Error(r.stderr)
  }
  // The kubelet's status write: the Ready condition and the images it reports.
  const nodeStatus = async (name: string, ready: boolean, images: string[][] = []) => {
    const t0 = now()
    const status = {
      conditions: [
        {
          type: 'Ready',
          status: ready ? 'True' : 'False',
          reason: ready ? 'KubeletReady' : 'KubeletNotReady',
          message: ready ? 'kubelet is posting ready status' : 'container runtime is starting',
          lastHeartbeatTime: t0,
          lastTransitionTime: t0,
        },
      ],
      images: images.map((names) => ({ names, sizeBytes: 10_000_000 })),
    }
    const r = await c.kubectl(['patch', 'node', name, '--subresource=status', '--type=merge', '-p', JSON.stringify({ status })])
    if (r.code !== 0) throw new Error(r.stderr)
  }

  const gpuImage = mirror('cuda-app:1.0')
  const cpuImage = mirror('web:2.0')
  const allImage = mirror('sidecar:3.0')
  const gpu = await createCache(gpuImage, { pool: 'gpu' }, 'Succeeded')
  const cpu = await createCache(cpuImage, { pool: 'cpu' }, 'Succeeded')
  const all = await createCache(allImage, undefined, 'Processing')
  const log = capturingLogger()
  const config = {
    mirror: { prefix: 'm.daocloud.io' },
    registries: ['*'],
    reachability: { enabled: false },
    remediation: { enabled: false },
    kubeFledged: {
      namespace: NS,
      unusedPurgeSeconds: 0,
      crdPollSeconds: 1,
      nodes: { quietSeconds: 3, maxWaitSeconds: 10, busyRetrySeconds: 1, nodeStatusMaxImages: 3 },
    },
  }
  const w = await startTestWebhook({
    config,
    logger: log.logger,
    extra: { kube },
  })
  t.teardown(() => w.stop())
  await waitFor('pre-pull synced', () => w.server.prepull?.synced)
  // A log line without pino's own fields (level, time, pid, hostname).
  const fields = ({ level: _level, time: _time, pid: _pid, hostname: _hostname, ...rest }: LogLine) => rest
  // The refresh annotation's value is the time mirrorhook asked (an ISO timestamp): asked at or after `since`.
  const refreshedSince = (value: string | undefined, since: number) =>
    /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(value ?? '') && Date.parse(value!) >= since
  const bursts = () => log.lines.filter((l) => /nodes changed: asked kube-fledged to refresh/.test(l.msg ?? ''))

  t.test('two Nodes becoming Ready: one refresh of each cache they should hold, none while Processing', async (t) => {
    await createNode('gpu-1', { pool: 'gpu' })
    await createNode('gpu-2', { pool: 'gpu' })
    await nodeStatus('gpu-1', false)
    await nodeStatus('gpu-1', true)
    await nodeStatus('gpu-2', true)
    await waitFor('the refresh of the gpu cache', () => refreshOf(gpu))
    const [burst] = await waitFor('the burst handled', () => (bursts().length > 0 ? bursts() : undefined))
    t.same(fields(burst!), {
      component: 'prepull-nodes',
      nodes: ['gpu-1', 'gpu-2'],
      nodeCount: 2,
      nodesReady: 2,
      nodesLostImages: 0,
      refreshed: { 'node-ready': 1 },
      waiting: 1,
      msg: 'nodes changed: asked kube-fledged to refresh the ImageCaches they should hold',
    })
    t.equal(await refreshOf(cpu), undefined, 'a cache whose nodeSelector does not match the nodes: not refreshed')
    t.equal(await refreshOf(all), undefined, 'a cache kube-fledged is processing: not refreshed yet')
    // kube-fledged finishes: the cache that was Processing gets its refresh now.
    await setStatus(all, 'Succeeded')
    await waitFor('the refresh of the cache for every node', () => refreshOf(all))
    t.equal(await metric(w.server, 'mirrorhook_prepull_node_refreshes_total', { reason: 'node-ready' }), 2)
    t.equal(await refreshOf(cpu), undefined)
    t.equal(bursts().length, 1, 'one burst')
  })

  t.test('a cached image in use that a Node stops listing, under the cap: its cache refreshed', async (t) => {
    // kube-fledged acted on the refreshes: the images are on the node, the annotations removed.
    await setStatus(gpu, 'Succeeded', true)
    await setStatus(all, 'Succeeded', true)
    await nodeStatus('gpu-1', true, [[gpuImage, `${gpuImage.split(':')[0]}@sha256:${'1'.repeat(64)}`], [allImage]])
    // The kubelet's image garbage collection removed the gpu image; the list is under the cap (3).
    await nodeStatus('gpu-1', true, [[allImage]])
    await waitFor('the refresh of the collected image', () => refreshOf(gpu))
    await waitFor('the burst handled', () => bursts().length === 2)
    t.same(fields(bursts()[1]!), {
      component: 'prepull-nodes',
      nodes: ['gpu-1'],
      nodeCount: 1,
      nodesReady: 0,
      nodesLostImages: 1,
      refreshed: { 'image-collected': 1 },
      waiting: 0,
      msg: 'nodes changed: asked kube-fledged to refresh the ImageCaches they should hold',
    })
    t.equal(await refreshOf(all), undefined, 'the image still listed: its cache is not refreshed')
    t.equal(await metric(w.server, 'mirrorhook_prepull_node_refreshes_total', { reason: 'image-collected' }), 1)
  })

  t.test('a Node whose list is at the cap proves nothing by a missing image', async (t) => {
    await setStatus(gpu, 'Succeeded', true)
    // gpu-2 lists 3 images (the cap here): the gpu image dropping off the list is no evidence.
    await nodeStatus('gpu-2', true, [[gpuImage], ['x'], ['y']])
    await nodeStatus('gpu-2', true, [['x'], ['y'], ['z']])
    // gpu-1 (under the cap) loses the image every node should hold.
    await nodeStatus('gpu-1', true, [])
    await waitFor('the refresh of the collected image', () => refreshOf(all))
    await waitFor('the burst handled', () => bursts().length === 3)
    t.same(fields(bursts()[2]!), {
      component: 'prepull-nodes',
      nodes: ['gpu-1'],
      nodeCount: 1,
      nodesReady: 0,
      nodesLostImages: 1,
      refreshed: { 'image-collected': 1 },
      waiting: 0,
      msg: 'nodes changed: asked kube-fledged to refresh the ImageCaches they should hold',
    })
    t.equal(await refreshOf(gpu), undefined, 'the image gpu-2 no longer lists at the cap: not refreshed')
  })

  t.test('after a restart the Nodes listed are the baseline, not new nodes', async (t) => {
    await setStatus(all, 'Succeeded', true)
    await w.stop()
    const log2 = capturingLogger()
    const w2 = await startTestWebhook({ config, logger: log2.logger, extra: { kube } })
    t.teardown(() => w2.stop())
    await waitFor('pre-pull synced', () => w2.server.prepull?.synced)
    await waitFor('Nodes listed', () => w2.server.nodes?.synced)
    const asked = Date.now()
    await nodeStatus('gpu-2', false)
    await nodeStatus('gpu-2', true)
    const burst = await waitFor('the burst handled', () =>
      log2.lines.find((l) => /nodes changed: asked kube-fledged to refresh/.test(l.msg ?? '')),
    )
    t.same(fields(burst), {
      component: 'prepull-nodes',
      nodes: ['gpu-2'],
      nodeCount: 1,
      nodesReady: 1,
      nodesLostImages: 0,
      refreshed: { 'node-ready': 2 },
      waiting: 0,
      msg: 'nodes changed: asked kube-fledged to refresh the ImageCaches they should hold',
    })
    t.ok(refreshedSince(await refreshOf(gpu), asked), 'the gpu cache: refreshed after the Node became Ready again')
    t.ok(refreshedSince(await refreshOf(all), asked), 'the cache for every node: refreshed after the Node became Ready again')
    t.equal(await refreshOf(cpu), undefined)
  })
}
