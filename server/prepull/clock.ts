// Time as the pre-pull machinery sees it; tests drive it step by step (test/support/clock.ts).
export type TimerHandle = { readonly id: number } | NodeJS.Timeout

export interface Clock {
  now(): number
  setTimeout(fn: () => void, ms: number): TimerHandle
  clearTimeout(handle: TimerHandle): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, Math.max(0, ms))
    // Background work never keeps the process alive on its own.
    t.unref()
    return t
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}
