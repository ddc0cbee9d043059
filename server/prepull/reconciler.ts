// What to do for one image, given its ImageCache (as last seen) and whether Pods use it;
// then doing it with at most two rate-limited writes.
import type { Logger } from 'pino'
import type { Clock } from './clock.js'
import {
  buildImageCache,
  type CacheSettings,
  type ImageCache,
  imageCacheName,
  imageOf,
  PURGE_ANNOTATION,
  REFRESH_ANNOTATION,
  specMatches,
  UNUSED_SINCE_ANNOTATION,
  viewOf,
} from './imagecache.js'
import { backoffMs } from '../kube/backoff.js'
import { ApiError } from '../kube/errors.js'
import type { ImageCacheApi } from './kubeapi.js'
import type { PrepullMetrics } from './metrics.js'
import type { Outcome, TokenBucket } from './queue.js'

export type Action =
  | { kind: 'none' }
  | { kind: 'create' }
  // Delete (it has the wrong spec, or was purged) and create again.
  | { kind: 'replace' }
  | { kind: 'refresh' }
  | { kind: 'purge' }
  | { kind: 'delete' }
  | { kind: 'mark-unused' }
  | { kind: 'mark-used' }
  // kube-fledged is busy with it, or a backoff runs: look again then.
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

/** Pure: the next step for one image. */
export function decide(image: string, cache: ImageCache | undefined, usage: Usage, settings: CacheSettings, t: Timing): Action {
  if (!cache) return usage.inUse ? { kind: 'create' } : { kind: 'none' }
  if (imageOf(cache) !== image) return { kind: 'foreign' }
  const v = viewOf(cache)
  const purgeDone =
    v.purgeFinished === 'succeeded' &&
    (!v.purgeRequested || (v.completedAt !== undefined && t.now - v.completedAt >= t.purgeAnnotationGraceMs))
  if (usage.inUse) {
    if (v.purgeRequested || v.purgeFinished) {
      if (v.processing || (v.purgeRequested && !purgeDone)) return { kind: 'wait', ms: t.busyRetryMs }
      return { kind: 'replace' }
    }
    if (!specMatches(cache, settings)) return v.processing ? { kind: 'wait', ms: t.busyRetryMs } : { kind: 'replace' }
    if (v.unusedSince !== undefined) return v.processing ? { kind: 'wait', ms: t.busyRetryMs } : { kind: 'mark-used' }
    if (v.state === 'failed' && !v.processing && !v.refreshRequested) {
      return t.now >= t.refreshDueAt ? { kind: 'refresh' } : { kind: 'wait', ms: t.refreshDueAt - t.now }
    }
    return { kind: 'none' }
  }
  if (t.purgeAfterMs <= 0 || !usage.usageKnown) return { kind: 'none' }
  if (purgeDone) return { kind: 'delete' }
  if (v.purgeFinished === 'failed' && !v.purgeRequested && !v.processing) {
    if (t.purgeAttempts >= t.maxPurgeAttempts) return { kind: 'delete' }
    return t.now >= t.refreshDueAt ? { kind: 'purge' } : { kind: 'wait', ms: t.refreshDueAt - t.now }
  }
  if (v.processing || v.purgeRequested || v.purgeFinished) return { kind: 'none' }
  if (v.unusedSince === undefined) return { kind: 'mark-unused' }
  if (t.now - v.unusedSince >= t.purgeAfterMs && !usage.recentlyUsed) return { kind: 'purge' }
  return { kind: 'none' }
}

export interface CacheStore {
  get(name: string): ImageCache | undefined
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
  busyRetryMs?: number
  maxPurgeAttempts?: number
  // Whether kube-fledged is there and the store is filled; false blocks the queue.
  ready: () => boolean
  // A create answered 404: the CRD or the namespace is gone.
  onMissing: (error: ApiError) => void
}

type WriteResult = 'ok' | 'exists' | 'gone' | 'conflict' | Outcome

export class Reconciler {
  // Refresh (or purge retry) requests per image and when the last one was sent.
  private readonly attempts = new Map<string, { refresh: number; purge: number; lastAt: number }>()

  constructor(private readonly o: ReconcilerOptions) {}

  /** When the next refresh (or purge retry) of a failed cache may be sent. */
  dueAt(image: string, completedAt: number | undefined): number {
    const a = this.attempts.get(image)
    const n = a ? a.refresh + a.purge : 0
    const delay = backoffMs({ initialMs: this.o.refreshBackoffMs, maxMs: this.o.refreshBackoffMaxMs }, n + 1)
    const since = Math.max(completedAt ?? 0, a?.lastAt ?? 0)
    return since + delay
  }

  /** The cache is healthy (or gone): its retry history starts over. */
  resetAttempts(image: string): void {
    this.attempts.delete(image)
  }

  plan(image: string, now = this.o.clock.now()): Action {
    const cache = this.o.store.get(imageCacheName(image))
    const v = cache ? viewOf(cache) : undefined
    return decide(image, cache, this.o.usage.usage(image, now), this.o.settings, {
      now,
      purgeAfterMs: this.o.purgeAfterMs,
      busyRetryMs: this.o.busyRetryMs ?? 5_000,
      refreshDueAt: this.dueAt(image, v?.completedAt),
      purgeAttempts: this.attempts.get(image)?.purge ?? 0,
      maxPurgeAttempts: this.o.maxPurgeAttempts ?? 3,
      purgeAnnotationGraceMs: 60_000,
    })
  }

  /** The queue's handler. */
  async reconcile(image: string): Promise<Outcome> {
    if (!this.o.ready()) return { kind: 'blocked' }
    const now = this.o.clock.now()
    const name = imageCacheName(image)
    const cache = this.o.store.get(name)
    const action = this.plan(image, now)
    const log = this.o.logger
    switch (action.kind) {
      case 'none':
        return { kind: 'done' }
      case 'wait':
        return { kind: 'later', afterMs: action.ms }
      case 'foreign':
        log.error({ image, name }, 'an ImageCache with the name mirrorhook derives for this image holds something else; leaving it alone')
        return { kind: 'failed' }
      case 'create':
        return this.create(image)
      case 'replace': {
        const c = cache!
        const r = await this.write('delete', () => this.o.api.remove(name, precondition(c)))
        if (r === 'conflict') return { kind: 'later', afterMs: 1_000 }
        if (typeof r === 'object') return r
        log.info(
          { image, name, reason: viewOf(c).purgeFinished ? 'purged earlier' : 'spec differs from the configuration' },
          'ImageCache replaced',
        )
        return this.create(image)
      }
      case 'refresh':
      case 'purge': {
        const c = cache!
        const key = action.kind === 'refresh' ? REFRESH_ANNOTATION : PURGE_ANNOTATION
        const r = await this.write('annotate', () =>
          this.o.api.annotate(name, { [key]: new Date(now).toISOString() }, c.metadata.resourceVersion ?? ''),
        )
        if (r === 'ok') {
          const a = this.attempts.get(image) ?? { refresh: 0, purge: 0, lastAt: 0 }
          const v = viewOf(c)
          if (action.kind === 'refresh') a.refresh++
          else if (v.purgeFinished === 'failed') a.purge++
          a.lastAt = now
          this.attempts.set(image, a)
          if (action.kind === 'refresh')
            log.info({ image, name, failedNodes: v.failedNodes.map((f) => f.node) }, 'asked kube-fledged to retry a failed ImageCache')
          else log.info({ image, name }, 'no Pod uses this image any more: asked kube-fledged to purge it from the nodes')
          return { kind: 'done' }
        }
        return this.afterMetadataWrite(r)
      }
      case 'mark-unused':
      case 'mark-used': {
        const c = cache!
        const value = action.kind === 'mark-unused' ? new Date(now).toISOString() : null
        const r = await this.write('annotate', () =>
          this.o.api.annotate(name, { [UNUSED_SINCE_ANNOTATION]: value }, c.metadata.resourceVersion ?? ''),
        )
        return r === 'ok' ? { kind: 'done' } : this.afterMetadataWrite(r)
      }
      case 'delete': {
        const c = cache!
        const r = await this.write('delete', () => this.o.api.remove(name, precondition(c)))
        if (r === 'ok' || r === 'gone') {
          this.attempts.delete(image)
          log.info({ image, name }, 'ImageCache deleted after its purge')
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

  private async create(image: string): Promise<Outcome> {
    const body = buildImageCache(image, this.o.usage.original(image), this.o.settings)
    const r = await this.write('create', () => this.o.api.create(body))
    if (r === 'ok' || r === 'exists') return { kind: 'done' }
    if (r === 'conflict') return { kind: 'later', afterMs: 1_000 }
    if (r === 'gone') return { kind: 'blocked' }
    return r
  }

  private async write(verb: 'create' | 'annotate' | 'delete', send: () => Promise<void>): Promise<WriteResult> {
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
        if (verb === 'create') {
          this.o.onMissing(error)
          return 'gone'
        }
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

function precondition(cache: ImageCache): { uid: string; resourceVersion: string } {
  return { uid: cache.metadata.uid ?? '', resourceVersion: cache.metadata.resourceVersion ?? '' }
}
