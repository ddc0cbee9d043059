// New nodes and collected images: kube-fledged pulls onto a node only when a cache is created or
// refreshed (every 15 minutes by default), so a node that becomes Ready, or whose kubelet removed
// a cached image in use, would wait for that timer. mirrorhook watches the Nodes and asks
// kube-fledged to refresh the caches such a node should hold (`kubefledged.io/refresh-imagecache`):
// - a Node becomes Ready (new, or NotReady → Ready): every managed cache in use whose
//   nodeSelector matches its labels (kube-fledged only pulls what the node does not list);
// - a Ready Node stops listing a cached image in use that it listed before, while its list is
//   under the kubelet's `nodeStatusMaxImages` (at the cap the kubelet reports only the largest
//   images, so absence proves nothing): that image's cache, at most once per `collectedRefreshSeconds`.
// Node events are batched: a burst (many nodes joining) is handled once it has been quiet for
// `quietSeconds` (at most `maxWaitSeconds` after its first event), one refresh per cache. A cache
// kube-fledged is processing is never annotated (it would drop the change): it is looked at
// again every `busyRetrySeconds`. Writes share pre-pull's write rate limit.
// The decisions are the pure functions below; NodeRefresher is the thin shell around them.
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import { z } from 'zod'
import { ApiError } from '../kube/errors.js'
import type { NodeChange, NodeView } from '../kube/nodes.js'
import { type Clock, systemClock, type TimerHandle } from './clock.js'
import { type ImageCache, REFRESH_ANNOTATION, viewOf } from './imagecache.js'
import type { ImageCacheApi } from './kubeapi.js'
import type { PrepullMetrics } from './metrics.js'
import type { TokenBucket } from './queue.js'

export const nodeRefreshSchema = z
  .object({
    enabled: z.boolean().default(true),
    // A burst of node events is handled once no new one came for this long...
    quietSeconds: z.number().nonnegative().max(600).default(5),
    // ...or this long after its first event, whichever comes first.
    maxWaitSeconds: z.number().positive().max(3600).default(30),
    // The kubelet's `nodeStatusMaxImages` (default 50; -1 = no cap): at the cap, an image missing from a Node's list proves nothing.
    nodeStatusMaxImages: z.number().int().min(-1).default(50),
    // A cache refreshed because a node lost one of its images is not refreshed again for that reason within this time.
    collectedRefreshSeconds: z.number().nonnegative().max(86_400).default(600),
    // How long to wait before looking again at a cache kube-fledged is processing.
    busyRetrySeconds: z.number().positive().max(3600).default(5),
  })
  .strict()

export type NodeRefreshConfig = z.infer<typeof nodeRefreshSchema>

export type RefreshReason = 'node-ready' | 'image-collected'

/** What one Node change asks for. */
export type NodeSignal =
  | { readonly reason: 'node-ready'; readonly node: string; readonly labels: Readonly<Record<string, string>> }
  // `removed`: image names the Node listed before and no longer lists.
  | {
      readonly reason: 'image-collected'
      readonly node: string
      readonly labels: Readonly<Record<string, string>>
      readonly removed: readonly string[]
    }

/** Whether a Node's image list may be cut by the kubelet (then an image missing from it proves nothing). */
export function atImageCap(node: NodeView, nodeStatusMaxImages: number): boolean {
  return nodeStatusMaxImages >= 0 && node.imageCount >= nodeStatusMaxImages
}

/** Pure: what a Node change asks for, if anything. The first list at start is the baseline, not a change. */
export function signalOf(change: NodeChange, nodeStatusMaxImages: number): NodeSignal | undefined {
  const { prev, next } = change
  if (change.listed || !next || !next.ready) return undefined
  if (!prev || !prev.ready) return { reason: 'node-ready', node: next.name, labels: next.labels }
  if (atImageCap(next, nodeStatusMaxImages)) return undefined
  const now = new Set(next.images)
  const removed = prev.images.filter((name) => !now.has(name))
  return removed.length > 0 ? { reason: 'image-collected', node: next.name, labels: next.labels, removed } : undefined
}

/** Pure: one Node's signals merged (a node that became Ready needs everything anyway). */
export function mergeSignals(a: NodeSignal | undefined, b: NodeSignal): NodeSignal {
  if (!a) return b
  if (a.reason === 'node-ready' || b.reason === 'node-ready') return { reason: 'node-ready', node: b.node, labels: b.labels }
  return { ...b, removed: [...new Set([...a.removed, ...b.removed])] }
}

// kube-fledged decides "already on the node" by a substring match of the image against the names in
// `status.images`; the same test here for "still there", so mirrorhook never asks for an image
// kube-fledged would find present.
function lists(names: readonly string[], image: string): boolean {
  return names.some((name) => name.includes(image))
}

// Images (keys of `held`) a removed name stood for: the name starts with the image (a full
// reference, or one with a tag or digest after it). Narrower than the substring test: an image
// is taken as lost only on this evidence.
function heldIn(removed: readonly string[], held: ReadonlyMap<string, unknown>): Set<string> {
  const out = new Set<string>()
  for (const name of removed) for (let k = 1; k <= name.length; k++) if (held.has(name.slice(0, k))) out.add(name.slice(0, k))
  return out
}

/** A managed cache as the node decisions need it: any layout (one image per cache or several per list). */
export interface CacheSummary {
  readonly name: string
  readonly lists: readonly { readonly images: readonly string[]; readonly nodeSelector: Readonly<Record<string, string>> }[]
  // Some of its images are in use (the batch is not on its way to a purge).
  readonly inUse: boolean
  // Images of a batch in use that no Pod uses any more (marked unused): not re-offered when a node loses them.
  readonly unused?: readonly string[]
  // kube-fledged has processed it once (its first processing lists the nodes of that moment).
  readonly processed: boolean
  readonly processing: boolean
  readonly refreshRequested: boolean
}

export function summaryOf(cache: ImageCache): CacheSummary {
  const v = viewOf(cache)
  const lists = (cache.spec?.cacheSpec ?? []).map((l) => ({ images: l.images ?? [], nodeSelector: l.nodeSelector ?? {} }))
  const images = new Set(lists.flatMap((l) => l.images))
  const unused = [...images].filter((i) => v.unusedSince.has(i))
  return {
    name: cache.metadata.name ?? '',
    lists,
    inUse: unused.length < images.size && !v.purgeRequested && v.purgeFinished === undefined,
    ...(unused.length > 0 ? { unused } : {}),
    processed: (cache.status?.status ?? '') !== '',
    processing: v.processing,
    refreshRequested: v.refreshRequested,
  }
}

/** kube-fledged's node selection: every label of the selector, with the same value (none: every node). */
export function selectorMatches(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v)
}

export interface Waiting {
  readonly reason: RefreshReason
  // Not looked at again before this time.
  readonly notBefore: number
}

export interface ChooseInput {
  readonly now: number
  // The burst's signals, one per node.
  readonly signals: readonly NodeSignal[]
  // Caches chosen earlier that could not be refreshed yet.
  readonly waiting: ReadonlyMap<string, Waiting>
  readonly caches: readonly CacheSummary[]
  // A Node as it is now (an image a node lost may be back by the time the burst is handled).
  readonly node: (name: string) => NodeView | undefined
  // When each cache was last refreshed for a collected image.
  readonly lastCollectedAt: ReadonlyMap<string, number>
  readonly busyRetryMs: number
  readonly collectedRefreshMs: number
  readonly nodeStatusMaxImages: number
}

export interface Choice {
  readonly refresh: { cache: string; reason: RefreshReason }[]
  readonly waiting: Map<string, Waiting>
  // Chosen but not wanted any more, with why (for the debug log).
  readonly dropped: { cache: string; why: string }[]
}

/** Pure: which caches to refresh now, which to look at again later, for a burst of node signals. */
export function chooseRefreshes(input: ChooseInput): Choice {
  const wanted = new Map<string, RefreshReason>()
  for (const [cache, w] of input.waiting) wanted.set(cache, w.reason)
  const want = (cache: string, reason: RefreshReason) => {
    if (wanted.get(cache) !== 'node-ready') wanted.set(cache, reason)
  }
  const lost = input.signals.filter((s) => s.reason === 'image-collected')
  if (lost.length > 0) {
    // The caches holding each image, so a signal costs its removed names, not the number of caches.
    const holders = new Map<string, CacheSummary[]>()
    for (const c of input.caches)
      if (c.inUse && c.processed)
        for (const image of new Set(c.lists.flatMap((l) => l.images)))
          if (!c.unused?.includes(image)) holders.set(image, [...(holders.get(image) ?? []), c])
    for (const s of lost) {
      const now = input.node(s.node)
      if (!now || !now.ready || atImageCap(now, input.nodeStatusMaxImages)) continue
      for (const image of heldIn(s.removed, holders)) {
        if (lists(now.images, image)) continue
        for (const c of holders.get(image)!)
          if (c.lists.some((l) => l.images.includes(image) && selectorMatches(l.nodeSelector, now.labels))) want(c.name, s.reason)
      }
    }
  }
  const ready = input.signals.filter((s) => s.reason === 'node-ready')
  if (ready.length > 0) {
    // Whether any node of the burst matches a nodeSelector: once per distinct selector (caches share a few).
    const memo = new Map<string, boolean>()
    const matchesBurst = (selector: Readonly<Record<string, string>>) => {
      const key = JSON.stringify(Object.entries(selector).sort())
      let m = memo.get(key)
      if (m === undefined) memo.set(key, (m = ready.some((s) => selectorMatches(selector, s.labels))))
      return m
    }
    for (const c of input.caches)
      if (c.inUse && c.lists.some((l) => l.images.length > 0 && matchesBurst(l.nodeSelector))) want(c.name, 'node-ready')
  }
  const byName = new Map(input.caches.map((c) => [c.name, c]))
  const refresh: Choice['refresh'] = []
  const waiting = new Map<string, Waiting>()
  const dropped: Choice['dropped'] = []
  for (const [cache, reason] of wanted) {
    const c = byName.get(cache)
    if (!c) dropped.push({ cache, why: 'gone' })
    else if (!c.inUse) dropped.push({ cache, why: 'not in use' })
    else if (c.processing) waiting.set(cache, { reason, notBefore: input.now + input.busyRetryMs })
    // Its first processing, still to come, lists the nodes as they are then.
    else if (!c.processed) dropped.push({ cache, why: 'not processed yet' })
    // kube-fledged has not acted on the last request yet: it will see the node then.
    else if (c.refreshRequested) dropped.push({ cache, why: 'refresh already requested' })
    else if (reason === 'image-collected' && (input.lastCollectedAt.get(cache) ?? -Infinity) + input.collectedRefreshMs > input.now)
      waiting.set(cache, { reason, notBefore: input.lastCollectedAt.get(cache)! + input.collectedRefreshMs })
    else refresh.push({ cache, reason })
  }
  return { refresh, waiting, dropped }
}

/** Pure: when a burst that started at `firstAt` and last grew at `lastAt` is handled. */
export function burstDueAt(firstAt: number, lastAt: number, quietMs: number, maxWaitMs: number): number {
  return Math.min(lastAt + quietMs, firstAt + maxWaitMs)
}

export type RefreshOutcome = 'refreshed' | 'busy' | 'gone' | 'conflict' | 'retry' | 'error'

/** Picks, from the managed caches as last seen, the names to refresh. */
export type ChooseCaches = (caches: readonly CacheSummary[]) => readonly string[]

export interface RefreshDeps {
  api: Pick<ImageCacheApi, 'annotate'>
  caches: () => readonly ImageCache[]
  get: (name: string) => ImageCache | undefined
  limiter: Pick<TokenBucket, 'take'>
  metrics: Pick<PrepullMetrics, 'writes' | 'retries'>
  clock: Clock
  // kube-fledged is there and the caches are listed.
  ready: () => boolean
  logger: Logger
}

/**
 * The refresh path for node events: the chosen caches get kube-fledged's refresh annotation, each
 * write through pre-pull's rate limit, each checked again just before (never while Processing).
 * Undefined when pre-pull is not ready (kube-fledged missing or its caches not listed yet); a
 * cache chosen but not answered (pre-pull stopped meanwhile) is not in the map.
 */
export async function refreshChosen(deps: RefreshDeps, choose: ChooseCaches): Promise<Map<string, RefreshOutcome> | undefined> {
  if (!deps.ready()) return undefined
  const names = choose(deps.caches().map(summaryOf))
  const out = new Map<string, RefreshOutcome>()
  for (const name of names) {
    await deps.limiter.take()
    // Stopped (or kube-fledged gone) while waiting for the rate limit: the rest is not answered.
    if (!deps.ready()) break
    const cache = deps.get(name)
    if (!cache) {
      out.set(name, 'gone')
      continue
    }
    const v = viewOf(cache)
    if (v.processing || v.refreshRequested) {
      out.set(name, 'busy')
      continue
    }
    const count = (result: string) => deps.metrics.writes.inc({ verb: 'annotate', result })
    try {
      await deps.api.annotate(
        name,
        { [REFRESH_ANNOTATION]: new Date(deps.clock.now()).toISOString() },
        cache.metadata.resourceVersion ?? '',
      )
      count('ok')
      out.set(name, 'refreshed')
    } catch (error) {
      if (!(error instanceof ApiError)) throw error
      if (error.status === 409) {
        count('conflict')
        out.set(name, 'conflict')
      } else if (error.status === 404) {
        count('not-found')
        out.set(name, 'gone')
      } else if (error.transient) {
        count('transient')
        deps.metrics.retries.inc()
        out.set(name, 'retry')
      } else {
        count('error')
        deps.logger.error({ name, status: error.status, err: error.message }, 'ImageCache refresh refused')
        out.set(name, 'error')
      }
    }
  }
  return out
}

export interface NodeSource {
  subscribe(handler: (change: NodeChange) => void): () => void
  get(name: string): NodeView | undefined
}

export interface NodeRefresherOptions {
  nodes: NodeSource
  // Prepull.refreshCaches.
  refresh: (choose: ChooseCaches) => Promise<Map<string, RefreshOutcome> | undefined>
  config: NodeRefreshConfig
  clock?: Clock
  logger: Logger
  registry: Registry
}

// Node names in the burst's log line.
const LOGGED_NODES = 20

/** The shell: collects node signals into bursts, hands the decision to chooseRefreshes, retries what had to wait. */
export class NodeRefresher {
  private readonly signals = new Map<string, NodeSignal>()
  private burst?: { firstAt: number; lastAt: number }
  private waiting = new Map<string, Waiting>()
  private readonly lastCollectedAt = new Map<string, number>()
  private timer?: { handle: TimerHandle; at: number }
  private running?: Promise<void>
  // Pre-pull was not ready: the burst waits until then.
  private retryAt?: number
  private unsubscribe?: () => void
  private readonly refreshes: Counter<'reason'>
  private readonly signalCount: Counter<'reason'>
  private readonly clock: Clock

  constructor(private readonly o: NodeRefresherOptions) {
    this.clock = o.clock ?? systemClock
    this.refreshes = new Counter({
      name: 'mirrorhook_prepull_node_refreshes_total',
      help: 'ImageCache refreshes requested because of a Node: node-ready (a Node became Ready) or image-collected (a Node lost a cached image in use)',
      labelNames: ['reason'],
      registers: [o.registry],
    })
    this.signalCount = new Counter({
      name: 'mirrorhook_prepull_node_events_total',
      help: 'Node changes that call for a refresh, by reason',
      labelNames: ['reason'],
      registers: [o.registry],
    })
  }

  start(): void {
    this.unsubscribe ??= this.o.nodes.subscribe((change) => this.changed(change))
  }

  async stop(): Promise<void> {
    this.unsubscribe?.()
    this.unsubscribe = undefined
    if (this.timer) this.clock.clearTimeout(this.timer.handle)
    this.timer = undefined
    await this.running
  }

  /** Caches waiting (Processing, rate-limited, or a write to retry), for tests and state. */
  get waitingCount(): number {
    return this.waiting.size
  }

  private changed(change: NodeChange): void {
    const signal = signalOf(change, this.o.config.nodeStatusMaxImages)
    if (!signal) return
    this.signalCount.inc({ reason: signal.reason })
    this.signals.set(signal.node, mergeSignals(this.signals.get(signal.node), signal))
    const now = this.clock.now()
    this.burst = { firstAt: this.burst?.firstAt ?? now, lastAt: now }
    this.arm()
  }

  private dueAt(): number | undefined {
    const c = this.o.config
    let due = this.burst
      ? Math.max(burstDueAt(this.burst.firstAt, this.burst.lastAt, c.quietSeconds * 1000, c.maxWaitSeconds * 1000), this.retryAt ?? 0)
      : Infinity
    for (const w of this.waiting.values()) due = Math.min(due, w.notBefore)
    return due === Infinity ? undefined : due
  }

  private arm(): void {
    // A running round arms the next one when it ends.
    if (!this.unsubscribe || this.running) return
    const at = this.dueAt()
    if (at === undefined || this.timer?.at === at) return
    if (this.timer) this.clock.clearTimeout(this.timer.handle)
    this.timer = {
      at,
      handle: this.clock.setTimeout(
        () => {
          this.timer = undefined
          this.running = this.tick().finally(() => {
            this.running = undefined
            this.arm()
          })
        },
        Math.max(0, at - this.clock.now()),
      ),
    }
  }

  private async tick(): Promise<void> {
    const c = this.o.config
    const now = this.clock.now()
    const burstDue = this.burst && burstDueAt(this.burst.firstAt, this.burst.lastAt, c.quietSeconds * 1000, c.maxWaitSeconds * 1000)
    const signals = burstDue !== undefined && Math.max(burstDue, this.retryAt ?? 0) <= now ? [...this.signals.values()] : []
    if (signals.length > 0) {
      this.signals.clear()
      this.burst = undefined
      this.retryAt = undefined
    }
    for (const [cache, at] of this.lastCollectedAt) if (at + c.collectedRefreshSeconds * 1000 <= now) this.lastCollectedAt.delete(cache)
    let choice: Choice | undefined
    let results: Map<string, RefreshOutcome> | undefined
    try {
      results = await this.o.refresh((caches) => {
        choice = chooseRefreshes({
          now,
          signals,
          waiting: this.waiting,
          caches,
          node: (name) => this.o.nodes.get(name),
          lastCollectedAt: this.lastCollectedAt,
          busyRetryMs: c.busyRetrySeconds * 1000,
          collectedRefreshMs: c.collectedRefreshSeconds * 1000,
          nodeStatusMaxImages: c.nodeStatusMaxImages,
        })
        return choice.refresh.map((r) => r.cache)
      })
    } catch (error) {
      this.o.logger.error({ err: (error as Error).message }, 'node refresh failed unexpectedly')
    }
    if (!choice || !results) {
      // Pre-pull is not ready (or failed): keep the signals for the next attempt.
      for (const s of signals) this.signals.set(s.node, mergeSignals(this.signals.get(s.node), s))
      if (signals.length > 0) this.burst = { firstAt: now, lastAt: now }
      const retryAt = now + c.busyRetrySeconds * 1000
      if (this.burst) this.retryAt = retryAt
      for (const [cache, w] of this.waiting) if (w.notBefore < retryAt) this.waiting.set(cache, { ...w, notBefore: retryAt })
      return
    }
    const waiting = choice.waiting
    const counts: Record<string, number> = {}
    for (const { cache, reason } of choice.refresh) {
      const r = results.get(cache)
      if (r === 'refreshed') {
        this.refreshes.inc({ reason })
        counts[reason] = (counts[reason] ?? 0) + 1
        if (reason === 'image-collected') this.lastCollectedAt.set(cache, now)
      } else if (r === 'busy' || r === 'conflict' || r === 'retry') {
        waiting.set(cache, { reason, notBefore: now + c.busyRetrySeconds * 1000 })
      }
    }
    this.waiting = waiting
    for (const d of choice.dropped) this.o.logger.debug({ name: d.cache, why: d.why }, 'node refresh of an ImageCache not needed')
    if (signals.length > 0) {
      const nodes = signals.map((s) => s.node).sort()
      this.o.logger.info(
        {
          nodes: nodes.slice(0, LOGGED_NODES),
          nodeCount: nodes.length,
          nodesReady: signals.filter((s) => s.reason === 'node-ready').length,
          nodesLostImages: signals.filter((s) => s.reason === 'image-collected').length,
          refreshed: counts,
          waiting: waiting.size,
        },
        'nodes changed: asked kube-fledged to refresh the ImageCaches they should hold',
      )
    } else if (Object.keys(counts).length > 0) {
      this.o.logger.debug({ refreshed: counts, waiting: waiting.size }, 'refreshed ImageCaches that were busy')
    }
  }
}
