// The `remediation` configuration section: what mirrorhook does about Pods already failing to pull.
import { z } from 'zod'

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

export const REMEDIATION_DEFAULTS = {
  enabled: true,
  method: 'evict',
  barePods: 'leave',
  minFailingSeconds: 30,
  perOwnerPerHour: 5,
  writesPerSecond: 2,
  writeBurst: 5,
  lease: 'mirrorhook-remediation',
  leaseDurationSeconds: 15,
  recent: 100,
} as const

export const remediationSchema = z
  .object({
    // On by default; it only runs where a Kubernetes API is available.
    enabled: z.boolean().default(REMEDIATION_DEFAULTS.enabled),
    // Pods with a controller: evict (the controller recreates them through admission) or patch the image in place.
    method: z.enum(['evict', 'patch']).default(REMEDIATION_DEFAULTS.method),
    // Pods without a controller: leave them (an eviction would lose them) or patch the image in place.
    barePods: z.enum(['leave', 'patch']).default(REMEDIATION_DEFAULTS.barePods),
    // Controlling owner kinds whose Pods may be remediated; absent means podOwners.
    ownerKinds: z.array(z.string().trim().min(1)).optional(),
    // A container must have been seen failing this long before anything is done.
    minFailingSeconds: z.number().nonnegative().max(86_400).default(REMEDIATION_DEFAULTS.minFailingSeconds),
    // At most this many Pods of one owner (ReplicaSet, StatefulSet, ...) are remediated per hour.
    perOwnerPerHour: z.number().int().positive().max(10_000).default(REMEDIATION_DEFAULTS.perOwnerPerHour),
    // Evictions and patches per second across the cluster, and the burst above that rate.
    writesPerSecond: z.number().positive().max(1000).default(REMEDIATION_DEFAULTS.writesPerSecond),
    writeBurst: z.number().int().positive().max(10_000).default(REMEDIATION_DEFAULTS.writeBurst),
    // The coordination.k8s.io Lease (in mirrorhook's namespace) that makes one replica the only actor.
    lease: z.string().trim().max(253).regex(DNS_SUBDOMAIN, 'must be a Lease name').default(REMEDIATION_DEFAULTS.lease),
    leaseDurationSeconds: z.number().int().min(2).max(3600).default(REMEDIATION_DEFAULTS.leaseDurationSeconds),
    // How many recent remediations /state keeps.
    recent: z.number().int().nonnegative().max(10_000).default(REMEDIATION_DEFAULTS.recent),
  })
  .strict()

export type RemediationConfig = z.infer<typeof remediationSchema>
