// Passive learning: what the cluster's own pulls say about registries. Pods and
// their Events are watched (informers) in the namespaces that opted in; the
// kubelet's messages are turned into observations. Nothing here contacts a
// registry: a host named in a Pod spec is only ever a key in the table.
import {
  CoreV1Api,
  type CoreV1Event,
  type KubeConfig,
  ListWatch,
  makeInformer,
  type V1Namespace,
  type V1Pod,
  Watch,
} from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { type MirrorTarget, type Policy, registryKey } from '../core/policy.js'
import { tryParseNormalizedNamed } from '../core/reference.js'
import { classifyPullFailure, meansUnreachable, parsePulledMessage } from './classify.js'
import { formatMs } from './probe.js'
import type { Observation } from './state.js'

export type Finding =
  | { readonly kind: 'registry'; readonly registry: string; readonly observation: Observation }
  | { readonly kind: 'refusal'; readonly repository: string; readonly detail: string; readonly at: number }

interface ImageFacts {
  registry: string
  repository: string
  mirror?: MirrorTarget
}

function imageFacts(image: string, policy: Policy): ImageFacts | undefined {
  const parsed = tryParseNormalizedNamed(image)
  if (!parsed.ok) return undefined
  const repository = `${parsed.ref.domain}/${parsed.ref.path}`
  const mirror = policy.mirrors.find((m) => repository.startsWith(`${m.repoPrefix}/`))
  return { registry: registryKey(parsed.ref.domain), repository, mirror }
}

const PULL_WAITING = new Set(['ErrImagePull', 'ImagePullBackOff'])

// `Back-off pulling image "x": ErrImagePull: <error>` carries the last pull error since 1.30.
function pullErrorOf(reason: string, message: string): string | undefined {
  if (reason === 'ErrImagePull') return message
  const m = /^Back-off pulling image "[^"]*": (?:ErrImagePull|RegistryUnavailable|\w+): ([\s\S]+)$/.exec(message)
  return m?.[1]
}

export interface ContainerPullFailure {
  readonly container: string
  readonly image: string
  readonly reason: string
  readonly error: string
}

type ContainerStatusLike = { name?: string; image?: string; state?: { waiting?: { reason?: string; message?: string } } }
type ContainerLike = { name?: string; image?: string }

/** Containers of a Pod waiting on a failed pull, with the error the kubelet reported. */
export function pullFailures(pod: V1Pod): ContainerPullFailure[] {
  const specImages = new Map<string, string>()
  for (const list of [pod.spec?.initContainers, pod.spec?.containers, pod.spec?.ephemeralContainers] as (ContainerLike[] | undefined)[]) {
    for (const c of list ?? []) if (c.name && c.image) specImages.set(c.name, c.image)
  }
  const out: ContainerPullFailure[] = []
  const status = pod.status
  for (const list of [status?.initContainerStatuses, status?.containerStatuses, status?.ephemeralContainerStatuses] as (
    ContainerStatusLike[] | undefined
  )[]) {
    for (const s of list ?? []) {
      const waiting = s.state?.waiting
      if (!s.name || !waiting?.reason || !PULL_WAITING.has(waiting.reason) || !waiting.message) continue
      const error = pullErrorOf(waiting.reason, waiting.message)
      const image = specImages.get(s.name) ?? s.image
      if (error && image) out.push({ container: s.name, image, reason: waiting.reason, error })
    }
  }
  return out
}

function podName(pod: { metadata?: { namespace?: string; name?: string } }): string {
  return `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`
}

/** What one failed pull tells: its registry is unreachable, or the mirror refuses this image, or nothing. */
export function findingForFailure(
  failure: { image: string; error: string; where: string },
  source: 'pod' | 'event',
  policy: Policy,
  at: number,
): Finding | undefined {
  const facts = imageFacts(failure.image, policy)
  if (!facts) return undefined
  const cls = classifyPullFailure(failure.error)
  if (meansUnreachable(cls.kind)) {
    return {
      kind: 'registry',
      registry: facts.registry,
      observation: { at, source, outcome: 'fail', detail: `${cls.cause} pulling ${failure.image} (${failure.where})` },
    }
  }
  if (cls.kind === 'forbidden' && facts.mirror) {
    return { kind: 'refusal', repository: facts.repository, detail: `${cls.cause} (${failure.where})`, at }
  }
  return undefined
}

/** What a Pulled event tells: its registry is fast enough, or slow. */
export function findingForPulled(message: string, where: string, policy: Policy, slowMs: number, at: number): Finding | undefined {
  const pulled = parsePulledMessage(message)
  if (!pulled) return undefined
  const facts = imageFacts(pulled.image, policy)
  if (!facts) return undefined
  const slow = pulled.durationMs > slowMs
  return {
    kind: 'registry',
    registry: facts.registry,
    observation: {
      at,
      source: 'event',
      outcome: slow ? 'slow' : 'ok',
      durationMs: pulled.durationMs,
      detail: `pull of ${pulled.image} took ${formatMs(pulled.durationMs)}${slow ? ` (over ${formatMs(slowMs)})` : ''} (${where})`,
    },
  }
}

function eventTime(e: CoreV1Event): number | undefined {
  const t = e.series?.lastObservedTime ?? e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp ?? e.metadata?.creationTimestamp
  if (!t) return undefined
  const ms = new Date(t as unknown as string).getTime()
  return Number.isFinite(ms) ? ms : undefined
}

// Remembers what was already counted, so relists and repeated updates are not counted twice.
class Seen {
  private readonly keys = new Map<string, string>()
  constructor(private readonly max: number) {}
  get(key: string): string | undefined {
    return this.keys.get(key)
  }
  set(key: string, value: string): void {
    this.keys.delete(key)
    this.keys.set(key, value)
    if (this.keys.size > this.max) {
      const first = this.keys.keys().next().value
      if (first !== undefined) this.keys.delete(first)
    }
  }
  forgetPrefix(prefix: string): void {
    for (const k of this.keys.keys()) if (k.startsWith(prefix)) this.keys.delete(k)
  }
}

export interface LearnerOptions {
  kubeConfig: KubeConfig
  namespaceSelector: string
  excludedNamespaces: ReadonlySet<string>
  policy: () => Policy
  slowPullMs: number
  // Events older than this say nothing about now.
  maxAgeMs: number
  onFinding: (finding: Finding) => void
  logger: Logger
  now?: () => number
}

interface Watched {
  stop(): Promise<void>
}

const RESTART_MIN_MS = 1000
const RESTART_MAX_MS = 60_000

export class ClusterLearner {
  private readonly core: CoreV1Api
  private readonly namespaces = new Map<string, Watched[]>()
  private namespaceWatch?: Watched
  private stopped = false
  private readonly seenPods = new Seen(20_000)
  private readonly seenEvents = new Seen(20_000)
  private readonly now: () => number
  private readonly synced: Promise<void>
  private markSynced!: () => void

  constructor(private readonly options: LearnerOptions) {
    this.core = options.kubeConfig.makeApiClient(CoreV1Api)
    this.now = options.now ?? Date.now
    this.synced = new Promise((resolve) => (this.markSynced = resolve))
  }

  /** Resolves once the opted-in namespaces were listed the first time. */
  whenSynced(): Promise<void> {
    return this.synced
  }

  watchedNamespaces(): string[] {
    return [...this.namespaces.keys()].sort()
  }

  start(): void {
    const selector = this.options.namespaceSelector
    const informer = makeInformer<V1Namespace>(
      this.options.kubeConfig,
      '/api/v1/namespaces',
      async () => {
        const list = await this.core.listNamespace({ labelSelector: selector })
        queueMicrotask(() => this.markSynced())
        return list
      },
      selector,
    )
    informer.on('add', (ns) => this.ensure(ns.metadata?.name))
    informer.on('update', (ns) => this.ensure(ns.metadata?.name))
    informer.on('delete', (ns) => void this.drop(ns.metadata?.name))
    this.namespaceWatch = this.supervise(informer, 'namespaces')
  }

  async stop(): Promise<void> {
    this.stopped = true
    await this.namespaceWatch?.stop()
    await Promise.all([...this.namespaces.keys()].map((ns) => this.drop(ns)))
  }

  /** Turns one Pod into findings (exported through the class for tests of the wiring). */
  handlePod(pod: V1Pod): void {
    const uid = pod.metadata?.uid ?? podName(pod)
    for (const f of pullFailures(pod)) {
      // Each turn to ErrImagePull is one failed pull; the back-off that follows repeats it,
      // and only counts when it is the first thing seen (e.g. after a restart).
      const key = `${uid}/${f.container}`
      const previous = this.seenPods.get(key)
      const current = `${f.reason}|${f.error}`
      if (previous === current) continue
      this.seenPods.set(key, current)
      if (f.reason !== 'ErrImagePull' && previous !== undefined) continue
      const finding = findingForFailure(
        { image: f.image, error: f.error, where: `pod ${podName(pod)}` },
        'pod',
        this.options.policy(),
        this.now(),
      )
      if (finding) this.options.onFinding(finding)
    }
  }

  handleEvent(event: CoreV1Event): void {
    if (event.involvedObject?.kind !== 'Pod' || event.reason !== 'Pulled' || !event.message) return
    const key = event.metadata?.uid ?? `${event.metadata?.namespace}/${event.metadata?.name}`
    const count = String(event.series?.count ?? event.count ?? 1)
    if (this.seenEvents.get(key) === count) return
    this.seenEvents.set(key, count)
    const at = eventTime(event) ?? this.now()
    if (this.now() - at > this.options.maxAgeMs) return
    const where = `pod ${event.involvedObject.namespace ?? event.metadata?.namespace}/${event.involvedObject.name}`
    const finding = findingForPulled(event.message, where, this.options.policy(), this.options.slowPullMs, at)
    if (finding) this.options.onFinding(finding)
  }

  private ensure(namespace: string | undefined): void {
    if (!namespace || this.stopped || this.namespaces.has(namespace) || this.options.excludedNamespaces.has(namespace)) return
    const kc = this.options.kubeConfig
    const pods = makeInformer<V1Pod>(kc, `/api/v1/namespaces/${namespace}/pods`, () => this.core.listNamespacedPod({ namespace }))
    pods.on('add', (p) => this.handlePod(p))
    pods.on('update', (p) => this.handlePod(p))
    pods.on('delete', (p) => this.seenPods.forgetPrefix(`${p.metadata?.uid ?? podName(p)}/`))
    const fieldSelector = 'involvedObject.kind=Pod'
    const events = new ListWatch<CoreV1Event>(
      `/api/v1/namespaces/${namespace}/events`,
      new Watch(kc),
      () => this.core.listNamespacedEvent({ namespace, fieldSelector }),
      false,
      undefined,
      fieldSelector,
    )
    events.on('add', (e) => this.handleEvent(e))
    events.on('update', (e) => this.handleEvent(e))
    this.namespaces.set(namespace, [this.supervise(pods, `pods in ${namespace}`), this.supervise(events, `events in ${namespace}`)])
    this.options.logger.info({ namespace }, 'learning from image pulls in namespace')
  }

  private async drop(namespace: string | undefined): Promise<void> {
    if (!namespace) return
    const watched = this.namespaces.get(namespace)
    if (!watched) return
    this.namespaces.delete(namespace)
    await Promise.all(watched.map((w) => w.stop()))
    if (!this.stopped) this.options.logger.info({ namespace }, 'stopped learning from namespace')
  }

  // Informers stop on errors; start them again with backoff until stopped.
  private supervise(
    informer: { start(): Promise<void>; stop(): Promise<void>; on(verb: 'error', cb: (err?: unknown) => void): void },
    what: string,
  ): Watched {
    let timer: NodeJS.Timeout | undefined
    let delay = RESTART_MIN_MS
    let stopped = false
    const begin = () => {
      informer.start().then(
        () => (delay = RESTART_MIN_MS),
        (err: unknown) => informerFailed(err),
      )
    }
    const informerFailed = (err: unknown) => {
      if (stopped || this.stopped) return
      this.options.logger.warn({ err: (err as Error)?.message ?? String(err), what, retryMs: delay }, 'watch failed; restarting')
      clearTimeout(timer)
      timer = setTimeout(begin, delay)
      timer.unref?.()
      delay = Math.min(delay * 2, RESTART_MAX_MS)
    }
    informer.on('error', informerFailed)
    begin()
    return {
      async stop() {
        stopped = true
        clearTimeout(timer)
        await informer.stop()
      },
    }
  }
}
