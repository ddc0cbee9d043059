// The work queue's edges: which timers it keeps armed, when a round starts, what a stop, a block
// or a retry leaves behind, and the limiter's exact waits. Time is a manual clock; the number of
// armed timers is read from it.
import t from 'tap'
import { ManualClock } from '../support/clock.js'
import { type Outcome, TokenBucket, WorkQueue, type WorkQueueOptions } from '../../server/prepull/queue.js'

const START = 1_700_000_000_000

function setup(
  overrides: Partial<WorkQueueOptions> = {},
  answer: (key: string, n: number) => Outcome | Promise<Outcome> = () => ({ kind: 'done' }),
  start = true,
) {
  const clock = new ManualClock(START)
  const calls: [string, number][] = []
  const perKey = new Map<string, number>()
  const queue = new WorkQueue({
    capacity: 100,
    dedupeMs: 10_000,
    batchSize: 10,
    concurrency: 1,
    batchDelayMs: 100,
    backoffInitialMs: 500,
    backoffMaxMs: 8_000,
    clock,
    random: () => 0.5,
    ...overrides,
    handle: async (key) => {
      const n = (perKey.get(key) ?? 0) + 1
      perKey.set(key, n)
      calls.push([key, clock.now() - START])
      return answer(key, n)
    },
  })
  if (start) queue.start()
  return { clock, queue, calls }
}

// A handler answer the test releases.
function gate() {
  const open: (() => void)[] = []
  const wait = (outcome: Outcome = { kind: 'done' }) => new Promise<Outcome>((resolve) => open.push(() => resolve(outcome)))
  return { wait, release: () => open.shift()!() }
}

t.test('one wake-up timer for a burst; an earlier due key brings the round forward', async (t) => {
  const { clock, queue, calls } = setup()
  queue.offer('a')
  queue.offer('b')
  t.equal(clock.pendingTimers, 1, 'one timer for the burst')
  queue.schedule('d', 50)
  t.equal(clock.pendingTimers, 2, 'the wake-up and the delay timer')
  await clock.advance(50)
  t.strictSame(calls, [
    ['a', 50],
    ['b', 50],
    ['d', 50],
  ])
  t.equal(clock.pendingTimers, 0)
})

t.test('a later delayed key keeps the armed timer; an earlier one replaces it', async (t) => {
  const { clock, queue, calls } = setup()
  queue.schedule('x', 10_000)
  queue.schedule('y', 20_000)
  t.equal(clock.pendingTimers, 1, 'one delay timer, for the earliest key')
  queue.schedule('z', 5_000)
  t.equal(clock.pendingTimers, 1, 'replaced, not added')
  await clock.advance(5_000)
  t.strictSame(calls, [['z', 5_000]])
  t.equal(clock.pendingTimers, 1, 'armed again for the next key')
  await clock.advance(15_000)
  t.strictSame(calls, [
    ['z', 5_000],
    ['x', 10_000],
    ['y', 20_000],
  ])
  t.equal(clock.pendingTimers, 0)
})

t.test('a delayed key scheduled again for later keeps its earlier time', async (t) => {
  const { clock, queue, calls } = setup()
  queue.schedule('d', 1_000)
  t.equal(queue.schedule('d', 5_000), 'duplicate')
  await clock.advance(1_000)
  t.strictSame(calls, [['d', 1_000]])
})

t.test('a key moved to ready leaves a stale delay timer that changes nothing', async (t) => {
  const { clock, queue, calls } = setup()
  queue.schedule('d', 50)
  t.equal(queue.schedule('d', 0), 'duplicate')
  await clock.advance(99)
  t.strictSame(calls, [], 'a ready key waits for the batch delay')
  await clock.advance(1)
  t.strictSame(calls, [['d', 100]])
})

t.test('a stopped queue arms nothing; start() arms the delayed and the ready keys', async (t) => {
  const { clock, queue, calls } = setup({}, undefined, false)
  queue.offer('r')
  queue.schedule('d', 3_000)
  t.equal(clock.pendingTimers, 0)
  await clock.advance(1_000)
  t.strictSame(calls, [])
  queue.start()
  t.equal(clock.pendingTimers, 2)
  await clock.advance(100)
  t.strictSame(calls, [['r', 1_100]])
  await clock.advance(1_899)
  t.strictSame(calls, [['r', 1_100]])
  await clock.advance(1)
  t.strictSame(calls, [
    ['r', 1_100],
    ['d', 3_000],
  ])
})

t.test('stop() clears every timer; a stop in the middle of a round leaves the rest queued', async (t) => {
  const g = gate()
  const { clock, queue, calls } = setup({}, () => g.wait())
  queue.offer('a')
  queue.offer('b')
  queue.schedule('d', 5_000)
  await clock.advance(100)
  t.strictSame(calls, [['a', 100]])
  const stopping = queue.stop()
  t.equal(clock.pendingTimers, 0)
  g.release()
  await stopping
  await clock.advance(10_000)
  t.strictSame(calls, [['a', 100]], 'b is not taken after the stop')
  t.strictSame(queue.stats(), {
    ready: 1,
    delayed: 1,
    inFlight: 0,
    remembered: 1,
    offered: 2,
    duplicates: 0,
    dropped: 0,
    done: 1,
    failed: 0,
    retries: 0,
    backoffStreak: 0,
    blocked: false,
  })
  t.equal(queue.size, 2)
})

t.test('a stop between batches of one round ends the round', async (t) => {
  const g = gate()
  const { clock, queue, calls } = setup({ batchSize: 1 }, () => g.wait())
  queue.offer('a')
  queue.offer('b')
  await clock.advance(100)
  const stopping = queue.stop()
  g.release()
  await stopping
  await clock.advance(1_000)
  t.strictSame(calls, [['a', 100]])
  t.equal(queue.stats().ready, 1)
})

t.test('scheduled again while in flight: once more afterwards, at the earliest delay asked, unless still queued', async (t) => {
  const g = gate()
  const { clock, queue, calls } = setup({}, (key, n) => (key === 'a' && n === 1 ? g.wait() : { kind: 'done' }))
  queue.offer('a')
  await clock.advance(100)
  t.equal(queue.schedule('a', 5_000), 'duplicate')
  t.equal(queue.schedule('a', 1_000), 'duplicate')
  t.equal(queue.schedule('a', 3_000), 'duplicate')
  g.release()
  await clock.advance(999)
  t.strictSame(calls, [['a', 100]])
  await clock.advance(1)
  t.strictSame(calls, [
    ['a', 100],
    ['a', 1_100],
  ])

  const h = gate()
  const later = setup({}, (_key, n) => (n === 1 ? h.wait({ kind: 'later', afterMs: 5_000 }) : { kind: 'done' }))
  later.queue.offer('k')
  await later.clock.advance(100)
  later.queue.schedule('k', 0)
  h.release()
  await later.clock.advance(4_999)
  t.strictSame(later.calls, [['k', 100]], 'the key is queued again by its own answer: that time holds')
  await later.clock.advance(1)
  t.strictSame(later.calls, [
    ['k', 100],
    ['k', 5_100],
  ])
})

t.test('later with a negative delay is now; later does not reset the backoff streak', async (t) => {
  const { clock, queue, calls } = setup({}, (_key, n) =>
    n === 1 ? { kind: 'retry' } : n === 2 ? { kind: 'later', afterMs: -5 } : n === 3 ? { kind: 'retry' } : { kind: 'done' },
  )
  queue.offer('a')
  await clock.advance(100)
  t.equal(queue.backoffRemainingMs(), 375, '3/4 of 500 ms')
  await clock.advance(100)
  t.equal(queue.backoffRemainingMs(), 275)
  await clock.advance(275)
  t.strictSame(calls, [
    ['a', 100],
    ['a', 475],
    ['a', 475],
  ])
  t.equal(queue.stats().backoffStreak, 2, 'the later answer in between kept the streak')
  t.equal(queue.backoffRemainingMs(), 750, 'the second backoff: 3/4 of 1 s')
  await clock.advance(750)
  t.equal(calls.length, 4)
  t.equal(queue.stats().backoffStreak, 0)
  t.equal(queue.backoffRemainingMs(), 0)
})

t.test('the longest Retry-After of one round wins; no jitter source given: Math.random', async (t) => {
  const { clock, queue, calls } = setup({ concurrency: 2 }, (key, n) =>
    n === 1 ? { kind: 'retry', afterMs: key === 'a' ? 3_000 : 1_000 } : { kind: 'done' },
  )
  queue.offer('a')
  queue.offer('b')
  await clock.advance(100)
  t.equal(queue.backoffRemainingMs(), 3_000)
  await clock.advance(3_000)
  t.strictSame(calls, [
    ['a', 100],
    ['b', 100],
    ['a', 3_100],
    ['b', 3_100],
  ])

  const plain = setup({ random: undefined }, (_key, n) => (n === 1 ? { kind: 'retry' } : { kind: 'done' }))
  plain.queue.offer('a')
  await plain.clock.advance(100)
  const wait = plain.queue.backoffRemainingMs()
  t.ok(wait >= 250 && wait < 500, `between half and all of 500 ms: ${wait}`)
})

t.test('a handler that throws without onError, and drops without onDrop, are counted', async (t) => {
  const { clock, queue, calls } = setup({ capacity: 2 }, (key) => {
    if (key === 'bad') throw new Error('bug')
    return { kind: 'done' }
  })
  queue.offer('bad')
  queue.offer('good')
  t.equal(queue.offer('x'), 'dropped')
  await clock.advance(100)
  t.strictSame(calls, [
    ['bad', 100],
    ['good', 100],
  ])
  t.equal(queue.stats().failed, 1)
  t.equal(queue.stats().done, 1)
  t.equal(queue.stats().dropped, 1)
  t.equal(queue.idle, true)
  t.equal(queue.offer('bad'), 'duplicate', 'a failed key is remembered like a done one')
})

t.test('concurrency 0 still runs one at a time', async (t) => {
  const { clock, queue, calls } = setup({ concurrency: 0 })
  queue.offer('a')
  queue.offer('b')
  await clock.advance(100)
  t.strictSame(calls, [
    ['a', 100],
    ['b', 100],
  ])
})

t.test('the dedupe memory stays in expiry order, and is pruned at the exact end of each window', async (t) => {
  const { clock, queue } = setup({ dedupeMs: 1_000 })
  queue.offer('a')
  await clock.advance(100)
  queue.schedule('b')
  await clock.advance(100)
  queue.schedule('a')
  await clock.advance(100)
  // a until 1 300 (done again), b until 1 200.
  t.equal(queue.stats().remembered, 2)
  await clock.advance(900)
  t.equal(queue.offer('c'), 'queued')
  t.equal(queue.stats().remembered, 1, 'b pruned at 1 200 though a was remembered first')
  await clock.advance(100)
  t.equal(queue.offer('d'), 'queued')
  t.equal(queue.stats().remembered, 1, 'a pruned at 1 300, c remembered since')
})

t.test('token bucket: a write with a token does not wait for the clock', async (t) => {
  const clock = new ManualClock(START)
  const bucket = new TokenBucket(10, 1, clock)
  let sent = false
  const take = bucket.take().then(() => (sent = true))
  await new Promise<void>((resolve) => setImmediate(resolve))
  t.equal(sent, true, 'sent at once')
  t.equal(clock.pendingTimers, 0)
  await take
  t.equal(bucket.reserve(), 100)
  await clock.advance(50)
  t.equal(bucket.reserve(), 150, 'half a token back after 50 ms')
})
