// Pre-warmed images in the pre-pull pipeline: pinned as in use until the next pre-warm run,
// so they get a batch though no Pod runs them, and are not marked unused, removed from their
// batch or purged before then.
import t from 'tap'
import { buildImageCache, type CacheSettings, ORIGINALS_ANNOTATION, UNUSED_SINCE_ANNOTATION } from '../../server/prepull/imagecache.js'
import { decideBatch, decidePlacement, type Timing } from '../../server/prepull/reconciler.js'
import { UsageTracker } from '../../server/prepull/usage.js'

const SETTINGS: CacheSettings = { namespace: 'kube-fledged', imagePullSecrets: [] }
const IMAGE = 'harbor.corp.example/shop/web:1.3.0'
const OTHER = 'harbor.corp.example/shop/api:2.0.0'
const BATCH = 'mirrorhook-abc-00001'
const HOUR = 3_600_000
const T0 = 1_700_000_000_000

const timing = (now: number, purgeAfterMs: number): Timing => ({
  now,
  purgeAfterMs,
  busyRetryMs: 5_000,
  refreshDueAt: 0,
  purgeAttempts: 0,
  maxPurgeAttempts: 3,
  purgeAnnotationGraceMs: 60_000,
})

t.test('a pinned image: placed in a batch without a Pod, kept in it until the pin ends, then handled like any unused image', async (t) => {
  const purgeAfterMs = HOUR
  const usage = new UsageTracker(purgeAfterMs, 60_000)
  const keepUntil = T0 + 25 * HOUR
  usage.pin(IMAGE, undefined, keepUntil)
  usage.sweepDone(T0, new Map(), T0)
  t.strictSame(usage.usage(IMAGE, T0), { inUse: true, usageKnown: true, recentlyUsed: true })
  t.strictSame(usage.usage(OTHER, T0), { inUse: false, usageKnown: true, recentlyUsed: false }, 'an image neither pinned nor run')
  t.strictSame(
    decidePlacement([IMAGE], [], { now: T0, busyRetryMs: 5_000, batchWaitMs: 600_000, imagesPerCache: 100 }),
    { kind: 'create', images: [IMAGE] },
    'a new batch for it',
  )
  t.equal(usage.original(IMAGE), undefined, 'the reference is its own original')

  // A batch that also holds an image no Pod runs, marked unused at T0: that one leaves the batch, the pinned one stays.
  const batch = buildImageCache(BATCH, [IMAGE, OTHER], new Map([[IMAGE, usage.original(IMAGE)]]), SETTINGS)
  batch.status = { status: 'Succeeded', reason: 'ImageCacheCreate' }
  batch.metadata.annotations = {
    ...batch.metadata.annotations,
    [UNUSED_SINCE_ANNOTATION]: JSON.stringify({ [OTHER]: new Date(T0).toISOString() }),
  }
  usage.sweepDone(T0 + HOUR, new Map(), T0 + HOUR)
  t.strictSame(
    decideBatch(batch, (i) => usage.usage(i, T0 + HOUR), SETTINGS, timing(T0 + HOUR, purgeAfterMs)),
    {
      kind: 'update',
      keep: [IMAGE],
      removed: [OTHER],
      annotations: { [UNUSED_SINCE_ANNOTATION]: null, [ORIGINALS_ANNOTATION]: JSON.stringify({ [IMAGE]: IMAGE }) },
    },
  )

  const cache = buildImageCache(BATCH, [IMAGE], new Map([[IMAGE, usage.original(IMAGE)]]), SETTINGS)
  cache.status = { status: 'Succeeded', reason: 'ImageCacheUpdate' }
  // Hours of sweeps that list no Pod using it: nothing happens while pinned.
  for (const at of [T0 + HOUR, T0 + 12 * HOUR, keepUntil - 1]) {
    usage.sweepDone(at, new Map(), at)
    t.strictSame(
      decideBatch(cache, (i) => usage.usage(i, at), SETTINGS, timing(at, purgeAfterMs)),
      { kind: 'none' },
      `pinned at +${(at - T0) / HOUR}h`,
    )
  }
  // The pin ended (the next run did not warm it again): marked unused, then purged an hour later.
  usage.sweepDone(keepUntil, new Map(), keepUntil)
  t.equal(usage.pinnedUntil(IMAGE), undefined, 'an expired pin is forgotten')
  t.strictSame(
    decideBatch(cache, (i) => usage.usage(i, keepUntil), SETTINGS, timing(keepUntil, purgeAfterMs)),
    {
      kind: 'annotate',
      annotations: { [UNUSED_SINCE_ANNOTATION]: JSON.stringify({ [IMAGE]: new Date(keepUntil).toISOString() }) },
    },
  )
  cache.metadata.annotations = {
    ...cache.metadata.annotations,
    [UNUSED_SINCE_ANNOTATION]: JSON.stringify({ [IMAGE]: new Date(keepUntil).toISOString() }),
  }
  const later = keepUntil + HOUR
  usage.sweepDone(later, new Map(), later)
  t.strictSame(
    decideBatch(cache, (i) => usage.usage(i, later), SETTINGS, timing(later, purgeAfterMs)),
    { kind: 'purge' },
  )
})

t.test('a pin lengthens, never shortens; an image marked unused earlier loses its mark', async (t) => {
  const usage = new UsageTracker(HOUR, 60_000)
  usage.pin(IMAGE, 'harbor.corp.example/shop/web:1.3.0-original', T0 + 10 * HOUR)
  usage.pin(IMAGE, undefined, T0 + 2 * HOUR)
  t.equal(usage.pinnedUntil(IMAGE), T0 + 10 * HOUR)
  t.equal(usage.original(IMAGE), 'harbor.corp.example/shop/web:1.3.0-original')
  const cache = buildImageCache(BATCH, [IMAGE], new Map(), SETTINGS)
  cache.status = { status: 'Succeeded', reason: 'ImageCacheCreate' }
  cache.metadata.annotations = {
    ...cache.metadata.annotations,
    [UNUSED_SINCE_ANNOTATION]: JSON.stringify({ [IMAGE]: new Date(T0 - HOUR).toISOString() }),
  }
  usage.sweepDone(T0, new Map(), T0)
  t.strictSame(
    decideBatch(cache, (i) => usage.usage(i, T0), SETTINGS, timing(T0, HOUR)),
    {
      kind: 'annotate',
      annotations: { [UNUSED_SINCE_ANNOTATION]: null },
    },
  )
})
