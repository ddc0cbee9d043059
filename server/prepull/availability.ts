// Is kube-fledged there? A server-side dry-run create of an ImageCache answers it: 404 means
// no CRD (or no namespace). While it is missing, it is asked again every crdPollSeconds.
import type { Logger } from 'pino'
import { backoffMs } from '../kube/backoff.js'
import { type ApiError, apiErrorOf } from '../kube/errors.js'
import type { Clock, TimerHandle } from './clock.js'
import type { KubeFledgedConfig } from './config.js'
import { buildImageCache } from './imagecache.js'
import type { KubeImageCacheApi } from './kubeapi.js'
import type { PrepullMetrics } from './metrics.js'

type Availability = 'unknown' | 'available' | 'missing'

const PROBE_IMAGE = 'mirrorhook.invalid/probe:latest'

// No answer: 2 s, doubling to 64 s, never longer than crdPollSeconds.
export function crdProbeBackoff(crdPollMs: number) {
  return { initialMs: 2000, maxMs: Math.min(crdPollMs, 64_000) }
}

export function describeMissing(error: ApiError, namespace: string): string {
  if (error.details?.kind === 'namespaces') return `namespace ${namespace} does not exist`
  return 'no imagecaches.kubefledged.io/v1alpha2 API (the kube-fledged CRD is not installed)'
}

export interface AvailabilityOptions {
  api: KubeImageCacheApi
  config: KubeFledgedConfig
  clock: Clock
  logger: Logger
  metrics: PrepullMetrics
  // Called every time the API answers (also when it already was available).
  onAvailable: () => void
  onMissing: () => void
}

export class KubeFledgedAvailability {
  private state: Availability = 'unknown'
  private missingReason?: string
  private probeTimer?: TimerHandle
  private probeFailures = 0
  private running = false

  constructor(private readonly o: AvailabilityOptions) {
    o.metrics.available.set(0)
  }

  get available(): boolean {
    return this.state === 'available'
  }

  start(): void {
    if (this.running) return
    this.running = true
    void this.probe()
  }

  stop(): void {
    this.running = false
    if (this.probeTimer) this.o.clock.clearTimeout(this.probeTimer)
    this.probeTimer = undefined
  }

  markAvailable(): void {
    this.probeFailures = 0
    if (this.state !== 'available') {
      const was = this.state
      this.state = 'available'
      this.missingReason = undefined
      this.o.metrics.available.set(1)
      if (was === 'missing') this.o.logger.info({ namespace: this.o.config.namespace }, 'kube-fledged is available now; pre-pull starts')
    }
    this.o.onAvailable()
  }

  markMissing(reason: string): void {
    const changed = this.state !== 'missing' || this.missingReason !== reason
    this.state = 'missing'
    this.missingReason = reason
    this.o.metrics.available.set(0)
    if (changed) {
      this.o.logger.warn(
        { namespace: this.o.config.namespace, reason, recheckSeconds: this.o.config.crdPollSeconds },
        `kube-fledged is not available (${reason}): admission is unaffected; images are not pre-pulled until it appears`,
      )
    }
    this.o.onMissing()
    this.schedule(this.o.config.crdPollSeconds * 1000)
  }

  private async probe(): Promise<void> {
    this.probeTimer = undefined
    if (!this.running) return
    const c = this.o.config
    const body = buildImageCache('mirrorhook-probe', [PROBE_IMAGE], new Map(), c)
    try {
      await this.o.api.probe(body)
      this.markAvailable()
    } catch (error) {
      const e = apiErrorOf(error, 'ImageCache dry-run create')
      if (e.status === 409) {
        this.markAvailable()
      } else if (e.status === 404) {
        this.probeFailures = 0
        this.markMissing(describeMissing(e, c.namespace))
      } else {
        this.probeFailures++
        const delay = backoffMs(crdProbeBackoff(c.crdPollSeconds * 1000), this.probeFailures)
        if (this.probeFailures === 1 || e.status !== 0) {
          this.o.logger.warn({ err: e.message, retryInMs: delay }, 'cannot reach the ImageCache API yet')
        }
        this.schedule(delay)
      }
    }
  }

  private schedule(ms: number): void {
    if (!this.running || this.probeTimer) return
    this.probeTimer = this.o.clock.setTimeout(() => void this.probe(), ms)
  }
}
