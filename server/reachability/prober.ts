// The background probe loop: one schedule per configured registry, at most
// `concurrency` probes at once, jittered intervals, exponential backoff while a
// registry stays down and quick re-checks while its state is in doubt.
import { backoffMs } from '../kube/backoff.js'
import type { ProbeResult } from './probe.js'
import type { RegistryRecord } from './state.js'

export interface ProbeSchedule {
  intervalMs: number
  recheckMs: number
  maxBackoffMs: number
  jitter: number
  concurrency: number
}

/** The delay before the next probe of a registry, before jitter. */
export function nextDelayMs(record: RegistryRecord | undefined, s: ProbeSchedule): number {
  if (!record) return s.intervalMs
  if (record.state === 'unreachable') {
    // Recovering: confirm quickly so the registry is used directly again soon.
    if (record.consecutiveSuccesses > 0) return Math.min(s.recheckMs, s.intervalMs)
    // Doubles with each failure seen since the registry went down.
    return backoffMs({ initialMs: s.intervalMs, maxMs: Math.max(s.maxBackoffMs, s.intervalMs) }, record.confirmations)
  }
  // Reachable (or slow) but the last probe failed: find out quickly whether it is down.
  if (record.consecutiveFailures > 0) return Math.min(s.recheckMs, s.intervalMs)
  return s.intervalMs
}

export function jittered(ms: number, jitter: number, random: () => number = Math.random): number {
  return Math.max(0, ms * (1 + jitter * (2 * random() - 1)))
}

export interface ProberOptions {
  registries: readonly string[]
  schedule: ProbeSchedule
  probe: (registry: string) => Promise<ProbeResult>
  onResult: (registry: string, result: ProbeResult) => void
  record: (registry: string) => RegistryRecord | undefined
  now?: () => number
  random?: () => number
  // First probes are spread over this window so a restart does not burst.
  initialSpreadMs?: number
}

interface Target {
  registry: string
  nextAt: number
  inFlight: boolean
}

export class Prober {
  private readonly targets: Target[]
  private timer?: NodeJS.Timeout
  private running = 0
  private stopped = true
  private readonly idle = new Set<() => void>()
  private readonly now: () => number
  private readonly random: () => number

  constructor(private readonly options: ProberOptions) {
    this.now = options.now ?? Date.now
    this.random = options.random ?? Math.random
    this.targets = [...new Set(options.registries)].map((registry) => ({ registry, nextAt: 0, inFlight: false }))
  }

  get registries(): string[] {
    return this.targets.map((t) => t.registry)
  }

  schedule(): { registry: string; nextAt?: number; inFlight: boolean }[] {
    return this.targets.map((t) => ({ registry: t.registry, nextAt: this.stopped ? undefined : t.nextAt, inFlight: t.inFlight }))
  }

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    const now = this.now()
    const spread = this.options.initialSpreadMs ?? 1000
    for (const t of this.targets) t.nextAt = now + this.random() * spread
    this.pump()
  }

  /** Stops scheduling; resolves when probes in flight have finished. */
  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    if (this.running === 0) return
    await new Promise<void>((resolve) => this.idle.add(resolve))
  }

  /** Probes a registry as soon as a slot is free (e.g. to confirm a failure seen in the cluster). */
  probeSoon(registry: string): boolean {
    const t = this.targets.find((x) => x.registry === registry)
    if (!t || this.stopped) return false
    t.nextAt = Math.min(t.nextAt, this.now())
    this.pump()
    return true
  }

  private pump(): void {
    if (this.stopped) return
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    const now = this.now()
    const due = this.targets.filter((t) => !t.inFlight && t.nextAt <= now).sort((a, b) => a.nextAt - b.nextAt)
    for (const t of due) {
      if (this.running >= this.options.schedule.concurrency) break
      this.launch(t)
    }
    const waiting = this.targets.filter((t) => !t.inFlight)
    if (waiting.length === 0 || this.running >= this.options.schedule.concurrency) return
    const next = Math.min(...waiting.map((t) => t.nextAt))
    this.timer = setTimeout(() => this.pump(), Math.max(0, next - this.now()))
    this.timer.unref?.()
  }

  private launch(target: Target): void {
    target.inFlight = true
    this.running += 1
    this.options
      .probe(target.registry)
      .then(
        (result) => {
          if (!this.stopped) this.options.onResult(target.registry, result)
        },
        () => undefined,
      )
      .finally(() => {
        target.inFlight = false
        this.running -= 1
        const { schedule } = this.options
        target.nextAt = this.now() + jittered(nextDelayMs(this.options.record(target.registry), schedule), schedule.jitter, this.random)
        if (this.stopped) {
          if (this.running === 0) {
            for (const resolve of this.idle) resolve()
            this.idle.clear()
          }
          return
        }
        this.pump()
      })
  }
}
