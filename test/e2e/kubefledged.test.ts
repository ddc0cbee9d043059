// Pre-pull against a real kube-apiserver with kube-fledged's real ImageCache CRD
// (no kube-fledged controller: its status writes are made here, the way it makes them).
import t from 'tap'
import https from 'node:https'
import { fileURLToPath } from 'node:url'
import { KubeConfig } from '@kubernetes/client-node'
import { pino, type Logger } from 'pino'
import type { RunningServer } from '../../server/serve.js'
import { imageCacheName } from '../../server/prepull/imagecache.js'
import { KubeImageCacheApi } from '../../server/prepull/kubeapi.js'
import { cleanupRestartedApiservers, stopApiserver } from '../support/apiserver-outage.js'
import type { ControlPlane } from '../support/controlplane.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { podReview, waitFor } from '../support/helpers.js'
import { applyObject, createNamespace, registerWebhook, startTestWebhook } from '../support/webhook.js'

const CRD = fileURLToPath(new URL('../fixtures/kubefledged/imagecache-crd.yaml', import.meta.url))
const NS = 'kube-fledged'
const CACHES = `/apis/kubefledged.io/v1alpha2/namespaces/${NS}/imagecaches`
const mirror = (ref: string) => `m.daocloud.io/docker.io/library/${ref}`

const cp = await withControlPlane(t)

type Line = Record<string, unknown> & { msg?: string }

function capturingLogger(): { logger: Logger; lines: Line[] } {
  const lines: Line[] = []
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) })
  return { logger, lines }
}

async function metric(server: RunningServer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = server.metrics.registry.getSingleMetric(name)
  if (!m) return 0
  return (await m.get()).values
    .filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))
    .reduce((n, v) => n + v.value, 0)
}

if (cp) {
  const c: ControlPlane = cp
  const kube = { kubeConfig: await c.kubeConfig(), source: 'e2e' }
  const prepullConfig = {
    namespace: NS,
    writesPerSecond: 50,
    writeBurst: 20,
    podSweepSeconds: 2,
    crdPollSeconds: 1,
    refreshBackoffSeconds: 1,
    refreshBackoffMaxSeconds: 4,
    unusedPurgeSeconds: 0,
  }
  const config = (kubeFledged: Record<string, unknown> = {}) => ({
    mirror: { prefix: 'm.daocloud.io' },
    registries: ['*'],
    reachability: { enabled: false },
    // Pre-pull alone, with exactly its RBAC below.
    remediation: { enabled: false },
    kubeFledged: { ...prepullConfig, ...kubeFledged },
  })
  const start = async (kubeFledged: Record<string, unknown> = {}, logger?: Logger, kubeConfig = kube) => {
    const w = await startTestWebhook({ config: config(kubeFledged), logger, extra: { kube: kubeConfig } })
    t.teardown(() => w.stop())
    return w
  }

  async function caches(): Promise<any[]> {
    const r = await c.request('GET', `${CACHES}?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dmirrorhook`)
    if (r.status !== 200) throw new Error(`list: ${r.status} ${r.body}`)
    return r.json().items
  }
  const cacheOf = async (image: string) => {
    const r = await c.request('GET', `${CACHES}/${imageCacheName(image)}`)
    return r.status === 200 ? r.json() : undefined
  }
  async function createPod(
    namespace: string,
    name: string,
    spec: Record<string, unknown>,
    metadata: Record<string, unknown> = {},
  ): Promise<any> {
    const r = await c.kubectl(['create', '-o', 'json', '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, ...metadata }, spec }),
    })
    if (r.code !== 0) throw new Error(r.stderr)
    return JSON.parse(r.stdout)
  }
  // An AdmissionReview straight to a webhook instance, as another API server replica would send it.
  function review(url: string, caPem: string, images: string[], uid: string): Promise<any> {
    const body = JSON.stringify(podReview(uid, images))
    return new Promise((resolve, reject) => {
      const req = https.request(url, { method: 'POST', ca: caPem, headers: { 'Content-Type': 'application/json' } }, (res) => {
        let text = ''
        res.on('data', (d) => (text += d))
        res.on('end', () => resolve(JSON.parse(text)))
      })
      req.on('error', reject)
      req.end(body)
    })
  }

  // Counts the availability polls pre-pull sends to the API server: a spy on its ImageCache
  // client's dry-run create, installed before the first webhook starts (its first poll is at
  // start); the requests still go to the real API server.
  function countPolls(): () => number {
    let sent = 0
    const probe = KubeImageCacheApi.prototype.probe
    KubeImageCacheApi.prototype.probe = function (this: KubeImageCacheApi, ...args: Parameters<typeof probe>) {
      sent++
      return probe.apply(this, args)
    }
    t.teardown(() => {
      KubeImageCacheApi.prototype.probe = probe
    })
    return () => sent
  }

  // Runs before the control plane's own stop (teardowns run last-registered first).
  t.teardown(cleanupRestartedApiservers)
  await createNamespace(c, NS, false)
  await createNamespace(c, 'shop', true)
  const first = capturingLogger()
  // Only w1 runs while the first test reads the count.
  const polls = countPolls()
  const w1 = await start({}, first.logger)
  await registerWebhook(c, w1, 'shop')

  t.test('kube-fledged missing: admission unaffected, one log line, a metric; starts by itself when the CRD appears', async (t) => {
    const pod = await createPod('shop', 'early', { containers: [{ name: 'web', image: 'nginx:1.25' }] })
    t.equal(pod.spec.containers[0].image, mirror('nginx:1.25'), 'admitted and rewritten')
    await waitFor('the missing line', () => first.lines.some((l) => /kube-fledged is not available/.test(l.msg ?? '')))
    // Each poll is a dry-run POST of an ImageCache (answered 404): wait for three more.
    const before = polls()
    t.ok(before >= 1, 'polled at least once')
    await waitFor('three more polls', () => polls() >= before + 3)
    const missing = first.lines.filter((l) => /kube-fledged is not available/.test(l.msg ?? ''))
    t.equal(missing.length, 1, 'one line, not one per poll')
    t.match(missing[0]!.msg, /CRD is not installed.*admission is unaffected/)
    t.equal(await metric(w1.server, 'mirrorhook_kubefledged_available'), 0)
    t.equal((await c.request('GET', CACHES)).status, 404, 'no ImageCache API yet')

    const apply = await c.kubectl(['apply', '-f', CRD])
    t.equal(apply.code, 0, apply.stderr)
    const cache = await waitFor('the cache of the Pod admitted before', () => cacheOf(mirror('nginx:1.25')))
    t.same(cache.spec.cacheSpec, [{ images: [mirror('nginx:1.25')] }])
    t.equal(await metric(w1.server, 'mirrorhook_kubefledged_available'), 1)
    t.ok(first.lines.some((l) => /kube-fledged is available now/.test(l.msg ?? '')))
  })

  t.test('Pods admitted: one ImageCache per mirror reference, labelled, with the original, no status', async (t) => {
    await createPod('shop', 'web', {
      initContainers: [{ name: 'init', image: 'busybox:1.36' }],
      containers: [
        { name: 'web', image: 'nginx:1.25' },
        { name: 'cache', image: 'docker.io/library/redis:7.2' },
      ],
    })
    await createPod('shop', 'worker', { containers: [{ name: 'w', image: 'redis:7.2' }] })
    const wanted = [mirror('busybox:1.36'), mirror('nginx:1.25'), mirror('redis:7.2')]
    await waitFor('three caches', async () => (await Promise.all(wanted.map(cacheOf))).every(Boolean))
    t.equal((await caches()).length, 3, 'nothing else')
    for (const image of wanted) {
      const obj = await cacheOf(image)
      t.ok(obj, image)
      t.same(obj.spec.cacheSpec, [{ images: [image] }], 'one list, one image, every node')
      t.equal(obj.metadata.labels['app.kubernetes.io/managed-by'], 'mirrorhook')
      t.notOk(obj.status, 'no status sent')
    }
    t.equal((await cacheOf(mirror('busybox:1.36'))).metadata.annotations['mirrorhook.io/original-image'], 'busybox:1.36')
    t.match(
      (await cacheOf(mirror('redis:7.2'))).metadata.annotations['mirrorhook.io/original-image'],
      /^(docker\.io\/library\/)?redis:7\.2$/,
    )
  })

  t.test('dry-run admissions create nothing', async (t) => {
    const dry = await c.kubectl([
      'run',
      'dry',
      '-n',
      'shop',
      '--image=alpine:3.20',
      '--dry-run=server',
      '-o',
      'jsonpath={.spec.containers[0].image}',
    ])
    t.equal(dry.code, 0, dry.stderr)
    t.equal(dry.stdout, mirror('alpine:3.20'), 'the dry run was mutated')
    await createPod('shop', 'after-dry', { containers: [{ name: 'c', image: 'memcached:1.6' }] })
    await waitFor('the real Pod cache', () => cacheOf(mirror('memcached:1.6')))
    await waitFor('queue idle', () => w1.server.prepull!.queue.idle)
    t.notOk(await cacheOf(mirror('alpine:3.20')), 'no cache for the dry-run image')
    t.notOk(await cacheOf('m.daocloud.io/registry.k8s.io/pause:3.10'), 'nor for the dry-run probe of the webhook registration')
    t.equal(await metric(w1.server, 'mirrorhook_prepull_dry_run_refused_total'), 0, 'the hook never saw a dry run')
  })

  t.test('two webhook instances admitting the same images create each object once', async (t) => {
    const w2 = await start()
    await waitFor('second instance synced', () => w2.server.prepull!.synced)
    const images = ['php:8.3', 'node:22', 'python:3.13', 'golang:1.24', 'postgres:17'].map((i) => `docker.io/library/${i}`)
    const before1 = await metric(w1.server, 'mirrorhook_prepull_api_writes_total', { verb: 'create', result: 'created' })
    const before2 = await metric(w2.server, 'mirrorhook_prepull_api_writes_total', { verb: 'create', result: 'created' })
    const [r1, r2] = await Promise.all([review(w1.url, w1.caPem, images, 'same-1'), review(w2.url, w2.caPem, images, 'same-2')])
    t.equal(r1.response.patchType, 'JSONPatch')
    t.equal(r2.response.patchType, 'JSONPatch')
    const mirrors = images.map((i) => `m.daocloud.io/${i}`)
    await waitFor('five caches', async () => (await Promise.all(mirrors.map(cacheOf))).every(Boolean))
    await waitFor('both idle', () => w1.server.prepull!.queue.idle && w2.server.prepull!.queue.idle)
    const created =
      (await metric(w1.server, 'mirrorhook_prepull_api_writes_total', { verb: 'create', result: 'created' })) -
      before1 +
      (await metric(w2.server, 'mirrorhook_prepull_api_writes_total', { verb: 'create', result: 'created' })) -
      before2
    t.equal(created, 5, 'five creates succeeded in total, not ten')
    const all = (await caches()).filter((o) => mirrors.includes(o.spec.cacheSpec[0].images[0]))
    t.equal(all.length, 5, 'one object per image')
    await w2.stop()
  })

  t.test('a status written the way kube-fledged writes it is picked up; a failure is retried with the refresh annotation', async (t) => {
    const image = mirror('nginx:1.25')
    const path = `${CACHES}/${imageCacheName(image)}`
    const put = async (mutate: (o: any) => void) => {
      const obj = (await c.request('GET', path)).json()
      mutate(obj)
      const r = await c.request('PUT', path, { body: obj }) // full update: the CRD has no status subresource
      if (r.status !== 200) throw new Error(`PUT ${r.status}: ${r.body}`)
    }
    const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z')
    await put((o) => {
      o.status = { status: 'Processing', reason: 'ImageCacheCreate', message: 'Images are being pulled', startTime: now() }
    })
    await waitFor('pending', () => w1.server.prepull!.stateOf(image)?.state === 'pending')
    await put((o) => {
      o.status = {
        status: 'Failed',
        reason: 'ImageCacheCreate',
        message: 'Image pull failed for some images. Please see "failures" section',
        failures: { [image]: [{ node: 'node-b', reason: 'ImagePullFailed', message: 'manifest unknown' }] },
        startTime: o.status.startTime,
        completionTime: now(),
      }
    })
    const state = await waitFor('failed', () => {
      const s = w1.server.prepull!.stateOf(image)
      return s?.state === 'failed' ? s : undefined
    })
    t.same(
      state.failed.map((f) => f.node),
      ['node-b'],
    )
    const text = await w1.server.metrics.registry.metrics()
    t.match(text, `mirrorhook_prepull_image_failed_node{image="${image}",node="node-b",reason="ImagePullFailed"} 1`)
    t.match(text, `mirrorhook_prepull_image_state{image="${image}",state="failed"} 1`)
    t.ok(
      first.lines.some((l) => l.image === image && /pre-pull failed on 1 node\(s\): node-b/.test(l.msg ?? '')),
      'logged with the node',
    )

    const annotated = await waitFor('refresh requested', async () => {
      const o = (await c.request('GET', path)).json()
      return o.metadata.annotations?.['kubefledged.io/refresh-imagecache'] ? o : undefined
    })
    t.equal(annotated.status.status, 'Failed', 'the status is left to kube-fledged')
    // kube-fledged: refresh runs, succeeds, removes the annotation.
    await put((o) => {
      o.status = { status: 'Processing', reason: 'ImageCacheRefresh', message: 'Image cache is being refreshed', startTime: now() }
    })
    await put((o) => {
      o.status = { ...o.status, status: 'Succeeded', message: 'All requested images pulled succesfully', completionTime: now() }
      delete o.metadata.annotations['kubefledged.io/refresh-imagecache']
    })
    await waitFor('cached', () => w1.server.prepull!.stateOf(image)?.state === 'cached')
    const after = await w1.server.metrics.registry.metrics()
    t.notMatch(after, `mirrorhook_prepull_image_failed_node{image="${image}"`, 'the failure series is gone')
    t.match(after, 'mirrorhook_prepull_images{state="cached"} 1')
  })

  t.test(
    "kube-fledged's own image-pull Pods pass through: the cached image stays, busybox follows the rules, nothing new is cached",
    async (t) => {
      await createNamespace(c, 'fledged-jobs', true)
      const pod = await createPod(
        'fledged-jobs',
        'mirrorhook-abc-xyz12',
        {
          restartPolicy: 'Never',
          nodeSelector: { 'kubernetes.io/hostname': 'node-a' },
          initContainers: [{ name: 'busybox', image: 'senthilrch/busybox:1.35.0', command: ['cp', '/bin/echo', '/tmp/bin'] }],
          containers: [{ name: 'imagepuller', image: mirror('nginx:1.25'), command: ['/tmp/bin/echo', 'Image pulled successfully!'] }],
        },
        {
          labels: {
            app: 'kubefledged',
            kubefledged: 'kubefledged-image-manager',
            imagecache: 'mirrorhook-abc',
            controller: 'kubefledged-controller',
          },
          ownerReferences: [
            {
              apiVersion: 'batch/v1',
              kind: 'Job',
              name: 'mirrorhook-abc-xyz',
              uid: '6b7e1c8c-1111-4a3c-9a3e-0123456789ab',
              controller: true,
            },
          ],
        },
      )
      t.equal(pod.spec.containers[0].image, mirror('nginx:1.25'), 'not rewritten again')
      t.equal(pod.spec.initContainers[0].image, 'm.daocloud.io/docker.io/senthilrch/busybox:1.35.0', 'busybox rewritten like any image')
      // Two more Pod sweeps: the second began after the Pod was stored.
      const sweeps = await metric(w1.server, 'mirrorhook_prepull_pod_sweeps_total', { result: 'ok' })
      await waitFor(
        'two Pod sweeps',
        async () => (await metric(w1.server, 'mirrorhook_prepull_pod_sweeps_total', { result: 'ok' })) >= sweeps + 2,
      )
      await waitFor('idle', () => w1.server.prepull!.queue.idle)
      t.notOk(await cacheOf('m.daocloud.io/docker.io/senthilrch/busybox:1.35.0'), 'its busybox is not turned into a cache')
    },
  )

  t.test('the API server stopped for a while: nothing admitted before is lost', async (t) => {
    // Only the queue can write these caches: Pod sweeps are off (one a day), and the images
    // are admitted through reviews sent straight to this instance, as an API server replica
    // would, so no Pod exists whose listing could bring them back.
    const isolated = await start({ writesPerSecond: 1, writeBurst: 1, podSweepSeconds: 86_400 })
    await waitFor('synced', () => isolated.server.prepull!.synced)
    const outage = await stopApiserver(c)
    const images = Array.from({ length: 8 }, (_, i) => `docker.io/library/outage-${i}:1`)
    const answers = await Promise.all(images.map((image, i) => review(isolated.url, isolated.caPem, [image], `outage-${i}`)))
    t.strictSame(
      answers.map((a) => a.response.patchType),
      images.map(() => 'JSONPatch'),
      'admission answers while the API server is down',
    )
    t.equal(isolated.server.prepull!.queue.size, 8, 'every image queued')
    const retries = async () => metric(isolated.server, 'mirrorhook_prepull_retries_total')
    await waitFor('writes failing and retried', async () => (await retries()) > 0, 30_000)
    // Several more failed rounds, then: still all there.
    const seen = await retries()
    await waitFor('three more failed writes', async () => (await retries()) >= seen + 3, 60_000)
    t.equal(isolated.server.prepull!.queue.size, 8, 'nothing dropped while the API server is down')
    await outage.restore()
    await waitFor(
      'all cached after the outage',
      async () => (await Promise.all(images.map((i) => cacheOf(`m.daocloud.io/${i}`)))).every(Boolean),
      90_000,
    )
    t.equal(await metric(isolated.server, 'mirrorhook_prepull_api_writes_total', { result: 'error' }), 0)
    await isolated.stop()
  })

  t.test('a restart re-ensures every image still in use', async (t) => {
    await w1.stop()
    // Pods admitted while pre-pull was off, and a cache deleted by hand.
    const off = await start({ enabled: false })
    await registerWebhook(c, off, 'shop')
    await createPod('shop', 'while-off', {
      containers: [
        { name: 'a', image: 'traefik:3.1' },
        { name: 'b', image: 'haproxy:3.0' },
      ],
    })
    t.notOk(off.server.prepull, 'pre-pull disabled in that instance')
    const del = await c.request('DELETE', `${CACHES}/${imageCacheName(mirror('redis:7.2'))}`)
    t.equal(del.status, 200)
    await off.stop()
    t.notOk(await cacheOf(mirror('traefik:3.1')))

    const again = await start()
    for (const image of [mirror('traefik:3.1'), mirror('haproxy:3.0'), mirror('redis:7.2'), mirror('busybox:1.36')]) {
      const obj = await waitFor(`${image} ensured after the restart`, () => cacheOf(image))
      t.same(obj.spec.cacheSpec[0].images, [image])
    }
    t.equal(
      (await cacheOf(mirror('traefik:3.1'))).metadata.annotations['mirrorhook.io/original-image'],
      'traefik:3.1',
      'original from the Pod annotation',
    )
    await again.stop()
  })

  t.test('with exactly the RBAC verbs granted: create, refresh, mark unused, purge, delete once the purge is done', async (t) => {
    const rbac = [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'mirrorhook' } },
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'mirrorhook', namespace: 'mirrorhook' } },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'Role',
        metadata: { name: 'mirrorhook-imagecaches', namespace: NS },
        rules: [{ apiGroups: ['kubefledged.io'], resources: ['imagecaches'], verbs: ['list', 'watch', 'create', 'patch', 'delete'] }],
      },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'mirrorhook-imagecaches', namespace: NS },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'mirrorhook-imagecaches' },
        subjects: [{ kind: 'ServiceAccount', name: 'mirrorhook', namespace: 'mirrorhook' }],
      },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRole',
        metadata: { name: 'mirrorhook-pods' },
        // The shared Pod watch and the Node watch (list, then watch), as the chart grants them.
        rules: [{ apiGroups: [''], resources: ['pods', 'nodes'], verbs: ['list', 'watch'] }],
      },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRoleBinding',
        metadata: { name: 'mirrorhook-pods' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'mirrorhook-pods' },
        subjects: [{ kind: 'ServiceAccount', name: 'mirrorhook', namespace: 'mirrorhook' }],
      },
    ]
    for (const o of rbac) await applyObject(c, o)
    const token = await c.kubectl(['create', 'token', 'mirrorhook', '-n', 'mirrorhook'])
    t.equal(token.code, 0, token.stderr)
    const sa = new KubeConfig()
    sa.loadFromOptions({
      clusters: [{ name: 'e2e', server: c.server, caData: Buffer.from(c.caPem).toString('base64'), skipTLSVerify: false }],
      users: [{ name: 'sa', token: token.stdout.trim() }],
      contexts: [{ name: 'sa', cluster: 'e2e', user: 'sa' }],
      currentContext: 'sa',
    })
    const log = capturingLogger()
    const p = await start({ unusedPurgeSeconds: 2, podSweepSeconds: 1 }, log.logger, { kubeConfig: sa, source: 'service account' })
    await registerWebhook(c, p, 'shop')
    await waitFor('synced', () => p.server.prepull!.synced)

    const image = mirror('vault:1.13')
    const path = `${CACHES}/${imageCacheName(image)}`
    const put = async (mutate: (o: any) => void) => {
      const obj = (await c.request('GET', path)).json()
      mutate(obj)
      const r = await c.request('PUT', path, { body: obj })
      if (r.status !== 200) throw new Error(`PUT ${r.status}: ${r.body}`)
    }
    const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z')
    await createPod('shop', 'short-lived', { containers: [{ name: 'v', image: 'vault:1.13' }] })
    await waitFor('created', () => cacheOf(image))
    await put((o) => {
      o.status = {
        status: 'Failed',
        reason: 'ImageCacheCreate',
        message: 'failed',
        startTime: now(),
        completionTime: now(),
        failures: { [image]: [{ node: 'n1', reason: 'ImagePullFailed', message: 'x' }] },
      }
    })
    await waitFor('refresh (patch)', async () => (await cacheOf(image))?.metadata.annotations?.['kubefledged.io/refresh-imagecache'])
    await put((o) => {
      o.status = { status: 'Succeeded', reason: 'ImageCacheRefresh', message: 'ok', startTime: now(), completionTime: now() }
      delete o.metadata.annotations['kubefledged.io/refresh-imagecache']
    })

    const del = await c.kubectl(['delete', 'pod', '-n', 'shop', 'short-lived', '--wait=false'])
    t.equal(del.code, 0, del.stderr)
    const marked = await waitFor(
      'marked unused',
      async () => (await cacheOf(image))?.metadata.annotations?.['mirrorhook.io/unused-since'],
      20_000,
    )
    t.ok(Date.parse(marked) > 0)
    await waitFor('purge requested', async () => (await cacheOf(image))?.metadata.annotations?.['kubefledged.io/purge-imagecache'], 20_000)
    // kube-fledged purges: Processing, then Succeeded with reason ImageCachePurge, and removes its annotation.
    await put((o) => {
      o.status = { status: 'Processing', reason: 'ImageCachePurge', message: 'Image cache is being purged', startTime: now() }
    })
    await waitFor('the purge seen', () => p.server.prepull!.stateOf(image)?.state === 'purging')
    // Two Pod sweeps later (each looks at every cache) and with nothing queued, it is still there.
    const sweeps = await metric(p.server, 'mirrorhook_prepull_pod_sweeps_total', { result: 'ok' })
    await waitFor(
      'two Pod sweeps',
      async () => (await metric(p.server, 'mirrorhook_prepull_pod_sweeps_total', { result: 'ok' })) >= sweeps + 2,
    )
    await waitFor('idle', () => p.server.prepull!.queue.idle)
    t.ok(await cacheOf(image), 'not deleted while the purge runs')
    await put((o) => {
      o.status = { ...o.status, status: 'Succeeded', message: 'All cached images succesfully deleted', completionTime: now() }
      delete o.metadata.annotations['kubefledged.io/purge-imagecache']
    })
    await waitFor('deleted after the purge', async () => !(await cacheOf(image)), 20_000)

    t.equal(await metric(p.server, 'mirrorhook_prepull_api_writes_total', { result: 'error' }), 0, 'no write refused')
    t.equal(await metric(p.server, 'mirrorhook_prepull_pod_sweeps_total', { result: 'error' }), 0, 'Pods listed every time')
    t.notOk(
      log.lines.some((l) => /forbidden/i.test(JSON.stringify(l))),
      'nothing forbidden',
    )
    t.ok(log.lines.some((l) => /ImageCache deleted after its purge/.test(l.msg ?? '')))
    await p.stop()
  })
}
