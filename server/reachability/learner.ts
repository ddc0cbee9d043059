// Passive learning: what the cluster's own pulls say about registries. Pods (from the
// process's shared Pod watch) and their Pulled Events in the namespaces that opted in;
// the kubelet's messages are turned into observations. Nothing here contacts a
// registry: a host named in a Pod spec is only ever a key in the table.
import { CoreV1Api, type CoreV1Event, type KubeConfig, type V1Pod } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { apiClient } from '../kube/client.js'
import { Informer } from '../kube/informer.js'
import type { OptedInNamespaces } from '../kube/namespaces.js'
import type { PodCache } from '../kube/pods.js'
import { type MirrorTarget, type Policy, registryKey } from '../core/policy.js'
import { tryParseNormalizedNamed } from '../core/reference.js'
import { isKubeFledgedPullPod, KUBE_FLEDGED_INIT_CONTAINER } from '../core/pullrules.js'
import { classifyPullFailure, meansUnreachable, parsePulledMessage, summarisePullError } from './classify.js'
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
  readonly init: boolean
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
  const lists = [status?.initContainerStatuses, status?.containerStatuses, status?.ephemeralContainerStatuses] as (
    ContainerStatusLike[] | undefined
  )[]
  for (const [i, list] of lists.entries()) {
    for (const s of list ?? []) {
      const waiting = s.state?.waiting
      if (!s.name || !waiting?.reason || !PULL_WAITING.has(waiting.reason) || !waiting.message) continue
      const error = pullErrorOf(waiting.reason, waiting.message)
      const image = specImages.get(s.name) ?? s.image
      if (error && image) out.push({ container: s.name, init: i === 0, image, reason: waiting.reason, error })
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
  // A mirror that refuses (403, an allowlist), wants credentials it was not given (401) or has
  // no such repository (404, often a private image it cannot fetch) will answer the same to the
  // next Pod: that one repository is not rewritten until the refusal expires.
  if ((cls.kind === 'forbidden' || cls.kind === 'unauthorized' || cls.kind === 'not-found') && facts.mirror) {
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
  // The process's one Pod watch and its opted-in namespaces (server/kube/).
  pods: PodCache
  namespaces: OptedInNamespaces
  excludedNamespaces: ReadonlySet<string>
  policy: () => Policy
  slowPullMs: number
  // Events older than this say nothing about now.
  maxAgeMs: number
  onFinding: (finding: Finding) => void
  logger: Logger
  now?: () => number
}

// Only Pulled events of Pods: the API server filters, the rest never reaches the process.
export const EVENT_FIELD_SELECTOR = 'involvedObject.kind=Pod,reason=Pulled'
// Reconnects: 1 s, doubling to 60 s.
export const EVENT_WATCH_BACKOFF = { initialMs: 1000, maxMs: 60_000 }

function slimEvent(e: CoreV1Event): CoreV1Event {
  const m = e.metadata ?? {}
  return {
    metadata: {
      name: m.name,
      namespace: m.namespace,
      uid: m.uid,
      resourceVersion: m.resourceVersion,
      creationTimestamp: m.creationTimestamp,
    },
    involvedObject: {
      kind: e.involvedObject?.kind,
      name: e.involvedObject?.name,
      namespace: e.involvedObject?.namespace,
      uid: e.involvedObject?.uid,
    },
    reason: e.reason,
    message: e.message,
    count: e.count,
    series: e.series,
    eventTime: e.eventTime,
    firstTimestamp: e.firstTimestamp,
    lastTimestamp: e.lastTimestamp,
  }
}

export class ClusterLearner {
  private readonly events: Informer<CoreV1Event>
  private readonly unsubscribe: (() => void)[] = []
  private stopped = false
  private readonly seenPods = new Seen(20_000)
  private readonly seenEvents = new Seen(20_000)
  private readonly now: () => number

  constructor(private readonly options: LearnerOptions) {
    this.now = options.now ?? Date.now
    const core = apiClient(options.kubeConfig, CoreV1Api)
    // One cluster-wide Event watch; events of namespaces that did not opt in are ignored here.
    this.events = new Informer<CoreV1Event>({
      kubeConfig: options.kubeConfig,
      what: 'Pulled events',
      path: '/api/v1/events',
      fieldSelector: EVENT_FIELD_SELECTOR,
      list: (page) => core.listEventForAllNamespaces({ fieldSelector: EVENT_FIELD_SELECTOR, limit: page.limit, _continue: page.continue }),
      transform: slimEvent,
      logger: options.logger,
      backoff: EVENT_WATCH_BACKOFF,
    })
  }

  /** Resolves once the opted-in namespaces, their Pods and Events were listed the first time. */
  whenSynced(): Promise<void> {
    return Promise.all([this.options.namespaces.whenSynced(), this.options.pods.whenSynced(), this.events.whenSynced()]).then(
      () => undefined,
    )
  }

  watchedNamespaces(): string[] {
    return this.options.namespaces.names().filter((ns) => !this.options.excludedNamespaces.has(ns))
  }

  start(): void {
    const { pods, namespaces, logger } = this.options
    this.unsubscribe.push(
      pods.subscribe({
        add: (p) => this.podChanged(p),
        update: (p) => this.podChanged(p),
        delete: (p) => this.seenPods.forgetPrefix(`${p.metadata?.uid ?? podName(p)}/`),
      }),
      namespaces.subscribe({
        // A namespace that opts in: what is already there counts, as a new watch there would list it.
        add: (ns) => this.optedIn(ns),
        delete: (ns) => {
          if (!this.stopped) logger.info({ namespace: ns }, 'stopped learning from namespace')
        },
      }),
    )
    this.events.on('add', (e) => this.eventChanged(e))
    this.events.on('update', (e) => this.eventChanged(e))
    this.events.start()
    // The shared watches may have listed before this subscribed (seen keys make a replay harmless).
    for (const ns of namespaces.names()) this.optedIn(ns)
    for (const p of pods.list(this.options.policy().config.kubeFledged.namespace)) if (this.isKubeFledgedPull(p)) this.handlePod(p)
  }

  private optedIn(namespace: string): void {
    if (!this.learnsIn(namespace)) return
    this.options.logger.info({ namespace }, 'learning from image pulls in namespace')
    for (const p of this.options.pods.list(namespace)) this.handlePod(p)
    for (const e of this.events.list(namespace)) this.handleEvent(e)
  }

  async stop(): Promise<void> {
    this.stopped = true
    for (const off of this.unsubscribe.splice(0)) off()
    await this.events.stop()
  }

  private learnsIn(namespace: string | undefined): boolean {
    return this.options.namespaces.has(namespace) && !this.options.excludedNamespaces.has(namespace ?? '')
  }

  // kube-fledged's pull Jobs are watched in its namespace whether or not it opted in: their
  // failures say what the mirror refuses, and when their own init image cannot be pulled.
  private isKubeFledgedPull(pod: V1Pod): boolean {
    return isKubeFledgedPullPod((pod.metadata ?? {}) as Record<string, unknown>, pod.metadata?.namespace, this.options.policy())
  }

  private podChanged(pod: V1Pod): void {
    if (this.learnsIn(pod.metadata?.namespace) || this.isKubeFledgedPull(pod)) this.handlePod(pod)
  }

  private eventChanged(event: CoreV1Event): void {
    if (this.learnsIn(event.metadata?.namespace)) this.handleEvent(event)
  }

  /** Turns one Pod into findings (exported through the class for tests of the wiring). */
  handlePod(pod: V1Pod): void {
    const uid = pod.metadata?.uid ?? podName(pod)
    const kubeFledged = this.isKubeFledgedPull(pod)
    for (const f of pullFailures(pod)) {
      // Each turn to ErrImagePull is one failed pull; the back-off that follows repeats it,
      // and only counts when it is the first thing seen (e.g. after a restart).
      const key = `${uid}/${f.container}`
      const previous = this.seenPods.get(key)
      const current = `${f.reason}|${f.error}`
      if (previous === current) continue
      this.seenPods.set(key, current)
      if (f.reason !== 'ErrImagePull' && previous !== undefined) continue
      const initImage = kubeFledged && f.init && f.container === KUBE_FLEDGED_INIT_CONTAINER
      if (initImage) {
        this.options.logger.warn(
          { pod: podName(pod), image: f.image, error: summarisePullError(f.error) },
          "kube-fledged's pull Job cannot pull its own init image: every pre-pull on this node fails until it can " +
            '(kube-fledged BUSYBOX_IMAGE, or pull.kubeFledgedBusybox with kube-fledged Pods admitted by mirrorhook)',
        )
      }
      const where = initImage
        ? `kube-fledged pull Job pod ${podName(pod)}, init image`
        : kubeFledged
          ? `kube-fledged pull Job pod ${podName(pod)}`
          : `pod ${podName(pod)}`
      const finding = findingForFailure({ image: f.image, error: f.error, where }, 'pod', this.options.policy(), this.now())
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
}
