// A keyed work queue for the pre-pull writes: O(1) offers that never wait,
// deduplication for a while after success, a bound with counted drops,
// batches, a write rate limit and a shared backoff on transient API errors.
import { backoffMs } from '../kube/backoff.js'
import type { Clock, TimerHandle } from './clock.js'

export type Outcome =
  // Nothing more to do for now.
  | { kind: 'done' }
  // A transient failure (429, 5xx, network): the key stays queued and the whole queue backs off.
  | { kind: 'retry'; afterMs?: number }
  // Not possible yet (e.g. kube-fledged is processing the cache): look again later, no backoff.
  | { kind: 'later'; afterMs: number }
  // A permanent failure for this key; it is not retried until offered again after the dedupe time.
  | { kind: 'failed' }
  // A dependency is missing (no CRD): the key stays queued and the queue stops until resume().
  | { kind: 'blocked' }

export type OfferResult = 'queued' | 'duplicate' | 'dropped'

export interface WorkQueueOptions {
  capacity: number
  dedupeMs: number
  batchSize: number
  concurrency: number
  // Wait after the first offer before a round starts, so a burst is taken as one batch.
  batchDelayMs: number
  backoffInitialMs: number
  backoffMaxMs: number
  clock: Clock
  handle: (key: string) => Promise<Outcome>
  // Jitter source in [0, 1); replicas must not retry in step.
  random?: () => number
  onDrop?: (key: string) => void
  onError?: (key: string, error: unknown) => void
}

interface Item {
  readonly key: string
  attempts: number
}

export interface QueueStats {
  ready: number
  delayed: number
  inFlight: number
  remembered: number
  offered: number
  duplicates: number
  dropped: number
  done: number
  failed: number
  retries: number
  backoffStreak: number
  blocked: boolean
}

export class WorkQueue {
  private readonly ready = new Map<string, Item>()
  private readonly delayed = new Map<string, { item: Item; due: number }>()
  private readonly inFlight = new Map<string, Item>()
  // Keys scheduled again while in flight: run once more afterwards.
  private readonly again = new Map<string, number>()
  // Key → end of its dedupe window; kept in expiry order (delete before set).
  private readonly recent = new Map<string, number>()
  private readonly random: () => number
  private wake?: TimerHandle
  private wakeAt = Infinity
  private delayTimer?: TimerHandle
  private delayTimerAt = Infinity
  private pumping?: Promise<void>
  private stopped = true
  private blocked = false
  private backoffUntil = 0
  private streak = 0
  private readonly counters = { offered: 0, duplicates: 0, dropped: 0, done: 0, failed: 0, retries: 0 }

  constructor(private readonly options: WorkQueueOptions) {
    this.random = options.random ?? Math.random
  }

  get size(): number {
    return this.ready.size + this.delayed.size + this.inFlight.size
  }

  stats(): QueueStats {
    return {
      ready: this.ready.size,
      delayed: this.delayed.size,
      inFlight: this.inFlight.size,
      remembered: this.recent.size,
      ...this.counters,
      backoffStreak: this.streak,
      blocked: this.blocked,
    }
  }

  /** Nothing ready or in flight (delayed keys may still wait for their time). */
  get idle(): boolean {
    return this.ready.size === 0 && this.inFlight.size === 0
  }

  has(key: string): boolean {
    return this.ready.has(key) || this.delayed.has(key) || this.inFlight.has(key)
  }

  /** From admission: ignored while the key was recently done or is already queued. O(1), no I/O. */
  offer(key: string): OfferResult {
    this.counters.offered++
    const now = this.options.clock.now()
    this.pruneRecent(now)
    const until = this.recent.get(key)
    if ((until !== undefined && until > now) || this.has(key)) {
      this.counters.duplicates++
      return 'duplicate'
    }
    if (this.size >= this.options.capacity) return this.drop(key)
    this.ready.set(key, { key, attempts: 0 })
    this.kick()
    return 'queued'
  }

  /** From the status watcher or a sweep: bypasses deduplication; coalesces with a queued key. */
  schedule(key: string, delayMs = 0): OfferResult {
    const now = this.options.clock.now()
    if (this.inFlight.has(key)) {
      const prev = this.again.get(key)
      this.again.set(key, prev === undefined ? delayMs : Math.min(prev, delayMs))
      return 'duplicate'
    }
    if (this.ready.has(key)) return 'duplicate'
    const waiting = this.delayed.get(key)
    if (waiting) {
      if (delayMs <= 0) {
        this.delayed.delete(key)
        this.ready.set(key, waiting.item)
        this.kick()
      } else if (now + delayMs < waiting.due) {
        waiting.due = now + delayMs
        this.armDelayTimer()
      }
      return 'duplicate'
    }
    if (this.size >= this.options.capacity) return this.drop(key)
    const item = { key, attempts: 0 }
    if (delayMs <= 0) {
      this.ready.set(key, item)
      this.kick()
    } else {
      this.delayed.set(key, { item, due: now + delayMs })
      this.armDelayTimer()
    }
    return 'queued'
  }

  /** The key's dedupe window ends now (its object was deleted). */
  forget(key: string): void {
    this.recent.delete(key)
  }

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    this.armDelayTimer()
    this.kick()
  }

  /** Stops taking new rounds and waits for the one in flight. Queued keys stay in memory. */
  async stop(): Promise<void> {
    this.stopped = true
    this.clearWake()
    if (this.delayTimer) this.options.clock.clearTimeout(this.delayTimer)
    this.delayTimer = undefined
    this.delayTimerAt = Infinity
    await this.pumping
  }

  /** A missing dependency is back: run the queued keys. */
  resume(): void {
    if (!this.blocked) return
    this.blocked = false
    this.kick()
  }

  get isBlocked(): boolean {
    return this.blocked
  }

  private drop(key: string): OfferResult {
    this.counters.dropped++
    this.options.onDrop?.(key)
    return 'dropped'
  }

  private pruneRecent(now: number): void {
    for (const [key, until] of this.recent) {
      if (until > now) break
      this.recent.delete(key)
    }
  }

  private clearWake(): void {
    if (this.wake) this.options.clock.clearTimeout(this.wake)
    this.wake = undefined
    this.wakeAt = Infinity
  }

  // Arms the next round: after the batch delay, and not before the backoff ends.
  private kick(delayMs = this.options.batchDelayMs): void {
    if (this.stopped || this.blocked || this.pumping || this.ready.size === 0) return
    const now = this.options.clock.now()
    const at = Math.max(now + delayMs, this.backoffUntil)
    if (this.wake && this.wakeAt <= at) return
    this.clearWake()
    this.wakeAt = at
    this.wake = this.options.clock.setTimeout(() => {
      this.wake = undefined
      this.wakeAt = Infinity
      this.pump()
    }, at - now)
  }

  private armDelayTimer(): void {
    if (this.stopped || this.delayed.size === 0) return
    let earliest = Infinity
    for (const { due } of this.delayed.values()) if (due < earliest) earliest = due
    if (this.delayTimer && this.delayTimerAt <= earliest) return
    if (this.delayTimer) this.options.clock.clearTimeout(this.delayTimer)
    const now = this.options.clock.now()
    this.delayTimerAt = earliest
    this.delayTimer = this.options.clock.setTimeout(() => {
      this.delayTimer = undefined
      this.delayTimerAt = Infinity
      this.promoteDue()
      this.armDelayTimer()
    }, earliest - now)
  }

  private promoteDue(): void {
    const now = this.options.clock.now()
    let moved = false
    for (const [key, { item, due }] of this.delayed) {
      if (due > now) continue
      this.delayed.delete(key)
      this.ready.set(key, item)
      moved = true
    }
    if (moved) this.kick(0)
  }

  private pump(): void {
    if (this.pumping || this.stopped || this.blocked) return
    this.pumping = (async () => {
      while (!this.stopped && !this.blocked && this.ready.size > 0) {
        if (this.options.clock.now() < this.backoffUntil) break
        const batch: Item[] = []
        for (const item of this.ready.values()) {
          if (batch.length >= this.options.batchSize) break
          batch.push(item)
        }
        for (const item of batch) {
          this.ready.delete(item.key)
          this.inFlight.set(item.key, item)
        }
        await this.runBatch(batch)
      }
    })().finally(() => {
      this.pumping = undefined
      this.kick(0)
    })
  }

  private async runBatch(batch: Item[]): Promise<void> {
    let next = 0
    let halted = false
    let transient = false
    let retryAfter = 0
    let succeeded = false
    const worker = async (): Promise<void> => {
      while (!halted && !this.stopped && next < batch.length) {
        const item = batch[next++]!
        let outcome: Outcome
        try {
          outcome = await this.options.handle(item.key)
        } catch (error) {
          // A bug in the handler must not wedge the queue: count it as a permanent failure.
          this.options.onError?.(item.key, error)
          outcome = { kind: 'failed' }
        }
        this.inFlight.delete(item.key)
        const now = this.options.clock.now()
        switch (outcome.kind) {
          case 'done':
            succeeded = true
            this.counters.done++
            this.remember(item.key, now)
            break
          case 'failed':
            this.counters.failed++
            this.remember(item.key, now)
            break
          case 'retry':
            item.attempts++
            this.counters.retries++
            this.ready.set(item.key, item)
            transient = true
            halted = true
            retryAfter = Math.max(retryAfter, outcome.afterMs ?? 0)
            break
          case 'later':
            this.delayed.set(item.key, { item, due: now + Math.max(0, outcome.afterMs) })
            this.armDelayTimer()
            break
          case 'blocked':
            this.ready.set(item.key, item)
            this.blocked = true
            halted = true
            break
        }
        const again = this.again.get(item.key)
        if (again !== undefined) {
          this.again.delete(item.key)
          if (!this.has(item.key)) this.schedule(item.key, again)
        }
      }
    }
    const workers = Math.max(1, Math.min(this.options.concurrency, batch.length))
    await Promise.all(Array.from({ length: workers }, worker))
    // Keys a halted round did not reach go back to the queue untouched.
    for (let i = next; i < batch.length; i++) {
      const item = batch[i]!
      this.inFlight.delete(item.key)
      this.ready.set(item.key, item)
    }
    if (transient) {
      this.streak++
      const base = backoffMs({ initialMs: this.options.backoffInitialMs, maxMs: this.options.backoffMaxMs }, this.streak)
      const jittered = base / 2 + (this.random() * base) / 2
      this.backoffUntil = this.options.clock.now() + Math.max(retryAfter, jittered)
    } else if (succeeded) {
      this.streak = 0
    }
  }

  private remember(key: string, now: number): void {
    if (this.options.dedupeMs <= 0) return
    this.recent.delete(key)
    this.recent.set(key, now + this.options.dedupeMs)
  }

  /** Time until the current backoff ends (0 when none). */
  backoffRemainingMs(): number {
    return Math.max(0, this.backoffUntil - this.options.clock.now())
  }
}

/** Spaces API writes: `rate` per second on average, `burst` at once. */
export class TokenBucket {
  private tokens: number
  private last: number

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly clock: Clock,
  ) {
    this.tokens = burst
    this.last = clock.now()
  }

  /** Reserves one write and says how long to wait before sending it. */
  reserve(): number {
    const now = this.clock.now()
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000)
    this.last = now
    this.tokens -= 1
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate
  }

  async take(): Promise<void> {
    const wait = this.reserve()
    if (wait > 0) await new Promise<void>((resolve) => this.clock.setTimeout(resolve, wait))
  }
}
