// Requests per second to one registry: a token bucket with reservations, pure (the clock is given).
// A 429's Retry-After pauses the whole bucket, so no request to that registry goes out before it.

export class TokenBucket {
  private tokens: number
  private last: number
  private pausedUntil = 0

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number,
  ) {
    this.tokens = burst
    this.last = now()
  }

  /** Reserves the next request's slot and returns how many milliseconds to wait before sending it. */
  reserve(): number {
    const t = this.now()
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.perSecond)
    this.last = t
    this.tokens -= 1
    const wait = this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.perSecond) * 1000)
    return Math.max(wait, this.pausedUntil - t)
  }

  /** No request before `untilMs` (clock time). */
  pause(untilMs: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, untilMs)
  }
}
