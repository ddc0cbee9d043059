// What the admission path reads: the compiled policy and the reachability view.
// The policy is fixed for the life of the process (a new configuration is a restart);
// the view reads the learned state as it is at that moment. `context()` is called
// once per review, so a test can hand each review another context.
import type { Logger } from 'pino'
import type { Policy } from '../core/policy.js'
import type { PullSecretView } from '../core/pullrules.js'
import type { ReachabilityView } from '../core/rewrite.js'
import type { AdmittedEvent } from '../admission/review.js'
import type { Metrics } from '../observability/metrics.js'
import type { Readiness } from '../observability/readiness.js'

export interface AdmissionContext {
  policy: Policy
  reachability: ReachabilityView
  // Which mirror pull Secret copies exist (server/kube/pullsecrets.ts); absent when no mirror needs one.
  secrets?: PullSecretView
}

export interface AppDependencies {
  readonly logger: Logger
  readonly metrics: Metrics
  readonly readiness: Readiness
  readonly context: () => AdmissionContext
  // Called after a non-dry-run review was decided; must not block.
  readonly onAdmitted?: (event: AdmittedEvent) => void
}
