// The kube-fledged stand-in (test/support/kubefledged.ts) on the simulated cluster: what a client
// of kube-fledged sees — pull Jobs per image × node, statuses, reasons and messages, refresh and
// purge annotations, Aborted after a restart and the refresh of every cache at start.
import t from 'tap'
import { Watch } from '@kubernetes/client-node'
import { startKubeFledged } from '../support/kubefledged.js'
import { waitFor as waitForWithin } from '../support/helpers.js'
import { UNREACHABLE_IP } from '../support/kwok-stages.js'
import { withCluster } from '../support/tap-cluster.js'

const NS = 'kube-fledged'
const CACHES = `/apis/kubefledged.io/v1alpha2/namespaces/${NS}/imagecaches`
const cluster = await withCluster(t, {
  nodes: 2,
  unreachable: { registries: ['docker.io'] },
  // A failed pull stays in ImagePullBackOff (no kubelet retry) until kube-fledged's deadline.
  timing: { retryAfterMs: 600_000, podStartDelayMs: 500 },
  registry: false,
  // Its helper images (BUSYBOX_IMAGE, --cri-client-image) on a registry the nodes reach (as with
  // mirrorhook in front): the image under test is the one that fails.
  kubeFledged: {
    imagePullDeadlineMs: 8_000,
    refreshFrequencyMs: 0,
    busyboxImage: 'mirror.example/docker.io/senthilrch/busybox:1.35.0',
    criClientImage: 'mirror.example/docker.io/senthilrch/kubefledged-cri-client:v0.10.0',
  },
})

const waitFor = <T>(what: string, check: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> => waitForWithin(what, check, ms)

if (cluster) {
  const { cp, kwok } = cluster
  const get = async (name: string) => (await cp.request('GET', `${CACHES}/${name}`)).json()
  const create = async (name: string, cacheSpec: unknown[]) => {
    const r = await cp.request('POST', CACHES, {
      body: { apiVersion: 'kubefledged.io/v1alpha2', kind: 'ImageCache', metadata: { name, namespace: NS }, spec: { cacheSpec } },
    })
    if (r.status !== 201) throw new Error(`create ${name}: HTTP ${r.status} ${r.body}`)
  }
  const annotate = async (name: string, key: string) => {
    const r = await cp.request('PATCH', `${CACHES}/${name}`, {
      body: { metadata: { annotations: { [key]: '' } } },
      headers: { 'Content-Type': 'application/merge-patch+json' },
    })
    if (r.status !== 200) throw new Error(`annotate ${name}: HTTP ${r.status} ${r.body}`)
  }
  const terminal = (name: string, ms?: number) =>
    waitFor(
      `${name} done`,
      async () => {
        const o = await get(name)
        return o.status?.status && o.status.status !== 'Processing' ? o : undefined
      },
      ms,
    )
  const jobsOf = async (name: string) =>
    (await cp.request('GET', `/apis/batch/v1/namespaces/${NS}/jobs?labelSelector=imagecache%3D${name}`)).json().items as any[]
  const eventsOf = async (name: string) =>
    ((await cp.request('GET', `/api/v1/namespaces/${NS}/events?fieldSelector=involvedObject.name%3D${name}`)).json().items as any[]).map(
      (e) => [e.type, e.reason, e.message, e.source.component],
    )
  const nodes = [...kwok.nodes].sort()

  t.test('a cache of images the nodes reach: one Job per image and node, Succeeded, the Jobs deleted', async (t) => {
    await create('reachable', [{ images: ['mirror.example/docker.io/library/nginx:1.25', 'mirror.example/docker.io/library/redis:7'] }])
    const jobs = await waitFor('4 pull Jobs', async () => {
      const js = await jobsOf('reachable')
      return js.length === 4 ? js : undefined
    })
    t.same(
      jobs.map((j) => [j.spec.template.spec.nodeSelector['kubernetes.io/hostname'], j.spec.template.spec.containers[0].image]).sort(),
      nodes.flatMap((n) => [
        [n, 'mirror.example/docker.io/library/nginx:1.25'],
        [n, 'mirror.example/docker.io/library/redis:7'],
      ]),
    )
    // The first node's nginx Job.
    const j = jobs.find(
      (x) =>
        x.spec.template.spec.nodeSelector['kubernetes.io/hostname'] === nodes[0] &&
        x.spec.template.spec.containers[0].image.endsWith('nginx:1.25'),
    )
    t.match(j.metadata.name, /^reachable-[a-z0-9]{5}$/, 'generateName <imagecache>-')
    t.same(j.metadata.labels, {
      app: 'kubefledged',
      kubefledged: 'kubefledged-image-manager',
      imagecache: 'reachable',
      controller: 'kubefledged-controller',
    })
    t.same(j.metadata.ownerReferences, [
      {
        apiVersion: 'kubefledged.io/v1alpha2',
        kind: 'ImageCache',
        name: 'reachable',
        uid: (await get('reachable')).metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ])
    t.same([j.spec.backoffLimit, j.spec.activeDeadlineSeconds, j.spec.template.spec.restartPolicy], [0, 3600, 'Never'])
    t.same(j.spec.template.spec.tolerations, [{ operator: 'Exists' }])
    // As the API server stores them: its defaults (resources, termination message) included.
    const stored = {
      resources: {},
      terminationMessagePath: '/dev/termination-log',
      terminationMessagePolicy: 'File',
      imagePullPolicy: 'IfNotPresent',
    }
    const tmpBin = [{ name: 'tmp-bin', mountPath: '/tmp/bin' }]
    t.same(j.spec.template.spec.initContainers, [
      {
        name: 'busybox',
        image: 'mirror.example/docker.io/senthilrch/busybox:1.35.0',
        command: ['cp', '/bin/echo', '/tmp/bin'],
        volumeMounts: tmpBin,
        ...stored,
      },
    ])
    t.same(j.spec.template.spec.containers, [
      {
        name: 'imagepuller',
        image: 'mirror.example/docker.io/library/nginx:1.25',
        command: ['/tmp/bin/echo', 'Image pulled successfully!'],
        volumeMounts: tmpBin,
        ...stored,
      },
    ])

    const done = await terminal('reachable')
    const { startTime, completionTime, ...status } = done.status
    t.same(
      status,
      { status: 'Succeeded', reason: 'ImageCacheCreate', message: 'All requested images pulled succesfully to respective nodes' },
      'no failures map (omitempty)',
    )
    // metav1.Time: RFC 3339 in seconds, UTC.
    t.match(startTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    t.match(completionTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    t.equal(Date.parse(completionTime) >= Date.parse(startTime), true, 'completed after it started')
    await waitFor('the Jobs deleted', async () => (await jobsOf('reachable')).length === 0)
    t.same(await eventsOf('reachable'), [
      ['Normal', 'ImageCacheCreate', 'All requested images pulled succesfully to respective nodes', 'kubefledged-controller'],
    ])
  })

  t.test('an image on an unreachable registry: Failed at the pull deadline, with each node’s reason and message', async (t) => {
    const image = 'docker.io/library/nginx:1.25'
    await create('unreachable', [{ images: [image] }])
    const processing = await waitFor('Processing', async () => {
      const o = await get('unreachable')
      return o.status?.status === 'Processing' ? o : undefined
    })
    t.same(
      [processing.status.reason, processing.status.message],
      ['ImageCacheCreate', 'Images are being pulled on to the nodes. Please view the status after some time'],
    )
    const done = await terminal('unreachable')
    t.same(
      [done.status.status, done.status.reason, done.status.message],
      ['Failed', 'ImageCacheCreate', 'Image pull failed for some images. Please see "failures" section'],
    )
    const message =
      `Back-off pulling image "${image}": ErrImagePull: rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "${image}": ` +
      `failed to resolve reference "${image}": failed to do request: Head "https://registry-1.docker.io/v2/library/nginx/manifests/1.25": ` +
      `dial tcp ${UNREACHABLE_IP}:443: i/o timeout`
    t.same(
      [...done.status.failures[image]].sort((a: any, b: any) => a.node.localeCompare(b.node)),
      nodes.map((node) => ({ node, reason: 'ImagePullBackOff', message })),
    )
    await waitFor('the Jobs deleted', async () => (await jobsOf('unreachable')).length === 0)
  })

  t.test('a nodeSelector that matches no node: NoImagesPulledOrDeleted', async (t) => {
    await create('nowhere', [{ images: ['mirror.example/app:1'], nodeSelector: { 'kubernetes.io/hostname': 'no-such-node' } }])
    const done = await terminal('nowhere')
    t.same([done.status.status, done.status.reason], ['NoImagesPulledOrDeleted', 'ImageCacheCreate'])
    t.same(await jobsOf('nowhere'), [])
  })

  t.test('refresh and purge annotations: acted on once, then removed by the controller', async (t) => {
    await annotate('reachable', 'kubefledged.io/refresh-imagecache')
    const refreshed = await waitFor('refreshed and the annotation removed', async () => {
      const o = await get('reachable')
      return o.status?.reason === 'ImageCacheRefresh' &&
        o.status.status === 'Succeeded' &&
        !o.metadata.annotations?.['kubefledged.io/refresh-imagecache']
        ? o
        : undefined
    })
    t.equal(refreshed.status.message, 'All requested images pulled succesfully to respective nodes')

    await annotate('reachable', 'kubefledged.io/purge-imagecache')
    const purgeJobs = await waitFor('purge Jobs', async () => {
      const js = await jobsOf('reachable')
      return js.length === 4 ? js : undefined
    })
    const purge = (image: string) => [
      {
        name: 'docker-cri-client',
        image: 'mirror.example/docker.io/senthilrch/kubefledged-cri-client:v0.10.0',
        command: ['/bin/bash'],
        args: ['-c', `exec /usr/bin/docker image rm -f ${image} > /dev/termination-log 2>&1`],
        resources: {},
        volumeMounts: [{ name: 'runtime-sock', mountPath: '/var/run/docker.sock' }],
        terminationMessagePath: '/dev/termination-log',
        terminationMessagePolicy: 'File',
        imagePullPolicy: 'IfNotPresent',
      },
    ]
    t.same(
      purgeJobs
        .map((pj) => [pj.spec.template.spec.nodeSelector['kubernetes.io/hostname'], pj.spec.template.spec.containers])
        .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
      nodes.flatMap((n) => [
        [n, purge('mirror.example/docker.io/library/nginx:1.25')],
        [n, purge('mirror.example/docker.io/library/redis:7')],
      ]),
      'one purge Job per image and node',
    )
    const purged = await waitFor('purged and the annotation removed', async () => {
      const o = await get('reachable')
      return o.status?.reason === 'ImageCachePurge' &&
        o.status.status === 'Succeeded' &&
        !o.metadata.annotations?.['kubefledged.io/purge-imagecache']
        ? o
        : undefined
    })
    t.equal(purged.status.message, 'All cached images succesfully deleted from respective nodes')
  })

  t.test('a restart while a cache is Processing: Aborted, its Jobs deleted, then every cache refreshed at start', async (t) => {
    await create('interrupted', [{ images: ['docker.io/library/busybox:1.36'] }])
    const before = await waitFor('pull Jobs of the interrupted cache', async () => {
      const js = await jobsOf('interrupted')
      return js.length === 2 ? js.map((j) => j.metadata.uid as string) : undefined
    })
    // Every status the cache goes through, from a watch.
    const seen: string[][] = []
    const kc = await cp.kubeConfig()
    const watch = new Watch(kc)
    const req = await watch.watch(
      CACHES,
      { fieldSelector: 'metadata.name=interrupted' },
      (_type, o: any) => {
        const s = o.status ?? {}
        const last = seen[seen.length - 1]
        const now = [s.status, s.reason, s.message]
        if (!last || last.join('|') !== now.join('|')) seen.push(now)
      },
      () => {},
    )
    t.teardown(() => req.abort())
    await cluster.kubeFledged!.stop()
    const restarted = await startKubeFledged({
      kubeconfigPath: cp.kubeconfigPath,
      imagePullDeadlineMs: 8_000,
      refreshFrequencyMs: 3_600_000,
    })
    t.teardown(() => restarted.stop())
    await waitFor('refreshed', async () => seen.some((s) => s[1] === 'ImageCacheRefresh'))
    t.same(
      seen.slice(seen.findIndex((s) => s[0] === 'Aborted')).slice(0, 2),
      [
        ['Aborted', 'ImagePullAborted', 'Image cache processing aborted. Image cache will get refreshed during next refresh cycle'],
        ['Processing', 'ImageCacheRefresh', 'Image cache is being refreshed. Please view the status after some time'],
      ],
      'Aborted by the pre-flight checks, then refreshed',
    )
    t.equal(seen[0]![0], 'Processing', 'it was Processing when the controller stopped')
    await waitFor('the dangling Jobs deleted', async () => (await jobsOf('interrupted')).every((j) => !before.includes(j.metadata.uid)))
    t.same(
      (await jobsOf('interrupted')).filter((j) => before.includes(j.metadata.uid)),
      [],
      'the Jobs left by the stopped controller are gone',
    )
    const refreshed = await waitFor('every cache but the purged one refreshed at start', async () => {
      const os = await Promise.all(['reachable', 'unreachable', 'nowhere'].map(get))
      const reasons = os.map((o) => o.status.reason)
      return reasons.join() === 'ImageCachePurge,ImageCacheRefresh,ImageCacheRefresh' ? reasons : undefined
    })
    t.same(refreshed, ['ImageCachePurge', 'ImageCacheRefresh', 'ImageCacheRefresh'])
  })
}
