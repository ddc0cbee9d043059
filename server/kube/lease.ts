// One actor across replicas: a coordination.k8s.io Lease (remediation: in mirrorhook's
// namespace; pre-pull: beside the ImageCaches it writes), taken and
// renewed with the API server's optimistic concurrency (resourceVersion), as client-go's
// leaderelection does. A replica acts only while it holds an unexpired Lease; a new holder
// waits one full Lease duration after taking over an expired one, so the old holder's last
// writes are visible in its caches before it looks at the same objects (a Lease handed over
// on stop is acted on at once).
import { CoordinationV1Api, type KubeConfig, type V1Lease, V1MicroTime } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { apiClient } from './client.js'
import { statusOf } from './errors.js'

export interface LeaseOptions {
  kubeConfig: KubeConfig
  namespace: string
  name: string
  identity: string
  durationSeconds: number
  logger: Logger
  // What the Lease is for, in log lines (e.g. 'remediation').
  what: string
  now?: () => number
  onChange?: (leader: boolean) => void
  // This replica may act from now on (after the wait that follows a takeover).
  onActing?: () => void
}

export class LeaseElector {
  private readonly api: CoordinationV1Api
  private readonly now: () => number
  private timer?: NodeJS.Timeout
  private actingTimer?: NodeJS.Timeout
  private announced = false
  private heldUntil = 0
  private actingFrom = Infinity
  private stopped = false
  private leader = false

  constructor(private readonly o: LeaseOptions) {
    this.api = apiClient(o.kubeConfig, CoordinationV1Api)
    this.now = o.now ?? Date.now
  }

  /** True while this replica holds the Lease and may act. */
  get acting(): boolean {
    const now = this.now()
    return this.leader && now < this.heldUntil && now >= this.actingFrom
  }

  start(): void {
    this.stopped = false
    void this.round()
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    if (this.actingTimer) clearTimeout(this.actingTimer)
    if (this.leader) {
      // Handing over: an expired renew time lets another replica take it at once.
      await this.write((lease) => {
        lease.spec!.renewTime = new V1MicroTime(0)
        lease.spec!.leaseDurationSeconds = 1
      }).catch(() => undefined)
      this.setLeader(false)
    }
  }

  private async round(): Promise<void> {
    try {
      await this.tryAcquireOrRenew()
    } catch (error) {
      this.o.logger.warn({ err: (error as Error).message, lease: this.o.name }, `${this.o.what} lease: cannot read or write it; retrying`)
      if (this.now() >= this.heldUntil) this.setLeader(false)
    }
    if (this.stopped) return
    // Renew at a third of the duration; a follower tries as often.
    this.timer = setTimeout(() => void this.round(), (this.o.durationSeconds * 1000) / 3)
    this.timer.unref()
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const { namespace, name, identity, durationSeconds } = this.o
    const now = this.now()
    let lease: V1Lease
    try {
      lease = await this.api.readNamespacedLease({ name, namespace })
    } catch (error) {
      if (statusOf(error) !== 404) throw error
      await this.api.createNamespacedLease({
        namespace,
        body: {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name, namespace },
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds: durationSeconds,
            acquireTime: new V1MicroTime(now),
            renewTime: new V1MicroTime(now),
            leaseTransitions: 0,
          },
        },
      })
      // Nobody held it: nothing of another replica's can be in flight.
      this.took(now, false)
      return
    }
    const spec = lease.spec ?? {}
    const renewed = spec.renewTime ? new Date(spec.renewTime).getTime() : 0
    const expires = renewed + (spec.leaseDurationSeconds ?? durationSeconds) * 1000
    const mine = spec.holderIdentity === identity
    if (!mine && spec.holderIdentity && now < expires) {
      this.setLeader(false)
      return
    }
    lease.spec = {
      ...spec,
      holderIdentity: identity,
      leaseDurationSeconds: durationSeconds,
      renewTime: new V1MicroTime(now),
      ...(mine ? {} : { acquireTime: new V1MicroTime(now), leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }),
    }
    // A 409 means another replica wrote first: it holds the Lease.
    try {
      await this.api.replaceNamespacedLease({ name, namespace, body: lease })
    } catch (error) {
      if (statusOf(error) === 409) {
        this.setLeader(false)
        return
      }
      throw error
    }
    // Taken over from another holder (or after losing it): wait out one duration before acting,
    // unless the holder handed it over on stop (renew time 0): its work is finished.
    this.took(now, renewed > 0 && (!mine || !this.leader))
  }

  private took(now: number, fresh: boolean): void {
    this.heldUntil = now + this.o.durationSeconds * 1000
    if (fresh) this.actingFrom = now + this.o.durationSeconds * 1000
    else if (!this.leader) this.actingFrom = now
    this.setLeader(true)
    this.armActing()
  }

  private armActing(): void {
    if (this.announced || this.actingTimer || !this.o.onActing) return
    const wait = this.actingFrom - this.now()
    if (wait <= 0) {
      this.announced = true
      this.o.onActing()
      return
    }
    this.actingTimer = setTimeout(() => {
      this.actingTimer = undefined
      if (this.leader && !this.stopped) this.armActing()
    }, wait)
    this.actingTimer.unref()
  }

  private async write(change: (lease: V1Lease) => void): Promise<void> {
    const lease = await this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace })
    if (lease.spec?.holderIdentity !== this.o.identity) return
    change(lease)
    await this.api.replaceNamespacedLease({ name: this.o.name, namespace: this.o.namespace, body: lease })
  }

  private setLeader(leader: boolean): void {
    if (leader === this.leader) return
    this.leader = leader
    if (!leader) {
      this.actingFrom = Infinity
      this.announced = false
      if (this.actingTimer) clearTimeout(this.actingTimer)
      this.actingTimer = undefined
    }
    this.o.logger.info(
      { lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity },
      leader ? `${this.o.what} lease taken` : `${this.o.what} lease lost`,
    )
    this.o.onChange?.(leader)
  }
}
