// The remediation loop: Pods already failing to pull, as the shared Pod cache sees them,
// looked at when they change and again every imageCheckIntervalSeconds; the verdict of
// decide.ts carried out by the replica holding the Lease, one write at a time within the
// global rate. Evictions let the controller recreate the Pod through admission; a patch
// (bare Pods, or method patch) changes the image in place with a `test` of the current one.
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { CoreV1Api, type KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { Counter, Gauge, type Registry } from 'prom-client'
import jsonpatch from 'fast-json-patch'
import { ORIGINAL_IMAGES_ANNOTATION } from '../core/pod.js'
import type { Policy } from '../core/policy.js'
import type { ReachabilityView } from '../core/rewrite.js'
import { apiClient } from '../kube/client.js'
import { apiErrorOf } from '../kube/errors.js'
import type { OptedInNamespaces } from '../kube/namespaces.js'
import type { PodCache } from '../kube/pods.js'
import { TokenBucket } from '../prepull/queue.js'
import { systemClock } from '../prepull/clock.js'
import { pullFailures } from '../reachability/learner.js'
import type { RemediationConfig } from './config.js'
import { type Change, decidePod, REMEDIATED_ANNOTATION, remediatedMark, type Verdict } from './decide.js'
import { LeaseElector } from '../kube/lease.js'

export { REMEDIATED_ANNOTATION }
export const EVENT_REMEDIATED = 'MirrorhookRemediated'
export const EVENT_CANNOT = 'MirrorhookCannotRemediate'
const HOUR_MS = 3_600_000
const MAX_EVENT_MESSAGE = 1024

export interface RemediationRecord {
  readonly at: string
  readonly namespace: string
  readonly pod: string
  readonly uid: string
  readonly node?: string
  readonly owner?: string
  // evict, patch, or none (nothing can be done: `reason` says why).
  readonly action: 'evict' | 'patch' | 'none'
  readonly result: string
  readonly changes: { container: string; from: string; to: string; cause: string }[]
  readonly reason?: string
}

export interface RemediatorOptions {
  kubeConfig: KubeConfig
  pods: PodCache
  namespaces: OptedInNamespaces
  policy: Policy
  reachability: () => ReachabilityView
  config: RemediationConfig
  intervalMs: number
  // mirrorhook's own namespace: the Lease lives there, its Pods are never touched.
  namespace: string
  logger: Logger
  registry?: Registry
  // Mirror references of remediated Pods go to the pre-pull queue.
  prepull?: (image: string, original: string) => void
  identity?: string
  now?: () => number
}

function podKey(pod: V1Pod): string {
  return `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`
}

function changeText(c: Change): string {
  return `${c.container}: ${c.from} -> ${c.to} (${c.reason}: ${c.cause})`
}

export class Remediator {
  readonly lease: LeaseElector
  private readonly core: CoreV1Api
  private readonly now: () => number
  private readonly bucket: TokenBucket
  private readonly ownerKinds: ReadonlySet<string>
  private readonly log: Logger
  // uid → container → first seen failing; uid → namespace/name.
  private readonly failing = new Map<string, { key: string; since: Map<string, number> }>()
  // Pod UIDs acted on (kept an hour after the Pod is gone), owners' recent actions, Events already said.
  private readonly done = new Map<string, number>()
  private readonly ownerActs = new Map<string, number[]>()
  private readonly said = new Set<string>()
  private readonly records: RemediationRecord[] = []
  private readonly queued = new Set<string>()
  private readonly queue: string[] = []
  private working?: Promise<void>
  private timer?: NodeJS.Timeout
  private unsubscribe?: () => void
  private stopped = true
  private readonly actions?: Counter<'action' | 'result'>
  private readonly verdicts?: Counter<'verdict' | 'code'>
  private readonly leaderGauge?: Gauge
  private readonly checks?: Counter

  constructor(private readonly o: RemediatorOptions) {
    this.now = o.now ?? Date.now
    this.log = o.logger.child({ component: 'remediation' })
    this.core = apiClient(o.kubeConfig, CoreV1Api)
    this.bucket = new TokenBucket(o.config.writesPerSecond, o.config.writeBurst, systemClock)
    this.ownerKinds = new Set(o.config.ownerKinds ?? o.policy.podOwners)
    this.lease = new LeaseElector({
      kubeConfig: o.kubeConfig,
      namespace: o.namespace,
      name: o.config.lease,
      identity: o.identity ?? `${hostname()}_${randomUUID()}`,
      durationSeconds: o.config.leaseDurationSeconds,
      logger: this.log,
      what: 'remediation',
      onChange: (leader) => {
        this.leaderGauge?.set(leader ? 1 : 0)
        if (leader) this.scheduleSoon()
      },
    })
    if (o.registry) {
      const registers = [o.registry]
      this.actions = new Counter({
        name: 'mirrorhook_remediations_total',
        help: 'Remediations of Pods failing to pull, by action (evict, patch, none) and result (success, blocked, gone, error, or why nothing could be done).',
        labelNames: ['action', 'result'],
        registers,
      })
      this.verdicts = new Counter({
        name: 'mirrorhook_remediation_waits_total',
        help: 'Failing Pods looked at and left for a later re-check, by code (too-early, owner-cap, mirror-down).',
        labelNames: ['verdict', 'code'],
        registers,
      })
      this.leaderGauge = new Gauge({
        name: 'mirrorhook_remediation_leader',
        help: '1 while this replica holds the remediation Lease and is the one that acts.',
        registers,
      })
      this.leaderGauge.set(0)
      this.checks = new Counter({
        name: 'mirrorhook_remediation_checks_total',
        help: 'Re-checks of every failing Pod, one per imageCheckIntervalSeconds (IMAGE_CHECK_INTERVAL).',
        registers,
      })
    }
  }

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    this.unsubscribe = this.o.pods.subscribe({
      add: (pod) => this.observe(pod),
      update: (pod) => this.observe(pod),
      delete: (pod) => this.forget(pod),
    })
    for (const pod of this.o.pods.list()) this.observe(pod)
    this.lease.start()
    this.tick()
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.unsubscribe?.()
    if (this.timer) clearTimeout(this.timer)
    await this.working
    await this.lease.stop()
  }

  /** The re-check period (imageCheckIntervalSeconds) and when the last re-check ran. */
  get intervalMs(): number {
    return this.o.intervalMs
  }

  lastCheckAt = 0

  /** Recent remediations and Pods nothing could be done for, newest last. */
  recent(): RemediationRecord[] {
    return [...this.records]
  }

  private observe(pod: V1Pod): void {
    const uid = pod.metadata?.uid
    if (!uid) return
    const failures = pullFailures(pod)
    if (failures.length === 0) {
      this.failing.delete(uid)
      return
    }
    const entry = this.failing.get(uid) ?? { key: podKey(pod), since: new Map<string, number>() }
    const now = this.now()
    const names = new Set(failures.map((f) => f.container))
    for (const name of [...entry.since.keys()]) if (!names.has(name)) entry.since.delete(name)
    for (const name of names) if (!entry.since.has(name)) entry.since.set(name, now)
    this.failing.set(uid, entry)
    this.enqueue(uid)
  }

  private forget(pod: V1Pod): void {
    const uid = pod.metadata?.uid
    if (!uid) return
    this.failing.delete(uid)
    for (const key of [...this.said]) if (key.startsWith(`${uid}/`)) this.said.delete(key)
  }

  private enqueue(uid: string): void {
    if (this.stopped || this.queued.has(uid)) return
    this.queued.add(uid)
    this.queue.push(uid)
    this.working ??= this.work().finally(() => (this.working = undefined))
  }

  private scheduleSoon(): void {
    for (const uid of this.failing.keys()) this.enqueue(uid)
  }

  // The re-check: every failing Pod again, every imageCheckIntervalSeconds.
  private tick(): void {
    if (this.stopped) return
    this.prune()
    this.scheduleSoon()
    this.checks?.inc()
    this.lastCheckAt = this.now()
    this.timer = setTimeout(() => this.tick(), this.o.intervalMs)
    this.timer.unref()
  }

  private prune(): void {
    const now = this.now()
    for (const [uid, at] of this.done) if (now - at > HOUR_MS && !this.failing.has(uid)) this.done.delete(uid)
    for (const [owner, times] of this.ownerActs) {
      const kept = times.filter((t) => now - t < HOUR_MS)
      if (kept.length) this.ownerActs.set(owner, kept)
      else this.ownerActs.delete(owner)
    }
  }

  private async work(): Promise<void> {
    while (!this.stopped && this.queue.length > 0) {
      const uid = this.queue.shift()!
      this.queued.delete(uid)
      try {
        await this.evaluate(uid)
      } catch (error) {
        this.log.error(
          { err: (error as Error).message, uid },
          'remediation: unexpected error; the Pod is looked at again at the next re-check',
        )
      }
    }
  }

  private verdict(pod: V1Pod): Verdict {
    return decidePod(pod, {
      policy: this.o.policy,
      reachability: this.o.reachability(),
      ownerKinds: this.ownerKinds,
      method: this.o.config.method,
      barePods: this.o.config.barePods,
      ownNamespace: this.o.namespace,
      optedIn: (ns) => this.o.namespaces.has(ns),
      minFailingMs: this.o.config.minFailingSeconds * 1000,
      perOwnerPerHour: this.o.config.perOwnerPerHour,
      now: this.now(),
      failingSince: (u, container) => this.failing.get(u)?.since.get(container),
      remediated: (u) => this.done.has(u),
      ownerCount: (owner) => (this.ownerActs.get(owner) ?? []).filter((t) => this.now() - t < HOUR_MS).length,
    })
  }

  private current(uid: string): V1Pod | undefined {
    const entry = this.failing.get(uid)
    if (!entry) return undefined
    const [namespace = '', name = ''] = entry.key.split('/')
    const pod = this.o.pods.get(namespace, name)
    return pod?.metadata?.uid === uid ? pod : undefined
  }

  private async evaluate(uid: string): Promise<void> {
    if (!this.lease.acting) return
    let pod = this.current(uid)
    if (!pod) return
    let v = this.verdict(pod)
    if (v.kind === 'ignore') return
    if (v.kind === 'wait') {
      this.verdicts?.inc({ verdict: 'wait', code: v.code })
      return
    }
    if (v.kind === 'cannot') {
      this.cannot(pod, v.code, v.reason)
      return
    }
    // Within the global rate; then the Pod as it is now, and the Lease still held.
    await this.bucket.take()
    pod = this.current(uid)
    if (!pod || this.stopped || !this.lease.acting) return
    v = this.verdict(pod)
    if (v.kind !== 'act') return
    const node = pod.spec?.nodeName
    for (const c of v.changes) {
      this.log.info(`handle pod ${podKey(pod)} reason='${c.reason}', image='${c.from}', node='${node ?? ''}'`)
    }
    this.done.set(uid, this.now())
    if (v.owner) this.ownerActs.set(v.owner.uid, [...(this.ownerActs.get(v.owner.uid) ?? []), this.now()])
    let result: string
    let detail: string | undefined
    try {
      if (v.method === 'evict') await this.evict(pod)
      else await this.patch(pod, v.changes)
      result = 'success'
    } catch (error) {
      const e = apiErrorOf(error, `${v.method} Pod ${podKey(pod)}`)
      // 429: a PodDisruptionBudget forbids it now; 404/409: the Pod is gone or changed. Either way, looked at again.
      result = e.status === 429 ? 'blocked' : e.status === 404 || e.status === 409 || e.status === 422 ? 'gone' : 'error'
      detail = e.message
      this.done.delete(uid)
      if (v.owner) this.ownerActs.get(v.owner.uid)?.pop()
    }
    this.actions?.inc({ action: v.method, result })
    const changes = v.changes.map((c) => ({ container: c.container, from: c.from, to: c.to, cause: c.cause }))
    const owner = v.owner ? `${v.owner.kind}/${v.owner.name}` : undefined
    this.record({
      namespace: pod.metadata?.namespace ?? '',
      pod: pod.metadata?.name ?? '',
      uid,
      node,
      owner,
      action: v.method,
      result,
      changes,
      reason: detail,
    })
    if (result !== 'success') {
      this.log.warn(
        { pod: podKey(pod), result, err: detail },
        `remediation of pod ${podKey(pod)} by ${v.method} did not happen (${result}); looked at again at the next re-check`,
      )
      return
    }
    const what = v.changes.map(changeText).join('; ')
    const how = v.method === 'evict' ? `evicted so that its ${owner} recreates it through admission` : 'image patched in place'
    const notes = v.notes.length ? `; left alone: ${v.notes.join('; ')}` : ''
    this.log.info({ pod: podKey(pod), node, owner, method: v.method }, `remediated pod ${podKey(pod)}: ${how}; ${what}${notes}`)
    await this.event(pod, 'Normal', EVENT_REMEDIATED, `mirrorhook ${how}: ${what}${notes}`)
    for (const c of v.changes) if (c.to !== c.original) this.o.prepull?.(c.to, c.original)
  }

  private cannot(pod: V1Pod, code: string, reason: string): void {
    const uid = pod.metadata?.uid ?? ''
    const key = `${uid}/${code}`
    if (this.said.has(key)) return
    this.said.add(key)
    const failures = pullFailures(pod)
    for (const f of failures) {
      this.log.info(`handle pod ${podKey(pod)} reason='${f.reason}', image='${f.image}', node='${pod.spec?.nodeName ?? ''}'`)
    }
    this.log.info({ pod: podKey(pod), code }, `cannot remediate pod ${podKey(pod)}: ${reason}`)
    this.actions?.inc({ action: 'none', result: code })
    this.record({
      namespace: pod.metadata?.namespace ?? '',
      pod: pod.metadata?.name ?? '',
      uid,
      node: pod.spec?.nodeName,
      action: 'none',
      result: code,
      changes: [],
      reason,
    })
    void this.event(pod, 'Warning', EVENT_CANNOT, `mirrorhook cannot fix this pull: ${reason}`)
  }

  private record(r: Omit<RemediationRecord, 'at'>): void {
    if (this.o.config.recent === 0) return
    this.records.push({ at: new Date(this.now()).toISOString(), ...r })
    if (this.records.length > this.o.config.recent) this.records.splice(0, this.records.length - this.o.config.recent)
  }

  private async evict(pod: V1Pod): Promise<void> {
    const { name = '', namespace = '', uid } = pod.metadata ?? {}
    await this.core.createNamespacedPodEviction({
      name,
      namespace,
      body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name, namespace }, deleteOptions: { preconditions: { uid } } },
    })
  }

  private async patch(cached: V1Pod, changes: readonly Change[]): Promise<void> {
    const { name = '', namespace = '', uid } = cached.metadata ?? {}
    // The cache keeps only mirrorhook's annotations: read the Pod for the rest.
    const pod = await this.core.readNamespacedPod({ name, namespace })
    if (pod.metadata?.uid !== uid) throw Object.assign(new Error('the Pod was replaced'), { code: 409 })
    const annotations = pod.metadata?.annotations
    // Container names are data: a Map, so `__proto__` is a name like any other.
    let originals: Map<string, string>
    try {
      originals = new Map(Object.entries(JSON.parse(annotations?.[ORIGINAL_IMAGES_ANNOTATION] ?? '{}') as Record<string, string>))
    } catch {
      originals = new Map()
    }
    const ops: unknown[] = [{ op: 'test', path: '/metadata/uid', value: uid }]
    for (const c of changes) {
      const path = `/spec/${c.field}/${c.index}/image`
      ops.push({ op: 'test', path, value: c.from }, { op: 'replace', path, value: c.to })
      if (c.to === c.original) originals.delete(c.container)
      else originals.set(c.container, c.original)
    }
    const values = {
      [ORIGINAL_IMAGES_ANNOTATION]: JSON.stringify(Object.fromEntries(originals)),
      [REMEDIATED_ANNOTATION]: remediatedMark(new Date(this.now()), uid ?? ''),
    }
    if (!annotations) ops.push({ op: 'add', path: '/metadata/annotations', value: values })
    else
      for (const [k, v] of Object.entries(values))
        ops.push({ op: 'add', path: `/metadata/annotations/${jsonpatch.escapePathComponent(k)}`, value: v })
    await this.core.patchNamespacedPod({ name, namespace, body: ops }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch))
  }

  private async event(pod: V1Pod, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const { name = '', namespace = '', uid } = pod.metadata ?? {}
    const now = new Date(this.now())
    try {
      await this.core.createNamespacedEvent({
        namespace,
        body: {
          metadata: { generateName: `${name}.`, namespace },
          involvedObject: { apiVersion: 'v1', kind: 'Pod', name, namespace, uid },
          reason,
          message: clip(message, MAX_EVENT_MESSAGE),
          type,
          source: { component: 'mirrorhook' },
          reportingComponent: 'mirrorhook',
          reportingInstance: hostname(),
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      })
    } catch (error) {
      this.log.warn({ pod: `${namespace}/${name}`, reason, err: (error as Error).message }, 'cannot write the Event on the Pod')
    }
  }
}
