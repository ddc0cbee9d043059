// Pre-pull against a real kube-apiserver with kube-fledged's real ImageCache CRD
// (no kube-fledged controller: its status writes are made here, the way it makes them).
// Without the controller nothing ever processes a batch: a new batch waits at most
// batchWaitSeconds (1 s here) for the previous one, except where a test says otherwise.
import t from 'tap'
import https from 'node:https'
import { fileURLToPath } from 'node:url'
import { KubeConfig } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { KubeImageCacheApi } from '../../server/prepull/kubeapi.js'
import { cleanupRestartedApiservers, stopApiserver } from '../support/apiserver-outage.js'
import type { ControlPlane } from '../support/controlplane.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { capturingLogger, metric, podReview, waitFor } from '../support/helpers.js'
import { imageCacheHolding, managedImageCaches } from '../support/kubefledged.js'
import { applyObject, createNamespace, registerWebhook, startTestWebhook } from '../support/webhook.js'

const CRD = fileURLToPath(new URL('../fixtures/kubefledged/imagecache-crd.yaml', import.meta.url))
const NS = 'kube-fledged'
const CACHES = `/apis/kubefledged.io/v1alpha2/namespaces/${NS}/imagecaches`
const mirror = (ref: string) => `m.daocloud.io/docker.io/library/${ref}`

const cp = await withControlPlane(t)

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
    batchWaitSeconds: 1,
    leaseDurationSeconds: 2,
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

  const caches = () => managedImageCaches(c, NS)
  // The batch holding an image, and how many batches hold it.
  const cacheOf = (image: string) => imageCacheHolding(c, image, NS)
  const holders = async (image: string) => (await caches()).filter((o) => o.spec.cacheSpec[0].images.includes(image)).length
  const originals = (o: any) => JSON.parse(o.metadata.annotations['mirrorhook.io/originals'])
  const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z')
  // kube-fledged's full update of a batch (the CRD has no status subresource).
  const put = async (name: string, mutate: (o: any) => void) => {
    const path = `${CACHES}/${name}`
    const obj = (await c.request('GET', path)).json()
    mutate(obj)
    const r = await c.request('PUT', path, { body: obj })
    if (r.status !== 200) throw new Error(`PUT ${r.status}: ${r.body}`)
    return r.json()
  }
  // kube-fledged has processed every batch so far and taken every refresh and purge asked for
  // (an earlier test's writer may have purged batches no Pod uses): none is left for a new batch
  // to wait for. It removes the annotation it acted on; a purged batch is then deleted by the writer.
  const settleAll = async () => {
    for (const o of await caches()) {
      const annotations = o.metadata.annotations ?? {}
      const purge = 'kubefledged.io/purge-imagecache' in annotations
      const refresh = 'kubefledged.io/refresh-imagecache' in annotations
      if (o.status && o.status.status !== 'Processing' && !purge && !refresh) continue
      const reason = purge ? 'ImageCachePurge' : refresh ? 'ImageCacheRefresh' : (o.status?.reason ?? 'ImageCacheCreate')
      await put(o.metadata.name, (x) => {
        const message = purge ? 'All cached images succesfully deleted' : 'All requested images pulled succesfully'
        x.status = { status: 'Succeeded', reason, message, startTime: now(), completionTime: now() }
        delete x.metadata.annotations?.['kubefledged.io/purge-imagecache']
        delete x.metadata.annotations?.['kubefledged.io/refresh-imagecache']
      })
    }
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
  // The poll count when each "not available" line is written.
  const pollsAtMissing: number[] = []
  const push = first.lines.push.bind(first.lines)
  first.lines.push = (...lines) => {
    for (const l of lines) if (/kube-fledged is not available/.test(l.msg ?? '')) pollsAtMissing.push(polls())
    return push(...lines)
  }
  const w1 = await start({}, first.logger)
  await registerWebhook(c, w1, 'shop')

  t.test('kube-fledged missing: admission unaffected, one log line, a metric; starts by itself when the CRD appears', async (t) => {
    const pod = await createPod('shop', 'early', { containers: [{ name: 'web', image: 'nginx:1.25' }] })
    t.equal(pod.spec.containers[0].image, mirror('nginx:1.25'), 'admitted and rewritten')
    await waitFor('the missing line', () => first.lines.some((l) => /kube-fledged is not available/.test(l.msg ?? '')))
    // Each poll is a dry-run POST of an ImageCache (answered 404): wait for three more.
    const before = polls()
    await waitFor('three more polls', () => polls() >= before + 3)
    const missing = first.lines.filter((l) => /kube-fledged is not available/.test(l.msg ?? ''))
    t.same(
      missing.map((l) => l.msg),
      [
        'kube-fledged is not available (no imagecaches.kubefledged.io/v1alpha2 API (the kube-fledged CRD is not installed)): ' +
          'admission is unaffected; images are not pre-pulled until it appears',
      ],
      'one line, not one per poll',
    )
    t.same(pollsAtMissing, [1], 'written at the first poll')
    t.equal(await metric(w1.server, 'mirrorhook_kubefledged_available'), 0)
    t.equal((await c.request('GET', CACHES)).status, 404, 'no ImageCache API yet')

    const apply = await c.kubectl(['apply', '-f', CRD])
    t.equal(apply.code, 0, apply.stderr)
    const cache = await waitFor('the cache of the Pod admitted before', () => cacheOf(mirror('nginx:1.25')))
    t.same(cache.spec.cacheSpec, [{ images: [mirror('nginx:1.25')] }])
    t.equal(await metric(w1.server, 'mirrorhook_kubefledged_available'), 1)
    t.same(
      first.lines.filter((l) => /kube-fledged is available now/.test(l.msg ?? '')).map((l) => l.msg),
      ['kube-fledged is available now; pre-pull starts'],
    )
  })

  t.test('Pods admitted: every mirror reference in one ImageCache, once, labelled, with its original, no status', async (t) => {
    await createPod('shop', 'web', {
      initContainers: [{ name: 'init', image: 'busybox:1.36' }],
      containers: [
        { name: 'web', image: 'nginx:1.25' },
        { name: 'cache', image: 'docker.io/library/redis:7.2' },
      ],
    })
    await createPod('shop', 'worker', { containers: [{ name: 'w', image: 'redis:7.2' }] })
    const wanted = [mirror('busybox:1.36'), mirror('nginx:1.25'), mirror('redis:7.2')]
    await waitFor('all three held', async () => (await Promise.all(wanted.map(cacheOf))).every(Boolean))
    await waitFor('queue idle', () => w1.server.prepull!.queue.idle)
    for (const image of wanted) t.equal(await holders(image), 1, `${image}: in one batch`)
    const all = await caches()
    t.same(all.flatMap((o) => o.spec.cacheSpec[0].images).sort(), [...wanted].sort(), 'nothing else')
    t.equal(all.length, 2, 'nginx in its batch from before; busybox and redis, admitted in one Pod, in one more')
    t.same(
      await cacheOf(mirror('busybox:1.36')).then((o) => o.spec.cacheSpec[0].images.includes(mirror('redis:7.2'))),
      true,
      'busybox and redis admitted in one Pod: one batch',
    )
    for (const obj of all) {
      t.equal(obj.spec.cacheSpec.length, 1, 'one list, every node')
      t.equal(obj.spec.cacheSpec[0].nodeSelector, undefined)
      t.equal(obj.metadata.labels['app.kubernetes.io/managed-by'], 'mirrorhook')
      t.equal(obj.status, undefined, 'no status sent')
      t.ok(`${obj.metadata.name}-abcde-fghij`.length <= 63, 'Job names stay valid')
    }
    t.equal(originals(await cacheOf(mirror('busybox:1.36')))[mirror('busybox:1.36')], 'busybox:1.36')
    t.equal(originals(await cacheOf(mirror('redis:7.2')))[mirror('redis:7.2')], 'docker.io/library/redis:7.2', 'as the first Pod wrote it')
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
    t.equal(await cacheOf(mirror('alpine:3.20')), undefined, 'no cache for the dry-run image')
    t.equal(await cacheOf('m.daocloud.io/registry.k8s.io/pause:3.10'), undefined, 'nor for the dry-run probe of the webhook registration')
    t.equal(await metric(w1.server, 'mirrorhook_prepull_dry_run_refused_total'), 0, 'the hook never saw a dry run')
  })

  t.test('two webhook instances admitting the same images: one writer (the Lease), each image in one batch', async (t) => {
    const w2 = await start()
    await waitFor('second instance synced', () => w2.server.prepull!.synced)
    t.equal(w1.server.prepull!.writing, true, 'the first holds the Lease')
    t.equal(w2.server.prepull!.writing, false, 'the second does not')
    const images = ['php:8.3', 'node:22', 'python:3.13', 'golang:1.24', 'postgres:17'].map((i) => `docker.io/library/${i}`)
    const before1 = await metric(w1.server, 'mirrorhook_prepull_api_writes_total', { verb: 'create', result: 'created' })
    const [r1, r2] = await Promise.all([review(w1.url, w1.caPem, images, 'same-1'), review(w2.url, w2.caPem, images, 'same-2')])
    t.equal(r1.response.patchType, 'JSONPatch')
    t.equal(r2.response.patchType, 'JSONPatch')
    const mirrors = images.map((i) => `m.daocloud.io/${i}`)
    await waitFor('five images held', async () => (await Promise.all(mirrors.map(cacheOf))).every(Boolean))
    await waitFor('the writer idle', () => w1.server.prepull!.queue.idle)
    t.equal(
      (await metric(w1.server, 'mirrorhook_prepull_api_writes_total', { verb: 'create', result: 'created' })) - before1,
      1,
      'one batch of five',
    )
    t.equal(await metric(w2.server, 'mirrorhook_prepull_api_writes_total'), 0, 'nothing written by the other')
    for (const m of mirrors) t.equal(await holders(m), 1, `${m}: once`)
    t.same([...(await cacheOf(mirrors[0]!)).spec.cacheSpec[0].images].sort(), [...mirrors].sort())
    await w2.stop()
  })

  t.test('a status written the way kube-fledged writes it is picked up; a failure is retried with the refresh annotation', async (t) => {
    const image = mirror('nginx:1.25')
    const name = (await cacheOf(image)).metadata.name
    const path = `${CACHES}/${name}`
    await put(name, (o) => {
      o.status = { status: 'Processing', reason: 'ImageCacheCreate', message: 'Images are being pulled', startTime: now() }
    })
    await waitFor('pending', () => w1.server.prepull!.stateOf(image)?.state === 'pending')
    await put(name, (o) => {
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
    const series = (scrape: string, prefix: string) => scrape.split('\n').filter((l) => l.startsWith(prefix))
    t.strictSame(series(text, `mirrorhook_prepull_image_failed_node{image="${image}",`), [
      `mirrorhook_prepull_image_failed_node{image="${image}",node="node-b",reason="ImagePullFailed"} 1`,
    ])
    t.strictSame(series(text, `mirrorhook_prepull_image_state{image="${image}",`), [
      `mirrorhook_prepull_image_state{image="${image}",state="failed"} 1`,
    ])
    t.same(
      first.lines.filter((l) => l.image === image && /pre-pull failed/.test(l.msg ?? '')).map((l) => l.msg),
      ['image pre-pull failed on 1 node(s): node-b'],
      'logged once, with the node',
    )

    const annotated = await waitFor('refresh requested', async () => {
      const o = (await c.request('GET', path)).json()
      return o.metadata.annotations?.['kubefledged.io/refresh-imagecache'] ? o : undefined
    })
    t.equal(annotated.status.status, 'Failed', 'the status is left to kube-fledged')
    // kube-fledged: refresh runs, succeeds, removes the annotation.
    await put(name, (o) => {
      o.status = { status: 'Processing', reason: 'ImageCacheRefresh', message: 'Image cache is being refreshed', startTime: now() }
    })
    await put(name, (o) => {
      o.status = { ...o.status, status: 'Succeeded', message: 'All requested images pulled succesfully', completionTime: now() }
      delete o.metadata.annotations['kubefledged.io/refresh-imagecache']
    })
    await waitFor('cached', () => w1.server.prepull!.stateOf(image)?.state === 'cached')
    const after = await w1.server.metrics.registry.metrics()
    t.strictSame(series(after, `mirrorhook_prepull_image_failed_node{image="${image}",`), [], 'the failure series is gone')
    t.strictSame(series(after, 'mirrorhook_prepull_images{state="cached"}'), ['mirrorhook_prepull_images{state="cached"} 1'])
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
      t.equal(await cacheOf('m.daocloud.io/docker.io/senthilrch/busybox:1.35.0'), undefined, 'its busybox is not turned into a cache')
    },
  )

  t.test('the API server stopped for a while: nothing admitted before is lost', async (t) => {
    // Only the queue can write these caches: Pod sweeps are off (one a day), and the images
    // are admitted through reviews sent straight to this instance, as an API server replica
    // would, so no Pod exists whose listing could bring them back.
    // The only writer: the first instance hands the Lease over; a long Lease outlasts the outage.
    await w1.stop()
    const isolated = await start({ writesPerSecond: 1, writeBurst: 1, podSweepSeconds: 86_400, leaseDurationSeconds: 120 })
    await waitFor('synced and writing', () => isolated.server.prepull!.synced && isolated.server.prepull!.writing)
    const outage = await stopApiserver(c)
    const images = Array.from({ length: 8 }, (_, i) => `docker.io/library/outage-${i}:1`)
    const answers = await Promise.all(images.map((image, i) => review(isolated.url, isolated.caPem, [image], `outage-${i}`)))
    t.strictSame(
      answers.map((a) => a.response.patchType),
      images.map(() => 'JSONPatch'),
      'admission answers while the API server is down',
    )
    const mirrors = images.map((i) => `m.daocloud.io/${i}`)
    const kept = () => mirrors.filter((m) => isolated.server.prepull!.holds(m)).length
    t.equal(kept(), 8, 'every image queued')
    const retries = async () => metric(isolated.server, 'mirrorhook_prepull_retries_total')
    await waitFor('writes failing and retried', async () => (await retries()) > 0, 30_000)
    // Several more failed rounds, then: still all there.
    const seen = await retries()
    await waitFor('three more failed writes', async () => (await retries()) >= seen + 3, 60_000)
    t.equal(kept(), 8, 'nothing dropped while the API server is down')
    await outage.restore()
    await waitFor('all cached after the outage', async () => (await Promise.all(mirrors.map(cacheOf))).every(Boolean), 90_000)
    t.equal(await metric(isolated.server, 'mirrorhook_prepull_api_writes_total', { result: 'error' }), 0)
    await isolated.stop()
  })

  t.test('a restart re-ensures every image still in use', async (t) => {
    // Pods admitted while pre-pull was off, and a cache deleted by hand.
    const off = await start({ enabled: false })
    await registerWebhook(c, off, 'shop')
    await createPod('shop', 'while-off', {
      containers: [
        { name: 'a', image: 'traefik:3.1' },
        { name: 'b', image: 'haproxy:3.0' },
      ],
    })
    t.equal(off.server.prepull, undefined, 'pre-pull disabled in that instance')
    const byHand = await cacheOf(mirror('redis:7.2'))
    const del = await c.request('DELETE', `${CACHES}/${byHand.metadata.name}`)
    t.equal(del.status, 200)
    await off.stop()
    t.equal(await cacheOf(mirror('traefik:3.1')), undefined)

    const again = await start()
    for (const image of [mirror('traefik:3.1'), mirror('haproxy:3.0'), mirror('redis:7.2'), mirror('busybox:1.36')]) {
      await waitFor(`${image} ensured after the restart`, () => cacheOf(image))
    }
    await waitFor('idle', () => again.server.prepull!.queue.idle && again.server.prepull!.layout().waiting === 0)
    for (const image of [mirror('traefik:3.1'), mirror('haproxy:3.0'), mirror('redis:7.2'), mirror('busybox:1.36')]) {
      t.equal(await holders(image), 1, `${image}: in one batch`)
    }
    t.equal(originals(await cacheOf(mirror('traefik:3.1')))[mirror('traefik:3.1')], 'traefik:3.1', 'original from the Pod annotation')
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
        rules: [
          { apiGroups: ['kubefledged.io'], resources: ['imagecaches'], verbs: ['list', 'watch', 'create', 'patch', 'delete'] },
          { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
          { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['mirrorhook-prepull'], verbs: ['get', 'update'] },
        ],
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

    await waitFor('writing', () => p.server.prepull!.writing)
    const image = mirror('vault:1.13')
    await createPod('shop', 'short-lived', { containers: [{ name: 'v', image: 'vault:1.13' }] })
    const name = (await waitFor('created', () => cacheOf(image))).metadata.name
    const cacheOfVault = async () => (await c.request('GET', `${CACHES}/${name}`)).json()
    await put(name, (o) => {
      o.status = {
        status: 'Failed',
        reason: 'ImageCacheCreate',
        message: 'failed',
        startTime: now(),
        completionTime: now(),
        failures: { [image]: [{ node: 'n1', reason: 'ImagePullFailed', message: 'x' }] },
      }
    })
    await waitFor('refresh (patch)', async () => (await cacheOfVault())?.metadata.annotations?.['kubefledged.io/refresh-imagecache'])
    await put(name, (o) => {
      o.status = { status: 'Succeeded', reason: 'ImageCacheRefresh', message: 'ok', startTime: now(), completionTime: now() }
      delete o.metadata.annotations['kubefledged.io/refresh-imagecache']
    })

    const del = await c.kubectl(['delete', 'pod', '-n', 'shop', 'short-lived', '--wait=false'])
    t.equal(del.code, 0, del.stderr)
    const marked = await waitFor(
      'marked unused',
      async () => (await cacheOfVault())?.metadata.annotations?.['mirrorhook.io/unused-since'],
      20_000,
    )
    t.same(Object.keys(JSON.parse(marked)), [image])
    t.match(JSON.parse(marked)[image], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/)
    await waitFor('purge requested', async () => (await cacheOfVault())?.metadata.annotations?.['kubefledged.io/purge-imagecache'], 20_000)
    // kube-fledged purges: Processing, then Succeeded with reason ImageCachePurge, and removes its annotation.
    await put(name, (o) => {
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
    t.equal((await c.request('GET', `${CACHES}/${name}`)).status, 200, 'not deleted while the purge runs')
    await put(name, (o) => {
      o.status = { ...o.status, status: 'Succeeded', message: 'All cached images succesfully deleted', completionTime: now() }
      delete o.metadata.annotations['kubefledged.io/purge-imagecache']
    })
    await waitFor('deleted after the purge', async () => (await c.request('GET', `${CACHES}/${name}`)).status === 404, 20_000)

    t.equal(await metric(p.server, 'mirrorhook_prepull_api_writes_total', { result: 'error' }), 0, 'no write refused')
    t.equal(await metric(p.server, 'mirrorhook_prepull_pod_sweeps_total', { result: 'error' }), 0, 'Pods listed every time')
    t.same(
      log.lines.filter((l) => /forbidden/i.test(JSON.stringify(l))),
      [],
      'nothing forbidden',
    )
    t.equal(log.lines.filter((l) => l.msg === 'ImageCache deleted after its purge').length, 1)
    await p.stop()
  })

  t.test(
    'a leader change while kube-fledged processes a batch: the new writer adopts it, nothing lost, nothing written to it',
    async (t) => {
      await settleAll()
      // New batches wait for the one being processed (no 1 s limit here).
      const a = await start({ batchWaitSeconds: 600 })
      // Stopped when this test ends, passed or not, so that the next one finds the Lease free.
      t.teardown(() => a.stop())
      await registerWebhook(c, a, 'shop')
      await waitFor('a writes', () => a.server.prepull!.synced && a.server.prepull!.writing)
      const first = [mirror('lc-a:1'), mirror('lc-b:1')]
      const later = [mirror('lc-c:1'), mirror('lc-d:1')]
      await createPod('shop', 'lc-1', {
        containers: [
          { name: 'a', image: 'lc-a:1' },
          { name: 'b', image: 'lc-b:1' },
        ],
      })
      const batch = await waitFor('the first batch', () => cacheOf(first[0]!))
      t.same(batch.spec.cacheSpec[0].images, first)
      const processing = await put(batch.metadata.name, (o) => {
        o.status = { status: 'Processing', reason: 'ImageCacheCreate', message: 'Images are being pulled', startTime: now() }
      })
      await waitFor('seen processing', () => a.server.prepull!.stateOf(first[0]!)?.state === 'pending')
      await createPod('shop', 'lc-2', {
        containers: [
          { name: 'c', image: 'lc-c:1' },
          { name: 'd', image: 'lc-d:1' },
        ],
      })
      await waitFor('the new images wait for the batch being processed', () => a.server.prepull!.layout().waiting === 2)

      const b = await start({ batchWaitSeconds: 600 })
      t.teardown(() => b.stop())
      await waitFor('b synced', () => b.server.prepull!.synced)
      t.equal(b.server.prepull!.writing, false, 'a still writes')
      // a stops: what it held in memory (the two waiting images) goes with it.
      await a.stop()
      await waitFor('b writes', () => b.server.prepull!.writing)
      await waitFor('b knows the images in use', () => b.server.prepull!.layout().waiting === 2, 20_000)
      const still = (await c.request('GET', `${CACHES}/${batch.metadata.name}`)).json()
      t.equal(still.metadata.uid, batch.metadata.uid, 'adopted, not renamed or replaced')
      t.equal(still.metadata.resourceVersion, processing.metadata.resourceVersion, 'nothing written to it while Processing')
      t.equal((await caches()).filter((o) => later.some((i) => o.spec.cacheSpec[0].images.includes(i))).length, 0, 'no second batch yet')

      await put(batch.metadata.name, (o) => {
        o.status = { ...o.status, status: 'Succeeded', message: 'All requested images pulled succesfully', completionTime: now() }
      })
      await waitFor('the waiting images in a new batch', async () => (await Promise.all(later.map(cacheOf))).every(Boolean))
      await waitFor('idle', () => b.server.prepull!.queue.idle && b.server.prepull!.layout().waiting === 0)
      for (const image of [...first, ...later]) t.equal(await holders(image), 1, `${image}: in one batch`)
      t.same((await cacheOf(later[0]!)).spec.cacheSpec[0].images, later, 'together')
      t.equal(b.server.prepull!.stateOf(first[0]!)?.state, 'cached')
      t.equal(await metric(b.server, 'mirrorhook_prepull_api_writes_total', { result: 'error' }), 0)
      await b.stop()
    },
  )

  t.test('one unused image leaves its batch (a spec change once idle) while the others stay cached', async (t) => {
    await settleAll()
    const u = await start({ unusedPurgeSeconds: 2, podSweepSeconds: 1 })
    t.teardown(() => u.stop())
    await registerWebhook(c, u, 'shop')
    await waitFor('writing', () => u.server.prepull!.synced && u.server.prepull!.writing)
    const gone = mirror('leave-a:1')
    const stays = mirror('leave-b:1')
    await createPod('shop', 'leave-1', {
      containers: [
        { name: 'a', image: 'leave-a:1' },
        { name: 'b', image: 'leave-b:1' },
      ],
    })
    await createPod('shop', 'leave-2', { containers: [{ name: 'b', image: 'leave-b:1' }] })
    const batch = await waitFor('the batch', () => cacheOf(gone))
    t.same(batch.spec.cacheSpec[0].images, [gone, stays])
    await put(batch.metadata.name, (o) => {
      o.status = {
        status: 'Succeeded',
        reason: 'ImageCacheCreate',
        message: 'All requested images pulled',
        startTime: now(),
        completionTime: now(),
      }
    })
    await waitFor(
      'both cached',
      () => u.server.prepull!.stateOf(gone)?.state === 'cached' && u.server.prepull!.stateOf(stays)?.state === 'cached',
    )

    const del = await c.kubectl(['delete', 'pod', '-n', 'shop', 'leave-1', '--wait=false'])
    t.equal(del.code, 0, del.stderr)
    const path = `${CACHES}/${batch.metadata.name}`
    const marked = await waitFor(
      'marked unused',
      async () => (await c.request('GET', path)).json().metadata.annotations?.['mirrorhook.io/unused-since'],
      20_000,
    )
    t.same(Object.keys(JSON.parse(marked)), [gone], 'only the image no Pod runs')
    const after = await waitFor(
      'removed from the batch',
      async () => {
        const o = (await c.request('GET', path)).json()
        return o.spec.cacheSpec[0].images.length === 1 ? o : undefined
      },
      20_000,
    )
    t.equal(after.metadata.uid, batch.metadata.uid, 'the same batch')
    t.same(after.spec.cacheSpec, [{ images: [stays] }], 'one list, its nodeSelector (none) unchanged')
    t.equal(after.metadata.annotations['kubefledged.io/purge-imagecache'], undefined, 'not a purge of the whole batch')
    t.equal(after.metadata.annotations['mirrorhook.io/unused-since'], undefined, 'no mark left')
    t.same(originals(after), { [stays]: 'leave-b:1' })
    await waitFor('the removed image is gone from the states', () => u.server.prepull!.stateOf(gone) === undefined)
    // kube-fledged acts on the spec change (pulls what is listed, deletes the removed image): the other stays cached throughout.
    await put(batch.metadata.name, (o) => {
      o.status = { status: 'Processing', reason: 'ImageCacheUpdate', message: 'Image cache is being updated', startTime: now() }
    })
    await waitFor('seen processing', async () => (await c.request('GET', path)).json().status.status === 'Processing')
    t.equal(u.server.prepull!.stateOf(stays)?.state, 'cached')
    await put(batch.metadata.name, (o) => {
      o.status = { ...o.status, status: 'Succeeded', message: 'All requested images pulled', completionTime: now() }
    })
    await waitFor('still cached', () => u.server.prepull!.stateOf(stays)?.state === 'cached')
    t.equal(await holders(gone), 0)
    t.equal(await metric(u.server, 'mirrorhook_prepull_api_writes_total', { verb: 'update', result: 'ok' }), 1, 'one spec change')
    await u.stop()
  })
}
