// Pre-warmed images in the pre-pull pipeline: pinned as in use until the next pre-warm run,
// so their cache is created though no Pod runs them, and not marked unused or purged before then.
import t from 'tap'
import { buildImageCache, type CacheSettings, UNUSED_SINCE_ANNOTATION } from '../../server/prepull/imagecache.js'
import { decide, type Timing } from '../../server/prepull/reconciler.js'
import { UsageTracker } from '../../server/prepull/usage.js'

const SETTINGS: CacheSettings = { namespace: 'kube-fledged', imagePullSecrets: [] }
const IMAGE = 'harbor.corp.example/shop/web:1.3.0'
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

t.test('a pinned image: created without a Pod, kept until the pin ends, then handled like any unused image', async (t) => {
  const purgeAfterMs = HOUR
  const usage = new UsageTracker(purgeAfterMs, 60_000)
  const keepUntil = T0 + 25 * HOUR
  usage.pin(IMAGE, undefined, keepUntil)
  usage.sweepDone(T0, new Map(), T0)
  t.same(usage.usage(IMAGE, T0), { inUse: true, usageKnown: true, recentlyUsed: true })
  t.same(decide(IMAGE, undefined, usage.usage(IMAGE, T0), SETTINGS, timing(T0, purgeAfterMs)), { kind: 'create' })
  t.equal(usage.original(IMAGE), undefined, 'the reference is its own original')

  const cache = buildImageCache(IMAGE, usage.original(IMAGE), SETTINGS)
  cache.status = { status: 'Succeeded', reason: 'ImageCacheCreate' }
  // Hours of sweeps that list no Pod using it: nothing happens while pinned.
  for (const at of [T0 + HOUR, T0 + 12 * HOUR, keepUntil - 1]) {
    usage.sweepDone(at, new Map(), at)
    t.same(
      decide(IMAGE, cache, usage.usage(IMAGE, at), SETTINGS, timing(at, purgeAfterMs)),
      { kind: 'none' },
      `pinned at +${(at - T0) / HOUR}h`,
    )
  }
  // The pin ended (the next run did not warm it again): marked unused, then purged an hour later.
  usage.sweepDone(keepUntil, new Map(), keepUntil)
  t.equal(usage.pinnedUntil(IMAGE), undefined, 'an expired pin is forgotten')
  t.same(decide(IMAGE, cache, usage.usage(IMAGE, keepUntil), SETTINGS, timing(keepUntil, purgeAfterMs)), { kind: 'mark-unused' })
  cache.metadata.annotations = { ...cache.metadata.annotations, [UNUSED_SINCE_ANNOTATION]: new Date(keepUntil).toISOString() }
  const later = keepUntil + HOUR
  usage.sweepDone(later, new Map(), later)
  t.same(decide(IMAGE, cache, usage.usage(IMAGE, later), SETTINGS, timing(later, purgeAfterMs)), { kind: 'purge' })
})

t.test('a pin lengthens, never shortens; a cache marked unused earlier is marked used again', async (t) => {
  const usage = new UsageTracker(HOUR, 60_000)
  usage.pin(IMAGE, 'harbor.corp.example/shop/web:1.3.0-original', T0 + 10 * HOUR)
  usage.pin(IMAGE, undefined, T0 + 2 * HOUR)
  t.equal(usage.pinnedUntil(IMAGE), T0 + 10 * HOUR)
  t.equal(usage.original(IMAGE), 'harbor.corp.example/shop/web:1.3.0-original')
  const cache = buildImageCache(IMAGE, undefined, SETTINGS)
  cache.status = { status: 'Succeeded', reason: 'ImageCacheCreate' }
  cache.metadata.annotations = { ...cache.metadata.annotations, [UNUSED_SINCE_ANNOTATION]: new Date(T0 - HOUR).toISOString() }
  usage.sweepDone(T0, new Map(), T0)
  t.same(decide(IMAGE, cache, usage.usage(IMAGE, T0), SETTINGS, timing(T0, HOUR)), { kind: 'mark-used' })
})
