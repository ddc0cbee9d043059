// One pre-warm run per scheduled time across replicas, and a record of the last one that survives
// restarts: a coordination.k8s.io Lease in mirrorhook's namespace. A replica claims it for one run
// (holder, renew time, optimistic concurrency through resourceVersion, as in
// server/remediation/lease.ts), renews it while running, and on completion writes the scheduled
// time it ran for (and a short summary) as annotations and lets go. A holder that died is taken
// over once its Lease expired; its scheduled time, not recorded, is then run by the next holder.
import { CoordinationV1Api, type KubeConfig, type V1Lease, V1MicroTime } from '@kubernetes/client-node'
import { apiClient } from '../kube/client.js'
import { statusOf } from '../kube/errors.js'

export const LAST_SCHEDULED_ANNOTATION = 'mirrorhook.io/prewarm-last-scheduled'
export const LAST_RUN_ANNOTATION = 'mirrorhook.io/prewarm-last-run'

export type Claim = { kind: 'claimed' } | { kind: 'done' } | { kind: 'busy'; holder: string; untilMs: number }

export interface RunLeaseOptions {
  kubeConfig: KubeConfig
  namespace: string
  name: string
  identity: string
  durationSeconds: number
  now: () => number
}

export interface LeaseRecord {
  // The last scheduled time a run completed for.
  lastScheduled?: number
  // The summary that run left (JSON text), for `/state` on any replica.
  lastRun?: string
}

function timeOf(value: string | undefined): number | undefined {
  if (!value) return undefined
  const t = Date.parse(value)
  return Number.isNaN(t) ? undefined : t
}

export class RunLease {
  private readonly api: CoordinationV1Api

  constructor(private readonly o: RunLeaseOptions) {
    this.api = apiClient(o.kubeConfig, CoordinationV1Api)
  }

  private read(): Promise<V1Lease> {
    return this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace })
  }

  /**
   * What the Lease records. Without a Lease, one is created recording `baseline` (the scheduled
   * time just passed when pre-warm was first turned on): nothing before it counts as missed.
   */
  async record(baseline: number | undefined): Promise<LeaseRecord> {
    try {
      const lease = await this.read()
      const a = lease.metadata?.annotations ?? {}
      return { lastScheduled: timeOf(a[LAST_SCHEDULED_ANNOTATION]), lastRun: a[LAST_RUN_ANNOTATION] }
    } catch (error) {
      if (statusOf(error) !== 404) throw error
    }
    const annotations: Record<string, string> =
      baseline === undefined ? {} : { [LAST_SCHEDULED_ANNOTATION]: new Date(baseline).toISOString() }
    try {
      await this.api.createNamespacedLease({
        namespace: this.o.namespace,
        body: {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name: this.o.name, namespace: this.o.namespace, annotations },
          spec: { leaseDurationSeconds: this.o.durationSeconds },
        },
      })
    } catch (error) {
      // Another replica created it first: read what it wrote.
      if (statusOf(error) === 409) return this.record(undefined)
      throw error
    }
    return { lastScheduled: baseline }
  }

  /** Takes the Lease for the run of `scheduled`, unless that run is recorded or another replica holds it. */
  async claim(scheduled: number): Promise<Claim> {
    const now = this.o.now()
    const lease = await this.read()
    const last = timeOf(lease.metadata?.annotations?.[LAST_SCHEDULED_ANNOTATION])
    if (last !== undefined && last >= scheduled) return { kind: 'done' }
    const spec = lease.spec ?? {}
    const renewed = spec.renewTime ? new Date(spec.renewTime).getTime() : 0
    const until = renewed + (spec.leaseDurationSeconds ?? this.o.durationSeconds) * 1000
    if (spec.holderIdentity && spec.holderIdentity !== this.o.identity && now < until) {
      return { kind: 'busy', holder: spec.holderIdentity, untilMs: until }
    }
    lease.spec = {
      ...spec,
      holderIdentity: this.o.identity,
      leaseDurationSeconds: this.o.durationSeconds,
      acquireTime: new V1MicroTime(now),
      renewTime: new V1MicroTime(now),
      leaseTransitions: (spec.leaseTransitions ?? 0) + 1,
    }
    try {
      await this.api.replaceNamespacedLease({ name: this.o.name, namespace: this.o.namespace, body: lease })
    } catch (error) {
      // Another replica wrote first: it runs.
      if (statusOf(error) === 409) return { kind: 'busy', holder: 'another replica', untilMs: now + this.o.durationSeconds * 1000 }
      throw error
    }
    return { kind: 'claimed' }
  }

  /** Keeps the Lease while the run goes on; false when it is no longer this replica's. */
  async renew(): Promise<boolean> {
    return this.change((lease) => {
      lease.spec!.renewTime = new V1MicroTime(this.o.now())
    })
  }

  /** Lets go of the Lease; with `scheduled`, records that its run completed, with the summary. */
  async release(completed?: { scheduled: number; summary: string }): Promise<boolean> {
    return this.change((lease) => {
      if (completed) {
        const annotations = (lease.metadata!.annotations ??= {})
        const last = timeOf(annotations[LAST_SCHEDULED_ANNOTATION])
        if (last === undefined || completed.scheduled > last)
          annotations[LAST_SCHEDULED_ANNOTATION] = new Date(completed.scheduled).toISOString()
        annotations[LAST_RUN_ANNOTATION] = completed.summary
      }
      lease.spec = { leaseDurationSeconds: lease.spec?.leaseDurationSeconds, leaseTransitions: lease.spec?.leaseTransitions }
    })
  }

  // Read, change, replace while this replica holds it; a conflict (a renewal racing a release) reads again.
  private async change(edit: (lease: V1Lease) => void): Promise<boolean> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const lease = await this.read()
      if (lease.spec?.holderIdentity !== this.o.identity) return false
      lease.metadata ??= {}
      lease.spec ??= {}
      edit(lease)
      try {
        await this.api.replaceNamespacedLease({ name: this.o.name, namespace: this.o.namespace, body: lease })
        return true
      } catch (error) {
        if (statusOf(error) !== 409) throw error
      }
    }
    return false
  }
}
