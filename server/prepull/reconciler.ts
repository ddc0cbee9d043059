// What to do next, decided on ImageCaches as last seen and on whether Pods use their images;
// then doing it with one rate-limited write. Three kinds of queue keys: an image (offered by
// admission or a sweep), a batch (one ImageCache), and the placement of images no batch holds.
import type { Logger } from 'pino'
import type { Clock } from './clock.js'
import {
  batchName,
  buildImageCache,
  type CacheSettings,
  type ImageCache,
  imagesOf,
  imageStateOf,
  ORIGINALS_ANNOTATION,
  originalsValue,
  PURGE_ANNOTATION,
  REFRESH_ANNOTATION,
  RETRIED_STATES,
  specMatches,
  UNUSED_SINCE_ANNOTATION,
  unusedSinceValue,
  viewOf,
} from './imagecache.js'
import { backoffMs } from '../kube/backoff.js'
import { ApiError } from '../kube/errors.js'
import type { ImageCacheApi } from './kubeapi.js'
import type { PrepullMetrics } from './metrics.js'
import type { Outcome, TokenBucket } from './queue.js'

// Keys no image reference can be (a reference has no NUL).
export const PLACE_KEY = '\u0000place'
const BATCH_PREFIX = '\u0000batch:'
export const batchKey = (name: string): string => `${BATCH_PREFIX}${name}`
export const batchOfKey = (key: string): string | undefined => (key.startsWith(BATCH_PREFIX) ? key.slice(BATCH_PREFIX.length) : undefined)

export type Action =
  | { kind: 'none' }
  // An image in use that no batch holds: it waits for the next new batch.
  | { kind: 'place' }
  // A new batch of these images.
  | { kind: 'create'; images: string[] }
  // A spec change that removes unused images (kube-fledged deletes them from the nodes).
  | { kind: 'update'; keep: string[]; removed: string[]; annotations: Record<string, string | null> }
  // Unused marks set or cleared.
  | { kind: 'annotate'; annotations: Record<string, string | null> }
  | { kind: 'refresh' }
  // Every image of the batch unused: purge it from the nodes, then delete it.
  | { kind: 'purge' }
  // Deleted: purged, or made for another configuration; images still in use go into a new batch.
  | { kind: 'delete'; reason: 'purged' | 'settings' | 'purge-failed' | 'in use again' }
  // kube-fledged is busy with it, a backoff runs, or another batch is being processed: look again then.
  | { kind: 'wait'; ms: number }
  | { kind: 'foreign' }

export interface Usage {
  // A Pod runs it (last sweep) or admission saw it since.
  inUse: boolean
  // Whether the last Pod sweep is recent enough to act on absence.
  usageKnown: boolean
  // This replica saw it within the purge window.
  recentlyUsed: boolean
}

export interface Timing {
  now: number
  purgeAfterMs: number // 0: never purge
  busyRetryMs: number
  // When a failed cache may be refreshed, or purge retried.
  refreshDueAt: number
  purgeAttempts: number
  maxPurgeAttempts: number
  // How long a finished purge may keep its annotation before mirrorhook stops waiting for kube-fledged to remove it.
  purgeAnnotationGraceMs: number
}

/** Pure: the next step for one batch. */
export function decideBatch(cache: ImageCache, usageOf: (image: string) => Usage, settings: CacheSettings, t: Timing): Action {
  const images = imagesOf(cache)
  if (!images) return { kind: 'foreign' }
  const v = viewOf(cache)
  const usage = new Map(images.map((i) => [i, usageOf(i)]))
  const inUse = images.filter((i) => usage.get(i)!.inUse)
  const usageKnown = images.some((i) => usage.get(i)!.usageKnown)
  const busy: Action = { kind: 'wait', ms: t.busyRetryMs }
  const none: Action = { kind: 'none' }
  const purgeDone =
    v.purgeFinished === 'succeeded' &&
    (!v.purgeRequested || (v.completedAt !== undefined && t.now - v.completedAt >= t.purgeAnnotationGraceMs))
  if (v.purgeRequested || v.purgeFinished) {
    // The batch as a whole is (being) purged; images used again go into a new batch once it is deleted.
    if (v.processing || (v.purgeRequested && !purgeDone)) return inUse.length > 0 ? busy : none
    if (purgeDone) return { kind: 'delete', reason: 'purged' }
    if (v.purgeFinished === 'failed' && !v.purgeRequested) {
      if (inUse.length > 0) return { kind: 'delete', reason: 'in use again' }
      if (t.purgeAfterMs <= 0 || !usageKnown) return none
      if (t.purgeAttempts >= t.maxPurgeAttempts) return { kind: 'delete', reason: 'purge-failed' }
      return t.now >= t.refreshDueAt ? { kind: 'purge' } : { kind: 'wait', ms: t.refreshDueAt - t.now }
    }
    return none
  }
  if (!specMatches(cache, settings)) return v.processing ? busy : { kind: 'delete', reason: 'settings' }

  const known = t.purgeAfterMs > 0 && usageKnown
  const marks = new Map([...v.unusedSince].filter(([i]) => usage.has(i)))
  let marksChanged = marks.size !== v.unusedSince.size
  const removed: string[] = []
  for (const i of images) {
    const u = usage.get(i)!
    if (u.inUse) {
      if (marks.delete(i)) marksChanged = true
      continue
    }
    if (!known) continue
    const since = marks.get(i)
    if (since === undefined) {
      marks.set(i, t.now)
      marksChanged = true
    } else if (t.now - since >= t.purgeAfterMs && !u.recentlyUsed) removed.push(i)
  }
  if (removed.length === images.length) return v.processing ? none : { kind: 'purge' }
  if (removed.length > 0) {
    if (v.processing) return busy
    const keep = images.filter((i) => !removed.includes(i))
    for (const r of removed) marks.delete(r)
    return {
      kind: 'update',
      keep,
      removed,
      annotations: { [UNUSED_SINCE_ANNOTATION]: unusedSinceValue(marks), [ORIGINALS_ANNOTATION]: originalsValue(cache, keep) },
    }
  }
  if (marksChanged) return v.processing ? busy : { kind: 'annotate', annotations: { [UNUSED_SINCE_ANNOTATION]: unusedSinceValue(marks) } }
  const failing = inUse.some((i) => RETRIED_STATES.has(imageStateOf(v, i).state))
  if (failing && !v.processing && !v.refreshRequested) {
    return t.now >= t.refreshDueAt ? { kind: 'refresh' } : { kind: 'wait', ms: t.refreshDueAt - t.now }
  }
  return none
}

export interface PlacementTiming {
  now: number
  busyRetryMs: number
  // How long a new batch waits for one kube-fledged has not finished before it is created anyway.
  batchWaitMs: number
  imagesPerCache: number
}

/** When a batch counts as being worked on by kube-fledged, and since when; undefined when idle. */
export function busySince(cache: ImageCache): number | undefined {
  const v = viewOf(cache)
  const created = cache.metadata.creationTimestamp ? new Date(cache.metadata.creationTimestamp).getTime() : 0
  if (v.untouched) return created
  if (v.processing) return v.startedAt ?? created
  const asked = (key: string) => {
    const raw = cache.metadata.annotations?.[key]
    if (raw === undefined) return undefined
    const at = Date.parse(raw)
    return Number.isNaN(at) ? (v.completedAt ?? created) : at
  }
  // Asked for, not taken yet (kube-fledged removes the refresh annotation when done; a finished purge ends it too).
  if (v.refreshRequested) return asked(REFRESH_ANNOTATION)
  if (v.purgeRequested && !v.purgeFinished) return asked(PURGE_ANNOTATION)
  return undefined
}

/**
 * Pure: whether the images waiting for a batch get one now. One batch at a time: kube-fledged
 * loses pull-Job completions when several caches are processed at once (see the README), and
 * creates its Jobs at its own rate whatever the number of caches, so waiting costs nothing.
 */
export function decidePlacement(waiting: readonly string[], batches: Iterable<ImageCache>, t: PlacementTiming): Action {
  if (waiting.length === 0) return { kind: 'none' }
  let until = -Infinity
  for (const b of batches) {
    const since = busySince(b)
    if (since !== undefined && t.now - since < t.batchWaitMs) until = Math.max(until, since + t.batchWaitMs)
  }
  if (until > t.now) return { kind: 'wait', ms: Math.min(t.busyRetryMs, until - t.now) }
  return { kind: 'create', images: waiting.slice(0, t.imagesPerCache) }
}

export interface CacheStore {
  get(name: string): ImageCache | undefined
  list(): Iterable<ImageCache>
  // The batch holding an image.
  batchOf(image: string): string | undefined
}

export interface UsageSource {
  usage(image: string, now: number): Usage
  original(image: string): string | undefined
}

export interface ReconcilerOptions {
  api: ImageCacheApi
  store: CacheStore
  usage: UsageSource
  settings: CacheSettings
  limiter: TokenBucket
  clock: Clock
  metrics: PrepullMetrics
  logger: Logger
  purgeAfterMs: number
  refreshBackoffMs: number
  refreshBackoffMaxMs: number
  imagesPerCache: number
  batchWaitMs: number
  busyRetryMs?: number
  maxPurgeAttempts?: number
  // Whether kube-fledged is there, the store is filled and this replica holds the Lease; false blocks the queue.
  ready: () => boolean
  // Puts a key on the queue (the placement, once an image waits for it).
  schedule: (key: string, delayMs: number) => void
  // A create answered 404: the CRD or the namespace is gone.
  onMissing: (error: ApiError) => void
  random?: () => number
}

type WriteResult = 'ok' | 'exists' | 'gone' | 'conflict' | Outcome

export class Reconciler {
  // Refresh (or purge retry) requests per batch and when the last one was sent.
  private readonly attempts = new Map<string, { refresh: number; purge: number; lastAt: number }>()
  // Images in use that no batch holds yet, oldest first.
  private readonly waiting = new Set<string>()
  // A batch being created (its name is kept across retries, so a create that went through is not made twice).
  private creating?: { name: string; images: string[] }
  // Batches created and not yet seen by the watch: their images count as placed.
  private readonly created = new Map<string, string[]>()
  // Batches deleted and still shown by the watch: their images are placed no more.
  private readonly gone = new Set<string>()

  constructor(private readonly o: ReconcilerOptions) {}

  private get busyRetryMs(): number {
    return this.o.busyRetryMs ?? 5_000
  }

  /** When the next refresh (or purge retry) of a failed batch may be sent. */
  dueAt(name: string, completedAt: number | undefined): number {
    const a = this.attempts.get(name)
    const n = a ? a.refresh + a.purge : 0
    const delay = backoffMs({ initialMs: this.o.refreshBackoffMs, maxMs: this.o.refreshBackoffMaxMs }, n + 1)
    const since = Math.max(completedAt ?? 0, a?.lastAt ?? 0)
    return since + delay
  }

  /** The batch is healthy (or gone): its retry history starts over. */
  resetAttempts(name: string): void {
    this.attempts.delete(name)
  }

  /** The watch has the batch (or saw it go): it no longer needs remembering. */
  observed(name: string, deleted = false): void {
    this.created.delete(name)
    if (deleted) this.gone.delete(name)
  }

  /** Images waiting for a new batch. */
  get waitingCount(): number {
    return this.waiting.size
  }

  /** Whether an image waits for a new batch (or is in the one being created). */
  isWaiting(image: string): boolean {
    return this.waiting.has(image) || (this.creating?.images.includes(image) ?? false)
  }

  /** The queue key that acts for an image: its batch's, once it has one. */
  keyFor(image: string): string {
    const name = this.o.store.batchOf(image)
    return name ? batchKey(name) : image
  }

  private placed(image: string): boolean {
    const batch = this.o.store.batchOf(image)
    if ((batch !== undefined && !this.gone.has(batch)) || this.creating?.images.includes(image)) return true
    for (const images of this.created.values()) if (images.includes(image)) return true
    return false
  }

  private waitingNow(now: number): string[] {
    const out: string[] = []
    for (const image of this.waiting) {
      if (this.placed(image) || !this.o.usage.usage(image, now).inUse) this.waiting.delete(image)
      else out.push(image)
    }
    return out
  }

  plan(key: string, now = this.o.clock.now()): Action {
    if (key === PLACE_KEY) {
      if (this.creating) return { kind: 'create', images: this.creating.images }
      for (const name of this.created.keys()) if (this.o.store.get(name)) this.created.delete(name)
      const pending = [...this.o.store.list()]
      // Our own batches the watch has not shown yet are busy too.
      const unseen = this.created.size > 0 ? { kind: 'wait', ms: Math.min(1_000, this.busyRetryMs) } : undefined
      const action = decidePlacement(this.waitingNow(now), pending, {
        now,
        busyRetryMs: this.busyRetryMs,
        batchWaitMs: this.o.batchWaitMs,
        imagesPerCache: this.o.imagesPerCache,
      })
      return action.kind === 'create' && unseen ? (unseen as Action) : action
    }
    const found = batchOfKey(key) ?? this.o.store.batchOf(key)
    const name = found !== undefined && this.gone.has(found) ? undefined : found
    if (name === undefined) {
      if (this.placed(key)) return { kind: 'none' }
      return this.o.usage.usage(key, now).inUse ? { kind: 'place' } : { kind: 'none' }
    }
    const cache = this.o.store.get(name)
    if (!cache) return { kind: 'none' }
    const v = viewOf(cache)
    return decideBatch(cache, (image) => this.o.usage.usage(image, now), this.o.settings, {
      now,
      purgeAfterMs: this.o.purgeAfterMs,
      busyRetryMs: this.busyRetryMs,
      refreshDueAt: this.dueAt(name, v.completedAt),
      purgeAttempts: this.attempts.get(name)?.purge ?? 0,
      maxPurgeAttempts: this.o.maxPurgeAttempts ?? 3,
      purgeAnnotationGraceMs: 60_000,
    })
  }

  /** The queue's handler. */
  async reconcile(key: string): Promise<Outcome> {
    if (!this.o.ready()) return { kind: 'blocked' }
    const now = this.o.clock.now()
    const found = batchOfKey(key) ?? (key === PLACE_KEY ? undefined : this.o.store.batchOf(key))
    const name = found !== undefined && this.gone.has(found) ? undefined : found
    const cache = name !== undefined ? this.o.store.get(name) : undefined
    const action = this.plan(key, now)
    const log = this.o.logger
    switch (action.kind) {
      case 'none':
        return { kind: 'done' }
      case 'wait':
        return { kind: 'later', afterMs: action.ms }
      case 'foreign':
        log.error({ name }, 'a managed ImageCache does not have the layout mirrorhook writes (one list of images); leaving it alone')
        return { kind: 'failed' }
      case 'place':
        this.waiting.add(key)
        this.o.schedule(PLACE_KEY, 0)
        return { kind: 'done' }
      case 'create':
        return this.create(action.images, now)
    }
    const c = cache!
    const batch = name!
    const rv = c.metadata.resourceVersion ?? ''
    switch (action.kind) {
      case 'update': {
        const list = c.spec.cacheSpec[0]!
        const r = await this.write('update', () => this.o.api.update(batch, [{ ...list, images: action.keep }], action.annotations, rv))
        if (r !== 'ok') return this.afterMetadataWrite(r)
        log.info(
          { name: batch, removed: action.removed, kept: action.keep.length },
          'no Pod uses these images any more: removed from their ImageCache (kube-fledged deletes them from the nodes)',
        )
        return { kind: 'done' }
      }
      case 'annotate': {
        const r = await this.write('annotate', () => this.o.api.annotate(batch, action.annotations, rv))
        return r === 'ok' ? { kind: 'done' } : this.afterMetadataWrite(r)
      }
      case 'refresh':
      case 'purge': {
        const annotation = action.kind === 'refresh' ? REFRESH_ANNOTATION : PURGE_ANNOTATION
        const r = await this.write('annotate', () => this.o.api.annotate(batch, { [annotation]: new Date(now).toISOString() }, rv))
        if (r !== 'ok') return this.afterMetadataWrite(r)
        const a = this.attempts.get(batch) ?? { refresh: 0, purge: 0, lastAt: 0 }
        const v = viewOf(c)
        if (action.kind === 'refresh') a.refresh++
        else if (v.purgeFinished === 'failed') a.purge++
        a.lastAt = now
        this.attempts.set(batch, a)
        if (action.kind === 'refresh')
          log.info(
            { name: batch, status: c.status?.status, failedNodes: [...new Set(v.failedNodes.map((f) => f.node))] },
            'asked kube-fledged to retry an ImageCache',
          )
        else
          log.info(
            { name: batch, images: imagesOf(c)?.length },
            'no Pod uses the images of this ImageCache any more: asked kube-fledged to purge them from the nodes',
          )
        return { kind: 'done' }
      }
      case 'delete': {
        const r = await this.write('delete', () => this.o.api.remove(batch, { uid: c.metadata.uid ?? '', resourceVersion: rv }))
        if (r === 'ok' || r === 'gone') {
          this.attempts.delete(batch)
          this.created.delete(batch)
          // Its images still in use go into the next new batch.
          if (r === 'ok' && this.o.store.get(batch)) this.gone.add(batch)
          const again = (imagesOf(c) ?? []).filter((i) => this.o.usage.usage(i, now).inUse)
          for (const i of again) this.waiting.add(i)
          if (again.length > 0) this.o.schedule(PLACE_KEY, 0)
          log.info(
            { name: batch, reason: action.reason },
            action.reason === 'purged' ? 'ImageCache deleted after its purge' : 'ImageCache deleted',
          )
          return { kind: 'done' }
        }
        return this.afterMetadataWrite(r)
      }
    }
  }

  private afterMetadataWrite(r: WriteResult): Outcome {
    // The object changed or vanished since it was seen: decide again on fresh data.
    if (r === 'conflict' || r === 'gone' || r === 'exists') return { kind: 'later', afterMs: 1_000 }
    if (r === 'ok') return { kind: 'done' }
    return r
  }

  private async create(images: string[], now: number): Promise<Outcome> {
    if (!this.creating) {
      // A name never reused: an AlreadyExists answer then means this create went through before.
      let name = batchName(now, this.o.random)
      for (let n = 1; this.o.store.get(name) || this.created.has(name); n++) name = `${batchName(now, this.o.random)}${n}`
      this.creating = { name, images }
    }
    const { name } = this.creating
    const originals = new Map(images.map((i) => [i, this.o.usage.original(i)]))
    const body = buildImageCache(name, images, originals, this.o.settings)
    const r = await this.write('create', () => this.o.api.create(body))
    if (r === 'ok' || r === 'exists') {
      this.creating = undefined
      this.created.set(name, images)
      for (const i of images) this.waiting.delete(i)
      this.o.logger.info({ name, images: images.length }, 'ImageCache created')
      if (this.waiting.size > 0) this.o.schedule(PLACE_KEY, 0)
      return { kind: 'done' }
    }
    if (typeof r === 'object' && r.kind === 'failed') this.creating = undefined
    if (r === 'conflict') return { kind: 'later', afterMs: 1_000 }
    if (r === 'gone') return { kind: 'blocked' }
    return r as Outcome
  }

  private async write(verb: 'create' | 'update' | 'annotate' | 'delete', send: () => Promise<void>): Promise<WriteResult> {
    await this.o.limiter.take()
    const count = (result: string) => this.o.metrics.writes.inc({ verb, result })
    try {
      await send()
      count(verb === 'create' ? 'created' : 'ok')
      return 'ok'
    } catch (error) {
      if (!(error instanceof ApiError)) throw error
      if (error.status === 409 && error.reason === 'AlreadyExists') {
        count('already-exists')
        return 'exists'
      }
      if (error.status === 409) {
        count('conflict')
        return 'conflict'
      }
      if (error.status === 404) {
        count('not-found')
        if (verb === 'create') this.o.onMissing(error)
        return 'gone'
      }
      if (error.transient) {
        count('transient')
        this.o.metrics.retries.inc()
        this.o.logger.debug({ verb, err: error.message }, 'ImageCache write failed transiently; retrying with backoff')
        return { kind: 'retry', afterMs: error.retryAfterMs }
      }
      count('error')
      this.o.logger.error({ verb, status: error.status, err: error.message }, 'ImageCache write refused')
      return { kind: 'failed' }
    }
  }
}
