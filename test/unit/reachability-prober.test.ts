// The probe loop with a stand-in probe: bounded concurrency, every target
// probed, backoff for a target that stays down, stop() waits for probes in flight.
// Time is virtual (node:test's mock timers plus the prober's `now`): the loop runs
// exactly as scheduled however loaded the machine is.
import t from 'tap'
import { mock } from 'node:test'
import { Prober, type ProbeSchedule } from '../../server/reachability/prober.js'
import type { ProbeResult } from '../../server/reachability/probe.js'
import { StateTable } from '../../server/reachability/state.js'

const schedule: ProbeSchedule = { intervalMs: 40, recheckMs: 10, maxBackoffMs: 160, jitter: 0, concurrency: 3 }

// setTimeout is virtual; setImmediate is real, so promise chains settle between steps.
mock.timers.enable({ apis: ['setTimeout'] })
t.teardown(() => mock.timers.reset())
let now = 1_000_000
const clock = () => now
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}
/** Moves virtual time forward one millisecond at a time, firing timers and letting probes finish. */
async function advance(ms: number): Promise<void> {
  await settle()
  for (let i = 0; i < ms; i++) {
    now += 1
    mock.timers.tick(1)
    await settle()
  }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('never more than `concurrency` probes at once, and every target gets its turn', async (t) => {
  const table = new StateTable({ ttlMs: 60_000, refusalTtlMs: 60_000, failureThreshold: 1, successThreshold: 1, holdMs: 0 })
  let inFlight = 0
  let peak = 0
  const starts: [string, number][] = []
  const registries = Array.from({ length: 10 }, (_, i) => `r${i}.example`)
  const start = now
  const prober = new Prober({
    registries,
    schedule,
    initialSpreadMs: 0,
    now: clock,
    record: (r) => table.get(r),
    probe: async (registry): Promise<ProbeResult> => {
      starts.push([registry, now - start])
      inFlight += 1
      peak = Math.max(peak, inFlight)
      await sleep(15)
      inFlight -= 1
      return { ok: true, durationMs: 15, detail: 'HTTP 401' }
    },
    onResult: (registry, result) =>
      table.observe(registry, { at: now, source: 'probe', outcome: result.ok ? 'ok' : 'fail', detail: result.detail }),
  })
  prober.start()
  await advance(100)
  const stopped = prober.stop()
  await advance(15)
  await stopped
  t.equal(peak, 3, 'three probes at once, never more')
  // Ten targets due at once, three slots of 15 ms: rounds start at 0, 15, 30 and 45 ms;
  // each target is due again 40 ms after its probe ended (r0 and r1 at 55 ms).
  t.strictSame(
    starts.filter(([, at]) => at < 55),
    [
      ['r0.example', 0],
      ['r1.example', 0],
      ['r2.example', 0],
      ['r3.example', 15],
      ['r4.example', 15],
      ['r5.example', 15],
      ['r6.example', 30],
      ['r7.example', 30],
      ['r8.example', 30],
      ['r9.example', 45],
    ],
    'every target once, in order, three at a time',
  )
  t.strictSame(
    starts.filter(([r]) => r === 'r0.example').map(([, at]) => at),
    [0, 55],
    'r0 again 40 ms after its probe ended (15 + 40 ms), a slot being free since r9 took one of three at 45 ms',
  )
  t.equal(inFlight, 0, 'stop() resolved after the probes in flight finished')
})

t.test('a target that stays down is probed less and less often; one that is up keeps its interval', async (t) => {
  const table = new StateTable({ ttlMs: 60_000, refusalTtlMs: 60_000, failureThreshold: 1, successThreshold: 2, holdMs: 0 })
  const start = now
  const times: Record<string, number[]> = { 'down.example': [], 'up.example': [] }
  const prober = new Prober({
    registries: Object.keys(times),
    schedule,
    initialSpreadMs: 0,
    now: clock,
    record: (r) => table.get(r),
    probe: async (registry) => {
      times[registry]!.push(now - start)
      return registry === 'up.example'
        ? { ok: true, durationMs: 1, detail: 'HTTP 200' }
        : { ok: false, durationMs: 1, detail: 'connection refused' }
    },
    onResult: (registry, result) =>
      table.observe(registry, { at: now, source: 'probe', outcome: result.ok ? 'ok' : 'fail', detail: result.detail }),
  })
  prober.start()
  await advance(700)
  await prober.stop()
  // Down: the interval doubles with each failure, up to maxBackoffMs (160 ms).
  t.strictSame(times['down.example'], [0, 40, 120, 280, 440, 600])
  // Up: every intervalMs (40 ms).
  t.strictSame(times['up.example'], [0, 40, 80, 120, 160, 200, 240, 280, 320, 360, 400, 440, 480, 520, 560, 600, 640, 680])
})

t.test('probeSoon moves a target to the front; unknown names are not probed', async (t) => {
  const seen: string[] = []
  const prober = new Prober({
    registries: ['a.example'],
    schedule: { ...schedule, intervalMs: 10_000 },
    initialSpreadMs: 0,
    now: clock,
    record: () => undefined,
    probe: async (r) => {
      seen.push(r)
      return { ok: true, durationMs: 0, detail: 'HTTP 200' }
    },
    onResult: () => undefined,
  })
  prober.start()
  await advance(30)
  t.strictSame(seen, ['a.example'])
  t.equal(prober.probeSoon('a.example'), true)
  t.equal(prober.probeSoon('from-a-pod-spec.example'), false, 'only configured registries are ever probed')
  await settle()
  t.strictSame(seen, ['a.example', 'a.example'], 'at once, not after the 10 s interval')
  await advance(9_000)
  t.strictSame(seen, ['a.example', 'a.example'], 'and then not before the interval')
  await prober.stop()
  t.strictSame(prober.schedule(), [{ registry: 'a.example', nextAt: undefined, inFlight: false }])
})
