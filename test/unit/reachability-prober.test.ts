// The probe loop with a stand-in probe: bounded concurrency, every target
// probed, backoff for a target that stays down, stop() waits for probes in flight.
import t from 'tap'
import { Prober, type ProbeSchedule } from '../../server/reachability/prober.js'
import type { ProbeResult } from '../../server/reachability/probe.js'
import { StateTable } from '../../server/reachability/state.js'

const schedule: ProbeSchedule = { intervalMs: 40, recheckMs: 10, maxBackoffMs: 160, jitter: 0, concurrency: 3 }
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('never more than `concurrency` probes at once, and every target gets its turn', async (t) => {
  const table = new StateTable({ ttlMs: 60_000, refusalTtlMs: 60_000, failureThreshold: 1, successThreshold: 1, holdMs: 0 })
  let inFlight = 0
  let peak = 0
  const probed = new Map<string, number>()
  const registries = Array.from({ length: 10 }, (_, i) => `r${i}.example`)
  const prober = new Prober({
    registries,
    schedule,
    initialSpreadMs: 0,
    record: (r) => table.get(r),
    probe: async (registry): Promise<ProbeResult> => {
      inFlight += 1
      peak = Math.max(peak, inFlight)
      await sleep(15)
      inFlight -= 1
      probed.set(registry, (probed.get(registry) ?? 0) + 1)
      return { ok: true, durationMs: 15, detail: 'HTTP 401' }
    },
    onResult: (registry, result) =>
      table.observe(registry, { at: Date.now(), source: 'probe', outcome: result.ok ? 'ok' : 'fail', detail: result.detail }),
  })
  prober.start()
  await sleep(300)
  await prober.stop()
  t.equal(peak, 3, `peak in flight ${peak}`)
  t.same([...probed.keys()].sort(), [...registries].sort(), 'all probed')
  t.ok(
    [...probed.values()].every((n) => n >= 2),
    'and probed again after the interval',
  )
  t.equal(inFlight, 0, 'stop() resolved after the probes in flight finished')
})

t.test('a target that stays down is probed less and less often; one that is up keeps its interval', async (t) => {
  const table = new StateTable({ ttlMs: 60_000, refusalTtlMs: 60_000, failureThreshold: 1, successThreshold: 2, holdMs: 0 })
  const times: Record<string, number[]> = { 'down.example': [], 'up.example': [] }
  const prober = new Prober({
    registries: Object.keys(times),
    schedule,
    initialSpreadMs: 0,
    record: (r) => table.get(r),
    probe: async (registry) => {
      times[registry]!.push(Date.now())
      return registry === 'up.example'
        ? { ok: true, durationMs: 1, detail: 'HTTP 200' }
        : { ok: false, durationMs: 1, detail: 'connection refused' }
    },
    onResult: (registry, result) =>
      table.observe(registry, { at: Date.now(), source: 'probe', outcome: result.ok ? 'ok' : 'fail', detail: result.detail }),
  })
  prober.start()
  await sleep(700)
  await prober.stop()
  const gaps = (xs: number[]) => xs.slice(1).map((x, i) => x - xs[i]!)
  const down = gaps(times['down.example']!)
  const up = gaps(times['up.example']!)
  t.ok(down.length >= 3, `down probed ${down.length + 1} times`)
  t.ok(down[0]! < down.at(-1)! && down.at(-1)! >= 150, `gaps grow up to maxBackoff: ${down.join(', ')} ms`)
  t.ok(up.length > down.length, `up probed more often (${up.length + 1} vs ${down.length + 1})`)
  // Timers never fire early; under load they may fire late.
  t.ok(
    up.every((g) => g >= 35 && g < 150),
    `up keeps its interval: ${up.join(', ')} ms`,
  )
})

t.test('probeSoon moves a target to the front; unknown names are not probed', async (t) => {
  const seen: string[] = []
  const prober = new Prober({
    registries: ['a.example'],
    schedule: { ...schedule, intervalMs: 10_000 },
    initialSpreadMs: 0,
    record: () => undefined,
    probe: async (r) => {
      seen.push(r)
      return { ok: true, durationMs: 0, detail: 'HTTP 200' }
    },
    onResult: () => undefined,
  })
  prober.start()
  await sleep(30)
  t.same(seen, ['a.example'])
  t.ok(prober.probeSoon('a.example'))
  t.notOk(prober.probeSoon('from-a-pod-spec.example'), 'only configured registries are ever probed')
  await sleep(30)
  t.same(seen, ['a.example', 'a.example'])
  await prober.stop()
  t.same(prober.schedule(), [{ registry: 'a.example', nextAt: undefined, inFlight: false }])
})
