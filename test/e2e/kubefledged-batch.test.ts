// mirrorhook's batched ImageCaches against the kube-fledged stand-in (test/support/kubefledged.ts,
// which loses pull-Job completions as the real controller does when several caches are
// processed at once) on the simulated cluster: 100 new images on 3 kwok nodes.
import t from 'tap'
import { pino } from 'pino'
import { waitFor as pollFor } from '../support/helpers.js'
import { managedImageCaches } from '../support/kubefledged.js'
import { withCluster } from '../support/tap-cluster.js'
import { createNamespace, registerWebhook, startTestWebhook } from '../support/webhook.js'

const MIRROR = 'mirror.example'
const IMAGES = 100
const PER_POD = 10

const cluster = await withCluster(t, {
  nodes: 3,
  registry: false,
  timing: { podStartDelayMs: 500 },
  kubeFledged: {
    // A lost completion would fail its cache at this deadline.
    imagePullDeadlineMs: 60_000,
    refreshFrequencyMs: 0,
    busyboxImage: `${MIRROR}/docker.io/senthilrch/busybox:1.35.0`,
  },
})

const waitFor = <T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, ms = 60_000) =>
  pollFor(what, async () => check(), ms)

if (cluster) {
  const { cp, kwok } = cluster
  const kf = cluster.kubeFledged!

  t.test('100 new images on 3 nodes: every image cached, no cache failed, no completion lost, one Job per image and node', async (t) => {
    await createNamespace(cp, 'apps', true)
    await createNamespace(cp, 'kube-fledged', false)
    const webhook = await startTestWebhook({
      config: {
        mirror: { prefix: MIRROR },
        registries: ['*'],
        reachability: { enabled: false },
        remediation: { enabled: false },
        kubeFledged: {
          namespace: 'kube-fledged',
          writesPerSecond: 50,
          writeBurst: 20,
          podSweepSeconds: 2,
          unusedPurgeSeconds: 0,
          leaseDurationSeconds: 2,
        },
      },
      logger: pino({ level: process.env.MIRRORHOOK_TEST_LOG_LEVEL ?? 'silent' }),
      extra: { kube: { kubeConfig: await cp.kubeConfig(), source: cp.kubeconfigPath } },
    })
    t.teardown(() => webhook.stop())
    const prepull = webhook.server.prepull!
    await waitFor('writing', () => prepull.synced && prepull.writing)
    await registerWebhook(cp, webhook, 'apps')

    // Every status kube-fledged writes, as it writes it.
    const statuses: string[] = []
    let watching = true
    const watch = (async () => {
      const seen = new Map<string, string>()
      while (watching) {
        for (const o of await managedImageCaches(cp)) {
          const s = `${o.status?.status ?? ''} ${o.status?.reason ?? ''}`
          if (o.status?.status && seen.get(o.metadata.name) !== `${o.metadata.resourceVersion}`) {
            seen.set(o.metadata.name, `${o.metadata.resourceVersion}`)
            statuses.push(s)
          }
        }
        await new Promise((r) => setTimeout(r, 200))
      }
    })()
    t.teardown(async () => {
      watching = false
      await watch
    })

    const images = Array.from({ length: IMAGES }, (_, i) => `docker.io/library/batch-${i}:1.0`)
    const mirrors = images.map((i) => `${MIRROR}/${i}`)
    for (let p = 0; p < IMAGES / PER_POD; p++) {
      const containers = images.slice(p * PER_POD, (p + 1) * PER_POD).map((image, i) => ({ name: `c${i}`, image }))
      const r = await cp.request('POST', '/api/v1/namespaces/apps/pods', {
        body: { apiVersion: 'v1', kind: 'Pod', metadata: { name: `batch-${p}` }, spec: { containers } },
      })
      if (r.status !== 201) throw new Error(`pod ${p}: ${r.status} ${r.body.slice(0, 200)}`)
      t.equal(r.json().spec.containers[0].image, mirrors[p * PER_POD], `pod ${p} mutated`)
    }

    await waitFor('every image cached', () => mirrors.every((m) => prepull.stateOf(m)?.state === 'cached'), 300_000)
    const caches = await managedImageCaches(cp)
    const held = caches.flatMap((o) => o.spec.cacheSpec[0].images as string[])
    t.same([...held].sort(), [...mirrors].sort(), 'each image in one ImageCache, nothing else')
    t.same(
      caches.map((o) => o.status.status),
      caches.map(() => 'Succeeded'),
    )
    t.same(
      statuses.filter((s) => !/^(Processing|Succeeded) ImageCacheCreate$/.test(s)),
      [],
      'no cache ever Failed (nor refreshed)',
    )
    t.equal(kf.completionsLost, 0, 'no completion lost')
    t.equal(kf.jobsCreated, IMAGES * kwok.nodes.length, 'one pull Job per image and node: nothing pulled twice')
    t.comment(`${caches.length} ImageCaches (${caches.map((o) => o.spec.cacheSpec[0].images.length).join(', ')} images)`)
  })
}
