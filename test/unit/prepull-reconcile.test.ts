// The reconcile decisions and writes against an in-memory ImageCache API that
// enforces what the API server and kube-fledged enforce, driven by a manual clock.
import t from 'tap'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { ManualClock } from '../support/clock.js'
import {
  buildImageCache,
  type CacheSettings,
  describeFailure,
  type ImageCache,
  imagesOf,
  imageStateOf,
  viewOf,
} from '../../server/prepull/imagecache.js'
import { UsageTracker } from '../../server/prepull/usage.js'
import { ApiError } from '../../server/kube/errors.js'
import type { ImageCacheApi } from '../../server/prepull/kubeapi.js'
import { PrepullMetrics } from '../../server/prepull/metrics.js'
import { TokenBucket, WorkQueue } from '../../server/prepull/queue.js'
import { batchKey, decideBatch, decidePlacement, PLACE_KEY, Reconciler, type ReconcilerOptions } from '../../server/prepull/reconciler.js'

// The annotation names, written out: a change of any of them is a change of the objects' format.
const ORIGINALS_ANNOTATION = 'mirrorhook.io/originals'
const UNUSED_SINCE_ANNOTATION = 'mirrorhook.io/unused-since'
const REFRESH_ANNOTATION = 'kubefledged.io/refresh-imagecache'
const PURGE_ANNOTATION = 'kubefledged.io/purge-imagecache'
const NGINX_ORIGINALS = '{"m.daocloud.io/docker.io/library/nginx:1.25":"nginx:1.25"}'

interface Write {
  verb: 'create' | 'update' | 'annotate' | 'delete'
  name: string
  at: number
}

// The API server's optimistic concurrency, kube-fledged's validating webhook and its rules for clients.
class FakeImageCacheApi implements ImageCacheApi {
  readonly objects = new Map<string, ImageCache>()
  readonly writes: Write[] = []
  readonly violations: string[] = []
  readonly failures: ApiError[] = []
  // Failures that come after the write was made (the answer is lost).
  readonly lostAnswers: ApiError[] = []
  private rv = 1
  private uid = 1

  constructor(private readonly clock: ManualClock) {}

  private fail(): void {
    const f = this.failures.shift()
    if (f) throw f
  }

  private lost(): void {
    const f = this.lostAnswers.shift()
    if (f) throw f
  }

  private validate(cache: ImageCache): void {
    const lists = cache.spec.cacheSpec
    if (lists.some((l) => l.images.length === 0 || new Set(l.images).size !== l.images.length)) {
      throw new ApiError(400, 'kube-fledged webhook: empty or duplicate image list')
    }
  }

  async create(cache: ImageCache): Promise<void> {
    const name = cache.metadata.name!
    this.writes.push({ verb: 'create', name, at: this.clock.now() })
    this.fail()
    if (cache.status) this.violations.push(`${name}: created with a status (kube-fledged would ignore it)`)
    this.validate(cache)
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
    this.lost()
  }

  private patched(name: string, resourceVersion: string, what: string): ImageCache {
    const obj = this.objects.get(name)
    if (!obj) throw new ApiError(404, `${name} not found`, 'NotFound')
    if (obj.metadata.resourceVersion !== resourceVersion) throw new ApiError(409, 'the object has been modified', 'Conflict')
    if (obj.status?.status === 'Processing') this.violations.push(`${name}: ${what} while Processing`)
    return obj
  }

  private mergeAnnotations(obj: ImageCache, annotations: Record<string, string | null>): void {
    const merged = { ...(obj.metadata.annotations ?? {}) }
    for (const [k, v] of Object.entries(annotations)) {
      if (v === null) delete merged[k]
      else merged[k] = v
    }
    obj.metadata.annotations = merged
  }

  async annotate(name: string, annotations: Record<string, string | null>, resourceVersion: string): Promise<void> {
    this.writes.push({ verb: 'annotate', name, at: this.clock.now() })
    this.fail()
    const obj = this.patched(name, resourceVersion, 'annotated')
    this.mergeAnnotations(obj, annotations)
    obj.metadata.resourceVersion = String(this.rv++)
  }

  async update(
    name: string,
    cacheSpec: ImageCache['spec']['cacheSpec'],
    annotations: Record<string, string | null>,
    resourceVersion: string,
  ): Promise<void> {
    this.writes.push({ verb: 'update', name, at: this.clock.now() })
    this.fail()
    const obj = this.patched(name, resourceVersion, 'spec changed')
    const next = { ...obj, spec: { ...obj.spec, cacheSpec: structuredClone(cacheSpec) } }
    this.validate(next)
    // kube-fledged's webhook on UPDATE: the number of lists and every nodeSelector stay.
    if (cacheSpec.length !== obj.spec.cacheSpec.length) throw new ApiError(400, 'kube-fledged webhook: number of cacheSpec lists changed')
    cacheSpec.forEach((l, i) => {
      if (JSON.stringify(l.nodeSelector ?? {}) !== JSON.stringify(obj.spec.cacheSpec[i]!.nodeSelector ?? {})) {
        throw new ApiError(400, 'kube-fledged webhook: nodeSelector changed')
      }
    })
    obj.spec = next.spec
    this.mergeAnnotations(obj, annotations)
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

  // The store the reconciler reads (what a watch would show at once).
  get(name: string): ImageCache | undefined {
    return this.objects.get(name)
  }

  list_(): ImageCache[] {
    return [...this.objects.values()]
  }

  batchOf(image: string): string | undefined {
    for (const [name, o] of this.objects) if (o.spec.cacheSpec[0]?.images.includes(image)) return name
    return undefined
  }

  // The one batch holding an image.
  nameOf(image: string): string {
    const name = this.batchOf(image)
    if (!name) throw new Error(`no batch holds ${image}`)
    return name
  }

  // kube-fledged's side: a full update with a new status (and annotation removal).
  setStatus(image: string, status: ImageCache['status'], dropAnnotations: string[] = []): void {
    const obj = this.objects.get(this.nameOf(image))!
    obj.status = status
    for (const a of dropAnnotations) delete obj.metadata.annotations?.[a]
    obj.metadata.resourceVersion = String(this.rv++)
  }
}

const SETTINGS: CacheSettings = { namespace: 'kube-fledged', nodeSelector: { pool: 'apps' }, imagePullSecrets: ['mirror-pull'] }
const IMAGE = 'm.daocloud.io/docker.io/library/nginx:1.25'
const ok = (at: number, reason = 'ImageCacheCreate') => ({
  status: 'Succeeded',
  reason,
  message: 'All requested images pulled succesfully to respective nodes',
  startTime: new Date(at - 1_000).toISOString(),
  completionTime: new Date(at).toISOString(),
})

type Options = {
  purgeAfterMs?: number
  writesPerSecond?: number
  burst?: number
  settings?: CacheSettings
  imagesPerCache?: number
  batchWaitMs?: number
}

function setup(options: Options = {}) {
  const clock = new ManualClock()
  const api = new FakeImageCacheApi(clock)
  const registry = new Registry()
  const metrics = new PrepullMetrics(registry)
  const sweepMs = 60_000
  const usage = new UsageTracker(options.purgeAfterMs ?? 0, sweepMs)
  const missing: string[] = []
  let leader = true
  let names = 1
  const store = { get: (n: string) => api.get(n), list: () => api.list_(), batchOf: (i: string) => api.batchOf(i) }
  const base: ReconcilerOptions = {
    api,
    store,
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
    imagesPerCache: options.imagesPerCache ?? 100,
    batchWaitMs: options.batchWaitMs ?? 600_000,
    ready: () => missing.length === 0 && leader,
    schedule: (key, delayMs) => void queue.schedule(key, delayMs),
    onMissing: (e) => missing.push(e.message),
    // Distinct batch names, in a known order.
    random: () => (names++ % 997) / 997,
  }
  const reconciler = new Reconciler(base)
  const queue: WorkQueue = new WorkQueue({
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
    handle: (key) => reconciler.reconcile(key),
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
  // Another reconciler on the same API and usage, with other settings.
  const other = (settings: CacheSettings, extra: Partial<ReconcilerOptions> = {}) =>
    new Reconciler({
      ...base,
      settings,
      metrics: new PrepullMetrics(new Registry()),
      refreshBackoffMs: 1,
      refreshBackoffMaxMs: 1,
      ...extra,
    })
  return {
    clock,
    api,
    queue,
    usage,
    reconciler,
    admit,
    registry,
    missing,
    writeCount,
    other,
    setLeader: (v: boolean) => (leader = v),
  }
}

t.test('admitted images become one ImageCache of many images that kube-fledged accepts', async (t) => {
  const { clock, api, admit } = setup()
  const redis = 'm.daocloud.io/docker.io/library/redis:7'
  admit(IMAGE, 'nginx:1.25')
  admit(redis, 'redis:7')
  await clock.advance(100)
  t.equal(api.objects.size, 1, 'one batch')
  const [name, obj] = [...api.objects][0]!
  // mirrorhook-<creation time in base 36>-<five base-36 digits of the random number>.
  t.equal(name, 'mirrorhook-loyw3v50-01aso')
  t.ok(`${name}-abcde-fghij`.length <= 63, "kube-fledged's Job and Pod names stay valid label values")
  t.strictSame(obj.spec, {
    cacheSpec: [{ images: [IMAGE, redis], nodeSelector: { pool: 'apps' } }],
    imagePullSecrets: [{ name: 'mirror-pull' }],
  })
  t.strictSame(obj.metadata.labels, { 'app.kubernetes.io/managed-by': 'mirrorhook' })
  t.strictSame(
    JSON.parse(obj.metadata.annotations?.[ORIGINALS_ANNOTATION] ?? ''),
    { [IMAGE]: 'nginx:1.25', [redis]: 'redis:7' },
    'why each image is there',
  )
  t.equal(obj.status, undefined, 'no status sent')
  t.strictSame(api.violations, [])
})

t.test('one writer: without the Lease nothing is written; a create whose answer was lost is retried under the same name', async (t) => {
  const { clock, api, admit, queue, setLeader } = setup()
  setLeader(false)
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(10_000)
  t.equal(api.writes.length, 0, 'not the writer: nothing sent')
  t.equal(queue.isBlocked, true, 'the queue waits for the Lease')
  t.equal(queue.size, 1, 'the image kept')
  setLeader(true)
  // The create goes through, its answer does not.
  api.lostAnswers.push(new ApiError(0, 'socket hang up'))
  queue.resume()
  await clock.advance(100)
  t.equal(api.objects.size, 1)
  await clock.advance(60_000)
  t.strictSame(
    api.writes.map((w) => [w.verb, w.name]),
    [
      ['create', [...api.objects.keys()][0]],
      ['create', [...api.objects.keys()][0]],
    ],
    'the retry keeps the name: AlreadyExists is success',
  )
  t.equal(api.objects.size, 1, 'the image is in one batch, never two')
  t.equal(queue.idle, true)
})

t.test('429 with Retry-After, 5xx and no answer are retried with backoff; nothing is lost', async (t) => {
  const { clock, api, admit, queue } = setup({ imagesPerCache: 1, batchWaitMs: 0 })
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
  await clock.advance(120_000)
  t.strictSame([...api.objects.values()].flatMap((o) => imagesOf(o)!).sort(), images.sort(), 'every image written, once')
  t.equal(queue.stats().retries, 3)
  t.equal(queue.idle, true)
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

t.test('a 404 on create (no CRD) blocks the queue without losing the images', async (t) => {
  const { clock, api, admit, queue, missing, reconciler } = setup()
  api.failures.push(new ApiError(404, 'the server could not find the requested resource', 'NotFound'))
  admit(IMAGE, 'nginx:1.25')
  admit('m.daocloud.io/docker.io/library/redis:7', 'redis:7')
  await clock.advance(100)
  t.equal(missing.length, 1)
  t.equal(queue.isBlocked, true)
  t.equal(queue.size, 1, 'the placement waits')
  t.equal(reconciler.waitingCount, 2, 'both images wait for it')
  missing.length = 0
  queue.resume()
  await clock.advance(100)
  t.equal(api.objects.size, 1)
  t.strictSame(imagesOf([...api.objects.values()][0]!), [IMAGE, 'm.daocloud.io/docker.io/library/redis:7'])
})

t.test('writes are rate-limited', async (t) => {
  // One image per batch and no wait between batches, so that each image is one write.
  const { clock, api, admit } = setup({ writesPerSecond: 10, burst: 2, imagesPerCache: 1, batchWaitMs: 0 })
  for (let i = 0; i < 12; i++) admit(`m.daocloud.io/docker.io/library/app${i}:1`, `app${i}:1`)
  await clock.advance(60_000)
  t.equal(api.objects.size, 12)
  const times = api.writes.map((w) => w.at).sort((a, b) => a - b)
  const first = times[0]!
  // A burst of two, then one every 100 ms (or later: the next batch is placed once the previous is seen).
  t.equal(times.length, 12)
  t.strictSame(
    times.slice(0, 3).map((x) => x - first),
    [0, 0, 100],
  )
  t.strictSame(
    times.map((x) => x - first),
    [0, 0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000],
    'never faster than the rate after the burst',
  )
})

t.test('one batch at a time: new images wait while kube-fledged has not finished the last one, at most batchWaitMs', async (t) => {
  const { clock, api, admit, queue } = setup({ batchWaitMs: 600_000 })
  const redis = 'm.daocloud.io/docker.io/library/redis:7'
  const pg = 'm.daocloud.io/docker.io/library/postgres:17'
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  t.equal(api.objects.size, 1)
  admit(redis, 'redis:7')
  admit(pg, 'postgres:17')
  await clock.advance(10_000)
  t.equal(api.objects.size, 1, 'the first batch was not taken by kube-fledged yet: the new images wait')
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCacheCreate', message: '', startTime: new Date(clock.now()).toISOString() })
  await clock.advance(10_000)
  t.equal(api.objects.size, 1, 'nor while it is Processing')
  api.setStatus(IMAGE, ok(clock.now()))
  await clock.advance(5_000)
  t.equal(api.objects.size, 2, 'a second batch once the first is done')
  const second = [...api.objects.values()][1]!
  t.strictSame(imagesOf(second), [redis, pg], 'with every image that waited')
  t.strictSame(imagesOf(api.get(api.nameOf(IMAGE))!), [IMAGE], 'nothing added to the first one')
  // kube-fledged never takes the second batch: a third waits batchWaitMs, then goes anyway.
  const mysql = 'm.daocloud.io/docker.io/library/mysql:8'
  admit(mysql, 'mysql:8')
  await clock.advance(590_000)
  t.equal(api.objects.size, 2)
  await clock.advance(15_000)
  t.equal(api.objects.size, 3)
  t.strictSame(api.violations, [])
  t.equal(queue.idle, true)
})

t.test('decidePlacement(): at most imagesPerCache images per new batch; busy batches and their age', async (t) => {
  const T = 1_700_000_000_000
  const timing = { now: T, busyRetryMs: 5_000, batchWaitMs: 600_000, imagesPerCache: 2 }
  const untouched = buildImageCache('mirrorhook-a', [IMAGE], new Map(), SETTINGS)
  untouched.metadata.creationTimestamp = new Date(T - 1_000).toISOString()
  t.strictSame(decidePlacement([], [], timing), { kind: 'none' })
  t.strictSame(decidePlacement(['a', 'b', 'c'], [], timing), { kind: 'create', images: ['a', 'b'] })
  t.strictSame(decidePlacement(['a'], [untouched], timing), { kind: 'wait', ms: 5_000 })
  t.strictSame(decidePlacement(['a'], [untouched], { ...timing, now: T + 597_000 }), { kind: 'wait', ms: 2_000 }, 'not past batchWaitMs')
  t.strictSame(decidePlacement(['a'], [untouched], { ...timing, now: T + 599_000 }), { kind: 'create', images: ['a'] }, 'then anyway')
  const done = { ...untouched, status: ok(T) }
  t.strictSame(decidePlacement(['a'], [done], timing), { kind: 'create', images: ['a'] }, 'a finished batch is idle')
  const refresh = structuredClone(done)
  refresh.metadata.annotations![REFRESH_ANNOTATION] = new Date(T - 10).toISOString()
  t.strictSame(decidePlacement(['a'], [refresh], timing), { kind: 'wait', ms: 5_000 }, 'a refresh asked for and not taken yet')
  // A purge of a finished batch no Pod uses, asked for and not taken yet: new batches wait for it,
  // at most batchWaitMs from the request, and not at all once kube-fledged has purged.
  const purge = structuredClone(done)
  purge.metadata.annotations![PURGE_ANNOTATION] = new Date(T - 10).toISOString()
  t.strictSame(decidePlacement(['a'], [purge], timing), { kind: 'wait', ms: 5_000 }, 'a purge asked for and not taken yet')
  t.strictSame(decidePlacement(['a'], [purge], { ...timing, now: T + 599_980 }), { kind: 'wait', ms: 10 }, 'not past batchWaitMs')
  t.strictSame(decidePlacement(['a'], [purge], { ...timing, now: T + 599_990 }), { kind: 'create', images: ['a'] }, 'then anyway')
  const purged = structuredClone(purge)
  purged.status = ok(T + 100, 'ImageCachePurge')
  delete purged.metadata.annotations![PURGE_ANNOTATION]
  t.strictSame(decidePlacement(['a'], [purged], { ...timing, now: T + 200 }), { kind: 'create', images: ['a'] }, 'a purged batch is idle')
})

t.test('a failed batch: a refresh after the backoff, never while processing, doubling', async (t) => {
  const { clock, api, admit, reconciler, queue } = setup()
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = api.nameOf(IMAGE)
  const failed = (at: number) => ({
    status: 'Failed',
    reason: 'ImageCacheCreate',
    message: 'Image pull failed for some images. Please see "failures" section',
    failures: { [IMAGE]: [{ node: 'node-b', reason: 'ErrImagePull', message: 'not found' }] },
    startTime: new Date(at - 1000).toISOString(),
    completionTime: new Date(at).toISOString(),
  })
  api.setStatus(IMAGE, failed(clock.now()))
  t.strictSame(reconciler.plan(batchKey(name)), { kind: 'wait', ms: 60_000 })
  queue.schedule(batchKey(name), 60_000)
  await clock.advance(59_999)
  t.strictSame(api.get(name)!.metadata.annotations, { [ORIGINALS_ANNOTATION]: NGINX_ORIGINALS })
  await clock.advance(1)
  t.strictSame(
    api.get(name)!.metadata.annotations,
    { [ORIGINALS_ANNOTATION]: NGINX_ORIGINALS, [REFRESH_ANNOTATION]: '2023-11-14T22:14:20.100Z' },
    'refresh asked for',
  )

  // kube-fledged picks it up: Processing, annotation still there. Nothing may be sent now.
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCacheRefresh', message: '', startTime: new Date(clock.now()).toISOString() })
  t.strictSame(reconciler.plan(batchKey(name)), { kind: 'none' })
  // Fails again; the annotation is removed by kube-fledged.
  api.setStatus(IMAGE, failed(clock.now()), [REFRESH_ANNOTATION])
  t.strictSame(reconciler.plan(batchKey(name)), { kind: 'wait', ms: 120_000 }, 'the second wait is twice as long')
  t.strictSame(reconciler.plan(IMAGE), { kind: 'wait', ms: 120_000 }, 'an image key acts for its batch')
  api.setStatus(IMAGE, { ...failed(clock.now()), status: 'Succeeded', failures: {} })
  reconciler.resetAttempts(name)
  t.strictSame(reconciler.plan(batchKey(name)), { kind: 'none' }, 'cached: nothing to do')
  t.strictSame(api.violations, [])
})

t.test('per image inside a batch: failed on which nodes, the others cached; every terminal status for what it is', async (t) => {
  const a = 'm.daocloud.io/docker.io/library/a:1'
  const b = 'm.daocloud.io/docker.io/library/b:1'
  const cache = buildImageCache('mirrorhook-x', [a, b], new Map(), SETTINGS)
  const T = 1_700_000_000_000
  const at = (status: ImageCache['status']) => viewOf({ ...cache, status })
  t.strictSame(imageStateOf(viewOf(cache), a), { state: 'pending', failed: [] }, 'no status yet')
  const failed = at({
    status: 'Failed',
    reason: 'ImageCacheCreate',
    failures: { [b]: [{ node: 'n2', reason: '', message: '' }] },
    startTime: new Date(T).toISOString(),
  })
  t.strictSame(imageStateOf(failed, a), { state: 'cached', failed: [] }, 'the image that did not fail is on every node')
  t.strictSame(imageStateOf(failed, b), { state: 'failed', failed: [{ node: 'n2', reason: '', message: '' }] })
  t.strictSame(
    describeFailure({ node: 'n2', reason: '', message: '' }),
    { node: 'n2', reason: 'JobExpired', message: 'no result before the pull deadline (kube-fledged gave no reason)' },
    'an empty reason (a lost completion) is spelled out',
  )
  t.strictSame(imageStateOf(at({ status: 'NoImagesPulledOrDeleted', reason: 'ImageCacheCreate' }), a), { state: 'no-nodes', failed: [] })
  t.strictSame(imageStateOf(at({ status: 'Aborted', reason: 'ImagePullAborted' }), a), { state: 'aborted', failed: [] })
  t.strictSame(imageStateOf(at({ status: 'Unknown', reason: 'ImagePullStatusUnknown' }), b), { state: 'unknown', failed: [] })
  t.strictSame(
    imageStateOf(at({ status: 'Failed', reason: 'CacheSpecValidationFailed' }), a),
    { state: 'failed', failed: [] },
    'no failures named: all',
  )
  t.strictSame(imageStateOf(at({ status: 'Processing', reason: 'ImageCacheCreate' }), a), { state: 'pending', failed: [] })
  t.strictSame(imageStateOf(at(ok(T)), b), { state: 'cached', failed: [] })
  // Retried with backoff like a failure while the images are in use: nodes may appear, kube-fledged may come back.
  const used = { inUse: true, usageKnown: true, recentlyUsed: true }
  const timing = {
    now: T,
    purgeAfterMs: 0,
    busyRetryMs: 1,
    refreshDueAt: T,
    purgeAttempts: 0,
    maxPurgeAttempts: 3,
    purgeAnnotationGraceMs: 0,
  }
  for (const status of ['NoImagesPulledOrDeleted', 'Aborted', 'Unknown']) {
    t.strictSame(
      decideBatch({ ...cache, status: { status } }, () => used, SETTINGS, timing),
      { kind: 'refresh' },
      status,
    )
  }
  t.strictSame(
    decideBatch(
      { ...cache, status: { status: 'Failed', failures: { [b]: [{ node: 'n2', reason: '', message: '' }] } } },
      (i) => ({ ...used, inUse: i === a }),
      SETTINGS,
      timing,
    ),
    { kind: 'none' },
    'only the failing image is not in use: no refresh',
  )
})

t.test(
  'a configuration change: the batch is deleted, only when kube-fledged is not processing it, and its images go into a new one',
  async (t) => {
    const { clock, api, admit, reconciler, other } = setup()
    admit(IMAGE, 'nginx:1.25')
    await clock.advance(100)
    const before = api.get(api.nameOf(IMAGE))!.metadata.uid
    api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCacheCreate', message: '', startTime: new Date().toISOString() })
    const rec = other({ ...SETTINGS, nodeSelector: { pool: 'batch' } })
    t.strictSame(await rec.reconcile(IMAGE), { kind: 'later', afterMs: 5_000 }, 'waits while Processing')
    api.setStatus(IMAGE, ok(clock.now()))
    t.strictSame(await rec.reconcile(IMAGE), { kind: 'done' }, 'deleted')
    t.equal(api.objects.size, 0)
    t.strictSame(rec.plan(IMAGE), { kind: 'place' }, 'in use, in no batch')
    t.strictSame(await rec.reconcile(IMAGE), { kind: 'done' })
    t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'done' })
    const after = api.get(api.nameOf(IMAGE))!
    t.not(after.metadata.uid, before, 'a new object: the nodeSelector of an existing one is never changed')
    t.strictSame(after.spec.cacheSpec, [{ images: [IMAGE], nodeSelector: { pool: 'batch' } }])
    t.strictSame(api.violations, [])
    t.strictSame(
      reconciler.plan(IMAGE),
      { kind: 'delete', reason: 'settings' },
      'the old configuration would delete it again: replicas should share one',
    )
  },
)

t.test('unused images: marked, purged after the configured time, deleted once the purge is done', async (t) => {
  const purgeAfterMs = 3_600_000
  const { clock, api, admit, usage, reconciler, queue } = setup({ purgeAfterMs })
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = api.nameOf(IMAGE)
  const key = batchKey(name)
  api.setStatus(IMAGE, ok(clock.now()))

  // A Pod sweep still sees it: nothing to do.
  usage.sweepDone(clock.now(), new Map([[IMAGE, 'nginx:1.25']]), clock.now())
  t.strictSame(reconciler.plan(key), { kind: 'none' })

  // The Pods are gone; a recent admission still counts for three sweep intervals.
  await clock.advance(60_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.strictSame(reconciler.plan(key), { kind: 'none' }, 'admitted a minute ago: its Pod may not be listed yet')
  await clock.advance(140_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.strictSame(
    reconciler.plan(key),
    { kind: 'annotate', annotations: { [UNUSED_SINCE_ANNOTATION]: JSON.stringify({ [IMAGE]: new Date(clock.now()).toISOString() }) } },
    'the clock starts on the object itself',
  )
  queue.schedule(key)
  await clock.advance(100)
  const since = JSON.parse(api.get(name)!.metadata.annotations?.[UNUSED_SINCE_ANNOTATION] ?? '{}')[IMAGE]
  t.equal(since, '2023-11-14T22:16:40.200Z', 'unused-since recorded on the object (survives restarts and is shared by replicas)')
  t.equal(Date.parse(since), clock.now(), 'written when the round ran')

  await clock.advance(purgeAfterMs - 1_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.strictSame(reconciler.plan(key), { kind: 'none' }, 'not unused for an hour yet')
  await clock.advance(1_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.strictSame(reconciler.plan(key), { kind: 'purge' }, 'its only image: the whole batch is purged')
  queue.schedule(key)
  await clock.advance(100)
  t.strictSame(
    api.get(name)!.metadata.annotations,
    {
      [ORIGINALS_ANNOTATION]: NGINX_ORIGINALS,
      [UNUSED_SINCE_ANNOTATION]: '{"m.daocloud.io/docker.io/library/nginx:1.25":"2023-11-14T22:16:40.200Z"}',
      [PURGE_ANNOTATION]: '2023-11-14T23:16:40.300Z',
    },
    'purge asked for',
  )

  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCachePurge', message: '', startTime: new Date().toISOString() })
  t.strictSame(reconciler.plan(key), { kind: 'none' }, 'not deleted while purging')
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCachePurge', message: '', startTime: new Date().toISOString() }, [
    PURGE_ANNOTATION,
  ])
  t.strictSame(reconciler.plan(key), { kind: 'delete', reason: 'purged' })
  queue.schedule(key)
  await clock.advance(100)
  t.equal(api.get(name), undefined, 'deleted after the purge')
  t.strictSame(api.violations, [])
})

t.test('one unused image leaves its batch by a spec change when the batch is idle; the others stay', async (t) => {
  const purgeAfterMs = 3_600_000
  const { clock, api, admit, usage, reconciler, queue } = setup({ purgeAfterMs })
  const redis = 'm.daocloud.io/docker.io/library/redis:7'
  admit(IMAGE, 'nginx:1.25')
  admit(redis, 'redis:7')
  await clock.advance(100)
  const name = api.nameOf(IMAGE)
  const key = batchKey(name)
  const uid = api.get(name)!.metadata.uid
  api.setStatus(IMAGE, ok(clock.now()))
  await clock.advance(200_000)
  usage.sweepDone(clock.now(), new Map([[redis, 'redis:7']]), clock.now())
  queue.schedule(key)
  await clock.advance(100)
  const marked = clock.now()
  t.strictSame(
    JSON.parse(api.get(name)!.metadata.annotations![UNUSED_SINCE_ANNOTATION]!),
    { [IMAGE]: new Date(marked).toISOString() },
    'only nginx marked',
  )
  await clock.advance(purgeAfterMs)
  usage.sweepDone(clock.now(), new Map([[redis, 'redis:7']]), clock.now())
  // kube-fledged is refreshing the batch (its own 15-minute cycle): nothing is sent.
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCacheRefresh', message: '', startTime: new Date(clock.now()).toISOString() })
  t.strictSame(reconciler.plan(key), { kind: 'wait', ms: 5_000 })
  queue.schedule(key)
  await clock.advance(4_000)
  t.equal(api.writes.filter((w) => w.verb === 'update').length, 0, 'not while Processing')
  api.setStatus(IMAGE, ok(clock.now(), 'ImageCacheRefresh'))
  await clock.advance(2_000)
  const after = api.get(name)!
  t.equal(after.metadata.uid, uid, 'the same batch')
  t.strictSame(
    after.spec.cacheSpec,
    [{ images: [redis], nodeSelector: { pool: 'apps' } }],
    'nginx removed: kube-fledged deletes it from the nodes',
  )
  t.strictSame(
    after.metadata.annotations,
    { [ORIGINALS_ANNOTATION]: '{"m.daocloud.io/docker.io/library/redis:7":"redis:7"}' },
    'no mark left, no purge of the batch',
  )
  t.strictSame(JSON.parse(after.metadata.annotations![ORIGINALS_ANNOTATION]!), { [redis]: 'redis:7' })
  t.strictSame(
    api.writes.map((w) => w.verb),
    ['create', 'annotate', 'update'],
  )
  t.strictSame(api.violations, [])
})

t.test('an image used again while its batch is being purged gets a new batch once the purge ends', async (t) => {
  const { clock, api, admit, reconciler, queue } = setup({ purgeAfterMs: 1_000 })
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = api.nameOf(IMAGE)
  api.get(name)!.metadata.annotations![PURGE_ANNOTATION] = 'now'
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCachePurge', message: '', startTime: new Date().toISOString() })
  queue.forget(IMAGE)
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  t.equal(queue.stats().delayed, 1, 'waits for kube-fledged')
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCachePurge', message: '', startTime: new Date().toISOString() }, [
    PURGE_ANNOTATION,
  ])
  t.strictSame(reconciler.plan(IMAGE), { kind: 'delete', reason: 'purged' })
  await clock.advance(5_000)
  t.equal(api.get(name), undefined, 'the purged batch is gone')
  await clock.advance(100)
  const obj = api.get(api.nameOf(IMAGE))!
  t.equal(obj.status, undefined, 'a new object, waiting for kube-fledged')
  t.strictSame(
    api.writes.map((w) => w.verb),
    ['create', 'delete', 'create'],
  )
  t.strictSame(api.violations, [])
})

t.test('decideBatch(): a cache not in the layout is never touched; nothing without usage or purging', async (t) => {
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
  const two = buildImageCache('mirrorhook-x', [IMAGE], new Map(), SETTINGS)
  two.spec.cacheSpec.push({ images: ['m.daocloud.io/docker.io/library/other:1'] })
  t.strictSame(
    decideBatch(two, () => usage, SETTINGS, timing),
    { kind: 'foreign' },
    'two lists: not mirrorhook’s',
  )
  const mine = buildImageCache('mirrorhook-x', [IMAGE], new Map(), SETTINGS)
  t.strictSame(
    decideBatch(mine, () => ({ ...usage, inUse: false }), SETTINGS, timing),
    { kind: 'none' },
    'purging disabled (0)',
  )
  t.strictSame(
    decideBatch(mine, () => ({ ...usage, inUse: false, usageKnown: false }), SETTINGS, { ...timing, purgeAfterMs: 1 }),
    { kind: 'none' },
    'no purge decision while the Pod list is unknown',
  )
  // The one-image layout of earlier versions is a batch of one.
  const old = buildImageCache('mirrorhook-0123456789abcdef0123456789abcdef', [IMAGE], new Map(), SETTINGS)
  old.metadata.annotations = { 'mirrorhook.io/original-image': 'nginx:1.25', [UNUSED_SINCE_ANNOTATION]: new Date(0).toISOString() }
  t.strictSame(
    decideBatch(old, () => usage, SETTINGS, timing),
    { kind: 'annotate', annotations: { [UNUSED_SINCE_ANNOTATION]: null } },
    'its plain unused mark is read',
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
  const name = api.nameOf(IMAGE)
  const uid = api.get(name)!.metadata.uid
  api.setStatus(IMAGE, ok(clock.now()))
  await clock.advance(200_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'done' })
  t.strictSame(
    JSON.parse(api.get(name)!.metadata.annotations![UNUSED_SINCE_ANNOTATION]!),
    { [IMAGE]: new Date(clock.now()).toISOString() },
    'marked unused',
  )

  // A Pod runs it again; kube-fledged is busy with the cache at first.
  usage.sweepDone(clock.now(), new Map([[IMAGE, 'nginx:1.25']]), clock.now())
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCacheRefresh', message: '', startTime: new Date(clock.now()).toISOString() })
  t.strictSame(reconciler.plan(IMAGE), { kind: 'wait', ms: 5_000 }, 'not while kube-fledged processes it')
  api.setStatus(IMAGE, ok(clock.now(), 'ImageCacheRefresh'))
  t.strictSame(reconciler.plan(IMAGE), { kind: 'annotate', annotations: { [UNUSED_SINCE_ANNOTATION]: null } })
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'done' })
  const after = api.get(name)!
  t.strictSame(after.metadata.annotations, { [ORIGINALS_ANNOTATION]: NGINX_ORIGINALS }, 'the unused mark is removed')
  t.equal(after.metadata.uid, uid, 'the same ImageCache: nothing re-pulled')
  t.strictSame(reconciler.plan(IMAGE), { kind: 'none' })
  t.strictSame(api.violations, [])
})

t.test('a failed purge is retried with a growing backoff, then the cache is deleted after three failed attempts', async (t) => {
  const purgeAfterMs = 1_000
  const { clock, api, admit, usage, reconciler } = setup({ purgeAfterMs })
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = api.nameOf(IMAGE)
  api.setStatus(IMAGE, ok(clock.now()))
  const unused = async () => {
    usage.sweepDone(clock.now(), new Map(), clock.now())
    return reconciler.reconcile(batchKey(name))
  }
  await clock.advance(200_000)
  t.strictSame(await unused(), { kind: 'done' }, 'marked unused')
  await clock.advance(purgeAfterMs)
  t.strictSame(reconciler.plan(batchKey(name)), { kind: 'purge' })
  t.strictSame(await unused(), { kind: 'done' })
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
  const purgeAsked = (at: string) => ({
    [ORIGINALS_ANNOTATION]: NGINX_ORIGINALS,
    [UNUSED_SINCE_ANNOTATION]: '{"m.daocloud.io/docker.io/library/nginx:1.25":"2023-11-14T22:16:40.100Z"}',
    'kubefledged.io/purge-imagecache': at,
  })
  t.strictSame(api.get(name)!.metadata.annotations, purgeAsked('2023-11-14T22:16:41.100Z'), 'purge asked for')

  // Failed purges: retried after 60 s, 120 s, 240 s (refreshBackoffMs 60 s, doubling).
  for (const [attempt, waitMs, askedAt] of [
    [1, 60_000, '2023-11-14T22:17:41.100Z'],
    [2, 120_000, '2023-11-14T22:19:41.100Z'],
    [3, 240_000, '2023-11-14T22:23:41.100Z'],
  ] as const) {
    purgeFailed()
    usage.sweepDone(clock.now(), new Map(), clock.now())
    t.strictSame(reconciler.plan(batchKey(name)), { kind: 'wait', ms: waitMs }, `attempt ${attempt}: waits ${waitMs} ms`)
    await clock.advance(waitMs - 1)
    usage.sweepDone(clock.now(), new Map(), clock.now())
    t.strictSame(reconciler.plan(batchKey(name)), { kind: 'wait', ms: 1 }, `attempt ${attempt}: not a millisecond early`)
    await clock.advance(1)
    t.strictSame(await unused(), { kind: 'done' })
    t.strictSame(api.get(name)!.metadata.annotations, purgeAsked(askedAt), `attempt ${attempt}: purge asked for again`)
  }
  purgeFailed()
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.strictSame(reconciler.plan(batchKey(name)), { kind: 'delete', reason: 'purge-failed' }, 'three failed retries: give up and delete')
  t.strictSame(await reconciler.reconcile(batchKey(name)), { kind: 'done' })
  t.equal(api.get(name), undefined, 'deleted')
  t.strictSame(
    api.writes.map((w) => w.verb),
    ['create', 'annotate', 'annotate', 'annotate', 'annotate', 'annotate', 'delete'],
  )
  t.strictSame(api.violations, [])
})

t.test('the refresh backoff of a failed cache doubles up to refreshBackoffMaxMs and stays there', async (t) => {
  const { clock, api, admit, usage, reconciler } = setup()
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = api.nameOf(IMAGE)
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
  for (const [waitMs, askedAt] of [
    [60_000, '2023-11-14T22:14:20.100Z'],
    [120_000, '2023-11-14T22:16:20.100Z'],
    [240_000, '2023-11-14T22:20:20.100Z'],
    [480_000, '2023-11-14T22:28:20.100Z'],
    [600_000, '2023-11-14T22:38:20.100Z'],
    [600_000, '2023-11-14T22:48:20.100Z'],
  ] as const) {
    failed()
    usage.sweepDone(clock.now(), new Map([[IMAGE, 'nginx:1.25']]), clock.now())
    t.strictSame(reconciler.plan(IMAGE), { kind: 'wait', ms: waitMs }, `waits ${waitMs} ms`)
    await clock.advance(waitMs)
    usage.sweepDone(clock.now(), new Map([[IMAGE, 'nginx:1.25']]), clock.now())
    t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'done' })
    t.strictSame(
      api.get(name)!.metadata.annotations,
      { [ORIGINALS_ANNOTATION]: NGINX_ORIGINALS, 'kubefledged.io/refresh-imagecache': askedAt },
      'refresh asked for',
    )
  }
  t.strictSame(api.violations, [])
})

t.test('write results: conflicts and vanished objects are looked at again in a second, never counted as failures', async (t) => {
  const purgeAfterMs = 1_000
  const { clock, api, admit, usage, reconciler } = setup({ purgeAfterMs })
  // create: a 409 that is not AlreadyExists (a conflict) → later.
  api.failures.push(new ApiError(409, 'conflict', 'Conflict'))
  usage.touch(IMAGE, 'nginx:1.25', clock.now())
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'done' }, 'waits for a batch')
  t.strictSame(await reconciler.reconcile(PLACE_KEY), { kind: 'later', afterMs: 1_000 }, 'create conflict')
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  t.strictSame(await reconciler.reconcile(PLACE_KEY), { kind: 'done' })
  const name = api.nameOf(IMAGE)
  t.strictSame(
    api.get(name),
    {
      apiVersion: 'kubefledged.io/v1alpha2',
      kind: 'ImageCache',
      metadata: {
        name: 'mirrorhook-loyw3v28-01aso',
        namespace: 'kube-fledged',
        labels: { 'app.kubernetes.io/managed-by': 'mirrorhook' },
        annotations: { [ORIGINALS_ANNOTATION]: NGINX_ORIGINALS },
        uid: 'uid-1',
        resourceVersion: '1',
        creationTimestamp: '2023-11-14T22:13:20.100Z',
      },
      spec: { cacheSpec: [{ images: [IMAGE], nodeSelector: { pool: 'apps' } }], imagePullSecrets: [{ name: 'mirror-pull' }] },
    },
    'created on the next try',
  )
  api.setStatus(IMAGE, ok(clock.now()))
  await clock.advance(200_000)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.strictSame(reconciler.plan(IMAGE), {
    kind: 'annotate',
    annotations: { [UNUSED_SINCE_ANNOTATION]: '{"m.daocloud.io/docker.io/library/nginx:1.25":"2023-11-14T22:16:40.100Z"}' },
  })
  // annotate: 409 Conflict, 404 gone → later; a permanent refusal → failed.
  api.failures.push(new ApiError(409, 'the object has been modified', 'Conflict'))
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'later', afterMs: 1_000 }, 'annotate conflict')
  api.failures.push(new ApiError(404, 'not found', 'NotFound'))
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'later', afterMs: 1_000 }, 'annotate on a vanished object')
  api.failures.push(new ApiError(403, 'forbidden', 'Forbidden'))
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'failed' }, 'annotate refused')
  api.failures.push(new ApiError(503, 'unavailable', 'ServiceUnavailable', 2_000))
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'retry', afterMs: 2_000 }, 'annotate transient')
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'done' })
  t.strictSame(JSON.parse(api.get(name)!.metadata.annotations![UNUSED_SINCE_ANNOTATION]!), { [IMAGE]: new Date(clock.now()).toISOString() })

  // Purged: delete; a 404 there means someone else deleted it (done), a conflict means look again.
  await clock.advance(purgeAfterMs)
  usage.sweepDone(clock.now(), new Map(), clock.now())
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'done' }, 'purge asked for')
  t.equal(api.get(name)!.metadata.annotations?.['kubefledged.io/purge-imagecache'], new Date(clock.now()).toISOString())
  api.setStatus(IMAGE, { status: 'Succeeded', reason: 'ImageCachePurge', message: '', startTime: new Date(clock.now()).toISOString() }, [
    'kubefledged.io/purge-imagecache',
  ])
  t.strictSame(reconciler.plan(IMAGE), { kind: 'delete', reason: 'purged' })
  api.failures.push(new ApiError(409, 'precondition failed', 'Conflict'))
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'later', afterMs: 1_000 }, 'delete conflict')
  api.failures.push(new ApiError(404, 'not found', 'NotFound'))
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'done' }, 'already deleted by someone else')
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'done' })
  t.equal(api.get(name), undefined, 'deleted')
  // update: the same answers (a spec change that removes an image).
  t.strictSame(api.violations, [])
})

t.test('a spec change refused or in conflict: looked at again or failed, never sent while Processing', async (t) => {
  const purgeAfterMs = 1_000
  const { clock, api, admit, usage, reconciler } = setup({ purgeAfterMs })
  const redis = 'm.daocloud.io/docker.io/library/redis:7'
  admit(IMAGE, 'nginx:1.25')
  admit(redis, 'redis:7')
  await clock.advance(100)
  const key = batchKey(api.nameOf(IMAGE))
  api.setStatus(IMAGE, ok(clock.now()))
  await clock.advance(200_000)
  usage.sweepDone(clock.now(), new Map([[redis, 'redis:7']]), clock.now())
  t.strictSame(await reconciler.reconcile(key), { kind: 'done' }, 'marked')
  await clock.advance(purgeAfterMs)
  usage.sweepDone(clock.now(), new Map([[redis, 'redis:7']]), clock.now())
  t.strictSame(reconciler.plan(key), {
    kind: 'update',
    keep: [redis],
    removed: [IMAGE],
    annotations: { [UNUSED_SINCE_ANNOTATION]: null, [ORIGINALS_ANNOTATION]: '{"m.daocloud.io/docker.io/library/redis:7":"redis:7"}' },
  })
  api.failures.push(new ApiError(409, 'the object has been modified', 'Conflict'))
  t.strictSame(await reconciler.reconcile(key), { kind: 'later', afterMs: 1_000 }, 'update conflict')
  api.failures.push(new ApiError(400, 'denied by the webhook', 'BadRequest'))
  t.strictSame(await reconciler.reconcile(key), { kind: 'failed' }, 'update refused')
  api.setStatus(IMAGE, { status: 'Processing', reason: 'ImageCacheRefresh', message: '', startTime: new Date(clock.now()).toISOString() })
  t.strictSame(await reconciler.reconcile(key), { kind: 'later', afterMs: 5_000 }, 'Processing: waits')
  api.setStatus(IMAGE, ok(clock.now(), 'ImageCacheRefresh'))
  t.strictSame(await reconciler.reconcile(key), { kind: 'done' })
  t.strictSame(imagesOf(api.get(api.nameOf(redis))!), [redis])
  t.strictSame(api.violations, [])
})

t.test('delete: a conflicting delete is looked at again; not ready means blocked; a foreign cache fails without a write', async (t) => {
  const { clock, api, admit, reconciler, missing, other } = setup({ settings: SETTINGS })
  admit(IMAGE, 'nginx:1.25')
  await clock.advance(100)
  const name = api.nameOf(IMAGE)
  api.setStatus(IMAGE, ok(clock.now()))
  const moved = other({ ...SETTINGS, nodeSelector: { pool: 'batch' } })
  api.failures.push(new ApiError(409, 'precondition failed', 'Conflict'))
  t.strictSame(await moved.reconcile(IMAGE), { kind: 'later', afterMs: 1_000 })
  t.equal(api.get(name)!.spec.cacheSpec[0]!.nodeSelector?.pool, 'apps', 'not deleted yet')

  missing.push('no CRD')
  const writes = api.writes.length
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'blocked' }, 'not ready: blocked')
  t.equal(api.writes.length, writes, 'no write while blocked')
  missing.length = 0

  api.get(name)!.spec.cacheSpec.push({ images: ['m.daocloud.io/docker.io/library/other:1'] })
  t.strictSame(await reconciler.reconcile(IMAGE), { kind: 'failed' }, 'a cache with two lists')
  t.equal(api.writes.length, writes, 'left alone')
})

t.test('a finished purge whose annotation kube-fledged keeps counts as done after a minute', async (t) => {
  const cache = (completedAt: number): ImageCache => {
    const c = buildImageCache('mirrorhook-x', [IMAGE], new Map(), SETTINGS)
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
  const unused = () => ({ inUse: false, usageKnown: true, recentlyUsed: false })
  const used = () => ({ inUse: true, usageKnown: true, recentlyUsed: true })
  t.strictSame(decideBatch(cache(T), unused, SETTINGS, timing), { kind: 'none' }, 'just finished: wait for kube-fledged')
  t.strictSame(decideBatch(cache(T - 59_999), unused, SETTINGS, timing), { kind: 'none' }, 'within the minute')
  t.strictSame(decideBatch(cache(T - 60_000), unused, SETTINGS, timing), { kind: 'delete', reason: 'purged' }, 'a minute later: done')
  t.strictSame(decideBatch(cache(T - 59_999), used, SETTINGS, timing), { kind: 'wait', ms: 5_000 }, 'in use again: wait for it')
  t.strictSame(
    decideBatch(cache(T - 60_000), used, SETTINGS, timing),
    { kind: 'delete', reason: 'purged' },
    'in use again, a minute later: deleted, then a new batch',
  )
  const noTime = cache(T - 120_000)
  delete noTime.status!.completionTime
  t.strictSame(decideBatch(noTime, unused, SETTINGS, timing), { kind: 'none' }, 'no completion time: never assumed done')
  const processing = cache(T - 120_000)
  processing.status!.status = 'Processing'
  t.strictSame(decideBatch(processing, used, SETTINGS, timing), { kind: 'wait', ms: 5_000 }, 'processing: wait')
})
