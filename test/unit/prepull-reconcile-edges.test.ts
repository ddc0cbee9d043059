// The reconciler's edges: every branch of decideBatch and decidePlacement as a table, and what each
// write sends, counts and logs, against a recording ImageCache API and a store the test moves by hand
// (so a watch that lags behind a write can be played). Time is a manual clock.
import t from 'tap'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { ManualClock } from '../support/clock.js'
import {
  buildImageCache,
  type CacheSettings,
  type ImageCache,
  ORIGINALS_ANNOTATION,
  PURGE_ANNOTATION,
  REFRESH_ANNOTATION,
  UNUSED_SINCE_ANNOTATION,
} from '../../server/prepull/imagecache.js'
import { ApiError } from '../../server/kube/errors.js'
import type { ImageCacheApi } from '../../server/prepull/kubeapi.js'
import { PrepullMetrics } from '../../server/prepull/metrics.js'
import { TokenBucket } from '../../server/prepull/queue.js'
import {
  batchKey,
  batchOfKey,
  busySince,
  decideBatch,
  decidePlacement,
  PLACE_KEY,
  Reconciler,
  type ReconcilerOptions,
  type Timing,
  type Usage,
} from '../../server/prepull/reconciler.js'

const T = 1_700_000_000_000
const iso = (ms: number) => new Date(ms).toISOString()
const SETTINGS: CacheSettings = { namespace: 'kube-fledged', nodeSelector: { pool: 'apps' }, imagePullSecrets: ['mirror-pull'] }
const A = 'm.daocloud.io/docker.io/library/a:1'
const B = 'm.daocloud.io/docker.io/library/b:1'
const USED: Usage = { inUse: true, usageKnown: true, recentlyUsed: true }
const UNUSED: Usage = { inUse: false, usageKnown: true, recentlyUsed: false }
const UNKNOWN: Usage = { inUse: false, usageKnown: false, recentlyUsed: false }
const RECENT: Usage = { inUse: false, usageKnown: true, recentlyUsed: true }
// The name batchName(T, () => 0) gives: T in base 36, a zero suffix.
const FIRST = 'mirrorhook-loyw3v28-00000'

interface Shape {
  images?: string[]
  status?: ImageCache['status']
  annotations?: Record<string, string>
  settings?: CacheSettings
  created?: number
}

function cache(name: string, s: Shape = {}): ImageCache {
  const c = buildImageCache(name, s.images ?? [A], new Map(), s.settings ?? SETTINGS)
  c.metadata.uid = `uid-${name}`
  c.metadata.resourceVersion = '7'
  if (s.created !== undefined) c.metadata.creationTimestamp = iso(s.created)
  c.metadata.annotations = { ...c.metadata.annotations, ...s.annotations }
  if (s.status) c.status = s.status
  return c
}

const succeeded = (at: number, reason = 'ImageCacheCreate') => ({
  status: 'Succeeded',
  reason,
  message: '',
  startTime: iso(at - 1_000),
  completionTime: iso(at),
})
const failedPurge = (at: number) => ({ ...succeeded(at, 'ImageCachePurge'), status: 'Failed' })
const processing = (at: number, reason = 'ImageCacheRefresh') => ({ status: 'Processing', reason, message: '', startTime: iso(at) })
const marks = (m: Record<string, number>) => JSON.stringify(Object.fromEntries(Object.entries(m).map(([i, at]) => [i, iso(at)])))

t.test('decideBatch(): every branch, with the exact action', async (t) => {
  const timing: Timing = {
    now: T,
    purgeAfterMs: 1_000,
    busyRetryMs: 7_000,
    refreshDueAt: T,
    purgeAttempts: 0,
    maxPurgeAttempts: 3,
    purgeAnnotationGraceMs: 60_000,
  }
  const by = (m: Record<string, Usage>) => (i: string) => m[i]!
  const rows: [string, ImageCache, (i: string) => Usage, Partial<Timing>, unknown][] = [
    // A purge asked for and not finished.
    ['purge asked, unused', cache('c', { annotations: { [PURGE_ANNOTATION]: iso(T) } }), () => UNUSED, {}, { kind: 'none' }],
    ['purge asked, used', cache('c', { annotations: { [PURGE_ANNOTATION]: iso(T) } }), () => USED, {}, { kind: 'wait', ms: 7_000 }],
    [
      'purging, unused',
      cache('c', { status: processing(T, 'ImageCachePurge'), annotations: { [PURGE_ANNOTATION]: iso(T) } }),
      () => UNUSED,
      {},
      { kind: 'none' },
    ],
    [
      'purging, used',
      cache('c', { status: processing(T, 'ImageCachePurge'), annotations: { [PURGE_ANNOTATION]: iso(T) } }),
      () => USED,
      {},
      { kind: 'wait', ms: 7_000 },
    ],
    // Finished.
    ['purged', cache('c', { status: succeeded(T, 'ImageCachePurge') }), () => UNUSED, {}, { kind: 'delete', reason: 'purged' }],
    ['purged, used again', cache('c', { status: succeeded(T, 'ImageCachePurge') }), () => USED, {}, { kind: 'delete', reason: 'purged' }],
    [
      'purged, annotation kept, completion unknown',
      cache('c', { status: { status: 'Succeeded', reason: 'ImageCachePurge' }, annotations: { [PURGE_ANNOTATION]: 'x' } }),
      () => UNUSED,
      {},
      { kind: 'none' },
    ],
    [
      'purged, annotation kept a minute',
      cache('c', { status: succeeded(T - 60_000, 'ImageCachePurge'), annotations: { [PURGE_ANNOTATION]: 'x' } }),
      () => UNUSED,
      {},
      { kind: 'delete', reason: 'purged' },
    ],
    [
      'purged, annotation kept, its grace 0',
      cache('c', { status: succeeded(T, 'ImageCachePurge'), annotations: { [PURGE_ANNOTATION]: 'x' } }),
      () => UNUSED,
      { purgeAnnotationGraceMs: 0 },
      { kind: 'delete', reason: 'purged' },
    ],
    [
      'purged, annotation kept, a completion in the future',
      cache('c', { status: succeeded(T + 1, 'ImageCachePurge'), annotations: { [PURGE_ANNOTATION]: 'x' } }),
      () => UNUSED,
      { purgeAnnotationGraceMs: 0 },
      { kind: 'none' },
    ],
    // A failed purge.
    ['purge failed, used again', cache('c', { status: failedPurge(T) }), () => USED, {}, { kind: 'delete', reason: 'in use again' }],
    [
      'purge failed, one of two used again',
      cache('c', { images: [A, B], status: failedPurge(T) }),
      by({ [A]: UNUSED, [B]: USED }),
      {},
      { kind: 'delete', reason: 'in use again' },
    ],
    ['purge failed, purging off', cache('c', { status: failedPurge(T) }), () => UNUSED, { purgeAfterMs: 0 }, { kind: 'none' }],
    ['purge failed, usage unknown', cache('c', { status: failedPurge(T) }), () => UNKNOWN, {}, { kind: 'none' }],
    [
      'purge failed, usage known for one image of two',
      cache('c', { images: [A, B], status: failedPurge(T) }),
      by({ [A]: UNKNOWN, [B]: UNUSED }),
      {},
      { kind: 'purge' },
    ],
    ['purge failed, retry due', cache('c', { status: failedPurge(T) }), () => UNUSED, {}, { kind: 'purge' }],
    [
      'purge failed, retry due in 1 ms',
      cache('c', { status: failedPurge(T) }),
      () => UNUSED,
      { refreshDueAt: T + 1 },
      { kind: 'wait', ms: 1 },
    ],
    [
      'purge failed, attempts left',
      cache('c', { status: failedPurge(T) }),
      () => UNUSED,
      { purgeAttempts: 2, refreshDueAt: T + 9 },
      { kind: 'wait', ms: 9 },
    ],
    [
      'purge failed, no attempts left',
      cache('c', { status: failedPurge(T) }),
      () => UNUSED,
      { purgeAttempts: 3, refreshDueAt: T + 9 },
      { kind: 'delete', reason: 'purge-failed' },
    ],
    [
      'purge failed, annotation still there, used',
      cache('c', { status: failedPurge(T), annotations: { [PURGE_ANNOTATION]: 'x' } }),
      () => USED,
      {},
      { kind: 'wait', ms: 7_000 },
    ],
    [
      'purge failed, annotation still there, unused',
      cache('c', { status: failedPurge(T), annotations: { [PURGE_ANNOTATION]: 'x' } }),
      () => UNUSED,
      {},
      { kind: 'none' },
    ],
    // Settings.
    [
      'other settings',
      cache('c', { settings: { ...SETTINGS, nodeSelector: { pool: 'x' } } }),
      () => USED,
      {},
      { kind: 'delete', reason: 'settings' },
    ],
    [
      'other settings, processing',
      cache('c', { settings: { ...SETTINGS, imagePullSecrets: [] }, status: processing(T) }),
      () => USED,
      {},
      { kind: 'wait', ms: 7_000 },
    ],
    // Unused marks.
    ['used, no mark', cache('c', { status: succeeded(T) }), () => USED, {}, { kind: 'none' }],
    [
      'unused, no mark',
      cache('c', { status: succeeded(T) }),
      () => UNUSED,
      {},
      { kind: 'annotate', annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T }) } },
    ],
    ['unused, no mark, purging off', cache('c', { status: succeeded(T) }), () => UNUSED, { purgeAfterMs: 0 }, { kind: 'none' }],
    ['unused, no mark, usage unknown', cache('c', { status: succeeded(T) }), () => UNKNOWN, {}, { kind: 'none' }],
    ['unused, no mark, processing', cache('c', { status: processing(T) }), () => UNUSED, {}, { kind: 'wait', ms: 7_000 }],
    [
      'used again, marked',
      cache('c', { status: succeeded(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 5 }) } }),
      () => USED,
      {},
      { kind: 'annotate', annotations: { [UNUSED_SINCE_ANNOTATION]: null } },
    ],
    [
      'a mark of an image the batch does not hold is dropped',
      cache('c', { status: succeeded(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 5, [B]: T - 5 }) } }),
      () => UNUSED,
      {},
      { kind: 'annotate', annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 5 }) } },
    ],
    [
      'marked 1 ms short of purgeAfterMs',
      cache('c', { status: succeeded(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 999 }) } }),
      () => UNUSED,
      {},
      { kind: 'none' },
    ],
    [
      'marked purgeAfterMs ago',
      cache('c', { status: succeeded(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 1_000 }) } }),
      () => UNUSED,
      {},
      { kind: 'purge' },
    ],
    [
      'marked purgeAfterMs ago, processing',
      cache('c', { status: processing(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 1_000 }) } }),
      () => UNUSED,
      {},
      { kind: 'none' },
    ],
    [
      'marked purgeAfterMs ago, recently used here',
      cache('c', { status: succeeded(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 1_000 }) } }),
      () => RECENT,
      {},
      { kind: 'none' },
    ],
    [
      'one of two due, the other used',
      cache('c', { images: [A, B], status: succeeded(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 1_000 }) } }),
      by({ [A]: UNUSED, [B]: USED }),
      {},
      {
        kind: 'update',
        keep: [B],
        removed: [A],
        annotations: { [UNUSED_SINCE_ANNOTATION]: null, [ORIGINALS_ANNOTATION]: JSON.stringify({ [B]: B }) },
      },
    ],
    [
      'one of two due, the other marked and not due',
      cache('c', {
        images: [A, B],
        status: succeeded(T),
        annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 1_000, [B]: T - 10 }) },
      }),
      () => UNUSED,
      {},
      {
        kind: 'update',
        keep: [B],
        removed: [A],
        annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [B]: T - 10 }), [ORIGINALS_ANNOTATION]: JSON.stringify({ [B]: B }) },
      },
    ],
    [
      'one of two due, processing',
      cache('c', { images: [A, B], status: processing(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 1_000 }) } }),
      by({ [A]: UNUSED, [B]: USED }),
      {},
      { kind: 'wait', ms: 7_000 },
    ],
    // Failed pulls of images in use.
    ['failed, refresh due', cache('c', { status: { ...succeeded(T), status: 'Failed' } }), () => USED, {}, { kind: 'refresh' }],
    [
      'failed on one image of two, both used',
      cache('c', {
        images: [A, B],
        status: { ...succeeded(T), status: 'Failed', failures: { [B]: [{ node: 'n1', reason: 'x', message: '' }] } },
      }),
      () => USED,
      {},
      { kind: 'refresh' },
    ],
    [
      'failed, refresh due in 500 ms',
      cache('c', { status: { ...succeeded(T), status: 'Failed' } }),
      () => USED,
      { refreshDueAt: T + 500 },
      { kind: 'wait', ms: 500 },
    ],
    [
      'failed, refresh asked for already',
      cache('c', { status: { ...succeeded(T), status: 'Failed' }, annotations: { [REFRESH_ANNOTATION]: iso(T) } }),
      () => USED,
      {},
      { kind: 'none' },
    ],
    [
      'failed, not in use, purging off',
      cache('c', { status: { ...succeeded(T), status: 'Failed' } }),
      () => UNUSED,
      { purgeAfterMs: 0 },
      { kind: 'none' },
    ],
  ]
  for (const [name, c, usage, timing2, want] of rows) {
    t.strictSame(decideBatch(c, usage, SETTINGS, { ...timing, ...timing2 }), want, name)
  }
})

t.test('busySince() and decidePlacement(): when a batch counts as busy, and the longest wait wins', async (t) => {
  const busy = (s: Shape) => busySince(cache('c', s))
  t.equal(busy({ created: T - 5 }), T - 5, 'untouched: since its creation')
  t.equal(busy({}), 0, 'untouched, no creation time: since the epoch')
  t.equal(busy({ created: T - 5, status: processing(T - 3) }), T - 3, 'processing: since it started')
  t.equal(busy({ created: T - 5, status: { status: 'Processing' } }), T - 5, 'processing, no start time: since its creation')
  t.equal(busy({ created: T - 5, status: succeeded(T - 4) }), undefined, 'finished: idle')
  t.equal(busy({ created: T - 5, status: succeeded(T - 4), annotations: { [REFRESH_ANNOTATION]: iso(T - 2) } }), T - 2, 'refresh asked')
  t.equal(
    busy({ created: T - 5, status: succeeded(T - 4), annotations: { [REFRESH_ANNOTATION]: 'not a time' } }),
    T - 4,
    'refresh asked at an unreadable time: since the last completion',
  )
  t.equal(
    busy({ created: T - 5, status: { status: 'Failed' }, annotations: { [REFRESH_ANNOTATION]: 'not a time' } }),
    T - 5,
    'unreadable, no completion: since its creation',
  )
  t.equal(busy({ created: T - 5, status: succeeded(T - 4), annotations: { [PURGE_ANNOTATION]: iso(T - 1) } }), T - 1, 'purge asked')
  t.equal(
    busy({ created: T - 5, status: succeeded(T - 4, 'ImageCachePurge'), annotations: { [PURGE_ANNOTATION]: iso(T - 1) } }),
    undefined,
    'purge asked and finished: idle',
  )

  const timing = { now: T, busyRetryMs: 5_000, batchWaitMs: 1_000, imagesPerCache: 3 }
  const at = (created: number) => cache('c', { created })
  t.strictSame(decidePlacement(['a'], [at(T - 100), at(T - 50)], timing), { kind: 'wait', ms: 950 }, 'the younger batch decides')
  t.strictSame(decidePlacement(['a'], [at(T - 50), at(T - 100)], timing), { kind: 'wait', ms: 950 }, 'whatever the order')
  const idle = cache('idle', { created: T - 100, status: succeeded(T - 50) })
  t.strictSame(decidePlacement(['a'], [idle, at(T - 100)], timing), { kind: 'wait', ms: 900 }, 'an idle batch changes nothing')
  t.strictSame(decidePlacement(['a'], [at(T - 100), idle], timing), { kind: 'wait', ms: 900 }, 'in any place')
  t.strictSame(decidePlacement(['a'], [at(T - 999)], timing), { kind: 'wait', ms: 1 }, '1 ms short of batchWaitMs')
  t.strictSame(decidePlacement(['a'], [at(T - 1_000)], timing), { kind: 'create', images: ['a'] }, 'batchWaitMs old: idle')
  t.strictSame(decidePlacement(['a'], [at(T + 10)], timing), { kind: 'wait', ms: 1_010 }, 'created after now (clock skew)')
  t.strictSame(
    decidePlacement(['a', 'b', 'c', 'd'], [at(T - 1_000)], timing),
    { kind: 'create', images: ['a', 'b', 'c'] },
    'imagesPerCache images',
  )
})

t.test('queue keys of batches', async (t) => {
  t.equal(batchKey('x'), '\u0000batch:x')
  t.equal(batchOfKey('\u0000batch:x'), 'x')
  t.equal(batchOfKey('x'), undefined)
  t.equal(batchOfKey(PLACE_KEY), undefined)
  t.equal(PLACE_KEY, '\u0000place', 'the placement key is no image reference')
})

class RecordingApi implements ImageCacheApi {
  readonly calls: unknown[][] = []
  readonly errors: Error[] = []
  private answer(): void {
    const e = this.errors.shift()
    if (e) throw e
  }
  async create(c: ImageCache): Promise<void> {
    this.calls.push(['create', structuredClone(c)])
    this.answer()
  }
  async annotate(name: string, annotations: Record<string, string | null>, rv: string): Promise<void> {
    this.calls.push(['annotate', name, annotations, rv])
    this.answer()
  }
  async update(name: string, spec: ImageCache['spec']['cacheSpec'], annotations: Record<string, string | null>, rv: string): Promise<void> {
    this.calls.push(['update', name, spec, annotations, rv])
    this.answer()
  }
  async remove(name: string, pre: { uid: string; resourceVersion: string }): Promise<void> {
    this.calls.push(['delete', name, pre])
    this.answer()
  }
  async list(): Promise<{ items: ImageCache[]; resourceVersion: string }> {
    return { items: [], resourceVersion: '1' }
  }
}

function setup(extra: Partial<ReconcilerOptions> = {}) {
  const clock = new ManualClock(T)
  const api = new RecordingApi()
  // What the watch shows; the test moves it.
  const objects = new Map<string, ImageCache>()
  const uses = new Map<string, Usage>()
  const originals = new Map<string, string>()
  const registry = new Registry()
  const lines: Record<string, unknown>[] = []
  const logger = pino({ level: 'debug', base: undefined, timestamp: false }, { write: (s: string) => void lines.push(JSON.parse(s)) })
  const scheduled: [string, number][] = []
  const missing: string[] = []
  const state = { ready: true }
  const rec = new Reconciler({
    api,
    store: {
      get: (n) => objects.get(n),
      list: () => objects.values(),
      batchOf: (i) => [...objects].find(([, o]) => o.spec.cacheSpec[0]?.images.includes(i))?.[0],
    },
    usage: { usage: (i) => uses.get(i) ?? UNUSED, original: (i) => originals.get(i) },
    settings: SETTINGS,
    limiter: new TokenBucket(1_000, 1_000, clock),
    clock,
    metrics: new PrepullMetrics(registry),
    logger,
    purgeAfterMs: 1_000,
    refreshBackoffMs: 60_000,
    refreshBackoffMaxMs: 600_000,
    imagesPerCache: 2,
    batchWaitMs: 600_000,
    ready: () => state.ready,
    schedule: (k, d) => void scheduled.push([k, d]),
    onMissing: (e) => missing.push(e.message),
    random: () => 0,
    ...extra,
  })
  const writes = async () =>
    (await registry.getSingleMetric('mirrorhook_prepull_api_writes_total')!.get()).values.map((v) => [
      v.labels.verb,
      v.labels.result,
      v.value,
    ])
  const retries = async () => (await registry.getSingleMetric('mirrorhook_prepull_retries_total')!.get()).values[0]!.value
  const put = (c: ImageCache) => objects.set(c.metadata.name!, c)
  return { clock, api, objects, uses, originals, lines, scheduled, missing, state, rec, writes, retries, put }
}

t.test('placing images: waiting, one create per batch, the name kept, the batch busy until the watch shows it', async (t) => {
  const { api, objects, uses, originals, lines, scheduled, rec, writes, put } = setup()
  const C = 'm.daocloud.io/docker.io/library/c:1'
  for (const i of [A, B, C]) uses.set(i, USED)
  originals.set(A, 'a:1')
  t.strictSame(rec.plan(A), { kind: 'place' })
  t.strictSame(await rec.reconcile(A), { kind: 'done' })
  t.strictSame(scheduled, [[PLACE_KEY, 0]], 'the placement is scheduled at once')
  t.equal(rec.waitingCount, 1)
  t.equal(rec.isWaiting(A), true)
  t.equal(rec.isWaiting(B), false)
  t.equal(rec.keyFor(A), A, 'no batch yet: the image is its own key')
  await rec.reconcile(B)
  await rec.reconcile(C)
  t.equal(rec.waitingCount, 3)
  uses.set(C, UNUSED)
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'create', images: [A, B] }, 'imagesPerCache of the images still in use')
  t.equal(rec.waitingCount, 2, 'an image no longer in use stops waiting')
  uses.set(C, USED)
  await rec.reconcile(C)
  scheduled.length = 0
  t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'done' })
  t.strictSame(api.calls, [['create', buildImageCache(FIRST, [A, B], new Map([[A, 'a:1']]), SETTINGS)]])
  t.strictSame(lines, [{ level: 30, name: FIRST, images: 2, msg: 'ImageCache created' }])
  t.strictSame(scheduled, [[PLACE_KEY, 0]], 'an image still waits: placed next')
  t.strictSame(await writes(), [['create', 'created', 1]])
  t.equal(rec.waitingCount, 1)
  t.equal(rec.isWaiting(A), false, 'created')
  t.strictSame(rec.plan(A), { kind: 'none' }, 'in a batch the watch has not shown yet')
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'wait', ms: 1_000 }, 'our own batch, not shown yet, is busy')
  put(cache('busy', { images: [B], created: T }))
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'wait', ms: 5_000 }, 'and another batch busy longer: the longer wait')
  objects.delete('busy')
  const seen = buildImageCache(FIRST, [A, B], new Map(), SETTINGS)
  seen.metadata.creationTimestamp = iso(T)
  put(seen)
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'wait', ms: 5_000 }, 'shown and untouched: busy for busyRetryMs (5 s by default)')
  t.equal(rec.keyFor(A), batchKey(FIRST))
  objects.clear()
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'create', images: [C] }, 'no batch busy: the image left gets one')
})

t.test('create answers: the name is kept across retries and conflicts, dropped after a refusal; 404 blocks', async (t) => {
  const { api, uses, lines, missing, rec, writes, retries, put, scheduled } = setup({ busyRetryMs: 300 })
  uses.set(A, USED)
  await rec.reconcile(A)
  scheduled.length = 0
  const names = () => api.calls.map((c) => (c[1] as ImageCache).metadata.name)
  api.errors.push(new ApiError(503, 'unavailable', 'ServiceUnavailable', 2_500))
  t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'retry', afterMs: 2_500 })
  t.equal(rec.isWaiting(A), true, 'being created counts as waiting')
  api.errors.push(new ApiError(409, 'conflict', 'Conflict'))
  t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'later', afterMs: 1_000 })
  api.errors.push(new ApiError(404, 'no such resource', 'NotFound'))
  t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'blocked' })
  t.strictSame(missing, ['no such resource'])
  api.errors.push(new ApiError(403, 'forbidden', 'Forbidden'))
  t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'failed' })
  t.strictSame(names(), [FIRST, FIRST, FIRST, FIRST], 'one name while the create may have gone through')
  // A batch of that name exists (another replica's): the next name gets a counter.
  put(cache(FIRST, { images: [B], status: succeeded(T) }))
  api.errors.push(new ApiError(409, 'exists', 'AlreadyExists'))
  t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'done' }, 'AlreadyExists: the earlier try went through')
  t.strictSame(names(), [FIRST, FIRST, FIRST, FIRST, `${FIRST}1`])
  t.strictSame(scheduled, [], 'nothing else waits')
  t.strictSame(await writes(), [
    ['create', 'transient', 1],
    ['create', 'conflict', 1],
    ['create', 'not-found', 1],
    ['create', 'error', 1],
    ['create', 'already-exists', 1],
  ])
  t.equal(await retries(), 1)
  t.strictSame(lines, [
    { level: 20, verb: 'create', err: 'unavailable', msg: 'ImageCache write failed transiently; retrying with backoff' },
    { level: 50, verb: 'create', status: 403, err: 'forbidden', msg: 'ImageCache write refused' },
    { level: 30, name: `${FIRST}1`, images: 1, msg: 'ImageCache created' },
  ])
  const C = 'm.daocloud.io/docker.io/library/c:1'
  uses.set(C, USED)
  await rec.reconcile(C)
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'wait', ms: 300 }, 'the batch just created, not shown yet: busy for at most busyRetryMs')
})

t.test('a refused create forgets its batch: images no longer used are not created', async (t) => {
  const { api, uses, rec } = setup()
  uses.set(A, USED)
  await rec.reconcile(A)
  api.errors.push(new ApiError(403, 'forbidden', 'Forbidden'))
  t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'failed' })
  uses.set(A, UNUSED)
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'none' })
  t.equal(rec.waitingCount, 0)
})

t.test('a retried create keeps its images even when their use changed', async (t) => {
  const { api, uses, rec } = setup()
  uses.set(A, USED)
  await rec.reconcile(A)
  api.errors.push(new ApiError(0, 'socket hang up'))
  t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'retry', afterMs: undefined })
  uses.set(A, UNUSED)
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'create', images: [A] })
})

t.test('an error that is not an API answer is not swallowed', async (t) => {
  const { api, uses, rec, writes } = setup()
  uses.set(A, USED)
  await rec.reconcile(A)
  api.errors.push(new Error('bug'))
  await t.rejects(rec.reconcile(PLACE_KEY), { message: 'bug' })
  t.strictSame(await writes(), [])
})

t.test('writes to a batch: what is sent, counted and logged', async (t) => {
  const { api, uses, lines, rec, writes, put, missing } = setup()
  // Unused: marked.
  put(cache('m', { status: succeeded(T) }))
  t.strictSame(await rec.reconcile(batchKey('m')), { kind: 'done' })
  // One of two due: a spec change.
  put(cache('u', { images: [A, B], status: succeeded(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 1_000 }) } }))
  uses.set(B, USED)
  t.strictSame(await rec.reconcile(batchKey('u')), { kind: 'done' })
  t.strictSame(lines.splice(0), [
    {
      level: 30,
      name: 'u',
      removed: [A],
      kept: 1,
      msg: 'no Pod uses these images any more: removed from their ImageCache (kube-fledged deletes them from the nodes)',
    },
  ])
  // Failed on two nodes (one of them twice): a refresh.
  put(
    cache('r', {
      images: [A, B],
      status: {
        ...succeeded(T - 60_000),
        status: 'Failed',
        failures: {
          [A]: [{ node: 'n1', reason: 'ErrImagePull', message: '' }],
          [B]: [
            { node: 'n1', reason: 'ErrImagePull', message: '' },
            { node: 'n2', reason: 'ErrImagePull', message: '' },
          ],
        },
      },
    }),
  )
  uses.set(A, USED)
  t.strictSame(await rec.reconcile(batchKey('r')), { kind: 'done' })
  t.strictSame(lines.splice(0), [
    { level: 30, name: 'r', status: 'Failed', failedNodes: ['n1', 'n2'], msg: 'asked kube-fledged to retry an ImageCache' },
  ])
  // All due: a purge.
  put(cache('p', { images: [B], status: succeeded(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [B]: T - 1_000 }) } }))
  uses.set(B, UNUSED)
  t.strictSame(await rec.reconcile(batchKey('p')), { kind: 'done' })
  t.strictSame(lines.splice(0), [
    {
      level: 30,
      name: 'p',
      images: 1,
      msg: 'no Pod uses the images of this ImageCache any more: asked kube-fledged to purge them from the nodes',
    },
  ])
  const noVersion = cache('s', { settings: { ...SETTINGS, nodeSelector: {} } })
  delete noVersion.metadata.resourceVersion
  delete noVersion.metadata.uid
  put(noVersion)
  t.strictSame(await rec.reconcile(batchKey('s')), { kind: 'done' })
  t.strictSame(lines.splice(0), [{ level: 30, name: 's', reason: 'settings', msg: 'ImageCache deleted' }])
  t.strictSame(api.calls, [
    ['annotate', 'm', { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T }) }, '7'],
    [
      'update',
      'u',
      [{ images: [B], nodeSelector: { pool: 'apps' } }],
      { [UNUSED_SINCE_ANNOTATION]: null, [ORIGINALS_ANNOTATION]: JSON.stringify({ [B]: B }) },
      '7',
    ],
    ['annotate', 'r', { [REFRESH_ANNOTATION]: iso(T) }, '7'],
    ['annotate', 'p', { [PURGE_ANNOTATION]: iso(T) }, '7'],
    ['delete', 's', { uid: '', resourceVersion: '' }],
  ])
  t.strictSame(await writes(), [
    ['annotate', 'ok', 3],
    ['update', 'ok', 1],
    ['delete', 'ok', 1],
  ])
  // Vanished or refused metadata writes; a 404 there is not a missing CRD.
  uses.set(A, UNUSED)
  put(cache('m2', { status: succeeded(T) }))
  api.errors.push(new ApiError(404, 'gone', 'NotFound'))
  t.strictSame(await rec.reconcile(batchKey('m2')), { kind: 'later', afterMs: 1_000 })
  api.errors.push(new ApiError(409, 'exists', 'AlreadyExists'))
  t.strictSame(await rec.reconcile(batchKey('m2')), { kind: 'later', afterMs: 1_000 })
  api.errors.push(new ApiError(422, 'invalid', 'Invalid'))
  t.strictSame(await rec.reconcile(batchKey('m2')), { kind: 'failed' })
  t.strictSame(missing, [])
  t.strictSame(lines.splice(0), [{ level: 50, verb: 'annotate', status: 422, err: 'invalid', msg: 'ImageCache write refused' }])
})

t.test('refresh and purge attempts: the backoff counts both, from the later of completion and the last request', async (t) => {
  const { uses, rec, put } = setup({ maxPurgeAttempts: 1 })
  t.equal(rec.dueAt('r', undefined), 60_000, 'never asked, no completion: refreshBackoffMs after the epoch')
  t.equal(rec.dueAt('r', T), T + 60_000)
  put(cache('r', { status: { ...succeeded(T - 60_000), status: 'Failed' } }))
  uses.set(A, USED)
  t.strictSame(await rec.reconcile(batchKey('r')), { kind: 'done' }, 'refresh asked')
  t.equal(rec.dueAt('r', T - 60_000), T + 120_000, 'one refresh: doubled, from the request')
  t.equal(rec.dueAt('r', T + 500_000), T + 620_000, 'a later completion counts from there')
  rec.resetAttempts('r')
  t.equal(rec.dueAt('r', T - 60_000), T, 'history cleared')

  // A first purge is no failed attempt; a retried failed purge is.
  put(cache('p', { status: succeeded(T), annotations: { [UNUSED_SINCE_ANNOTATION]: marks({ [A]: T - 1_000 }) } }))
  uses.set(A, UNUSED)
  t.strictSame(await rec.reconcile(batchKey('p')), { kind: 'done' })
  t.equal(rec.dueAt('p', undefined), T + 60_000, 'no attempt counted; the clock runs from the request')
  put(cache('p', { status: failedPurge(T - 60_000) }))
  t.strictSame(rec.plan(batchKey('p')), { kind: 'wait', ms: 60_000 })
  put(cache('q', { status: failedPurge(T - 60_000) }))
  t.strictSame(rec.plan(batchKey('q')), { kind: 'purge' })
  t.strictSame(await rec.reconcile(batchKey('q')), { kind: 'done' })
  t.equal(rec.dueAt('q', T - 60_000), T + 120_000, 'one failed purge retried: doubled')
  t.strictSame(rec.plan(batchKey('q')), { kind: 'delete', reason: 'purge-failed' }, 'maxPurgeAttempts 1: one retry, then deleted')
  t.strictSame(await rec.reconcile(batchKey('q')), { kind: 'done' })
  t.equal(rec.dueAt('q', undefined), 60_000, 'deleted: its history goes')
})

t.test('three purge attempts by default; the grace of a kept purge annotation is a minute', async (t) => {
  const { rec, put, clock } = setup()
  put(cache('q', { status: failedPurge(T - 60_000) }))
  for (let i = 0; i < 3; i++) {
    t.strictSame(rec.plan(batchKey('q')), { kind: 'purge' })
    await rec.reconcile(batchKey('q'))
    await clock.advance(600_000)
  }
  t.strictSame(rec.plan(batchKey('q')), { kind: 'delete', reason: 'purge-failed' })
  put(cache('g', { status: succeeded(clock.now() - 59_999, 'ImageCachePurge'), annotations: { [PURGE_ANNOTATION]: 'x' } }))
  t.strictSame(rec.plan(batchKey('g')), { kind: 'none' })
  put(cache('g', { status: succeeded(clock.now() - 60_000, 'ImageCachePurge'), annotations: { [PURGE_ANNOTATION]: 'x' } }))
  t.strictSame(rec.plan(batchKey('g')), { kind: 'delete', reason: 'purged' })
})

t.test('a deleted batch: its images in use wait for a new one; the watch may show it a while longer', async (t) => {
  const { api, uses, lines, scheduled, rec, put, writes } = setup()
  put(cache('d', { images: [A, B], status: succeeded(T, 'ImageCachePurge') }))
  uses.set(A, USED)
  t.equal(rec.keyFor(A), batchKey('d'))
  t.strictSame(await rec.reconcile(A), { kind: 'done' }, 'an image key acts for its batch')
  t.strictSame(api.calls, [['delete', 'd', { uid: 'uid-d', resourceVersion: '7' }]])
  t.strictSame(lines, [{ level: 30, name: 'd', reason: 'purged', msg: 'ImageCache deleted after its purge' }])
  t.strictSame(scheduled, [[PLACE_KEY, 0]])
  t.equal(rec.waitingCount, 1)
  t.equal(rec.isWaiting(A), true)
  t.equal(rec.isWaiting(B), false, 'not in use: not placed again')
  // The watch still shows it.
  t.strictSame(rec.plan(A), { kind: 'place' }, 'no longer in that batch')
  t.strictSame(rec.plan(batchKey('d')), { kind: 'none' })
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'create', images: [A] }, 'the deleted batch holds nothing')
  rec.observed('d')
  t.strictSame(rec.plan(A), { kind: 'place' }, 'an update of it seen: still gone')
  rec.observed('d', true)
  t.strictSame(rec.plan(A), { kind: 'delete', reason: 'purged' }, 'its deletion seen: what the store shows counts again')
  t.strictSame(await writes(), [['delete', 'ok', 1]])
})

t.test('a delete answered 404 or 409; unused images are not placed again', async (t) => {
  const { api, uses, scheduled, rec, put, writes, missing } = setup()
  put(cache('d', { settings: { ...SETTINGS, nodeSelector: { pool: 'x' } } }))
  uses.set(A, USED)
  api.errors.push(new ApiError(409, 'precondition', 'Conflict'))
  t.strictSame(await rec.reconcile(A), { kind: 'later', afterMs: 1_000 })
  t.strictSame(scheduled, [])
  api.errors.push(new ApiError(404, 'gone', 'NotFound'))
  t.strictSame(await rec.reconcile(A), { kind: 'done' }, 'deleted by someone else')
  t.strictSame(missing, [])
  t.strictSame(scheduled, [[PLACE_KEY, 0]])
  t.strictSame(rec.plan(A), { kind: 'delete', reason: 'settings' }, 'not deleted by this write: the store still counts')
  put(cache('e', { images: [B], settings: { ...SETTINGS, nodeSelector: { pool: 'x' } } }))
  scheduled.length = 0
  t.strictSame(await rec.reconcile(batchKey('e')), { kind: 'done' })
  t.strictSame(scheduled, [], 'no image in use: nothing to place')
  t.equal(rec.waitingCount, 1)
  t.strictSame(await writes(), [
    ['delete', 'conflict', 1],
    ['delete', 'not-found', 1],
    ['delete', 'ok', 1],
  ])
})

t.test('not ready, a foreign layout, a key whose batch the store lost', async (t) => {
  const { api, lines, state, rec, put, objects } = setup()
  const two = cache('f')
  two.spec.cacheSpec.push({ images: [B] })
  put(two)
  state.ready = false
  t.strictSame(await rec.reconcile(batchKey('f')), { kind: 'blocked' })
  state.ready = true
  t.strictSame(await rec.reconcile(batchKey('f')), { kind: 'failed' })
  t.strictSame(lines, [
    { level: 50, name: 'f', msg: 'a managed ImageCache does not have the layout mirrorhook writes (one list of images); leaving it alone' },
  ])
  t.strictSame(api.calls, [])
  objects.clear()
  t.strictSame(rec.plan(batchKey('f')), { kind: 'none' })
  t.strictSame(await rec.reconcile(batchKey('f')), { kind: 'done' })
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'none' }, 'nothing waits')
})

t.test('a batch this replica created and deleted before a placement looked again leaves no trace', async (t) => {
  const { uses, rec, put, objects } = setup()
  uses.set(A, USED)
  await rec.reconcile(A)
  await rec.reconcile(PLACE_KEY)
  put(cache(FIRST, { status: succeeded(T, 'ImageCachePurge') }))
  t.strictSame(await rec.reconcile(batchKey(FIRST)), { kind: 'done' }, 'deleted after its purge')
  // The watch drops it before the placement runs again.
  objects.delete(FIRST)
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'create', images: [A] }, 'its image, still in use, gets a new batch')
})

t.test('a refresh or purge request that does not go through counts no attempt and logs nothing', async (t) => {
  const { api, uses, lines, rec, put } = setup()
  put(cache('r', { status: { ...succeeded(T - 60_000), status: 'Failed' } }))
  uses.set(A, USED)
  api.errors.push(new ApiError(409, 'the object has been modified', 'Conflict'))
  t.strictSame(await rec.reconcile(batchKey('r')), { kind: 'later', afterMs: 1_000 })
  put(cache('p', { images: [B], status: failedPurge(T - 60_000) }))
  api.errors.push(new ApiError(404, 'gone', 'NotFound'))
  t.strictSame(await rec.reconcile(batchKey('p')), { kind: 'later', afterMs: 1_000 })
  t.strictSame(lines, [])
  t.equal(rec.dueAt('r', T - 60_000), T, 'no refresh counted')
  t.equal(rec.dueAt('p', T - 60_000), T, 'no purge counted')
  t.strictSame(rec.plan(batchKey('r')), { kind: 'refresh' }, 'asked again at once')
})

t.test('an image counts as placed once a batch in the store holds it, or while its create is pending', async (t) => {
  const { api, uses, rec, put } = setup()
  uses.set(A, USED)
  uses.set(B, USED)
  await rec.reconcile(A)
  // A batch holding A appears that this replica did not create (a create by the writer before it).
  put(cache('theirs', { images: [A], status: succeeded(T) }))
  t.strictSame(rec.plan(PLACE_KEY), { kind: 'none' }, 'A no longer waits')
  t.equal(rec.waitingCount, 0)
  await rec.reconcile(B)
  api.errors.push(new ApiError(503, 'unavailable', 'ServiceUnavailable'))
  t.strictSame(await rec.reconcile(PLACE_KEY), { kind: 'retry', afterMs: undefined })
  t.strictSame(rec.plan(B), { kind: 'none' }, 'in the batch being created')
})
