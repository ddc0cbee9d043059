// What the admission path reads: the compiled policy and the reachability view,
// swapped as a whole when the configuration or the learned state changes.
import type { Logger } from 'pino'
import type { Policy } from '../core/policy.js'
import type { ReachabilityView } from '../core/rewrite.js'
import type { AdmittedEvent } from '../admission/review.js'
import type { Metrics } from '../observability/metrics.js'

export interface AdmissionContext {
  policy: Policy
  reachability: ReachabilityView
}

// Readiness: each component reports whether it blocks readiness and why.
export class Readiness {
  private readonly blockers = new Map<string, string>()
  private shuttingDown = false

  block(component: string, reason: string): void {
    this.blockers.set(component, reason)
  }

  clear(component: string): void {
    this.blockers.delete(component)
  }

  beginShutdown(): void {
    this.shuttingDown = true
  }

  get state(): { ready: boolean; reasons: string[] } {
    const reasons = [...this.blockers.entries()].map(([c, r]) => `${c}: ${r}`)
    if (this.shuttingDown) reasons.unshift('shutting down')
    return { ready: reasons.length === 0, reasons }
  }
}

export interface AppDependencies {
  readonly logger: Logger
  readonly metrics: Metrics
  readonly readiness: Readiness
  readonly context: () => AdmissionContext
  // Called after a non-dry-run review was decided; must not block.
  readonly onAdmitted?: (event: AdmittedEvent) => void
}
