// When pre-warm runs: a five-field cron expression in a time zone (parsed by croner), and which
// scheduled time is due given the last one completed. Pure: time comes in as numbers.
import { Cron } from 'croner'

/** Why a cron expression is refused, or undefined when it is a valid five-field one. */
export function checkSchedule(expression: string): string | undefined {
  const fields = expression.trim().split(/\s+/)
  if (fields.length !== 5 || expression.trim().startsWith('@')) {
    return `expected five fields (minute hour day-of-month month day-of-week), e.g. "30 2 * * *"; got "${expression}"`
  }
  try {
    new Cron(expression, { mode: '5-part', paused: true })
    return undefined
  } catch (error) {
    return `not a valid cron expression: ${(error as Error).message.replace(/^CronPattern: /, '')}`
  }
}

export interface Schedule {
  /** The first scheduled time strictly after `ms`. */
  next(ms: number): number | undefined
  /** The last scheduled time at or before `ms`. */
  latest(ms: number): number | undefined
}

export function compileSchedule(expression: string, timeZone: string): Schedule {
  const cron = new Cron(expression, { mode: '5-part', timezone: timeZone, paused: true })
  return {
    next: (ms) => cron.nextRun(new Date(ms))?.getTime(),
    // croner excludes a run exactly at the reference; one millisecond later includes it.
    latest: (ms) => cron.previousRuns(1, new Date(ms + 1))[0]?.getTime(),
  }
}

/**
 * The scheduled time to run now, if any: the latest one at or before `now` that is after the last
 * completed one. Runs missed while no replica was up collapse into this one (a catch-up).
 */
export function dueRun(schedule: Schedule, lastCompleted: number | undefined, now: number): number | undefined {
  const latest = schedule.latest(now)
  if (latest === undefined) return undefined
  return lastCompleted === undefined || latest > lastCompleted ? latest : undefined
}
