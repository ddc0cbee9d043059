// Pre-pull with kube-fledged: admission hands over the mirror references a Pod
// will run; ImageCaches are written later, off the admission path.
import type { KubeConfig } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { AdmittedEvent } from '../admission/review.js'
import { type Clock, systemClock, type TimerHandle } from './clock.js'
import type { KubeFledgedConfig } from './config.js'
import { buildImageCache, type CacheState, type ImageCache, imageOf, isKubeFledgedPod, type NodeFailure, viewOf } from './imagecache.js'
import { ApiError, imageCachePath, type ImageCacheApi, KubeHttp, KubeImageCacheApi, KubePodSource, type PodSource } from './kubeapi.js'
import { PrepullMetrics } from './metrics.js'
import { TokenBucket, WorkQueue } from './queue.js'
import { Reconciler, type Usage, type UsageSource } from './reconciler.js'
import { CacheWatcher } from './watcher.js'

export { kubeFledgedSchema, type KubeFledgedConfig } from './config.js'

/** Which images Pods use: admissions and periodic Pod listings. */
export class UsageTracker implements UsageSource {
  private readonly seen = new Map<string, number>()
  private readonly admitted = new Map<string, number>()
  private readonly created = new Map<string, number>()
  private readonly originals = new Map<string, string>()
  private sweepStart?: number
  private sweepAt?: number

  constructor(
    private readonly purgeAfterMs: number,
    private readonly sweepMs: number,
  ) {}

  touch(image: string, original: string | undefined, now: number, source: 'admission' | 'sweep' = 'admission'): void {
    this.seen.set(image, now)
    if (source === 'admission') this.admitted.set(image, now)
    // The first spelling seen is the one recorded on the object.
    if (original !== undefined && original !== image && !this.originals.has(image)) this.originals.set(image, original)
  }

  // Whoever created the cache saw the image in use then.
  noteCreated(image: string, at: number): void {
    if (at > (this.created.get(image) ?? -Infinity)) this.created.set(image, at)
  }

  forgetCreated(image: string): void {
    this.created.delete(image)
  }

  sweepDone(startedAt: number, inUse: ReadonlyMap<string, string>, now: number): void {
    for (const [image, original] of inUse) this.touch(image, original, now, 'sweep')
    this.sweepStart = startedAt
    this.sweepAt = now
    const keep = 2 * Math.max(this.purgeAfterMs, this.sweepMs, 3_600_000)
    for (const [image, at] of this.seen) {
      if (now - at > keep) {
        this.seen.delete(image)
        this.originals.delete(image)
      }
    }
    for (const [image, at] of this.admitted) if (now - at > this.admissionGraceMs) this.admitted.delete(image)
  }

  usage(image: string, now: number): Usage {
    const seen = this.seen.get(image)
    const created = this.created.get(image)
    // An admitted Pod may be stored only after a sweep listed the Pods: admission alone counts for a while.
    const admitted = this.admitted.get(image)
    const inUse =
      (admitted !== undefined && now - admitted <= this.admissionGraceMs) ||
      (this.sweepStart === undefined ? seen !== undefined : Math.max(seen ?? -Infinity, created ?? -Infinity) >= this.sweepStart)
    const last = Math.max(seen ?? -Infinity, created ?? -Infinity)
    return {
      inUse,
      usageKnown: this.sweepAt !== undefined && now - this.sweepAt <= 2 * this.sweepMs + 60_000,
      recentlyUsed: now - last < this.purgeAfterMs,
    }
  }

  original(image: string): string | undefined {
    return this.originals.get(image)
  }

  // Three sweeps: a Pod is stored seconds after its admission, so one of them lists it.
  private get admissionGraceMs(): number {
    return 3 * this.sweepMs
  }
}

export interface PrepullOptions {
  kubeConfig: KubeConfig
  config: KubeFledgedConfig
  logger: Logger
  registry: Registry
  clock?: Clock
  // How long to wait before looking again at a cache kube-fledged is processing.
  busyRetryMs?: number
}

type Availability = 'unknown' | 'available' | 'missing'

const PROBE_IMAGE = 'mirrorhook.invalid/probe:latest'

export class Prepull {
  readonly metrics: PrepullMetrics
  readonly queue: WorkQueue
  readonly usage: UsageTracker
  private readonly clock: Clock
  private readonly http: KubeHttp
  private readonly api: ImageCacheApi
  private readonly pods: PodSource
  private readonly watcher: CacheWatcher
  private readonly reconciler: Reconciler
  private readonly states = new Map<string, { state: CacheState; failed: NodeFailure[] }>()
  private readonly countByState = new Map<CacheState, number>()
  private availability: Availability = 'unknown'
  private missingReason?: string
  private probeTimer?: TimerHandle
  private probeFailures = 0
  private sweepTimer?: TimerHandle
  private sweeping?: Promise<void>
  private running = false

  constructor(private readonly o: PrepullOptions) {
    const c = o.config
    this.clock = o.clock ?? systemClock
    this.metrics = new PrepullMetrics(o.registry)
    this.metrics.available.set(0)
    this.http = new KubeHttp(o.kubeConfig, { maxSockets: Math.min(64, Math.max(4, Math.ceil(c.writesPerSecond / 10))) })
    this.api = new KubeImageCacheApi(this.http, c.namespace)
    this.pods = new KubePodSource(this.http)
    this.usage = new UsageTracker(c.unusedPurgeSeconds * 1000, c.podSweepSeconds * 1000)
    const logger = o.logger
    this.watcher = new CacheWatcher({
      kubeConfig: o.kubeConfig,
      api: this.api,
      namespace: c.namespace,
      clock: this.clock,
      logger,
      onChange: (cache) => this.observed(cache),
      onDelete: (cache) => this.observedDeletion(cache),
      onSynced: () => {
        logger.info({ caches: this.watcher.list().length, namespace: c.namespace }, 'managed ImageCaches listed; pre-pull running')
        this.queue.resume()
        void this.sweep()
      },
      onMissing: () => this.markMissing('the ImageCache API answered 404'),
    })
    this.reconciler = new Reconciler({
      api: this.api,
      store: this.watcher,
      usage: this.usage,
      settings: c,
      limiter: new TokenBucket(c.writesPerSecond, c.writeBurst, this.clock),
      clock: this.clock,
      metrics: this.metrics,
      logger,
      purgeAfterMs: c.unusedPurgeSeconds * 1000,
      refreshBackoffMs: c.refreshBackoffSeconds * 1000,
      refreshBackoffMaxMs: c.refreshBackoffMaxSeconds * 1000,
      busyRetryMs: o.busyRetryMs,
      ready: () => this.availability === 'available' && this.watcher.synced,
      onMissing: (error) => this.markMissing(describeMissing(error, c.namespace)),
    })
    this.queue = new WorkQueue({
      capacity: c.queueSize,
      dedupeMs: c.dedupeSeconds * 1000,
      batchSize: c.batchSize,
      concurrency: Math.min(64, Math.max(2, Math.ceil(c.writesPerSecond / 10))),
      batchDelayMs: 100,
      backoffInitialMs: 500,
      backoffMaxMs: 30_000,
      clock: this.clock,
      handle: (image) => this.reconciler.reconcile(image),
      onError: (image, error) => logger.error({ image, err: error }, 'pre-pull step failed unexpectedly'),
    })
    this.metrics.queueStats = () => this.queue.stats()
  }

  /** The admission hook: synchronous, O(images), no I/O. */
  readonly onAdmitted = (event: AdmittedEvent): void => {
    if (event.request.dryRun === true) {
      // The server never calls this for dry-run; a change that did would create objects for requests that persist nothing.
      this.metrics.dryRunRefused.inc()
      this.o.logger.error({ uid: event.request.uid }, 'pre-pull was handed a dry-run admission; ignored')
      return
    }
    const pod = event.request.object as { metadata?: { labels?: unknown } } | undefined
    if (isKubeFledgedPod(pod?.metadata?.labels)) return
    const now = this.clock.now()
    for (const plan of event.result.plans) {
      // Debug containers run once on one node: not worth pulling everywhere.
      if (plan.decision.action !== 'rewrite' || plan.field === 'ephemeralContainers') continue
      const image = plan.decision.rewritten
      this.usage.touch(image, plan.decision.original, now)
      const result = this.queue.offer(image)
      this.metrics.offers.inc({ result })
      if (result === 'dropped') this.metrics.dropped.inc({ source: 'admission' })
    }
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.queue.start()
    void this.probe()
  }

  async stop(): Promise<void> {
    this.running = false
    if (this.probeTimer) this.clock.clearTimeout(this.probeTimer)
    if (this.sweepTimer) this.clock.clearTimeout(this.sweepTimer)
    await this.queue.stop()
    await this.watcher.stop()
    await this.sweeping
    this.http.close()
  }

  get available(): boolean {
    return this.availability === 'available'
  }

  get synced(): boolean {
    return this.watcher.synced
  }

  /** Per-image state as last seen from kube-fledged's status. */
  stateOf(image: string): { state: CacheState; failed: NodeFailure[] } | undefined {
    return this.states.get(image)
  }

  stateCounts(): Record<string, number> {
    return Object.fromEntries(this.countByState)
  }

  // Looks for the ImageCache API with a dry-run create: 404 means no CRD (or no namespace).
  private async probe(): Promise<void> {
    this.probeTimer = undefined
    if (!this.running) return
    const c = this.o.config
    const body = buildImageCache(PROBE_IMAGE, undefined, c)
    body.metadata.name = 'mirrorhook-probe'
    try {
      await this.http.request('POST', imageCachePath(c.namespace), { body, query: { dryRun: 'All' } })
      this.markAvailable()
    } catch (error) {
      const e = error instanceof ApiError ? error : new ApiError(0, String(error))
      if (e.status === 409) {
        this.markAvailable()
      } else if (e.status === 404) {
        this.probeFailures = 0
        this.markMissing(describeMissing(e, c.namespace))
      } else {
        this.probeFailures++
        const delay = Math.min(c.crdPollSeconds * 1000, 1000 * 2 ** Math.min(this.probeFailures, 6))
        if (this.probeFailures === 1 || e.status !== 0) {
          this.o.logger.warn({ err: e.message, retryInMs: delay }, 'cannot reach the ImageCache API yet')
        }
        this.scheduleProbe(delay)
      }
    }
  }

  private scheduleProbe(ms: number): void {
    if (!this.running || this.probeTimer) return
    this.probeTimer = this.clock.setTimeout(() => void this.probe(), ms)
  }

  private markAvailable(): void {
    this.probeFailures = 0
    if (this.availability !== 'available') {
      const was = this.availability
      this.availability = 'available'
      this.missingReason = undefined
      this.metrics.available.set(1)
      if (was === 'missing') this.o.logger.info({ namespace: this.o.config.namespace }, 'kube-fledged is available now; pre-pull starts')
    }
    this.watcher.start()
    this.armSweep()
  }

  private markMissing(reason: string): void {
    const changed = this.availability !== 'missing' || this.missingReason !== reason
    this.availability = 'missing'
    this.missingReason = reason
    this.metrics.available.set(0)
    if (changed) {
      this.o.logger.warn(
        { namespace: this.o.config.namespace, reason, recheckSeconds: this.o.config.crdPollSeconds },
        `kube-fledged is not available (${reason}): admission is unaffected; images are not pre-pulled until it appears`,
      )
    }
    void this.watcher.stop()
    this.scheduleProbe(this.o.config.crdPollSeconds * 1000)
  }

  private armSweep(): void {
    if (this.sweepTimer || !this.running) return
    this.sweepTimer = this.clock.setTimeout(() => {
      this.sweepTimer = undefined
      void this.sweep().finally(() => this.armSweep())
    }, this.o.config.podSweepSeconds * 1000)
  }

  /** Lists running Pods: images in use get a cache, caches of unused images move towards purge. */
  sweep(): Promise<void> {
    if (this.sweeping) return this.sweeping
    if (!this.available || !this.watcher.synced) return Promise.resolve()
    this.sweeping = (async () => {
      const started = this.clock.now()
      try {
        const inUse = await this.pods.imagesInUse()
        this.usage.sweepDone(started, inUse, this.clock.now())
        this.metrics.sweeps.inc({ result: 'ok' })
        this.metrics.inUse.set(inUse.size)
        for (const image of inUse.keys()) this.consider(image, 'sweep')
        for (const cache of this.watcher.list()) {
          const image = imageOf(cache)
          if (image && !inUse.has(image)) this.consider(image, 'sweep')
        }
      } catch (error) {
        this.metrics.sweeps.inc({ result: 'error' })
        this.o.logger.warn({ err: (error as Error).message }, 'cannot list Pods to see which images are in use; trying again later')
      }
    })().finally(() => {
      this.sweeping = undefined
    })
    return this.sweeping
  }

  // Queues the image if its next step is a write (or a timed wait).
  private consider(image: string, source: 'sweep' | 'status'): void {
    const action = this.reconciler.plan(image)
    if (action.kind === 'none' || action.kind === 'foreign') return
    const result = this.queue.schedule(image, action.kind === 'wait' ? action.ms : 0)
    if (result === 'dropped') this.metrics.dropped.inc({ source })
  }

  private observed(cache: ImageCache): void {
    const image = imageOf(cache)
    if (!image) return
    const created = cache.metadata.creationTimestamp ? new Date(cache.metadata.creationTimestamp).getTime() : NaN
    if (!Number.isNaN(created)) this.usage.noteCreated(image, created)
    const view = viewOf(cache)
    this.setState(image, view.state, view.state === 'failed' || view.state === 'purge-failed' ? view.failedNodes : [], cache)
    if (view.state === 'cached') this.reconciler.resetAttempts(image)
    this.consider(image, 'status')
  }

  private observedDeletion(cache: ImageCache): void {
    const image = imageOf(cache)
    if (!image) return
    this.setState(image, undefined, [], cache)
    this.usage.forgetCreated(image)
    this.queue.forget(image)
    this.consider(image, 'status')
  }

  private setState(image: string, state: CacheState | undefined, failed: NodeFailure[], cache: ImageCache): void {
    const m = this.metrics
    const prev = this.states.get(image)
    if (prev) {
      this.countByState.set(prev.state, (this.countByState.get(prev.state) ?? 1) - 1)
      m.images.set({ state: prev.state }, this.countByState.get(prev.state) ?? 0)
      if (prev.state !== 'cached') m.imageState.remove({ image, state: prev.state })
      for (const f of prev.failed) m.imageFailedNode.remove({ image, node: f.node, reason: f.reason })
    }
    if (!state) {
      this.states.delete(image)
      return
    }
    this.states.set(image, { state, failed })
    this.countByState.set(state, (this.countByState.get(state) ?? 0) + 1)
    m.images.set({ state }, this.countByState.get(state) ?? 0)
    if (state !== 'cached') m.imageState.set({ image, state }, 1)
    for (const f of failed) m.imageFailedNode.set({ image, node: f.node, reason: f.reason }, 1)
    if (prev?.state === state && sameFailures(prev.failed, failed)) return
    const name = cache.metadata.name
    const log = this.o.logger
    if (state === 'cached') log.info({ image, name }, 'image cached on the nodes')
    else if (state === 'failed') {
      log.warn(
        { image, name, status: cache.status?.status, reason: cache.status?.reason, failures: failed },
        `image pre-pull failed on ${failed.length} node(s)${failed.length ? `: ${failed.map((f) => f.node).join(', ')}` : ''}`,
      )
    } else if (state === 'purged') log.info({ image, name }, 'image purged from the nodes')
    else if (state === 'purge-failed') log.warn({ image, name, failures: failed }, 'image purge failed on some nodes')
    else log.debug({ image, name, state }, 'ImageCache state')
  }
}

function sameFailures(a: NodeFailure[], b: NodeFailure[]): boolean {
  return a.length === b.length && a.every((f, i) => f.node === b[i]?.node && f.reason === b[i]?.reason)
}

function describeMissing(error: ApiError, namespace: string): string {
  if (error.details?.kind === 'namespaces') return `namespace ${namespace} does not exist`
  return 'no imagecaches.kubefledged.io/v1alpha2 API (the kube-fledged CRD is not installed)'
}
