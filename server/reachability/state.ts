// The per-registry state machine and the table admission reads. Pure and
// synchronous: observations come in with their time, status reads take "now".
import type { RegistryState, RegistryStatus } from '../core/rewrite.js'

export type ObservationSource = 'probe' | 'pod' | 'event'
export type ObservationOutcome = 'ok' | 'fail' | 'slow'

export interface Observation {
  readonly at: number
  readonly source: ObservationSource
  readonly outcome: ObservationOutcome
  // What was seen: "HTTP 401 in 35 ms", "pod shop/web: dial tcp …: i/o timeout".
  readonly detail: string
  readonly durationMs?: number
}

export interface RegistryRecord {
  registry: string
  state: RegistryState
  // When the current state was entered.
  since: number
  // When the state lapses to unknown unless evidence renews it.
  expiresAt?: number
  // The latest observation that decided or confirmed the state.
  decidedBy?: Observation
  // Observations that confirmed the state since it was entered.
  confirmations: number
  // Time of the latest state-relevant change (entered or confirmed); decides merges.
  updatedAt: number
  consecutiveFailures: number
  consecutiveSuccesses: number
  // A failed pull in the cluster pins `unreachable` against probes until then.
  holdUntil?: number
  lastObservation?: Observation
  recent: Observation[]
}

export interface Refusal {
  // The mirrored repository the mirror refused, e.g. m.daocloud.io/docker.io/acme/app.
  repository: string
  detail: string
  firstAt: number
  at: number
  count: number
  expiresAt: number
}

export interface StateParameters {
  ttlMs: number
  refusalTtlMs: number
  failureThreshold: number
  successThreshold: number
  holdMs: number
}

export const RECENT_OBSERVATIONS = 5
// Passive learning can name any registry; keep the table bounded.
export const MAX_REGISTRIES = 500
export const MAX_REFUSALS = 2000

export interface Transition {
  registry: string
  from: RegistryState
  to: RegistryState
  observation?: Observation
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

const SOURCE_NAMES: Record<ObservationSource, string> = { probe: 'probe', pod: 'pod status', event: 'pull event' }

/** One line saying what decided a record's state: what was seen, by what, how often, since when. */
export function describeEvidence(record: RegistryRecord): string {
  const o = record.decidedBy
  if (!o) return `no evidence since ${iso(record.since)}`
  const times = record.confirmations > 1 ? `, ${record.confirmations}x` : ''
  return `${SOURCE_NAMES[o.source]}: ${o.detail}${times}, since ${iso(record.since)}`
}

function isPassive(o: Observation): boolean {
  return o.source !== 'probe'
}

function newRecord(registry: string, now: number): RegistryRecord {
  return {
    registry,
    state: 'unknown',
    since: now,
    confirmations: 0,
    updatedAt: now,
    consecutiveFailures: 0,
    consecutiveSuccesses: 0,
    recent: [],
  }
}

export class StateTable {
  private readonly records = new Map<string, RegistryRecord>()
  private readonly refusals = new Map<string, Refusal>()
  // Bumped on every change that matters to other replicas.
  private generation = 0

  constructor(
    readonly params: StateParameters,
    private readonly listeners: { onTransition?: (t: Transition) => void } = {},
  ) {}

  get version(): number {
    return this.generation
  }

  /** The state admission sees: expired states read as unknown. */
  status(registry: string, now: number): RegistryStatus {
    const record = this.records.get(registry)
    if (!record || record.state === 'unknown') {
      return { state: 'unknown', evidence: record?.decidedBy ? `evidence expired; last: ${describeEvidence(record)}` : 'no evidence yet' }
    }
    if (record.expiresAt !== undefined && record.expiresAt <= now) {
      return {
        state: 'unknown',
        evidence: `${record.state} evidence expired at ${iso(record.expiresAt)}; last: ${describeEvidence(record)}`,
      }
    }
    return { state: record.state, evidence: describeEvidence(record) }
  }

  refusal(repository: string, now: number): string | undefined {
    const r = this.refusals.get(repository)
    if (!r || r.expiresAt <= now) return undefined
    const times = r.count > 1 ? `, ${r.count}x` : ''
    return `${r.detail}${times}, since ${iso(r.firstAt)}`
  }

  get(registry: string): RegistryRecord | undefined {
    return this.records.get(registry)
  }

  entries(): RegistryRecord[] {
    return [...this.records.values()]
  }

  refusalEntries(): Refusal[] {
    return [...this.refusals.values()]
  }

  /** When the next state or refusal lapses after `now`: until then, only a new `version` changes what admission reads. */
  nextExpiry(now: number): number {
    let next = Infinity
    for (const r of this.records.values()) if (r.expiresAt !== undefined && r.expiresAt > now && r.expiresAt < next) next = r.expiresAt
    for (const r of this.refusals.values()) if (r.expiresAt > now && r.expiresAt < next) next = r.expiresAt
    return next
  }

  /** Applies one observation; returns the transition it caused, if any. */
  observe(registry: string, observation: Observation): Transition | undefined {
    let record = this.records.get(registry)
    if (!record) {
      this.evictIfFull(observation.at)
      record = newRecord(registry, observation.at)
      this.records.set(registry, record)
    }
    this.lapseIfExpired(record, observation.at)
    record.lastObservation = observation
    record.recent = [...record.recent, observation].slice(-RECENT_OBSERVATIONS)
    const before = record.state
    const p = this.params
    const now = observation.at

    if (observation.outcome === 'fail') {
      // A failure seen before the success that last decided or confirmed a working state (reported
      // late: an older Event, a Pod status read late) is recorded, but changes neither state, streaks nor hold.
      if (!workedSince(record, now)) this.failed(record, observation)
    } else if (observation.outcome === 'ok') {
      record.consecutiveSuccesses += 1
      record.consecutiveFailures = 0
      if (record.state === 'unreachable') {
        const held = !isPassive(observation) && (record.holdUntil ?? 0) > now
        // A pull that worked is proof; probes need a streak, and wait out a hold.
        if (!held && (isPassive(observation) || record.consecutiveSuccesses >= p.successThreshold)) {
          record.holdUntil = undefined
          this.enter(record, 'reachable', observation)
        }
      } else if (record.state === 'unknown') {
        this.enter(record, 'reachable', observation)
      } else if (record.state === 'reachable') {
        this.confirm(record, observation)
      } else if (record.state === 'slow' && isPassive(observation)) {
        // A probe answering says nothing about pull speed; a fast pull does.
        this.enter(record, 'reachable', observation)
      }
    } else {
      record.consecutiveFailures = 0
      record.holdUntil = undefined
      if (record.state === 'slow') this.confirm(record, observation)
      else this.enter(record, 'slow', observation)
    }
    this.generation += 1
    return record.state !== before ? { registry, from: before, to: record.state, observation } : undefined
  }

  refuse(repository: string, detail: string, at: number): boolean {
    const existing = this.refusals.get(repository)
    const fresh = !existing || existing.expiresAt <= at
    if (fresh && this.refusals.size >= MAX_REFUSALS) this.evictRefusal()
    this.refusals.set(repository, {
      repository,
      detail,
      firstAt: fresh ? at : existing.firstAt,
      at,
      count: fresh ? 1 : existing.count + 1,
      expiresAt: at + this.params.refusalTtlMs,
    })
    this.generation += 1
    return fresh
  }

  /** Turns lapsed states into unknown and drops lapsed refusals; returns the transitions. */
  expire(now: number): Transition[] {
    const out: Transition[] = []
    for (const record of this.records.values()) {
      const before = record.state
      if (this.lapseIfExpired(record, now)) out.push({ registry: record.registry, from: before, to: 'unknown' })
    }
    for (const [key, r] of this.refusals) if (r.expiresAt <= now) this.refusals.delete(key)
    if (out.length > 0) this.generation += 1
    return out
  }

  /**
   * Merges another replica's records (from the shared copy). Per registry the record
   * decided later wins, except that an unreachable state held by a failed pull wins
   * over anything until its hold ends. Returns true when anything local changed.
   */
  merge(records: readonly RegistryRecord[], refusals: readonly Refusal[], now: number): boolean {
    let changed = false
    for (const remote of records) {
      const local = this.records.get(remote.registry)
      if (!local) {
        if (this.records.size >= MAX_REGISTRIES) continue
        this.records.set(remote.registry, structuredClone(remote))
        changed = true
        continue
      }
      if (preferRemote(local, remote, now)) {
        const before = local.state
        this.records.set(remote.registry, structuredClone(remote))
        if (before !== remote.state) this.listeners.onTransition?.({ registry: remote.registry, from: before, to: remote.state })
        changed = true
      }
    }
    for (const remote of refusals) {
      if (remote.expiresAt <= now) continue
      const local = this.refusals.get(remote.repository)
      if (!local || remote.at > local.at) {
        this.refusals.set(remote.repository, { ...remote, count: Math.max(remote.count, local?.count ?? 0) })
        changed = true
      }
    }
    if (changed) this.generation += 1
    return changed
  }

  private failed(record: RegistryRecord, observation: Observation): void {
    const p = this.params
    record.consecutiveFailures += 1
    record.consecutiveSuccesses = 0
    if (isPassive(observation)) record.holdUntil = Math.max(record.holdUntil ?? 0, observation.at + p.holdMs)
    if (record.state === 'unreachable') this.confirm(record, observation)
    else if (record.state === 'unknown' || isPassive(observation) || record.consecutiveFailures >= p.failureThreshold) {
      this.enter(record, 'unreachable', observation)
    }
  }

  private enter(record: RegistryRecord, state: RegistryState, observation: Observation): void {
    const from = record.state
    record.state = state
    record.since = observation.at
    record.decidedBy = observation
    record.confirmations = 1
    record.updatedAt = observation.at
    record.expiresAt = observation.at + this.params.ttlMs
    if (from !== state) this.listeners.onTransition?.({ registry: record.registry, from, to: state, observation })
  }

  private confirm(record: RegistryRecord, observation: Observation): void {
    record.decidedBy = observation
    record.confirmations += 1
    // A report that arrives late (older than the last update) never moves the record's time back.
    record.updatedAt = Math.max(record.updatedAt, observation.at)
    record.expiresAt = Math.max(record.expiresAt ?? 0, observation.at + this.params.ttlMs)
  }

  private lapseIfExpired(record: RegistryRecord, now: number): boolean {
    if (record.state === 'unknown' || record.expiresAt === undefined || record.expiresAt > now) return false
    const from = record.state
    record.state = 'unknown'
    record.since = record.expiresAt
    record.expiresAt = undefined
    record.confirmations = 0
    record.consecutiveFailures = 0
    record.consecutiveSuccesses = 0
    record.holdUntil = undefined
    record.updatedAt = now
    this.listeners.onTransition?.({ registry: record.registry, from, to: 'unknown' })
    return true
  }

  private evictIfFull(now: number): void {
    if (this.records.size < MAX_REGISTRIES) return
    this.expire(now)
    let oldest: RegistryRecord | undefined
    // Unknown records go first; among the rest the least recently updated.
    for (const r of this.records.values()) if (r.state === 'unknown' && (!oldest || r.updatedAt < oldest.updatedAt)) oldest = r
    if (!oldest) for (const r of this.records.values()) if (!oldest || r.updatedAt < oldest.updatedAt) oldest = r
    if (oldest) this.records.delete(oldest.registry)
  }

  private evictRefusal(): void {
    let oldest: Refusal | undefined
    for (const r of this.refusals.values()) if (!oldest || r.at < oldest.at) oldest = r
    if (oldest) this.refusals.delete(oldest.repository)
  }
}

/** True when the record's working state (reachable or slow) was decided or confirmed after `at`. */
function workedSince(r: RegistryRecord, at: number): boolean {
  return (r.state === 'reachable' || r.state === 'slow') && r.updatedAt > at
}

function heldUnreachable(r: RegistryRecord, now: number): boolean {
  return r.state === 'unreachable' && (r.holdUntil ?? 0) > now
}

function preferRemote(local: RegistryRecord, remote: RegistryRecord, now: number): boolean {
  const localHeld = heldUnreachable(local, now)
  const remoteHeld = heldUnreachable(remote, now)
  if (remoteHeld !== localHeld) return remoteHeld
  if (remoteHeld && localHeld) return (remote.holdUntil ?? 0) > (local.holdUntil ?? 0)
  return remote.updatedAt > local.updatedAt
}
