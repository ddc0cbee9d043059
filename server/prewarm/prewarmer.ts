// Scheduled pre-warm: at each scheduled time one replica (the one that claims the Lease) reads the
// workloads, asks the configured registries for newest tags and hands the references the nodes
// will pull to pre-pull, pinned until after the next run. A time missed while no replica ran is
// run once at start-up; a run that failed is tried again a minute later.
import { hostname } from 'node:os'
import { randomUUID } from 'node:crypto'
import type { KubeConfig } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { Config } from '../config/config.js'
import type { Policy } from '../core/policy.js'
import type { PullSecretView } from '../core/pullrules.js'
import type { ReachabilityView } from '../core/rewrite.js'
import { type Clock, systemClock, type TimerHandle } from '../prepull/clock.js'
import type { RegistryTally } from './ask.js'
import { type Claim, type LeaseRecord, RunLease } from './lease.js'
import { PrewarmMetrics } from './metrics.js'
import type { PrewarmEntry } from './plan.js'
import { type CreateTagResolver, createTagResolver } from './registry-api.js'
import { buildResolvers, closeResolvers, prewarmPass, type ResolverCache, type WorkloadReader } from './run.js'
import { compileSchedule, dueRun, type Schedule } from './schedule.js'
import { WorkloadSource } from './workloads.js'

// Timers are re-armed at least this often, so a long wait survives clock jumps and setTimeout's limit.
const MAX_WAIT_MS = 3_600_000
export const RETRY_AFTER_FAILURE_MS = 60_000
// Pre-warmed images stay pinned this long past the next scheduled time, so the next run renews the pin first.
export const PIN_GRACE_MS = 3_600_000

export type RunReport = {
  scheduledFor?: string
  startedAt: string
  finishedAt: string
  result: 'ok' | 'partial' | 'failed'
  by: string
  namespaces: number
  workloads: number
  containers: number
  images: number
  newerTags: number
  keepUntil?: string
  registries: Record<string, RegistryTally>
  error?: string
}

export interface PrewarmTarget {
  prewarm(entries: readonly PrewarmEntry[], keepUntilMs: number): void
}

/** What the scheduler needs of the Lease (server/prewarm/lease.ts). */
export interface RunClaims {
  record(baseline: number | undefined): Promise<LeaseRecord>
  claim(scheduled: number): Promise<Claim>
  renew(): Promise<boolean>
  release(completed?: { scheduled: number; summary: string }): Promise<boolean>
}

export interface PrewarmerOptions {
  kubeConfig: KubeConfig
  config: Config
  policy: Policy
  reachability: () => ReachabilityView
  // The mirror pull Secrets' copies, as admission sees them.
  secrets?: PullSecretView
  prepull?: PrewarmTarget
  // mirrorhook's namespace: the Lease and the credentials Secrets.
  namespace: string
  identity?: string
  logger: Logger
  registry: Registry
  clock?: Clock
  createResolver?: CreateTagResolver
  workloads?: WorkloadReader
  // Tests share one in-memory stand-in between replicas; otherwise the Lease in the API.
  lease?: RunClaims
}

export class Prewarmer {
  readonly metrics: PrewarmMetrics
  readonly identity: string
  private readonly clock: Clock
  private readonly schedule: Schedule
  private readonly lease: RunClaims
  private readonly workloads: WorkloadReader
  private timer?: TimerHandle
  private running?: Promise<void>
  private stopped = true
  private last?: RunReport
  private recorded?: string
  private readonly resolvers: ResolverCache = new Map()

  constructor(private readonly o: PrewarmerOptions) {
    const c = o.config.prewarm
    this.clock = o.clock ?? systemClock
    this.metrics = new PrewarmMetrics(o.registry)
    this.identity = o.identity ?? `${hostname()}_${randomUUID()}`
    this.schedule = compileSchedule(c.schedule, c.timeZone)
    this.lease =
      o.lease ??
      new RunLease({
        kubeConfig: o.kubeConfig,
        namespace: o.namespace,
        name: c.lease,
        identity: this.identity,
        durationSeconds: c.leaseDurationSeconds,
        now: () => this.clock.now(),
      })
    this.workloads = o.workloads ?? new WorkloadSource(o.kubeConfig)
  }

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    const c = this.o.config.prewarm
    const next = this.schedule.next(this.clock.now())
    this.o.logger.info(
      { schedule: c.schedule, timeZone: c.timeZone, next: next && new Date(next).toISOString(), lease: `${this.o.namespace}/${c.lease}` },
      'pre-warm scheduled',
    )
    this.arm(0)
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) this.clock.clearTimeout(this.timer)
    this.timer = undefined
    await this.running
    closeResolvers(this.resolvers)
  }

  /** The last run: this replica's, or the one recorded on the Lease by whichever replica ran it. */
  lastRun(): RunReport | undefined {
    if (this.last) return this.last
    if (!this.recorded) return undefined
    try {
      return JSON.parse(this.recorded) as RunReport
    } catch {
      return undefined
    }
  }

  /** Resolves when the current step (a check of the schedule, or a run) is over. */
  idle(): Promise<void> {
    return this.running ?? Promise.resolve()
  }

  private arm(ms: number): void {
    if (this.stopped) return
    if (this.timer) this.clock.clearTimeout(this.timer)
    this.timer = this.clock.setTimeout(
      () => {
        this.timer = undefined
        this.running = this.tick().finally(() => (this.running = undefined))
      },
      Math.max(0, Math.min(ms, MAX_WAIT_MS)),
    )
  }

  private untilNext(): number {
    const now = this.clock.now()
    const next = this.schedule.next(now)
    return next === undefined ? MAX_WAIT_MS : next - now
  }

  private async tick(): Promise<void> {
    const log = this.o.logger
    let wait = RETRY_AFTER_FAILURE_MS
    try {
      const now = this.clock.now()
      const record = await this.lease.record(this.schedule.latest(now))
      this.recorded = record.lastRun ?? this.recorded
      const due = dueRun(this.schedule, record.lastScheduled, now)
      wait = this.untilNext()
      if (due !== undefined) {
        const claim = await this.lease.claim(due)
        if (claim.kind === 'busy') {
          // Look again when its Lease would expire: if that replica died, its run is taken over.
          wait = Math.min(wait, claim.untilMs - now + 1_000)
          log.debug({ holder: claim.holder, scheduledFor: new Date(due).toISOString() }, 'pre-warm: another replica is running it')
        } else if (claim.kind === 'claimed') {
          const ok = await this.runClaimed(due)
          wait = ok ? this.untilNext() : Math.min(this.untilNext(), RETRY_AFTER_FAILURE_MS)
        }
      }
    } catch (error) {
      log.warn({ err: (error as Error).message }, 'pre-warm: cannot read or write its Lease; trying again in a minute')
    }
    this.arm(wait)
  }

  private async runClaimed(scheduled: number): Promise<boolean> {
    const renewEvery = (this.o.config.prewarm.leaseDurationSeconds * 1000) / 3
    let renewal: TimerHandle | undefined
    let finished = false
    const renew = () => {
      if (finished) return
      renewal = this.clock.setTimeout(() => {
        void this.lease.renew().then(
          (held) => held && renew(),
          () => renew(),
        )
      }, renewEvery)
    }
    renew()
    let report: RunReport
    try {
      report = await this.runNow(scheduled)
    } finally {
      finished = true
      if (renewal) this.clock.clearTimeout(renewal)
    }
    const completed = report.result !== 'failed'
    await this.lease.release(completed ? { scheduled, summary: JSON.stringify(report) } : undefined)
    return completed
  }

  /** One run now: reads, asks, hands the references to pre-pull, counts and logs. */
  async runNow(scheduled?: number): Promise<RunReport> {
    const c = this.o.config.prewarm
    const log = this.o.logger
    const started = this.clock.now()
    const base = {
      scheduledFor: scheduled === undefined ? undefined : new Date(scheduled).toISOString(),
      startedAt: new Date(started).toISOString(),
      by: this.identity,
    }
    let report: RunReport
    try {
      const resolvers = await buildResolvers(c.registries, {
        kubeConfig: this.o.kubeConfig,
        namespace: this.o.namespace,
        create: this.o.createResolver ?? createTagResolver,
        logger: log,
        metrics: { registryRequest: (registry) => this.metrics.requests.inc({ registry }) },
        now: () => this.clock.now(),
        cache: this.resolvers,
      })
      const pass = await prewarmPass({
        config: this.o.config,
        policy: this.o.policy,
        reachability: this.o.reachability(),
        workloads: this.workloads,
        resolvers,
        secrets: this.o.secrets,
      })
      const keepUntil = (this.schedule.next(this.clock.now()) ?? this.clock.now()) + PIN_GRACE_MS
      this.o.prepull?.prewarm(pass.entries, keepUntil)
      const registries = Object.fromEntries(pass.asked.registries)
      for (const [registry, t] of Object.entries(registries)) {
        this.metrics.tags.inc({ registry, result: 'newer' }, t.newer)
        this.metrics.tags.inc({ registry, result: 'current' }, t.same)
        this.metrics.tags.inc({ registry, result: 'error' }, t.errors)
        if (t.errors > 0) {
          this.metrics.registryDown.inc({ registry })
          log.warn(
            { registry, errors: t.errors, questions: t.questions, err: t.down ?? 'see the errors above' },
            `pre-warm: registry ${registry} did not answer (${t.errors} of ${t.questions} repositories failed${t.down ? `: ${t.down}` : ''}); current images are still warmed, newest tags are asked again next run`,
          )
        }
      }
      report = {
        ...base,
        finishedAt: new Date(this.clock.now()).toISOString(),
        result: Object.values(registries).some((t) => t.errors > 0) ? 'partial' : 'ok',
        namespaces: pass.namespaces.length,
        workloads: pass.workloads,
        containers: pass.images.length,
        images: pass.entries.length,
        newerTags: Object.values(registries).reduce((n, t) => n + t.newer, 0),
        keepUntil: new Date(keepUntil).toISOString(),
        registries,
      }
      this.metrics.images.set(pass.entries.length)
    } catch (error) {
      report = {
        ...base,
        finishedAt: new Date(this.clock.now()).toISOString(),
        result: 'failed',
        namespaces: 0,
        workloads: 0,
        containers: 0,
        images: 0,
        newerTags: 0,
        registries: {},
        error: (error as Error).message,
      }
    }
    const durationMs = Date.parse(report.finishedAt) - started
    this.metrics.runs.inc({ result: report.result })
    this.metrics.lastRun.set(Date.parse(report.finishedAt) / 1000)
    this.metrics.duration.set(durationMs / 1000)
    this.last = report
    const { registries: _registries, ...summary } = report
    if (report.result === 'failed') log.error({ ...summary, durationMs }, 'pre-warm run failed; trying again in a minute')
    else log.info({ ...summary, durationMs }, 'pre-warm run done')
    return report
  }
}
