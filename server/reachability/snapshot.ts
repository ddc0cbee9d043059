// The JSON form of the state table: what the ConfigMap holds, what GET /state
// answers and what `mirrorhook state` and `mirrorhook rewrite` read back.
import { z } from 'zod'
import type { Policy } from '../core/policy.js'
import type { ReachabilityView, RegistryStatus } from '../core/rewrite.js'
import { mirrorStateSchema } from '../mirrors/state.js'
import { describeEvidence, type Observation, type RegistryRecord, type Refusal, type StateTable } from './state.js'

const time = z.iso.datetime()

const observationSchema = z.object({
  at: time,
  source: z.enum(['probe', 'pod', 'event']),
  outcome: z.enum(['ok', 'fail', 'slow']),
  detail: z.string(),
  durationMs: z.number().optional(),
})

const recordSchema = z.object({
  registry: z.string().min(1),
  state: z.enum(['reachable', 'unreachable', 'slow', 'unknown']),
  since: time,
  expiresAt: time.optional(),
  decidedBy: observationSchema.optional(),
  confirmations: z.number().int().min(0),
  updatedAt: time,
  consecutiveFailures: z.number().int().min(0),
  consecutiveSuccesses: z.number().int().min(0),
  holdUntil: time.optional(),
  lastObservation: observationSchema.optional(),
  recent: z.array(observationSchema).default([]),
  // Derived at writing time, for people reading the ConfigMap or /state.
  status: z.string().optional(),
  evidence: z.string().optional(),
})

const refusalSchema = z.object({
  repository: z.string().min(1),
  detail: z.string(),
  firstAt: time,
  at: time,
  count: z.number().int().min(1),
  expiresAt: time,
})

// Recent remediations of Pods failing to pull (server/remediation/), on GET /state only.
const remediationSchema = z.object({
  at: time,
  namespace: z.string(),
  pod: z.string(),
  uid: z.string(),
  node: z.string().optional(),
  owner: z.string().optional(),
  action: z.enum(['evict', 'patch', 'none']),
  result: z.string(),
  changes: z.array(z.object({ container: z.string(), from: z.string(), to: z.string(), cause: z.string() })),
  reason: z.string().optional(),
})

// The last pre-warm run, as server/prewarm/prewarmer.ts reports it.
const prewarmRunSchema = z.looseObject({
  scheduledFor: time.optional(),
  startedAt: time,
  finishedAt: time,
  result: z.string(),
  by: z.string().optional(),
  workloads: z.number().optional(),
  images: z.number().optional(),
  newerTags: z.number().optional(),
  registries: z.record(z.string(), z.looseObject({ errors: z.number().optional(), down: z.string().optional() })).optional(),
  error: z.string().optional(),
})

export const snapshotSchema = z.object({
  version: z.literal(1),
  writtenAt: time,
  writer: z.string().optional(),
  registries: z.array(recordSchema),
  refusals: z.array(refusalSchema).default([]),
  // Only in GET /state: what this replica probes and when next.
  probes: z.array(z.object({ registry: z.string(), nextAt: time.optional(), inFlight: z.boolean().optional() })).optional(),
  static: z.array(z.string()).optional(),
  // Only in GET /state: no probe target answers, so probe failures are being ignored.
  probesOffline: z.boolean().optional(),
  remediations: z.array(remediationSchema).optional(),
  // Only in GET /state: each configured mirror's health, allowlist and refusals (server/mirrors/state.ts).
  mirrors: z.array(mirrorStateSchema).optional(),
  // Only in GET /state: the last pre-warm run (server/prewarm/), null before the first one.
  prewarm: prewarmRunSchema.nullable().optional(),
})

export type StateSnapshot = z.infer<typeof snapshotSchema>
type SnapshotObservation = z.infer<typeof observationSchema>
type SnapshotRecord = z.infer<typeof recordSchema>

const toIso = (ms: number) => new Date(ms).toISOString()
const fromIso = (s: string) => Date.parse(s)
const optIso = (ms: number | undefined) => (ms === undefined ? undefined : toIso(ms))
const optMs = (s: string | undefined) => (s === undefined ? undefined : fromIso(s))

function observationOut(o: Observation | undefined): SnapshotObservation | undefined {
  return o && { ...o, at: toIso(o.at) }
}

function observationIn(o: SnapshotObservation | undefined): Observation | undefined {
  return o && { ...o, at: fromIso(o.at) }
}

export function recordToJson(r: RegistryRecord, status?: RegistryStatus): SnapshotRecord {
  return {
    registry: r.registry,
    state: r.state,
    since: toIso(r.since),
    expiresAt: optIso(r.expiresAt),
    decidedBy: observationOut(r.decidedBy),
    confirmations: r.confirmations,
    updatedAt: toIso(r.updatedAt),
    consecutiveFailures: r.consecutiveFailures,
    consecutiveSuccesses: r.consecutiveSuccesses,
    holdUntil: optIso(r.holdUntil),
    lastObservation: observationOut(r.lastObservation),
    recent: r.recent.map((o) => observationOut(o)!),
    status: status?.state,
    evidence: status?.evidence,
  }
}

export function recordFromJson(r: SnapshotRecord): RegistryRecord {
  return {
    registry: r.registry,
    state: r.state,
    since: fromIso(r.since),
    expiresAt: optMs(r.expiresAt),
    decidedBy: observationIn(r.decidedBy),
    confirmations: r.confirmations,
    updatedAt: fromIso(r.updatedAt),
    consecutiveFailures: r.consecutiveFailures,
    consecutiveSuccesses: r.consecutiveSuccesses,
    holdUntil: optMs(r.holdUntil),
    lastObservation: observationIn(r.lastObservation),
    recent: r.recent.map((o) => observationIn(o)!),
  }
}

export function refusalToJson(r: Refusal): StateSnapshot['refusals'][number] {
  return { ...r, firstAt: toIso(r.firstAt), at: toIso(r.at), expiresAt: toIso(r.expiresAt) }
}

export function refusalFromJson(r: StateSnapshot['refusals'][number]): Refusal {
  return { ...r, firstAt: fromIso(r.firstAt), at: fromIso(r.at), expiresAt: fromIso(r.expiresAt) }
}

export function tableToSnapshot(table: StateTable, now: number, writer?: string): StateSnapshot {
  return {
    version: 1,
    writtenAt: toIso(now),
    writer,
    registries: table
      .entries()
      .sort((a, b) => a.registry.localeCompare(b.registry))
      .map((r) => recordToJson(r, table.status(r.registry, now))),
    refusals: table
      .refusalEntries()
      .filter((r) => r.expiresAt > now)
      .sort((a, b) => a.repository.localeCompare(b.repository))
      .map(refusalToJson),
  }
}

// A ConfigMap holds at most 1 MiB; leave room for metadata.
export const MAX_STORED_BYTES = 900 * 1024

/**
 * What goes into the ConfigMap: decided states without their observation history, and as
 * many refusals as fit, newest first. GET /state keeps everything.
 */
export function forStorage(snapshot: StateSnapshot, maxBytes = MAX_STORED_BYTES): StateSnapshot {
  const registries = snapshot.registries
    .filter((r) => r.state !== 'unknown')
    .map((r) => ({ ...r, recent: [], lastObservation: undefined, status: undefined, evidence: undefined }))
  let refusals = [...snapshot.refusals].sort((a, b) => Date.parse(b.at) - Date.parse(a.at))
  const out = (): StateSnapshot => ({ ...snapshot, registries, refusals, probes: undefined, probesOffline: undefined, mirrors: undefined })
  while (refusals.length > 0 && Buffer.byteLength(JSON.stringify(out())) > maxBytes)
    refusals = refusals.slice(0, Math.floor(refusals.length * 0.8))
  // Registries last: the oldest decisions go first.
  registries.sort((a, b) => Date.parse(b.updatedAt) - Date.parse(a.updatedAt))
  while (registries.length > 0 && Buffer.byteLength(JSON.stringify(out())) > maxBytes)
    registries.splice(Math.floor(registries.length * 0.8))
  return out()
}

export class SnapshotError extends Error {}

export function parseSnapshot(value: unknown, source: string): StateSnapshot {
  const parsed = snapshotSchema.safeParse(value)
  if (!parsed.success) {
    const first = parsed.error.issues[0]
    throw new SnapshotError(`${source} does not hold mirrorhook state: ${first ? `${first.path.join('.')}: ${first.message}` : 'invalid'}`)
  }
  return parsed.data
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** A read-only view over a snapshot, as admission would have seen it at `now`. */
export function viewFromSnapshot(snapshot: StateSnapshot, policy: Policy, now: number, source: string): ReachabilityView {
  const records = new Map(snapshot.registries.map((r) => [r.registry, recordFromJson(r)]))
  const refusals = new Map(snapshot.refusals.map((r) => [r.repository, refusalFromJson(r)]))
  return {
    status(registry) {
      if (policy.unreachable.has(registry)) return { state: 'unreachable', evidence: 'listed in config unreachable' }
      const r = records.get(registry)
      if (!r || r.state === 'unknown') return { state: 'unknown', evidence: `no evidence in ${source}` }
      if (r.expiresAt !== undefined && r.expiresAt <= now) {
        return { state: 'unknown', evidence: `${r.state} evidence expired at ${iso(r.expiresAt)} (${source})` }
      }
      return { state: r.state, evidence: `${describeEvidence(r)} (${source})` }
    },
    mirrorRefusal(repository) {
      const r = refusals.get(repository)
      if (!r || r.expiresAt <= now) return undefined
      return `${r.detail}${r.count > 1 ? `, ${r.count}x` : ''}, since ${iso(r.firstAt)}`
    },
  }
}
