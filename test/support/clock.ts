// A clock for tests: time moves only when a test moves it.
import type { Clock, TimerHandle } from '../../server/prepull/clock.js'

interface ManualTimer {
  id: number
  at: number
  fn: () => void
}

/** A clock that moves only when told; timers fire in time order as it passes them. */
export class ManualClock implements Clock {
  private current: number
  private nextId = 1
  private readonly timers = new Map<number, ManualTimer>()

  constructor(start = 1_700_000_000_000) {
    this.current = start
  }

  now(): number {
    return this.current
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer = { id: this.nextId++, at: this.current + Math.max(0, ms), fn }
    this.timers.set(timer.id, timer)
    return { id: timer.id }
  }

  clearTimeout(handle: TimerHandle): void {
    if ('id' in handle && typeof handle.id === 'number') this.timers.delete(handle.id)
  }

  get pendingTimers(): number {
    return this.timers.size
  }

  /** Moves time forward by `ms`, firing due timers in order and letting promise callbacks run between them. */
  async advance(ms: number): Promise<void> {
    const until = this.current + ms
    for (;;) {
      await settle()
      let next: ManualTimer | undefined
      for (const t of this.timers.values()) if (t.at <= until && (!next || t.at < next.at || (t.at === next.at && t.id < next.id))) next = t
      if (!next) break
      this.timers.delete(next.id)
      this.current = Math.max(this.current, next.at)
      next.fn()
    }
    this.current = until
    await settle()
  }
}

// Lets queued promise continuations (and the I/O callbacks of a fake API) run.
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}
