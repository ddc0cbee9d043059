// The reconcile decisions and writes against an in-memory ImageCache API that
// enforces what the API server and kube-fledged enforce, driven by a manual clock.
import t from 'tap'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { ManualClock } from '../support/clock.js'
import {
  buildImageCache,
  type CacheSettings,
  type ImageCache,
  imageCacheName,
  ORIGINAL_IMAGE_ANNOTATION,
  PURGE_ANNOTATION,
  REFRESH_ANNOTATION,
  UNUSED_SINCE_ANNOTATION,
} from '../../server/prepull/imagecache.js'
import { UsageTracker } from '../../server/prepull/usage.js'
import { ApiError } from '../../server/kube/errors.js'
import type { ImageCacheApi } from '../../server/prepull/kubeapi.js'
import { PrepullMetrics } from '../../server/prepull/metrics.js'
import { TokenBucket, WorkQueue } from '../../server/prepull/queue.js'
import { decide, Reconciler } from '../../server/prepull/reconciler.js'

interface Write {
  verb: 'create' | 'annotate' | 'delete'
  name: string
  at: number
}

// The API server's optimistic concurrency and kube-fledged's rules for clients.
class FakeImageCacheApi implements ImageCacheApi {
  readonly objects = new Map<string, ImageCache>()
  readonly writes: Write[] = []
  readonly violations: string[] = []
  readonly failures: ApiError[] = []
  private rv = 1
  private uid = 1

  constructor(private readonly clock: ManualClock) {}

  private fail(): void {
    const f = this.failures.shift()
    if (f) throw f
  }

  async create(cache: ImageCache): Promise<void> {
    const name = cache.metadata.name!
    this.writes.push({ verb: 'create', name, at: this.clock.now() })
    this.fail()
    if (cache.status) this.violations.push(`${name}: created with a status (kube-fledged would ignore it)`)
    const lists = cache.spec.cacheSpec
    if (lists.some((l) => l.images.length === 0 || new Set(l.images).size !== l.images.length)) {
      throw new ApiError(400, 'kube-fledged webhook: empty or duplicate image list')
    }
    if (this.objects.has(name)) throw new ApiError(409, `${name} already exists`, 'AlreadyExists')
    this.objects.set(name, {
      ...structuredClone(cache),
      metadata: {
        ...structuredClone(cache.metadata),
        uid: `uid-${this.uid++}`,
        resourceVersion: String(this.rv++),
        creationTimestamp: new Date(this.clock.now()).toISOString(),
      },
    })
  }

  async annotate(name: string, annotations: Record<string, string | null>, resourceVersion: string): Promise<void> {
    this.writes.push({ verb: 'annotate', name, at: this.clock.now() })
    this.fail()
    const obj = this.objects.get(name)
    if (!obj) throw new ApiError(404, `${name} not found`, 'NotFound')
    if (obj.metadata.resourceVersion !== resourceVersion) throw new ApiError(409, 'the object has been modified', 'Conflict')
    if (obj.status?.status === 'Processing') this.violations.push(`${name}: changed while Processing`)
    const merged = { ...(obj.metadata.annotations ?? {}) }
    for (const [k, v] of Object.entries(annotations)) {
      if (v === null) delete merged[k]
      else merged[k] = v
    }
    obj.metadata.annotations = merged
    obj.metadata.resourceVersion = String(this.rv++)
  }

  async remove(name: string, pre: { uid: string; resourceVersion: string }): Promise<void> {
    this.writes.push({ verb: 'delete', name, at: this.clock.now() })
    this.fail()
    const obj = this.objects.get(name)
    if (!obj) throw new ApiError(404, `${name} not found`, 'NotFound')
    if (obj.metadata.uid !== pre.uid || obj.metadata.resourceVersion !== pre.resourceVersion) {
      throw new ApiError(409, 'precondition failed', 'Conflict')
    }
    if (obj.status?.status === 'Processing') this.violations.push(`${name}: deleted while Processing`)
    this.objects.delete(name)
  }

  async list(): Promise<{ items: ImageCache[]; resourceVersion: string }> {
    return { items: [...this.objects.values()], resourceVersion: String(this.rv) }
  }

  get(name: string): ImageCache | undefined {
    return this.objects.get(name)
  }

  // kube-fledged's side: a full update with a new status (and annotation removal).
  setStatus(image: string, status: ImageCache['status'], dropAnnotations: string[] = []): void {
    const obj = this.objects.get(imageCacheName(image))!
    obj.status = status
    for (const a of dropAnnotations) delete obj.metadata.annotations?.[a]
    obj.metadata.resourceVersion = String(this.rv++)
  }
}

const SETTINGS: CacheSettings = { namespace: 'kube-fledged', nodeSelector: { pool: 'apps' }, imagePullSecrets: ['mirror-pull'] }
const IMAGE = 'm.daocloud.io/docker.io/library/nginx:1.25'

function setup(options: { purgeAfterMs?: number; writesPerSecond?: number; burst?: number; settings?: CacheSettings } = {}) {
  const clock = new ManualClock()
  const api = new FakeImageCacheApi(clock)
  const registry = new Registry()
  const metrics = new PrepullMetrics(registry)
  const sweepMs = 60_000
  const usage = new UsageTracker(options.purgeAfterMs ?? 0, sweepMs)
  const missing: string[] = []
  const reconciler = new Reconciler({
    api,
    store: api,
    usage,
    settings: options.settings ?? SETTINGS,
    limiter: new TokenBucket(options.writesPerSecond ?? 1000, options.burst ?? 1000, clock),
    clock,
    metrics,
    logger: pino({ level: 'silent' }),
    purgeAfterMs: options.purgeAfterMs ?? 0,
    refreshBackoffMs: 60_000,
    refreshBackoffMaxMs: 600_000,
    busyRetryMs: 5_000,
    ready: () => missing.length === 0,
    onMissing: (e) => missing.push(e.message),
  })
  const queue = new WorkQueue({
    capacity: 1000,
    dedupeMs: 600_000,
    batchSize: 50,
    // One write at a time, so the order of injected failures is the order of writes.
    concurrency: 1,
    batchDelayMs: 100,
    backoffInitialMs: 500,
    backoffMaxMs: 30_000,
    clock,
    random: () => 0.5,
    handle: (image) => reconciler.reconcile(image),
  })
  queue.start()
  const admit = (image: string, original: string) => {
    usage.touch(image, original, clock.now())
    return queue.offer(image)
  }
  const writeCount = async (verb: string) => {
    const m = (await registry.getSingleMetric('mirrorhook_prepull_api_writes_total')!.get()).values
    return m.filter((v) => v.labels.verb === verb).reduce((n, v) => n + v.value, 0)
  }
  return { clock, api, queue, usage, reconciler, admit, registry, missing, writeCount }
}

t.test('an admitted image becomes one ImageCache kube-fledged accepts', async (t) => {
  const { clock, api, admit } = setup()
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const obj = api.get(imageCacheName(IMAGE))!
  t.ok(obj, 'created')
  t.match(imageCacheName(IMAGE), /^mirrorhook-[0-9a-f]{32}$/)
  t.ok(`${imageCacheName(IMAGE)}-abcde-fghij`.length <= 63, "kube-fledged's Job and Pod names stay valid label values")
  t.same(obj.spec, { cacheSpec: [{ images: [IMAGE], nodeSelector: { pool: 'apps' } }], imagePullSecrets: [{ name: 'mirror-pull' }] })
  t.same(obj.metadata.labels, { 'app.kubernetes.io/managed-by': 'mirrorhook' })
  t.equal(obj.metadata.annotations?.[ORIGINAL_IMAGE_ANNOTATION], 'nginx:1.25', 'why it exists')
  t.equal(obj.status, undefined, 'no status sent')
  t.same(api.violations, [])
})

t.test('several replicas: the same name, AlreadyExists counts as success, nothing retried', async (t) => {
  const a = setup()
  a.admit(IMAGE, 'nginx:1.25')
  await a.clock.advance(100)
  // A second replica with its own queue and an empty store, writing to the same API.
  const b = setup()
  const bRec = new Reconciler({
    api: a.api,
    store: { get: () => undefined },
    usage: b.usage,
    settings: SETTINGS,
    limiter: new TokenBucket(1000, 1000, b.clock),
    clock: b.clock,
    metrics: new PrepullMetrics(new Registry()),
    logger: pino({ level: 'silent' }),
    purgeAfterMs: 0,
    refreshBackoffMs: 60_000,
    refreshBackoffMaxMs: 600_000,
    ready: () => true,
    onMissing: () => t.fail('not missing'),
  })
  b.usage.touch(IMAGE, 'docker.io/library/nginx:1.25', b.clock.now())
  t.same(await bRec.reconcile(IMAGE), { kind: 'done' })
  t.equal(a.api.objects.size, 1)
  t.same(
    a.api.writes.map((w) => w.verb),
    ['create', 'create'],
  )
  t.equal(a.api.get(imageCacheName(IMAGE))!.metadata.annotations?.[ORIGINAL_IMAGE_ANNOTATION], 'nginx:1.25', 'the first writer kept')
})

t.test('429 with Retry-After, 5xx and no answer are retried with backoff; nothing is lost', async (t) => {
  const { clock, api, admit, queue } = setup()
  api.failures.push(
    new ApiError(429, 'too many requests', 'TooManyRequests', 3_000),
    new ApiError(503, 'unavailable', 'ServiceUnavailable'),
    new ApiError(0, 'connect ECONNREFUSED'),
  )
  const images = Array.from({ length: 5 }, (_, i) => `m.daocloud.io/docker.io/library/app${i}:1`)
  for (const i of images) admit(i, i)
  await clock.advance(100)
  t.equal(api.writes.length, 1, 'the throttled write halts the round')
  await clock.advance(2_999)
  t.equal(api.writes.length, 1, 'Retry-After honoured')
  await clock.advance(1)
  t.equal(api.writes.length, 2)
  await clock.advance(60_000)
  t.same([...api.objects.values()].map((o) => o.spec.cacheSpec[0]!.images[0]).sort(), images.sort(), 'every image written')
  t.equal(queue.stats().retries, 3)
  t.ok(queue.idle)
})

t.test('a permanent refusal is not retried in a loop', async (t) => {
  const { clock, api, admit, queue } = setup()
  api.failures.push(new ApiError(403, 'forbidden', 'Forbidden'))
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(10_000)
  t.equal(api.writes.length, 1)
  t.equal(queue.stats().failed, 1)
  t.equal(admit(IMAGE, 'nginx:1.25'), 'duplicate', 'not before the dedupe time')
})

t.test('a 404 on create (no CRD) blocks the queue without losing the image', async (t) => {
  const { clock, api, admit, queue, missing } = setup()
  api.failures.push(new ApiError(404, 'the server could not find the requested resource', 'NotFound'))
  admit(IMAGE, 'nginx:1.25')
  admit('m.daocloud.io/docker.io/library/redis:7', 'redis:7')
  await clock.advance(100)
  t.equal(missing.length, 1)
  t.ok(queue.isBlocked)
  t.equal(queue.size, 2)
  missing.length = 0
  queue.resume()
  await clock.advance(100)
  t.equal(api.objects.size, 2)
})

t.test('writes are rate-limited', async (t) => {
  const { clock, api, admit } = setup({ writesPerSecond: 10, burst: 2 })
  for (let i = 0; i < 12; i++) admit(`m.daocloud.io/docker.io/library/app${i}:1`, `app${i}:1`)
  await clock.advance(5_000)
  t.equal(api.objects.size, 12)
  const times = api.writes.map((w) => w.at).sort((a, b) => a - b)
  const first = times[0]!
  // A burst of two, then one every 100 ms.
  t.same(
    times.map((x) => x - first),
    [0, 0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000],
  )
})

t.test('a failed cache: a refresh after the backoff, never while processing, doubling', async (t) => {
  const { clock, api, admit, reconciler, queue } = setup()
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = imageCacheName(IMAGE)
  const failed = (at: number) => ({
    status: 'Failed',
    reason: 'ImageCacheCreate',
    message: 'Image pull failed for some images. Please see "failures" section',
    failures: { [IMAGE]: [{ node: 'node-b', reason: 'ErrImagePull', message: 'not found' }] },
    startTime: new Date(at - 1000).toISOString(),
    completionTime: new Date(at).toISOString(),
  })
  api.setStatus(IMAGE, failed(clock.now()))
  t.same(reconciler.plan(IMAGE), { kind: 'wait', ms: 60_000 })
  queue.schedule(IMAGE, 60_000)
  await clock.advance(59_999)
  t.notOk(REFRESH_ANNOTATION in (api.get(name)!.metadata.annotations ?? {}))
  await clock.advance(1)
  t.ok(REFRESH_ANNOTATION in (api.get(name)!.metadata.annotations ?? {}), 'refresh asked for')

  // kube-fledged picks it up: Processing, annotation still there. Nothing may be sent now.
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCacheRefresh', message: '', startTime: new Date(clock.now()).toISOString() })
  t.same(reconciler.plan(IMAGE), { kind: 'none' })
  // Fails again; the annotation is removed by kube-fledged.
  api.setStatus(IMAGE, failed(clock.now()), [REFRESH_ANNOTATION])
  t.same(reconciler.plan(IMAGE), { kind: 'wait', ms: 120_000 }, 'the second wait is twice as long')
  api.setStatus(IMAGE, { ...failed(clock.now()), status: 'Succeeded', failures: {} })
  reconciler.resetAttempts(IMAGE)
  t.same(reconciler.plan(IMAGE), { kind: 'none' }, 'cached: nothing to do')
  t.same(api.violations, [])
})

t.test('a configuration change: the cache is replaced, but only when kube-fledged is not processing it', async (t) => {
  const { clock, api, admit, usage, reconciler } = setup()
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const before = api.get(imageCacheName(IMAGE))!.metadata.uid
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCacheCreate', message: '', startTime: new Date().toISOString() })
  const moved = setup({ settings: { ...SETTINGS, nodeSelector: { pool: 'batch' } } })
  const rec = new Reconciler({
    api,
    store: api,
    usage,
    settings: { ...SETTINGS, nodeSelector: { pool: 'batch' } },
    limiter: new TokenBucket(1000, 1000, clock),
    clock,
    metrics: new PrepullMetrics(new Registry()),
    logger: pino({ level: 'silent' }),
    purgeAfterMs: 0,
    refreshBackoffMs: 1,
    refreshBackoffMaxMs: 1,
    ready: () => true,
    onMissing: () => undefined,
  })
  t.same(await rec.reconcile(IMAGE), { kind: 'later', afterMs: 5_000 }, 'waits while Processing')
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCacheCreate', message: '', startTime: new Date().toISOString() })
  t.same(await rec.reconcile(IMAGE), { kind: 'done' })
  const after = api.get(imageCacheName(IMAGE))!
  t.not(after.metadata.uid, before, 'a new object: the nodeSelector of an existing one is never changed')
  t.same(after.spec.cacheSpec, [{ images: [IMAGE], nodeSelector: { pool: 'batch' } }])
  t.equal(after.spec.cacheSpec.length, 1)
  t.same(api.violations, [])
  t.same(reconciler.plan(IMAGE), { kind: 'replace' }, 'the old configuration would want it back: replicas should share one')
  await moved.queue.stop()
})

t.test('unused images: marked, purged after the configured time, deleted once the purge is done', async (t) => {
  const purgeAfterMs = 3_600_000
  const { clock, api, admit, usage, reconciler, queue } = setup({ purgeAfterMs })
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = imageCacheName(IMAGE)
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCacheCreate', message: '', startTime: new Date().toISOString() })

  // A Pod sweep still sees it: nothing to do.
  usage.sweepDone(clock.now(), new Map([[IMAGE, 'nginx:1.25']]), clock.now())
  t.same(reconciler.plan(IMAGE), { kind: 'none' })

  // The Pods are gone; a recent admission still counts for three sweep intervals.
  await clock.advance(60_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.same(reconciler.plan(IMAGE), { kind: 'none' }, 'admitted a minute ago: its Pod may not be listed yet')
  await clock.advance(140_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.same(reconciler.plan(IMAGE), { kind: 'mark-unused' }, 'the clock starts on the object itself')
  queue.schedule(IMAGE)
  await clock.advance(100)
  const since = api.get(name)!.metadata.annotations?.[UNUSED_SINCE_ANNOTATION]
  t.ok(since, 'unused-since recorded on the object (survives restarts and is shared by replicas)')
  t.equal(Date.parse(since!), clock.now(), 'written when the round ran')

  await clock.advance(purgeAfterMs - 1_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.same(reconciler.plan(IMAGE), { kind: 'none' }, 'not unused for an hour yet')
  await clock.advance(1_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.same(reconciler.plan(IMAGE), { kind: 'purge' })
  queue.schedule(IMAGE)
  await clock.advance(100)
  t.ok(PURGE_ANNOTATION in (api.get(name)!.metadata.annotations ?? {}), 'purge asked for')

  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCachePurge', message: '', startTime: new Date().toISOString() })
  t.same(reconciler.plan(IMAGE), { kind: 'none' }, 'not deleted while purging')
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCachePurge', message: '', startTime: new Date().toISOString() }, [
    PURGE_ANNOTATION,
  ])
  t.same(reconciler.plan(IMAGE), { kind: 'delete' })
  queue.schedule(IMAGE)
  await clock.advance(100)
  t.notOk(api.get(name), 'deleted after the purge')
  t.same(api.violations, [])
})

t.test('an image used again while its cache is being purged gets a fresh cache once the purge ends', async (t) => {
  const { clock, api, admit, reconciler, queue } = setup({ purgeAfterMs: 1_000 })
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  api.get(imageCacheName(IMAGE))!.metadata.annotations![PURGE_ANNOTATION] = 'now'
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCachePurge', message: '', startTime: new Date().toISOString() })
  queue.forget(IMAGE)
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  t.equal(queue.stats().delayed, 1, 'waits for kube-fledged')
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCachePurge', message: '', startTime: new Date().toISOString() }, [
    PURGE_ANNOTATION,
  ])
  t.same(reconciler.plan(IMAGE), { kind: 'replace' })
  await clock.advance(5_000)
  const obj = api.get(imageCacheName(IMAGE))!
  t.equal(obj.status, undefined, 'a new object, waiting for kube-fledged')
  t.same(
    api.writes.map((w) => w.verb),
    ['create', 'delete', 'create'],
  )
  t.same(api.violations, [])
})

t.test('decide(): a cache holding another image is never touched', async (t) => {
  const other = buildImageCache('m.daocloud.io/docker.io/library/other:1', undefined, SETTINGS)
  const usage = { inUse: true, usageKnown: true, recentlyUsed: true }
  const timing = {
    now: 0,
    purgeAfterMs: 0,
    busyRetryMs: 1,
    refreshDueAt: 0,
    purgeAttempts: 0,
    maxPurgeAttempts: 3,
    purgeAnnotationGraceMs: 0,
  }
  t.same(decide(IMAGE, other, usage, SETTINGS, timing), { kind: 'foreign' })
  t.same(decide(IMAGE, undefined, { ...usage, inUse: false }, SETTINGS, timing), { kind: 'none' }, 'no cache for an unused image')
  const mine = buildImageCache(IMAGE, undefined, SETTINGS)
  t.same(decide(IMAGE, mine, { ...usage, inUse: false }, SETTINGS, timing), { kind: 'none' }, 'purging disabled (0)')
  t.same(
    decide(IMAGE, mine, { ...usage, inUse: false, usageKnown: false }, SETTINGS, { ...timing, purgeAfterMs: 1 }),
    { kind: 'none' },
    'no purge decision while the Pod list is unknown',
  )
})

t.test('the write counter sees every verb', async (t) => {
  const { clock, admit, writeCount } = setup()
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  t.equal(await writeCount('create'), 1)
})

t.test('an image used again after it was marked unused loses the mark, on the same object', async (t) => {
  const { clock, api, admit, usage, reconciler } = setup({ purgeAfterMs: 3_600_000 })
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = imageCacheName(IMAGE)
  const uid = api.get(name)!.metadata.uid
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCacheCreate', message: '', startTime: new Date(clock.now()).toISOString() })
  await clock.advance(200_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.same(await reconciler.reconcile(IMAGE), { kind: 'done' })
  t.equal(api.get(name)!.metadata.annotations?.['mirrorhook.io/unused-since'], new Date(clock.now()).toISOString(), 'marked unused')

  // A Pod runs it again; kube-fledged is busy with the cache at first.
  usage.sweepDone(clock.now(), new Map([[IMAGE, 'nginx:1.25']]), clock.now())
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCacheRefresh', message: '', startTime: new Date(clock.now()).toISOString() })
  t.same(reconciler.plan(IMAGE), { kind: 'wait', ms: 5_000 }, 'not while kube-fledged processes it')
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCacheRefresh', message: '', startTime: new Date(clock.now()).toISOString() })
  t.same(reconciler.plan(IMAGE), { kind: 'mark-used' })
  t.same(await reconciler.reconcile(IMAGE), { kind: 'done' })
  const after = api.get(name)!
  t.notOk('mirrorhook.io/unused-since' in (after.metadata.annotations ?? {}), 'the unused mark is removed')
  t.equal(after.metadata.uid, uid, 'the same ImageCache: nothing re-pulled')
  t.same(reconciler.plan(IMAGE), { kind: 'none' })
  t.same(api.violations, [])
})

t.test('a failed purge is retried with a growing backoff, then the cache is deleted after three failed attempts', async (t) => {
  const purgeAfterMs = 1_000
  const { clock, api, admit, usage, reconciler } = setup({ purgeAfterMs })
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = imageCacheName(IMAGE)
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCacheCreate', message: '', startTime: new Date(clock.now()).toISOString() })
  const unused = async () => {
    usage.sweepDone(clock.now(), new Map(), clock.now())
    return reconciler.reconcile(IMAGE)
  }
  await clock.advance(200_000)
  t.same(await unused(), { kind: 'done' }, 'marked unused')
  await clock.advance(purgeAfterMs)
  t.same(reconciler.plan(IMAGE), { kind: 'purge' })
  t.same(await unused(), { kind: 'done' })
  const purgeFailed = () =>
    api.setStatus(
      IMAGE,
      {
        status: 'Failed',
        reason: 'ImageCachePurge',
        message: 'Image purge failed for some images',
        startTime: new Date(clock.now() - 1_000).toISOString(),
        completionTime: new Date(clock.now()).toISOString(),
      },
      ['kubefledged.io/purge-imagecache'],
    )
  const purgeAsked = () => 'kubefledged.io/purge-imagecache' in (api.get(name)!.metadata.annotations ?? {})
  t.ok(purgeAsked(), 'purge asked for')

  // Failed purges: retried after 60 s, 120 s, 240 s (refreshBackoffMs 60 s, doubling).
  for (const [attempt, waitMs] of [
    [1, 60_000],
    [2, 120_000],
    [3, 240_000],
  ] as const) {
    purgeFailed()
    usage.sweepDone(clock.now(), new Map(), clock.now())
    t.same(reconciler.plan(IMAGE), { kind: 'wait', ms: waitMs }, `attempt ${attempt}: waits ${waitMs} ms`)
    await clock.advance(waitMs - 1)
    usage.sweepDone(clock.now(), new Map(), clock.now())
    t.same(reconciler.plan(IMAGE), { kind: 'wait', ms: 1 }, `attempt ${attempt}: not a millisecond early`)
    await clock.advance(1)
    t.same(await unused(), { kind: 'done' })
    t.ok(purgeAsked(), `attempt ${attempt}: purge asked for again`)
  }
  purgeFailed()
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.same(reconciler.plan(IMAGE), { kind: 'delete' }, 'three failed retries: give up and delete')
  t.same(await reconciler.reconcile(IMAGE), { kind: 'done' })
  t.notOk(api.get(name), 'deleted')
  t.same(
    api.writes.map((w) => w.verb),
    ['create', 'annotate', 'annotate', 'annotate', 'annotate', 'annotate', 'delete'],
  )
  t.same(api.violations, [])
})

t.test('the refresh backoff of a failed cache doubles up to refreshBackoffMaxMs and stays there', async (t) => {
  const { clock, api, admit, usage, reconciler } = setup()
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const failed = () =>
    api.setStatus(
      IMAGE,
      {
        status: 'Failed',
        reason: 'ImageCacheRefresh',
        message: 'Image pull failed for some images. Please see "failures" section',
        failures: { [IMAGE]: [{ node: 'node-b', reason: 'ErrImagePull', message: 'i/o timeout' }] },
        startTime: new Date(clock.now() - 1_000).toISOString(),
        completionTime: new Date(clock.now()).toISOString(),
      },
      ['kubefledged.io/refresh-imagecache'],
    )
  // refreshBackoffMs 60 s, refreshBackoffMaxMs 600 s.
  for (const waitMs of [60_000, 120_000, 240_000, 480_000, 600_000, 600_000]) {
    failed()
    usage.sweepDone(clock.now(), new Map([[IMAGE, 'nginx:1.25']]), clock.now())
    t.same(reconciler.plan(IMAGE), { kind: 'wait', ms: waitMs }, `waits ${waitMs} ms`)
    await clock.advance(waitMs)
    usage.sweepDone(clock.now(), new Map([[IMAGE, 'nginx:1.25']]), clock.now())
    t.same(await reconciler.reconcile(IMAGE), { kind: 'done' })
    t.ok('kubefledged.io/refresh-imagecache' in (api.get(imageCacheName(IMAGE))!.metadata.annotations ?? {}), 'refresh asked for')
  }
  t.same(api.violations, [])
})

t.test('write results: conflicts and vanished objects are looked at again in a second, never counted as failures', async (t) => {
  const purgeAfterMs = 1_000
  const { clock, api, admit, usage, reconciler } = setup({ purgeAfterMs })
  const name = imageCacheName(IMAGE)
  // create: a 409 that is not AlreadyExists (a conflict) → later.
  api.failures.push(new ApiError(409, 'conflict', 'Conflict'))
  usage.touch(IMAGE, 'nginx:1.25', clock.now())
  t.same(await reconciler.reconcile(IMAGE), { kind: 'later', afterMs: 1_000 }, 'create conflict')
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  t.ok(api.get(name), 'created on the next try')
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCacheCreate', message: '', startTime: new Date(clock.now()).toISOString() })
  await clock.advance(200_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.same(reconciler.plan(IMAGE), { kind: 'mark-unused' })
  // annotate: 409 Conflict, 404 gone → later; a permanent refusal → failed.
  api.failures.push(new ApiError(409, 'the object has been modified', 'Conflict'))
  t.same(await reconciler.reconcile(IMAGE), { kind: 'later', afterMs: 1_000 }, 'annotate conflict')
  api.failures.push(new ApiError(404, 'not found', 'NotFound'))
  t.same(await reconciler.reconcile(IMAGE), { kind: 'later', afterMs: 1_000 }, 'annotate on a vanished object')
  api.failures.push(new ApiError(403, 'forbidden', 'Forbidden'))
  t.same(await reconciler.reconcile(IMAGE), { kind: 'failed' }, 'annotate refused')
  api.failures.push(new ApiError(503, 'unavailable', 'ServiceUnavailable', 2_000))
  t.same(await reconciler.reconcile(IMAGE), { kind: 'retry', afterMs: 2_000 }, 'annotate transient')
  t.same(await reconciler.reconcile(IMAGE), { kind: 'done' })
  t.equal(api.get(name)!.metadata.annotations?.['mirrorhook.io/unused-since'], new Date(clock.now()).toISOString())

  // Purged: delete; a 404 there means someone else deleted it (done), a conflict means look again.
  await clock.advance(purgeAfterMs)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.same(await reconciler.reconcile(IMAGE), { kind: 'done' }, 'purge asked for')
  t.equal(api.get(name)!.metadata.annotations?.['kubefledged.io/purge-imagecache'], new Date(clock.now()).toISOString())
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCachePurge', message: '', startTime: new Date(clock.now()).toISOString() }, [
    'kubefledged.io/purge-imagecache',
  ])
  t.same(reconciler.plan(IMAGE), { kind: 'delete' })
  api.failures.push(new ApiError(409, 'precondition failed', 'Conflict'))
  t.same(await reconciler.reconcile(IMAGE), { kind: 'later', afterMs: 1_000 }, 'delete conflict')
  api.failures.push(new ApiError(404, 'not found', 'NotFound'))
  t.same(await reconciler.reconcile(IMAGE), { kind: 'done' }, 'already deleted by someone else')
  t.same(await reconciler.reconcile(IMAGE), { kind: 'done' })
  t.notOk(api.get(name), 'deleted')
  t.same(api.violations, [])
})

t.test('replace: a conflicting delete is looked at again; not ready means blocked; a foreign cache fails without a write', async (t) => {
  const { clock, api, admit, reconciler, missing } = setup({ settings: SETTINGS })
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const moved = new Reconciler({
    api,
    store: api,
    usage: { usage: () => ({ inUse: true, usageKnown: true, recentlyUsed: true }), original: () => 'nginx:1.25' },
    settings: { ...SETTINGS, nodeSelector: { pool: 'batch' } },
    limiter: new TokenBucket(1000, 1000, clock),
    clock,
    metrics: new PrepullMetrics(new Registry()),
    logger: pino({ level: 'silent' }),
    purgeAfterMs: 0,
    refreshBackoffMs: 1,
    refreshBackoffMaxMs: 1,
    ready: () => true,
    onMissing: () => undefined,
  })
  api.failures.push(new ApiError(409, 'precondition failed', 'Conflict'))
  t.same(await moved.reconcile(IMAGE), { kind: 'later', afterMs: 1_000 })
  t.equal(api.get(imageCacheName(IMAGE))!.spec.cacheSpec[0]!.nodeSelector?.pool, 'apps', 'not replaced yet')

  missing.push('no CRD')
  const writes = api.writes.length
  t.same(await reconciler.reconcile(IMAGE), { kind: 'blocked' }, 'not ready: blocked')
  t.equal(api.writes.length, writes, 'no write while blocked')
  missing.length = 0

  api.get(imageCacheName(IMAGE))!.spec.cacheSpec[0]!.images = ['m.daocloud.io/docker.io/library/other:1']
  t.same(await reconciler.reconcile(IMAGE), { kind: 'failed' }, 'a cache holding another image')
  t.equal(api.writes.length, writes, 'left alone')
})

t.test('a finished purge whose annotation kube-fledged keeps counts as done after a minute', async (t) => {
  const cache = (completedAt: number): ImageCache => {
    const c = buildImageCache(IMAGE, undefined, SETTINGS)
    c.metadata.annotations = { ...c.metadata.annotations, 'kubefledged.io/purge-imagecache': 'x' }
    c.status = {
      status: 'Succeeded',
      reason: 'ImageCachePurge',
      message: '',
      startTime: new Date(completedAt - 1_000).toISOString(),
      completionTime: new Date(completedAt).toISOString(),
    }
    return c
  }
  const T = 1_700_000_000_000
  const timing = {
    now: T,
    purgeAfterMs: 1,
    busyRetryMs: 5_000,
    refreshDueAt: 0,
    purgeAttempts: 0,
    maxPurgeAttempts: 3,
    purgeAnnotationGraceMs: 60_000,
  }
  const unused = { inUse: false, usageKnown: true, recentlyUsed: false }
  const used = { inUse: true, usageKnown: true, recentlyUsed: true }
  t.same(decide(IMAGE, cache(T), unused, SETTINGS, timing), { kind: 'none' }, 'just finished: wait for kube-fledged')
  t.same(decide(IMAGE, cache(T - 59_999), unused, SETTINGS, timing), { kind: 'none' }, 'within the minute')
  t.same(decide(IMAGE, cache(T - 60_000), unused, SETTINGS, timing), { kind: 'delete' }, 'a minute later: done')
  t.same(decide(IMAGE, cache(T - 59_999), used, SETTINGS, timing), { kind: 'wait', ms: 5_000 }, 'in use again: wait for it')
  t.same(decide(IMAGE, cache(T - 60_000), used, SETTINGS, timing), { kind: 'replace' }, 'in use again, a minute later: a new cache')
  const noTime = cache(T - 120_000)
  delete noTime.status!.completionTime
  t.same(decide(IMAGE, noTime, unused, SETTINGS, timing), { kind: 'none' }, 'no completion time: never assumed done')
  const processing = cache(T - 120_000)
  processing.status!.status = 'Processing'
  t.same(decide(IMAGE, processing, used, SETTINGS, timing), { kind: 'wait', ms: 5_000 }, 'processing: wait')
})
