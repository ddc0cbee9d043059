// The reachability component: the state table admission reads, fed by active
// probes and by the cluster's own pulls, shared through a ConfigMap.
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import type { KubeConfig } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { type Policy, registryKey, registryMetricLabel } from '../core/policy.js'
import type { ReachabilityView } from '../core/rewrite.js'
import type { OptedInNamespaces } from '../kube/namespaces.js'
import type { PodCache } from '../kube/pods.js'
import type { ReachabilityPolicy, ReachabilitySettings } from './config.js'
import type { ClusterLearner, Finding } from './learner.js'
import { ReachabilityMetrics } from './metrics.js'
import { probeRegistry, type ProbeOptions, type ProbeResult } from './probe.js'
import { Prober } from './prober.js'
import { forStorage, recordFromJson, refusalFromJson, type StateSnapshot, tableToSnapshot } from './snapshot.js'
import { type Observation, StateTable, type Transition } from './state.js'
import type { ConfigMapStore } from './store.js'

/** The registries probes may contact: the mirrors, and the sources the config names (never a host from a Pod). */
export function probeTargets(policy: Policy): string[] {
  const mirrors = policy.mirrors.map((m) => registryKey(m.domain))
  const sources =
    policy.config.mode === 'always'
      ? []
      : [...policy.registries].filter((r) => r !== '*' && !policy.unreachable.has(r) && !policy.noProxy.match(r).excluded)
  return [...new Set([...mirrors, ...sources])]
}

/** Hosts the configuration names (mirrors and listed registries): where a probe may follow a redirect. */
export function namedHosts(policy: Policy): string[] {
  const mirrors = policy.mirrors.map((m) => registryKey(m.domain))
  return [...new Set([...mirrors, ...[...policy.registries].filter((r) => r !== '*')])]
}

export interface ReachabilityServiceOptions {
  policy: ReachabilityPolicy
  logger: Logger
  // Without it probes still run; persistence and passive learning are off.
  kubeConfig?: KubeConfig
  // The process's shared Pod and namespace watches (server/kube/), which learning reads.
  watches?: { pods: PodCache; namespaces: OptedInNamespaces }
  // The webhook's own namespace, where the ConfigMap lives unless the config names another.
  namespace: string
  metricsRegistry?: Registry
  // Tests inject a CA, a resolver or an environment for the proxy settings.
  probe?: Partial<ProbeOptions>
  now?: () => number
  identity?: string
}

export class ReachabilityService {
  readonly table: StateTable
  readonly settings: ReachabilitySettings
  private readonly policy: ReachabilityPolicy
  private readonly logger: Logger
  private readonly now: () => number
  private readonly identity: string
  private readonly prober?: Prober
  private learner?: ClusterLearner
  private store?: ConfigMapStore
  private readonly metrics?: ReachabilityMetrics
  private syncTimer?: NodeJS.Timeout
  private soonTimer?: NodeJS.Timeout
  private expireTimer?: NodeJS.Timeout
  private syncing?: Promise<void>
  private started = false
  private stopping = false
  private readonly probeOptions: ProbeOptions
  // Latest probe outcome per target; when none answers, the fault is likely our own network.
  private readonly lastProbeOk = new Map<string, boolean>()
  private readonly heldFailures = new Map<string, Observation>()

  constructor(private readonly options: ReachabilityServiceOptions) {
    this.policy = options.policy
    this.settings = options.policy.config.reachability
    this.logger = options.logger.child({ component: 'reachability' })
    this.now = options.now ?? Date.now
    this.identity = options.identity ?? hostname()
    const s = this.settings
    this.table = new StateTable(
      {
        ttlMs: s.ttlSeconds * 1000,
        refusalTtlMs: s.refusalTtlSeconds * 1000,
        failureThreshold: s.probes.failureThreshold,
        successThreshold: s.probes.successThreshold,
        holdMs: s.learning.holdSeconds * 1000,
      },
      { onTransition: (t) => this.transitioned(t) },
    )
    if (options.metricsRegistry) {
      this.metrics = new ReachabilityMetrics(options.metricsRegistry, {
        registries: () => [...new Set([...this.table.entries().map((r) => r.registry), ...this.policy.unreachable])],
        status: (r) => this.view().status(r),
        refusals: () => this.table.refusalEntries().filter((r) => r.expiresAt > this.now()).length,
        label: (r) => registryMetricLabel(this.policy, r),
      })
    }
    const ca = s.probes.caFile ? readFileSync(s.probes.caFile, 'utf8') : undefined
    this.probeOptions = { timeoutMs: s.probes.timeoutSeconds * 1000, ca, redirectHosts: namedHosts(this.policy), ...options.probe }
    const targets = probeTargets(this.policy)
    if (s.probes.enabled && targets.length > 0) {
      this.prober = new Prober({
        registries: targets,
        schedule: {
          intervalMs: s.probes.intervalSeconds * 1000,
          recheckMs: s.probes.recheckSeconds * 1000,
          maxBackoffMs: s.probes.maxBackoffSeconds * 1000,
          jitter: s.probes.jitter,
          concurrency: s.probes.concurrency,
        },
        probe: (registry) => probeRegistry(registry, this.probeOptions),
        onResult: (registry, result) => this.probed(registry, result),
        record: (registry) => this.table.get(registry),
        now: this.now,
      })
    }
  }

  /** What admission reads: synchronous, in memory. */
  view(): ReachabilityView {
    const { policy, table, now } = this
    let seenVersion = -1
    let stableUntil = 0
    let epoch = 0
    return {
      generation() {
        const t = now()
        if (table.version !== seenVersion || t >= stableUntil) {
          seenVersion = table.version
          stableUntil = table.nextExpiry(t)
          epoch += 1
        }
        return epoch
      },
      status(registry) {
        if (policy.unreachable.has(registry)) return { state: 'unreachable', evidence: 'listed in config unreachable' }
        return table.status(registry, now())
      },
      mirrorRefusal(repository) {
        return table.refusal(repository, now())
      },
    }
  }

  snapshot(): StateSnapshot {
    const now = this.now()
    const snap = tableToSnapshot(this.table, now, this.identity)
    snap.probes = (this.prober?.schedule() ?? []).map((p) => ({
      registry: p.registry,
      nextAt: p.nextAt === undefined ? undefined : new Date(Math.max(p.nextAt, now)).toISOString(),
      inFlight: p.inFlight,
    }))
    snap.static = [...this.policy.unreachable].sort()
    if (this.prober) snap.probesOffline = this.probesOffline
    return snap
  }

  get features(): { probes: string[]; persistence?: string; learning: boolean } {
    return { probes: this.prober?.registries ?? [], persistence: this.store?.where, learning: this.learner !== undefined }
  }

  /** The namespaces learning reads Pods and Events from (none without learning). */
  learningNamespaces(): string[] {
    return this.learner?.watchedNamespaces() ?? []
  }

  learnerSynced(): Promise<void> {
    return this.learner?.whenSynced() ?? Promise.resolve()
  }

  // The Kubernetes client is loaded only when there is an API server, so start-up without one stays quick.
  private async connectCluster(): Promise<void> {
    const { kubeConfig, namespace } = this.options
    if (!kubeConfig) return
    const s = this.settings
    if (s.persistence.enabled) {
      const { ConfigMapStore } = await import('./store.js')
      this.store = new ConfigMapStore(kubeConfig, s.persistence.namespace ?? namespace, s.persistence.configMap)
    }
    if (s.learning.enabled && this.options.watches) {
      const { ClusterLearner } = await import('./learner.js')
      this.learner = new ClusterLearner({
        kubeConfig,
        pods: this.options.watches.pods,
        namespaces: this.options.watches.namespaces,
        excludedNamespaces: this.policy.excludedNamespaces,
        policy: () => this.policy,
        slowPullMs: s.learning.slowPullSeconds * 1000,
        maxAgeMs: s.ttlSeconds * 1000,
        onFinding: (f) => this.found(f),
        logger: this.logger,
        now: this.now,
      })
    }
  }

  /** Loads the shared state (bounded wait), then starts probes, learning and syncing. */
  async start(loadTimeoutMs = 5000): Promise<void> {
    if (this.started) return
    this.started = true
    await this.connectCluster()
    if (this.store) {
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, loadTimeoutMs)))
      await Promise.race([this.syncNow(), timeout])
      clearTimeout(timer)
    }
    this.prober?.start()
    this.learner?.start()
    if (this.store) this.scheduleSync()
    this.expireTimer = setInterval(() => this.table.expire(this.now()), 10_000)
    this.expireTimer.unref?.()
    this.logger.info(
      {
        probes: this.features.probes,
        persistence: this.features.persistence ?? 'off',
        learning: this.features.learning,
        mode: this.policy.config.mode,
      },
      'reachability started',
    )
  }

  async stop(): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    clearTimeout(this.syncTimer)
    clearTimeout(this.soonTimer)
    clearInterval(this.expireTimer)
    await Promise.all([this.prober?.stop(), this.learner?.stop()])
    if (this.store && this.started) {
      await this.syncing
      // Last write so a restarted replica starts from what this one knew.
      await Promise.race([this.sync(), new Promise((r) => setTimeout(r, 3000).unref?.())])
    }
  }

  /** Applies an observation (probes, the cluster, tests). */
  observe(registry: string, observation: Observation): Transition | undefined {
    this.metrics?.observations.inc({ source: observation.source, outcome: observation.outcome })
    return this.table.observe(registry, observation)
  }

  /** Merges with the shared copy now; resolves when done (errors are logged and counted). */
  syncNow(): Promise<void> {
    if (!this.store) return Promise.resolve()
    this.syncing ??= this.sync().finally(() => (this.syncing = undefined))
    return this.syncing
  }

  /**
   * True while no probe target answers: then the webhook's own egress is the likely fault
   * (a NetworkPolicy, no DNS), not every registry at once, and probe failures are held back.
   */
  get probesOffline(): boolean {
    const targets = this.prober?.registries ?? []
    return targets.length > 0 && targets.every((r) => this.lastProbeOk.get(r) === false)
  }

  private probed(registry: string, result: ProbeResult): void {
    this.metrics?.probes.inc({ registry, result: result.ok ? 'reachable' : 'unreachable' })
    this.metrics?.probeDuration.observe({ registry }, result.durationMs / 1000)
    this.logger.debug({ registry, ok: result.ok, detail: result.detail }, 'probe')
    const wasOffline = this.probesOffline
    this.lastProbeOk.set(registry, result.ok)
    const observation: Observation = {
      at: this.now(),
      source: 'probe',
      outcome: result.ok ? 'ok' : 'fail',
      detail: result.detail,
      durationMs: result.durationMs,
    }
    if (!result.ok && !this.anyProbeAnswered()) {
      this.heldFailures.set(registry, observation)
      if (this.probesOffline && !wasOffline) {
        this.logger.warn(
          { targets: this.prober?.registries },
          'no registry answers probes: assuming this webhook cannot reach the network; probe failures are ignored',
        )
      }
      return
    }
    this.observe(registry, observation)
    if (result.ok && this.heldFailures.size > 0) {
      // Someone answers, so the failures seen meanwhile were real.
      for (const [r, o] of this.heldFailures) if (this.lastProbeOk.get(r) === false) this.observe(r, o)
      this.heldFailures.clear()
    }
  }

  private anyProbeAnswered(): boolean {
    for (const ok of this.lastProbeOk.values()) if (ok) return true
    return false
  }

  private found(finding: Finding): void {
    if (finding.kind === 'registry') {
      this.observe(finding.registry, finding.observation)
      return
    }
    if (this.table.refuse(finding.repository, finding.detail, finding.at)) {
      this.logger.info({ repository: finding.repository, detail: finding.detail }, 'the mirror refused an image; it is no longer rewritten')
      this.syncSoon()
    }
  }

  private transitioned(t: Transition): void {
    this.metrics?.transitions.inc({ registry: t.registry, to: t.to })
    this.logger.info(
      { registry: t.registry, from: t.from, to: t.to, evidence: t.observation?.detail },
      `registry ${t.registry} is now ${t.to}`,
    )
    this.syncSoon()
  }

  private syncSoon(): void {
    if (!this.store || !this.started || this.stopping || this.soonTimer) return
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined
      void this.syncNow()
    }, 500)
    this.soonTimer.unref?.()
  }

  private scheduleSync(): void {
    if (this.stopping) return
    const base = this.settings.persistence.syncSeconds * 1000
    this.syncTimer = setTimeout(
      () => {
        void this.syncNow().finally(() => this.scheduleSync())
      },
      base * (0.8 + 0.4 * Math.random()),
    )
    this.syncTimer.unref?.()
  }

  private async sync(): Promise<void> {
    const store = this.store
    if (!store) return
    try {
      const result = await store.update((stored) => {
        const now = this.now()
        if (stored) this.table.merge(stored.registries.map(recordFromJson), stored.refusals.map(refusalFromJson), now)
        if (!this.worthWriting(stored, now)) return undefined
        // The writer's static list too, so `mirrorhook state` shows it without the config at hand.
        return forStorage({ ...tableToSnapshot(this.table, now, this.identity), static: [...this.policy.unreachable].sort() })
      })
      this.metrics?.syncs.inc({ result: result.conflicts > 0 ? 'conflict' : 'ok' })
      if (result.conflicts > 0) this.logger.debug({ conflicts: result.conflicts }, 'state ConfigMap changed under us; merged again')
    } catch (error) {
      this.metrics?.syncs.inc({ result: 'error' })
      this.logger.warn({ err: (error as Error).message, configMap: store.where }, 'cannot sync reachability state; keeping it in memory')
    }
  }

  // Writes only what others do not know yet, so replicas do not rewrite the ConfigMap on every probe.
  private worthWriting(stored: StateSnapshot | undefined, now: number): boolean {
    const records = this.table.entries().filter((r) => r.state !== 'unknown')
    const refusals = this.table.refusalEntries().filter((r) => r.expiresAt > now)
    if (!stored) return records.length > 0 || refusals.length > 0
    const remote = new Map(stored.registries.map((r) => [r.registry, recordFromJson(r)]))
    const halfTtl = this.table.params.ttlMs / 2
    for (const local of records) {
      const r = remote.get(local.registry)
      if (!r || r.state !== local.state || r.since !== local.since) return true
      if ((local.expiresAt ?? 0) > (r.expiresAt ?? 0) && (r.expiresAt ?? 0) - now < halfTtl) return true
      if ((local.holdUntil ?? 0) > (r.holdUntil ?? 0) + this.table.params.holdMs / 2) return true
    }
    const remoteRefusals = new Map(stored.refusals.map((r) => [r.repository, r]))
    for (const local of refusals) {
      const r = remoteRefusals.get(local.repository)
      if (!r || Date.parse(r.expiresAt) < local.expiresAt - this.table.params.refusalTtlMs / 2) return true
    }
    return false
  }
}
