// The `reachability:` section of the configuration: how registry state is
// learned (probes, the cluster's own pulls), how long it holds, where it is kept.
import { z } from 'zod'
import type { PolicyConfig } from '../core/config.js'
import type { Policy } from '../core/policy.js'

const seconds = z.number().positive()

export const probesSchema = z
  .object({
    enabled: z.boolean().default(true),
    // Normal time between two probes of one registry.
    intervalSeconds: seconds.max(86400).default(60),
    // A probe that has not answered by then counts as a failure.
    timeoutSeconds: seconds.max(120).default(5),
    // Each interval is stretched or shrunk by up to this fraction, so replicas do not probe in step.
    jitter: z.number().min(0).max(0.9).default(0.2),
    // Probes running at once, over all registries.
    concurrency: z.number().int().min(1).max(64).default(4),
    // While a registry stays down the interval doubles up to this.
    maxBackoffSeconds: seconds.max(86400).default(600),
    // Quick re-check after a first failure of a reachable registry or a first success of an unreachable one.
    recheckSeconds: seconds.max(3600).default(5),
    // Consecutive probe failures that turn a reachable registry unreachable.
    failureThreshold: z.number().int().min(1).max(20).default(2),
    // Consecutive probe successes that turn an unreachable registry reachable again.
    successThreshold: z.number().int().min(1).max(20).default(2),
    // Extra CA certificates (PEM) trusted for probes, for registries behind a private CA.
    caFile: z.string().trim().min(1).optional(),
  })
  .strict()

export const learningSchema = z
  .object({
    enabled: z.boolean().default(true),
    // Namespaces whose Pods and Events are watched: the ones that opted in to the webhook.
    namespaceSelector: z.string().trim().min(1).default('mirrorhook.io/enabled=true'),
    // A pull slower than this marks its registry slow.
    slowPullSeconds: seconds.max(86400).default(120),
    // A failed pull in the cluster outweighs successful probes for this long.
    holdSeconds: z.number().min(0).max(86400).default(600),
  })
  .strict()

export const persistenceSchema = z
  .object({
    enabled: z.boolean().default(true),
    configMap: z
      .string()
      .trim()
      .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a Kubernetes object name')
      .max(253)
      .default('mirrorhook-reachability'),
    // Defaults to the webhook's own namespace (POD_NAMESPACE, else mirrorhook).
    namespace: z.string().trim().min(1).optional(),
    // How often each replica merges its state with the shared copy.
    syncSeconds: seconds.max(3600).default(15),
  })
  .strict()

export const reachabilitySchema = z
  .object({
    enabled: z.boolean().default(true),
    // Mode auto, for a registry nothing is known about yet: use the mirror, or pull directly.
    unknown: z.enum(['mirror', 'direct']).default('mirror'),
    // A state lapses to unknown when no evidence renews it for this long.
    ttlSeconds: seconds.max(7 * 86400).default(1800),
    // How long a mirror's refusal of one image (e.g. not in its allowlist) is remembered.
    refusalTtlSeconds: seconds.max(30 * 86400).default(21600),
    probes: probesSchema.prefault({}),
    learning: learningSchema.prefault({}),
    persistence: persistenceSchema.prefault({}),
  })
  .strict()
  .refine((r) => r.probes.maxBackoffSeconds < r.ttlSeconds, {
    message: 'probes.maxBackoffSeconds must be below ttlSeconds, or a down registry would lapse to unknown between probes',
    path: ['probes', 'maxBackoffSeconds'],
  })

export type ReachabilitySettings = z.infer<typeof reachabilitySchema>
export type ReachabilityInput = z.input<typeof reachabilitySchema>

/** A policy compiled from a configuration that carries this section. */
export type ReachabilityPolicy = Policy<PolicyConfig & { readonly reachability: ReachabilitySettings }>
