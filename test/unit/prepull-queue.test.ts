// The pre-pull work queue and write limiter, driven by a manual clock.
import t from 'tap'
import { ManualClock } from '../support/clock.js'
import { type Outcome, TokenBucket, WorkQueue, type WorkQueueOptions } from '../../server/prepull/queue.js'

interface Call {
  key: string
  at: number
}

function setup(
  overrides: Partial<WorkQueueOptions> = {},
  answer: (key: string, n: number) => Outcome | Promise<Outcome> = () => ({ kind: 'done' }),
) {
  const clock = new ManualClock()
  const calls: Call[] = []
  const perKey = new Map<string, number>()
  let inFlight = 0
  let maxInFlight = 0
  const queue = new WorkQueue({
    capacity: 100,
    dedupeMs: 10_000,
    batchSize: 10,
    concurrency: 4,
    batchDelayMs: 100,
    backoffInitialMs: 500,
    backoffMaxMs: 8_000,
    clock,
    random: () => 0.5,
    ...overrides,
    handle: async (key) => {
      const n = (perKey.get(key) ?? 0) + 1
      perKey.set(key, n)
      calls.push({ key, at: clock.now() })
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      try {
        return await answer(key, n)
      } finally {
        inFlight--
      }
    },
  })
  queue.start()
  const start = clock.now()
  return { clock, queue, calls, start, maxInFlight: () => maxInFlight }
}

t.test('an offer is O(1) and waits for nothing: the handler runs after the batch delay', async (t) => {
  const { clock, queue, calls, start } = setup()
  t.equal(queue.offer('a'), 'queued')
  t.equal(calls.length, 0, 'nothing ran inside offer()')
  await clock.advance(99)
  t.equal(calls.length, 0, 'still collecting the batch')
  await clock.advance(1)
  t.strictSame(calls, [{ key: 'a', at: start + 100 }])
  t.equal(queue.idle, true)
})

t.test('dedupe: queued, in flight and recently done keys are not taken again until the dedupe time ends', async (t) => {
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  const { clock, queue, calls } = setup({ dedupeMs: 10_000 }, async () => {
    await gate
    return { kind: 'done' }
  })
  t.equal(queue.offer('a'), 'queued')
  t.equal(queue.offer('a'), 'duplicate', 'already queued')
  await clock.advance(100)
  t.equal(calls.length, 1)
  t.equal(queue.offer('a'), 'duplicate', 'in flight')
  release()
  await clock.advance(0)
  t.equal(queue.idle, true)
  await clock.advance(9_000)
  t.equal(queue.offer('a'), 'duplicate', 'done 9 s ago, within the dedupe time')
  await clock.advance(1_000)
  t.equal(queue.offer('a'), 'queued', 'the dedupe time is over')
  await clock.advance(100)
  t.equal(calls.length, 2)
  const s = queue.stats()
  t.equal(s.duplicates, 3)
  t.equal(s.done, 2)

  queue.forget('a')
  t.equal(queue.offer('a'), 'queued', 'forget() ends the window at once (the object was deleted)')
})

t.test('bounded: past capacity new keys are dropped and counted, queued ones are kept', async (t) => {
  const gate: (() => void)[] = []
  const dropped: string[] = []
  const { clock, queue, calls } = setup(
    { capacity: 3, onDrop: (k) => dropped.push(k) },
    () => new Promise<Outcome>((resolve) => gate.push(() => resolve({ kind: 'done' }))),
  )
  t.strictSame(
    ['a', 'b', 'c', 'd', 'e'].map((k) => queue.offer(k)),
    ['queued', 'queued', 'queued', 'dropped', 'dropped'],
  )
  t.strictSame(dropped, ['d', 'e'])
  t.equal(queue.stats().dropped, 2)
  await clock.advance(100)
  t.equal(queue.size, 3, 'in-flight keys still count against the bound')
  t.equal(queue.offer('f'), 'dropped')
  t.equal(queue.schedule('g'), 'dropped', 'internal scheduling obeys the same bound')
  for (const open of gate.splice(0)) open()
  await clock.advance(0)
  t.strictSame(
    calls.map((c) => c.key),
    ['a', 'b', 'c'],
  )
  t.equal(queue.offer('f'), 'queued', 'room again once written')
})

t.test('batches: at most batchSize keys per round, a burst waits for the batch delay', async (t) => {
  const { clock, queue, calls, start, maxInFlight } = setup({ batchSize: 3, concurrency: 8 }, async () => {
    await new Promise<void>((r) => setImmediate(r))
    return { kind: 'done' }
  })
  for (let i = 0; i < 7; i++) queue.offer(`k${i}`)
  await clock.advance(50)
  queue.offer('late')
  await clock.advance(50)
  t.equal(calls.length, 8, 'the burst and the late key are all handled')
  t.strictSame(
    calls.map((c) => c.at - start),
    [100, 100, 100, 100, 100, 100, 100, 100],
    'one wake-up after the batch delay',
  )
  t.equal(maxInFlight(), 3, 'never more than one batch in flight')
  t.strictSame(
    calls.map((c) => c.key),
    ['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'late'],
    'first in, first out',
  )
})

t.test('transient failures: the key stays, the queue backs off exponentially, success resets it', async (t) => {
  const { clock, queue, calls, start } = setup({}, (_key, n) => (n <= 3 ? { kind: 'retry' } : { kind: 'done' }))
  queue.offer('a')
  await clock.advance(10_000)
  // random() = 0.5: each wait is 3/4 of 500 ms, 1 s, 2 s.
  t.strictSame(
    calls.map((c) => c.at - start),
    [100, 100 + 375, 100 + 375 + 750, 100 + 375 + 750 + 1500],
  )
  t.equal(queue.stats().retries, 3)
  t.equal(queue.stats().backoffStreak, 0, 'reset by the success')
  t.equal(queue.stats().done, 1)
  t.equal(queue.idle, true, 'nothing lost')
})

t.test('the backoff is capped and Retry-After wins when it is longer', async (t) => {
  const { clock, queue, calls, start } = setup({ backoffMaxMs: 1_000 }, (_key, n) =>
    n === 1 ? { kind: 'retry', afterMs: 5_000 } : n <= 5 ? { kind: 'retry' } : { kind: 'done' },
  )
  queue.offer('a')
  await clock.advance(20_000)
  const gaps = calls.slice(1).map((c, i) => c.at - calls[i]!.at)
  t.equal(calls[0]!.at, start + 100)
  t.equal(gaps[0], 5_000, 'Retry-After of 5 s')
  t.strictSame(gaps.slice(1), [750, 750, 750, 750], 'then capped at 1 s (3/4 with this jitter)')
})

t.test('a transient failure halts the round: the rest of the batch waits for the backoff untouched', async (t) => {
  let failed = false
  const { clock, queue, calls, start } = setup({ concurrency: 1 }, (key) => {
    if (key === 'b' && !failed) {
      failed = true
      return { kind: 'retry' }
    }
    return { kind: 'done' }
  })
  for (const k of ['a', 'b', 'c', 'd']) queue.offer(k)
  await clock.advance(100)
  t.strictSame(
    calls.map((c) => c.key),
    ['a', 'b'],
    'c and d not sent into a failing API',
  )
  t.equal(queue.size, 3)
  await clock.advance(375)
  t.strictSame(
    calls.map((c) => c.key),
    ['a', 'b', 'b', 'c', 'd'],
    'the failed key first, then the rest',
  )
  t.strictSame(
    calls.map((c) => c.at - start),
    [100, 100, 475, 475, 475],
  )
  t.equal(queue.idle, true)
})

t.test('later: the key comes back after its delay without slowing the others', async (t) => {
  const { clock, queue, calls, start } = setup({}, (key, n) =>
    key === 'busy' && n === 1 ? { kind: 'later', afterMs: 2_000 } : { kind: 'done' },
  )
  queue.offer('busy')
  queue.offer('x')
  await clock.advance(100)
  t.equal(queue.stats().delayed, 1)
  t.equal(queue.offer('busy'), 'duplicate', 'a delayed key is still queued')
  queue.offer('y')
  await clock.advance(100)
  t.strictSame(
    calls.map((c) => [c.key, c.at - start]),
    [
      ['busy', 100],
      ['x', 100],
      ['y', 200],
    ],
  )
  await clock.advance(2_000)
  t.strictSame(calls.at(-1), { key: 'busy', at: start + 2_100 })
  t.equal(queue.stats().backoffStreak, 0)
})

t.test('blocked: the queue keeps its keys and stops until resumed', async (t) => {
  let missing = true
  const { clock, queue, calls } = setup({ concurrency: 1 }, () => (missing ? { kind: 'blocked' } : { kind: 'done' }))
  queue.offer('a')
  queue.offer('b')
  await clock.advance(100)
  t.equal(calls.length, 1)
  t.equal(queue.isBlocked, true)
  queue.offer('c')
  await clock.advance(60_000)
  t.equal(calls.length, 1, 'nothing runs while blocked')
  t.equal(queue.size, 3)
  missing = false
  queue.resume()
  await clock.advance(100)
  t.strictSame(
    calls
      .slice(1)
      .map((c) => c.key)
      .sort(),
    ['a', 'b', 'c'],
  )
  t.equal(queue.idle, true)
})

t.test('schedule() bypasses dedupe, moves a delayed key forward, and re-runs a key that is in flight', async (t) => {
  let release!: () => void
  let hold = true
  const { clock, queue, calls, start } = setup({}, async (key) => {
    if (key === 'a' && hold) {
      hold = false
      await new Promise<void>((r) => (release = r))
    }
    return { kind: 'done' }
  })
  queue.offer('a')
  await clock.advance(100)
  t.equal(queue.schedule('a'), 'duplicate', 'in flight: remembered')
  release()
  await clock.advance(100)
  t.equal(calls.filter((c) => c.key === 'a').length, 2, 'ran again after finishing')
  t.equal(queue.offer('a'), 'duplicate', 'recently done')
  t.equal(queue.schedule('a', 5_000), 'queued', 'status changes get through')
  t.equal(queue.schedule('a', 1_000), 'duplicate')
  await clock.advance(1_000)
  t.equal(calls.filter((c) => c.key === 'a').length, 3, 'the earlier time wins')
  t.equal(calls.at(-1)!.at, start + 1_200)
})

t.test('a handler that throws does not wedge the queue', async (t) => {
  const errors: string[] = []
  const { clock, queue } = setup({ onError: (k) => errors.push(k) }, (key) => {
    if (key === 'bad') throw new Error('bug')
    return { kind: 'done' }
  })
  queue.offer('bad')
  queue.offer('good')
  await clock.advance(100)
  t.strictSame(errors, ['bad'])
  t.equal(queue.stats().failed, 1)
  t.equal(queue.stats().done, 1)
})

t.test('stop() waits for the round in flight and runs nothing after', async (t) => {
  let release!: () => void
  const { clock, queue, calls } = setup({}, () => new Promise<Outcome>((r) => (release = () => r({ kind: 'done' }))))
  queue.offer('a')
  await clock.advance(100)
  let stopped = false
  const stopping = queue.stop().then(() => (stopped = true))
  await clock.advance(0)
  t.equal(stopped, false, 'waits for the write in flight')
  release()
  await stopping
  queue.offer('b')
  await clock.advance(1_000)
  t.equal(calls.length, 1)
})

t.test('token bucket: the burst goes at once, then writes are spaced at the rate', async (t) => {
  const clock = new ManualClock()
  const bucket = new TokenBucket(10, 2, clock)
  t.strictSame([bucket.reserve(), bucket.reserve(), bucket.reserve(), bucket.reserve()], [0, 0, 100, 200])
  await clock.advance(1_000)
  // Four reserved, 1 s at 10/s refills ten, capped at the burst of two.
  t.strictSame([bucket.reserve(), bucket.reserve(), bucket.reserve()], [0, 0, 100])

  const sent: number[] = []
  const start = clock.now()
  const writes = Array.from({ length: 5 }, () => bucket.take().then(() => sent.push(clock.now() - start)))
  await clock.advance(1_000)
  await Promise.all(writes)
  t.strictSame(sent, [200, 300, 400, 500, 600], 'one every 100 ms after the reservation before')
})

t.test('size, idle and stats count every place a key can be, exactly', async (t) => {
  let release!: () => void
  const { clock, queue } = setup({ dedupeMs: 10_000 }, async (key) => {
    if (key === 'slow') await new Promise<void>((r) => (release = r))
    return key === 'later' ? { kind: 'later', afterMs: 5_000 } : { kind: 'done' }
  })
  t.equal(queue.size, 0)
  t.equal(queue.idle, true)
  queue.offer('slow')
  queue.offer('later')
  t.equal(queue.schedule('delayed', 60_000), 'queued')
  t.equal(queue.size, 3, 'two ready, one delayed')
  t.equal(queue.idle, false, 'keys ready')
  await clock.advance(100)
  t.equal(queue.size, 3, 'one in flight, two delayed')
  t.equal(queue.idle, false, 'a key in flight')
  t.strictSame(queue.stats(), {
    ready: 0,
    delayed: 2,
    inFlight: 1,
    remembered: 0,
    offered: 2,
    duplicates: 0,
    dropped: 0,
    done: 0,
    failed: 0,
    retries: 0,
    backoffStreak: 0,
    blocked: false,
  })
  t.strictSame(
    ['slow', 'later', 'delayed', 'other'].map((key) => queue.has(key)),
    [true, true, true, false],
  )
  release()
  await clock.advance(0)
  t.equal(queue.idle, true, 'delayed keys do not make it busy')
  t.equal(queue.size, 2)
  t.equal(queue.stats().remembered, 1, 'the done key is remembered for the dedupe time')
  await clock.advance(9_999)
  t.equal(queue.offer('slow'), 'duplicate', 'within its dedupe time')
  await clock.advance(1)
  t.equal(queue.offer('slow'), 'queued', 'pruned once the time is over')
})

t.test('the dedupe window ends exactly dedupeMs after the key was done; dedupeMs 0 remembers nothing', async (t) => {
  const { clock, queue, calls } = setup({ dedupeMs: 1_000 })
  queue.offer('a')
  await clock.advance(100)
  await clock.advance(999)
  t.equal(queue.offer('a'), 'duplicate', '1 ms before the end')
  await clock.advance(1)
  t.equal(queue.offer('a'), 'queued', 'at the end')
  await clock.advance(100)
  t.equal(calls.length, 2)

  const none = setup({ dedupeMs: 0 })
  none.queue.offer('a')
  await none.clock.advance(100)
  t.equal(none.queue.stats().remembered, 0)
  t.equal(none.queue.offer('a'), 'queued', 'taken again at once')
})

t.test('schedule(): a ready key stays once; a delayed key moves to now or earlier, never later', async (t) => {
  const { clock, queue, calls, start } = setup()
  t.equal(queue.schedule('r'), 'queued')
  t.equal(queue.schedule('r'), 'duplicate', 'already ready')
  t.equal(queue.schedule('r', 50), 'duplicate', 'a delay does not push a ready key back')
  t.equal(queue.schedule('d', 10_000), 'queued')
  t.equal(queue.schedule('d', 20_000), 'duplicate', 'a later time is ignored')
  t.equal(queue.schedule('d', 3_000), 'duplicate', 'an earlier time wins')
  await clock.advance(2_999)
  t.strictSame(
    calls.map((c) => [c.key, c.at - start]),
    [['r', 100]],
  )
  await clock.advance(1)
  await clock.advance(100)
  t.strictSame(
    calls.map((c) => [c.key, c.at - start]),
    [
      ['r', 100],
      ['d', 3_000],
    ],
    'd ran at 3 s: promoted due keys run at once',
  )
  t.equal(queue.schedule('e', 10_000), 'queued')
  t.equal(queue.schedule('e', 0), 'duplicate', 'delay 0: now')
  await clock.advance(100)
  t.equal(calls.at(-1)!.key, 'e')
  t.equal(calls.at(-1)!.at - start, 3_100 + 100)
})

t.test('drops and handler errors reach their callbacks; resume() without a block and a second start() change nothing', async (t) => {
  const dropped: string[] = []
  const errors: [string, string][] = []
  const { clock, queue, calls } = setup(
    { capacity: 1, onDrop: (k) => dropped.push(k), onError: (k, e) => errors.push([k, (e as Error).message]) },
    (key) => {
      if (key === 'bad') throw new Error('bug')
      return { kind: 'done' }
    },
  )
  queue.offer('bad')
  t.equal(queue.offer('b'), 'dropped')
  t.equal(queue.schedule('c'), 'dropped')
  t.strictSame(dropped, ['b', 'c'])
  queue.start()
  queue.resume()
  await clock.advance(100)
  t.strictSame(errors, [['bad', 'bug']])
  t.equal(calls.length, 1, 'one round, not two')
  t.equal(queue.stats().failed, 1)
})
