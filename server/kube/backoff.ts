// Exponential backoff: each caller names its own start and cap, the doubling is written once.

export interface BackoffOptions {
  // The wait before the first retry.
  initialMs: number
  // No wait is longer.
  maxMs: number
}

/** The wait before retry number `attempt` (1 = the first): initialMs doubled per attempt, capped at maxMs. */
export function backoffMs(options: BackoffOptions, attempt: number): number {
  const doublings = Math.min(Math.max(attempt - 1, 0), 52)
  return Math.min(options.maxMs, options.initialMs * 2 ** doublings)
}

/** Counts failures in a row; `next()` gives the wait before the next try, `reset()` after a success. */
export class Backoff {
  private failures = 0

  constructor(readonly options: BackoffOptions) {}

  get attempts(): number {
    return this.failures
  }

  next(): number {
    this.failures++
    return backoffMs(this.options, this.failures)
  }

  reset(): void {
    this.failures = 0
  }
}
