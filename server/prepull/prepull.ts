// Pre-pull with kube-fledged: admission hands over the mirror references a Pod
// will run; ImageCaches (batches of images) are written later, off the admission path,
// by the one replica that holds the pre-pull Lease.
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { KubeConfig } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { AdmittedEvent } from '../admission/review.js'
import { LeaseElector } from '../kube/lease.js'
import type { PodCache } from '../kube/pods.js'
import { KubeFledgedAvailability, describeMissing } from './availability.js'
import { type Clock, systemClock, type TimerHandle } from './clock.js'
import type { KubeFledgedConfig } from './config.js'
import {
  type CacheState,
  describeFailure,
  type ImageCache,
  imagesOf,
  imageStateOf,
  isKubeFledgedPod,
  type NodeFailure,
  viewOf,
} from './imagecache.js'
import { CachedPodSource, KubeImageCacheApi, type PodSource } from './kubeapi.js'
import { PrepullMetrics } from './metrics.js'
import { type ChooseCaches, refreshChosen, type RefreshOutcome } from './nodes.js'
import { TokenBucket, WorkQueue } from './queue.js'
import { batchKey, batchOfKey, busySince, PLACE_KEY, Reconciler } from './reconciler.js'
import { CacheStatus } from './status.js'
import { UsageTracker } from './usage.js'
import { CacheWatcher } from './watcher.js'

export interface PrepullOptions {
  kubeConfig: KubeConfig
  config: KubeFledgedConfig
  logger: Logger
  registry: Registry
  // The process's shared Pod watch: which rewritten images running Pods use.
  pods?: PodCache
  clock?: Clock
  // How long to wait before looking again at a cache kube-fledged is processing.
  busyRetryMs?: number
  // Who may write (tests); by default the Lease named in the configuration.
  writer?: Writer
}

/** One writer of ImageCaches across replicas. */
export interface Writer {
  readonly acting: boolean
  start(): void
  stop(): Promise<void>
}

// Transient write failures: 500 ms, doubling to 30 s (jittered by the queue).
export const WRITE_BACKOFF = { initialMs: 500, maxMs: 30_000 }

export class Prepull {
  readonly metrics: PrepullMetrics
  readonly queue: WorkQueue
  readonly usage: UsageTracker
  private readonly clock: Clock
  private readonly api: KubeImageCacheApi
  private readonly pods?: PodSource
  private readonly watcher: CacheWatcher
  private readonly reconciler: Reconciler
  private readonly status: CacheStatus
  private readonly availability: KubeFledgedAvailability
  private readonly limiter: TokenBucket
  private readonly writer: Writer
  private sweepTimer?: TimerHandle
  private sweeping?: Promise<void>
  private running = false

  constructor(private readonly o: PrepullOptions) {
    const c = o.config
    this.clock = o.clock ?? systemClock
    this.metrics = new PrepullMetrics(o.registry)
    this.api = new KubeImageCacheApi(o.kubeConfig, c.namespace, {
      maxSockets: Math.min(64, Math.max(4, Math.ceil(c.writesPerSecond / 10))),
    })
    this.pods = o.pods ? new CachedPodSource(o.pods) : undefined
    this.usage = new UsageTracker(c.unusedPurgeSeconds * 1000, c.podSweepSeconds * 1000)
    this.status = new CacheStatus(this.metrics, o.logger)
    const logger = o.logger
    this.watcher = new CacheWatcher({
      kubeConfig: o.kubeConfig,
      api: this.api,
      namespace: c.namespace,
      clock: this.clock,
      logger,
      onChange: (cache, before) => this.observed(cache, before),
      onDelete: (cache, before) => this.observedDeletion(cache, before),
      onSynced: () => {
        logger.info({ caches: this.watcher.count, namespace: c.namespace }, 'managed ImageCaches listed; pre-pull running')
        this.resume()
      },
      onMissing: () => this.availability.markMissing('the ImageCache API answered 404'),
    })
    this.availability = new KubeFledgedAvailability({
      api: this.api,
      config: c,
      clock: this.clock,
      logger,
      metrics: this.metrics,
      onAvailable: () => {
        this.watcher.start()
        this.armSweep()
      },
      onMissing: () => void this.watcher.stop(),
    })
    this.limiter = new TokenBucket(c.writesPerSecond, c.writeBurst, this.clock)
    this.reconciler = new Reconciler({
      api: this.api,
      store: this.watcher,
      usage: this.usage,
      settings: c,
      limiter: this.limiter,
      clock: this.clock,
      metrics: this.metrics,
      logger,
      purgeAfterMs: c.unusedPurgeSeconds * 1000,
      refreshBackoffMs: c.refreshBackoffSeconds * 1000,
      refreshBackoffMaxMs: c.refreshBackoffMaxSeconds * 1000,
      busyRetryMs: o.busyRetryMs,
      imagesPerCache: c.imagesPerCache,
      batchWaitMs: c.batchWaitSeconds * 1000,
      ready: () => this.availability.available && this.watcher.synced && this.writer.acting,
      schedule: (key, delayMs) => void this.queue.schedule(key, delayMs),
      onMissing: (error) => this.availability.markMissing(describeMissing(error, c.namespace)),
    })
    this.queue = new WorkQueue({
      capacity: c.queueSize,
      dedupeMs: c.dedupeSeconds * 1000,
      batchSize: c.batchSize,
      concurrency: Math.min(64, Math.max(2, Math.ceil(c.writesPerSecond / 10))),
      batchDelayMs: 100,
      backoffInitialMs: WRITE_BACKOFF.initialMs,
      backoffMaxMs: WRITE_BACKOFF.maxMs,
      clock: this.clock,
      handle: (image) => this.reconciler.reconcile(image),
      onError: (image, error) => logger.error({ image, err: error }, 'pre-pull step failed unexpectedly'),
    })
    this.metrics.queueStats = () => this.queue.stats()
    this.metrics.layout = () => ({ caches: this.watcher.count, waiting: this.reconciler.waitingCount })
    this.writer =
      o.writer ??
      new LeaseElector({
        kubeConfig: o.kubeConfig,
        namespace: c.namespace,
        name: c.lease,
        identity: `${hostname()}_${randomUUID()}`,
        durationSeconds: c.leaseDurationSeconds,
        logger,
        what: 'pre-pull',
        onChange: (leader) => this.metrics.leader.set(leader ? 1 : 0),
        // A new writer adopts the batches the watch shows, and looks at every image in use.
        onActing: () => this.resume(),
      })
  }

  // Runs what waited for the watch, kube-fledged or the Lease.
  private resume(): void {
    if (!this.watcher.synced || !this.writer.acting) return
    this.queue.resume()
    for (const cache of this.watcher.list()) if (cache.metadata.name) this.consider(batchKey(cache.metadata.name), 'status')
    void this.sweep()
  }

  /** Whether this replica is the one writing ImageCaches. */
  get writing(): boolean {
    return this.writer.acting
  }

  /** Whether an image is still to be written: queued, or waiting for a new batch. */
  holds(image: string): boolean {
    return this.queue.has(image) || this.reconciler.isWaiting(image)
  }

  /** Managed ImageCaches, images they hold, images held twice, images waiting for a batch. */
  layout(): { caches: number; images: number; duplicates: number; waiting: number } {
    return {
      caches: this.watcher.count,
      images: this.watcher.images,
      duplicates: this.watcher.duplicates,
      waiting: this.reconciler.waitingCount,
    }
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

  /** A mirror reference a remediated Pod now pulls (its original for usage), queued like an admitted one. */
  readonly offer = (image: string, original: string): void => {
    this.usage.touch(image, original, this.clock.now())
    const result = this.queue.offer(image)
    this.metrics.offers.inc({ result })
    if (result === 'dropped') this.metrics.dropped.inc({ source: 'remediation' })
  }

  /**
   * Pre-warm: images to pull ahead of any Pod (`original`: the reference it stands for), each
   * counted as in use until `keepUntilMs`, so its cache is created now and not purged before then.
   */
  prewarm(entries: readonly { image: string; original?: string }[], keepUntilMs: number): void {
    for (const { image, original } of entries) {
      this.usage.pin(image, original, keepUntilMs)
      const result = this.queue.offer(image)
      this.metrics.offers.inc({ result })
      if (result === 'dropped') this.metrics.dropped.inc({ source: 'prewarm' })
    }
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.queue.start()
    this.writer.start()
    this.availability.start()
  }

  async stop(): Promise<void> {
    this.running = false
    this.availability.stop()
    if (this.sweepTimer) this.clock.clearTimeout(this.sweepTimer)
    await this.queue.stop()
    await this.writer.stop()
    await this.watcher.stop()
    await this.sweeping
  }

  get available(): boolean {
    return this.availability.available
  }

  get synced(): boolean {
    return this.watcher.synced
  }

  /** Per-image state as last seen from kube-fledged's status. */
  stateOf(image: string): { state: CacheState; failed: NodeFailure[] } | undefined {
    return this.status.get(image)
  }

  stateCounts(): Record<string, number> {
    return this.status.counts()
  }

  /**
   * The node hook (server/prepull/nodes.ts): `choose` picks, from the managed caches as last seen,
   * those a new node or a node that lost an image should get again; each gets kube-fledged's
   * refresh annotation, with the write rate limit of every other write, never while Processing.
   * A batch is refreshed as a whole (kube-fledged pulls each of its images on the nodes that do not list it).
   * Undefined (nothing chosen) while kube-fledged is missing, its caches are not listed yet or
   * another replica holds the pre-pull Lease.
   */
  refreshCaches(choose: ChooseCaches): Promise<Map<string, RefreshOutcome> | undefined> {
    return refreshChosen(
      {
        api: this.api,
        caches: () => this.watcher.list(),
        get: (name) => this.watcher.get(name),
        limiter: this.limiter,
        metrics: this.metrics,
        clock: this.clock,
        ready: () => this.running && this.available && this.watcher.synced && this.writer.acting,
        logger: this.o.logger,
      },
      choose,
    )
  }

  private armSweep(): void {
    if (this.sweepTimer || !this.running) return
    this.sweepTimer = this.clock.setTimeout(() => {
      this.sweepTimer = undefined
      void this.sweep().finally(() => this.armSweep())
    }, this.o.config.podSweepSeconds * 1000)
  }

  /** Reads the running Pods: images in use get a cache, caches of unused images move towards purge. */
  sweep(): Promise<void> {
    if (this.sweeping) return this.sweeping
    if (!this.pods || !this.available || !this.watcher.synced) return Promise.resolve()
    const pods = this.pods
    this.sweeping = (async () => {
      const started = this.clock.now()
      try {
        const inUse = await pods.imagesInUse()
        this.usage.sweepDone(started, inUse, this.clock.now())
        this.metrics.sweeps.inc({ result: 'ok' })
        this.metrics.inUse.set(inUse.size)
        for (const image of inUse.keys()) this.consider(image, 'sweep')
        for (const cache of this.watcher.list()) if (cache.metadata.name) this.consider(batchKey(cache.metadata.name), 'sweep')
      } catch (error) {
        this.metrics.sweeps.inc({ result: 'error' })
        this.o.logger.warn({ err: (error as Error).message }, 'cannot read the Pods to see which images are in use; trying again later')
      }
    })().finally(() => {
      this.sweeping = undefined
    })
    return this.sweeping
  }

  // Queues the image's (or batch's) key if its next step is a write (or a timed wait).
  private consider(imageOrKey: string, source: 'sweep' | 'status'): void {
    const key = imageOrKey === PLACE_KEY || batchOfKey(imageOrKey) !== undefined ? imageOrKey : this.reconciler.keyFor(imageOrKey)
    const action = this.reconciler.plan(key)
    if (action.kind === 'none' || action.kind === 'foreign') return
    const result = this.queue.schedule(key, action.kind === 'wait' ? action.ms : 0)
    if (result === 'dropped') this.metrics.dropped.inc({ source })
  }

  // Images that left a batch (or whose batch went): their state is gone; if in use, they get a new batch.
  private released(images: readonly string[]): void {
    for (const image of images) {
      if (this.watcher.batchOf(image) !== undefined) continue
      this.status.set(image, undefined, [], undefined)
      this.usage.forgetCreated(image)
      this.queue.forget(image)
      this.consider(image, 'status')
    }
  }

  private observed(cache: ImageCache, before: readonly string[]): void {
    const name = cache.metadata.name
    if (!name) return
    this.reconciler.observed(name)
    const images = imagesOf(cache) ?? []
    this.released(before.filter((i) => !images.includes(i)))
    const created = cache.metadata.creationTimestamp ? new Date(cache.metadata.creationTimestamp).getTime() : NaN
    const view = viewOf(cache)
    for (const image of images) {
      if (!Number.isNaN(created)) this.usage.noteCreated(image, created)
      let s = imageStateOf(view, image)
      // While kube-fledged refreshes or updates a batch, its images keep what the last run found.
      const prev = this.status.get(image)
      if (view.processing && view.state === 'pending' && prev && before.includes(image) && prev.state !== 'pending') s = prev
      this.status.set(image, s.state, s.failed.map(describeFailure), cache)
    }
    if (view.state === 'cached') this.reconciler.resetAttempts(name)
    this.consider(batchKey(name), 'status')
    if (this.reconciler.waitingCount > 0 && busySince(cache) === undefined) this.consider(PLACE_KEY, 'status')
  }

  private observedDeletion(cache: ImageCache, before: readonly string[]): void {
    const name = cache.metadata.name
    if (!name) return
    this.reconciler.observed(name, true)
    this.reconciler.resetAttempts(name)
    this.released(before)
    if (this.reconciler.waitingCount > 0) this.consider(PLACE_KEY, 'status')
  }
}
