import t from 'tap'
import { compileSchedule, dueRun } from '../../server/prewarm/schedule.js'

const ms = (iso: string) => Date.parse(iso)

t.test('scheduled times in the configured time zone', async (t) => {
  // 02:30 in Shanghai (UTC+8, no daylight saving) is 18:30 UTC the day before.
  const shanghai = compileSchedule('30 2 * * *', 'Asia/Shanghai')
  const rows: [string, string, string][] = [
    // now, latest at or before, next after
    ['2026-11-28T18:30:00.000Z', '2026-11-28T18:30:00.000Z', '2026-11-29T18:30:00.000Z'],
    ['2026-11-28T18:29:59.999Z', '2026-11-27T18:30:00.000Z', '2026-11-28T18:30:00.000Z'],
    ['2026-11-28T18:30:00.500Z', '2026-11-28T18:30:00.000Z', '2026-11-29T18:30:00.000Z'],
    ['2026-11-29T12:00:00.000Z', '2026-11-28T18:30:00.000Z', '2026-11-29T18:30:00.000Z'],
  ]
  for (const [now, latest, next] of rows) {
    t.equal(new Date(shanghai.latest(ms(now))!).toISOString(), latest, `latest at ${now}`)
    t.equal(new Date(shanghai.next(ms(now))!).toISOString(), next, `next after ${now}`)
  }
  // Daylight saving: 02:30 on Mondays in Berlin is 01:30 UTC in winter, 00:30 UTC in summer.
  const berlin = compileSchedule('30 2 * * 1', 'Europe/Berlin')
  t.equal(new Date(berlin.next(ms('2026-11-29T00:00:00Z'))!).toISOString(), '2026-11-30T01:30:00.000Z')
  t.equal(new Date(berlin.next(ms('2026-06-28T00:00:00Z'))!).toISOString(), '2026-06-29T00:30:00.000Z')
})

t.test('which scheduled time is due: none, the latest, missed ones collapsed into one catch-up', async (t) => {
  const hourly = compileSchedule('0 * * * *', 'UTC')
  const rows: [string, string | undefined, string, string | undefined][] = [
    // what, last completed, now, due
    ['never completed: the latest time is due', undefined, '2026-11-29T10:20:00Z', '2026-11-29T10:00:00.000Z'],
    ['completed this hour: nothing due', '2026-11-29T10:00:00Z', '2026-11-29T10:59:59Z', undefined],
    ['at the next time', '2026-11-29T10:00:00Z', '2026-11-29T11:00:00Z', '2026-11-29T11:00:00.000Z'],
    ['three missed while down: one catch-up, the latest', '2026-11-29T07:00:00Z', '2026-11-29T10:05:00Z', '2026-11-29T10:00:00.000Z'],
    ['a record from the future (clock skew): nothing due', '2026-11-29T12:00:00Z', '2026-11-29T10:05:00Z', undefined],
  ]
  for (const [what, last, now, due] of rows) {
    const got = dueRun(hourly, last === undefined ? undefined : ms(last), ms(now))
    t.equal(got === undefined ? undefined : new Date(got).toISOString(), due, what)
  }
})
