// The registry state table at its edges: the exact evidence texts, every boundary of expiry,
// hold and thresholds, what each change does to `version`, the observation history, the
// refusal cap and its eviction, the registry cap's eviction order, and merges in every
// combination of held and not-held records. Times are written out, never computed from
// the table's own constants.
import t from 'tap'
import {
  describeEvidence,
  type Observation,
  type ObservationOutcome,
  type ObservationSource,
  type RegistryRecord,
  type Refusal,
  StateTable,
  type Transition,
} from '../../server/reachability/state.js'

const MIN = 60_000
// 2026-03-01T10:00:00.000Z
const T0 = Date.parse('2026-03-01T10:00:00Z')
// ttl 30 min, refusals 60 min, two failed or two good probes in a row, pull failures hold for 10 min.
const params = { ttlMs: 30 * MIN, refusalTtlMs: 60 * MIN, failureThreshold: 2, successThreshold: 2, holdMs: 10 * MIN }

function obs(at: number, outcome: ObservationOutcome, source: ObservationSource = 'probe', detail = `${source} ${outcome}`): Observation {
  return { at, source, outcome, detail }
}

function table() {
  const transitions: Transition[] = []
  const tbl = new StateTable(params, { onTransition: (tr) => transitions.push(tr) })
  return { tbl, transitions }
}

function record(registry: string, fields: Partial<RegistryRecord>): RegistryRecord {
  return {
    registry,
    state: 'reachable',
    since: T0,
    confirmations: 1,
    updatedAt: T0,
    consecutiveFailures: 0,
    consecutiveSuccesses: 1,
    recent: [],
    ...fields,
  }
}

t.test('evidence names the source, the detail, the count past one and the second the state began', async (t) => {
  const { tbl } = table()
  // Milliseconds are dropped from the time: 10:00:01.234 reads 10:00:01.
  tbl.observe('p.example', obs(T0 + 1234, 'ok', 'probe', 'HTTP 401 in 12 ms'))
  t.equal(tbl.status('p.example', T0 + 2000).evidence, 'probe: HTTP 401 in 12 ms, since 2026-03-01T10:00:01Z')
  tbl.observe('p.example', obs(T0 + 5000, 'ok', 'probe', 'HTTP 401 in 14 ms'))
  t.equal(tbl.status('p.example', T0 + 5000).evidence, 'probe: HTTP 401 in 14 ms, 2x, since 2026-03-01T10:00:01Z')

  tbl.observe('s.example', obs(T0, 'slow', 'event', 'pull of s.example/a:1 took 4 min'))
  t.equal(tbl.status('s.example', T0).evidence, 'pull event: pull of s.example/a:1 took 4 min, since 2026-03-01T10:00:00Z')
  t.equal(tbl.status('s.example', T0).state, 'slow')

  tbl.observe('d.example', obs(T0 + 999, 'fail', 'pod', 'no such host pulling d.example/a:1 (pod ns/p)'))
  t.strictSame(tbl.status('d.example', T0 + 999), {
    state: 'unreachable',
    evidence: 'pod status: no such host pulling d.example/a:1 (pod ns/p), since 2026-03-01T10:00:00Z',
  })
})

t.test('describeEvidence of a record that nothing decided', async (t) => {
  t.equal(describeEvidence(record('x.example', { state: 'unknown', since: T0 + 61_500 })), 'no evidence since 2026-03-01T10:01:01Z')
})

t.test('a record that lapsed to unknown keeps its last evidence, timed from the moment it lapsed', async (t) => {
  const { tbl } = table()
  tbl.observe('x.example', obs(T0, 'fail', 'pod', 'connection refused pulling x.example/a (pod ns/p)'))
  tbl.expire(T0 + 30 * MIN)
  t.strictSame(tbl.status('x.example', T0 + 31 * MIN), {
    state: 'unknown',
    evidence: 'evidence expired; last: pod status: connection refused pulling x.example/a (pod ns/p), since 2026-03-01T10:30:00Z',
  })
  t.strictSame(tbl.status('never.example', T0), { state: 'unknown', evidence: 'no evidence yet' })
})

t.test('a state with no expiry, as another replica may share it, is read as it is', async (t) => {
  const { tbl } = table()
  const decidedBy = obs(T0, 'ok', 'probe', 'HTTP 200 in 5 ms')
  t.equal(tbl.merge([record('forever.example', { decidedBy })], [], T0), true)
  t.strictSame(tbl.status('forever.example', T0 + 1000 * MIN), {
    state: 'reachable',
    evidence: 'probe: HTTP 200 in 5 ms, since 2026-03-01T10:00:00Z',
  })
  t.strictSame(tbl.expire(T0 + 1000 * MIN), [], 'nothing to lapse')
  t.equal(tbl.nextExpiry(T0), Infinity)
})

t.test('a state is read until the millisecond before it expires', async (t) => {
  const { tbl } = table()
  tbl.observe('e.example', obs(T0, 'ok', 'probe', 'HTTP 401 in 3 ms'))
  t.strictSame(tbl.status('e.example', T0 + 30 * MIN - 1), {
    state: 'reachable',
    evidence: 'probe: HTTP 401 in 3 ms, since 2026-03-01T10:00:00Z',
  })
  t.strictSame(tbl.status('e.example', T0 + 30 * MIN), {
    state: 'unknown',
    evidence: 'reachable evidence expired at 2026-03-01T10:30:00Z; last: probe: HTTP 401 in 3 ms, since 2026-03-01T10:00:00Z',
  })
})

t.test('a refusal seen once has no count; it lapses at exactly its TTL', async (t) => {
  const { tbl } = table()
  const repo = 'm.example/docker.io/acme/app'
  t.equal(tbl.refuse(repo, 'HTTP 403 Forbidden (pod ns/p)', T0 + 500), true)
  t.equal(tbl.refusal(repo, T0 + 1000), 'HTTP 403 Forbidden (pod ns/p), since 2026-03-01T10:00:00Z')
  t.equal(tbl.refusal(repo, T0 + 500 + 60 * MIN - 1), 'HTTP 403 Forbidden (pod ns/p), since 2026-03-01T10:00:00Z')
  t.equal(tbl.refusal(repo, T0 + 500 + 60 * MIN), undefined)
  t.strictSame(tbl.refusalEntries(), [
    {
      repository: repo,
      detail: 'HTTP 403 Forbidden (pod ns/p)',
      firstAt: T0 + 500,
      at: T0 + 500,
      count: 1,
      expiresAt: T0 + 500 + 60 * MIN,
    },
  ])
})

t.test('a refusal repeated at the moment the first one lapses starts over', async (t) => {
  const { tbl } = table()
  const repo = 'm.example/docker.io/acme/app'
  tbl.refuse(repo, 'first', T0)
  t.equal(tbl.refuse(repo, 'second', T0 + 60 * MIN - 1), false, 'still known a millisecond before')
  t.strictSame(tbl.refusalEntries(), [
    { repository: repo, detail: 'second', firstAt: T0, at: T0 + 60 * MIN - 1, count: 2, expiresAt: T0 + 120 * MIN - 1 },
  ])
  t.equal(tbl.refuse(repo, 'third', T0 + 120 * MIN - 1), true, 'lapsed at exactly its expiry: new')
  t.strictSame(tbl.refusalEntries(), [
    { repository: repo, detail: 'third', firstAt: T0 + 120 * MIN - 1, at: T0 + 120 * MIN - 1, count: 1, expiresAt: T0 + 180 * MIN - 1 },
  ])
})

t.test('nextExpiry: the earliest state or refusal expiry strictly after now', async (t) => {
  const { tbl } = table()
  t.equal(tbl.nextExpiry(T0), Infinity, 'nothing')
  tbl.observe('a.example', obs(T0, 'ok')) // expires T0 + 30 min
  tbl.observe('b.example', obs(T0 + 10 * MIN, 'ok')) // T0 + 40 min
  tbl.refuse('m.example/docker.io/a/b', 'HTTP 403', T0 - 25 * MIN) // T0 + 35 min
  tbl.refuse('m.example/docker.io/a/c', 'HTTP 403', T0 - 15 * MIN) // T0 + 45 min
  t.equal(tbl.nextExpiry(T0), T0 + 30 * MIN)
  t.equal(tbl.nextExpiry(T0 + 30 * MIN - 1), T0 + 30 * MIN)
  t.equal(tbl.nextExpiry(T0 + 30 * MIN), T0 + 35 * MIN, 'an expiry at now is not next')
  t.equal(tbl.nextExpiry(T0 + 35 * MIN), T0 + 40 * MIN)
  t.equal(tbl.nextExpiry(T0 + 40 * MIN), T0 + 45 * MIN)
  t.equal(tbl.nextExpiry(T0 + 45 * MIN), Infinity)
  // Order of insertion does not matter: a later-listed earlier expiry wins.
  const { tbl: other } = table()
  other.observe('late.example', obs(T0 + 10 * MIN, 'ok')) // T0 + 40 min
  other.observe('early.example', obs(T0, 'ok')) // T0 + 30 min
  other.refuse('m.example/docker.io/x/late', 'HTTP 403', T0) // T0 + 60 min
  other.refuse('m.example/docker.io/x/early', 'HTTP 403', T0 - 50 * MIN) // T0 + 10 min
  t.equal(other.nextExpiry(T0), T0 + 10 * MIN)
  t.equal(other.nextExpiry(T0 + 10 * MIN), T0 + 30 * MIN)
})

t.test('version: one step per observation and refusal; expire and merge step it only when something changed', async (t) => {
  const { tbl } = table()
  t.equal(tbl.version, 0)
  tbl.observe('a.example', obs(T0, 'ok'))
  t.equal(tbl.version, 1)
  tbl.observe('a.example', obs(T0 + 1, 'ok'))
  t.equal(tbl.version, 2, 'a confirmation counts too')
  tbl.refuse('m.example/docker.io/a/b', 'HTTP 403', T0)
  t.equal(tbl.version, 3)
  tbl.refuse('m.example/docker.io/a/b', 'HTTP 403', T0 + 1)
  t.equal(tbl.version, 4)
  tbl.expire(T0 + 2)
  t.equal(tbl.version, 4, 'nothing lapsed')
  tbl.expire(T0 + 30 * MIN + 1)
  t.equal(tbl.version, 5, 'a.example lapsed')
  tbl.expire(T0 + 60 * MIN + 1)
  t.equal(tbl.version, 5, 'dropping lapsed refusals changes nothing admission reads')
  t.equal(tbl.merge([], [], T0), false)
  t.equal(tbl.version, 5)
  t.equal(tbl.merge([record('b.example', {})], [], T0), true)
  t.equal(tbl.version, 6)
  t.equal(tbl.merge([], [{ repository: 'm.example/x', detail: 'HTTP 403', firstAt: T0, at: T0, count: 1, expiresAt: T0 + MIN }], T0), true)
  t.equal(tbl.version, 7)
})

t.test('the five most recent observations are kept, oldest first', async (t) => {
  const { tbl } = table()
  for (let i = 0; i < 7; i++) tbl.observe('h.example', obs(T0 + i, 'ok', 'probe', `#${i}`))
  const r = tbl.get('h.example')!
  t.strictSame(
    r.recent.map((o) => o.detail),
    ['#2', '#3', '#4', '#5', '#6'],
  )
  t.strictSame(r.lastObservation, obs(T0 + 6, 'ok', 'probe', '#6'))
  const { tbl: two } = table()
  two.observe('h.example', obs(T0, 'ok', 'probe', 'a'))
  two.observe('h.example', obs(T0 + 1, 'fail', 'probe', 'b'))
  t.strictSame(two.get('h.example')!.recent, [obs(T0, 'ok', 'probe', 'a'), obs(T0 + 1, 'fail', 'probe', 'b')])
})

t.test('the record after each kind of observation, field by field', async (t) => {
  const { tbl } = table()
  const first = obs(T0, 'ok', 'probe', 'HTTP 401')
  tbl.observe('f.example', first)
  t.strictSame(tbl.get('f.example'), {
    registry: 'f.example',
    state: 'reachable',
    since: T0,
    confirmations: 1,
    updatedAt: T0,
    consecutiveFailures: 0,
    consecutiveSuccesses: 1,
    recent: [first],
    lastObservation: first,
    decidedBy: first,
    expiresAt: T0 + 30 * MIN,
  })
  // A failed probe: doubt, nothing decided, no hold.
  const doubt = obs(T0 + MIN, 'fail', 'probe', 'no answer')
  tbl.observe('f.example', doubt)
  t.strictSame(tbl.get('f.example'), {
    registry: 'f.example',
    state: 'reachable',
    since: T0,
    confirmations: 1,
    updatedAt: T0,
    consecutiveFailures: 1,
    consecutiveSuccesses: 0,
    recent: [first, doubt],
    lastObservation: doubt,
    decidedBy: first,
    expiresAt: T0 + 30 * MIN,
  })
  // A failed pull: unreachable at once, held for 10 min.
  const pull = obs(T0 + 2 * MIN, 'fail', 'pod', 'i/o timeout')
  tbl.observe('f.example', pull)
  t.strictSame(tbl.get('f.example'), {
    registry: 'f.example',
    state: 'unreachable',
    since: T0 + 2 * MIN,
    confirmations: 1,
    updatedAt: T0 + 2 * MIN,
    consecutiveFailures: 2,
    consecutiveSuccesses: 0,
    holdUntil: T0 + 12 * MIN,
    recent: [first, doubt, pull],
    lastObservation: pull,
    decidedBy: pull,
    expiresAt: T0 + 32 * MIN,
  })
  // Another failed probe confirms it without touching the hold.
  const again = obs(T0 + 3 * MIN, 'fail', 'probe', 'no answer')
  tbl.observe('f.example', again)
  t.strictSame(tbl.get('f.example'), {
    registry: 'f.example',
    state: 'unreachable',
    since: T0 + 2 * MIN,
    confirmations: 2,
    updatedAt: T0 + 3 * MIN,
    consecutiveFailures: 3,
    consecutiveSuccesses: 0,
    holdUntil: T0 + 12 * MIN,
    recent: [first, doubt, pull, again],
    lastObservation: again,
    decidedBy: again,
    expiresAt: T0 + 33 * MIN,
  })
  // A slow pull: slow, the hold and the failure streak gone.
  const slow = obs(T0 + 4 * MIN, 'slow', 'event', 'took 5 min')
  tbl.observe('f.example', slow)
  t.strictSame(tbl.get('f.example'), {
    registry: 'f.example',
    state: 'slow',
    since: T0 + 4 * MIN,
    confirmations: 1,
    updatedAt: T0 + 4 * MIN,
    consecutiveFailures: 0,
    consecutiveSuccesses: 0,
    holdUntil: undefined,
    recent: [first, doubt, pull, again, slow],
    lastObservation: slow,
    decidedBy: slow,
    expiresAt: T0 + 34 * MIN,
  })
  // A probe answering while slow: counted, nothing decided or renewed.
  const probe = obs(T0 + 5 * MIN, 'ok', 'probe', 'HTTP 401')
  t.equal(tbl.observe('f.example', probe), undefined)
  t.strictSame(tbl.get('f.example'), {
    registry: 'f.example',
    state: 'slow',
    since: T0 + 4 * MIN,
    confirmations: 1,
    updatedAt: T0 + 4 * MIN,
    consecutiveFailures: 0,
    consecutiveSuccesses: 1,
    holdUntil: undefined,
    recent: [doubt, pull, again, slow, probe],
    lastObservation: probe,
    decidedBy: slow,
    expiresAt: T0 + 34 * MIN,
  })
})

t.test('observe returns the transition with its observation; the listener hears the same', async (t) => {
  const { tbl, transitions } = table()
  const o1 = obs(T0, 'fail', 'pod', 'i/o timeout')
  t.strictSame(tbl.observe('q.example', o1), { registry: 'q.example', from: 'unknown', to: 'unreachable', observation: o1 })
  t.equal(tbl.observe('q.example', obs(T0 + 1, 'fail', 'pod', 'i/o timeout')), undefined, 'a confirmation is no transition')
  const o2 = obs(T0 + 2, 'slow', 'event', 'took 5 min')
  t.strictSame(tbl.observe('q.example', o2), { registry: 'q.example', from: 'unreachable', to: 'slow', observation: o2 })
  const o3 = obs(T0 + 3, 'ok', 'event', 'took 2 s')
  t.strictSame(tbl.observe('q.example', o3), { registry: 'q.example', from: 'slow', to: 'reachable', observation: o3 })
  t.strictSame(transitions, [
    { registry: 'q.example', from: 'unknown', to: 'unreachable', observation: o1 },
    { registry: 'q.example', from: 'unreachable', to: 'slow', observation: o2 },
    { registry: 'q.example', from: 'slow', to: 'reachable', observation: o3 },
  ])
})

t.test('a table without a transition listener works the same', async (t) => {
  const tbl = new StateTable(params)
  tbl.observe('n.example', obs(T0, 'ok'))
  tbl.observe('n.example', obs(T0 + 1, 'slow', 'event'))
  t.strictSame(tbl.expire(T0 + 31 * MIN), [{ registry: 'n.example', from: 'slow', to: 'unknown' }])
  t.equal(tbl.merge([record('n.example', { state: 'unreachable', updatedAt: T0 + 40 * MIN })], [], T0 + 40 * MIN), true)
  t.equal(tbl.status('n.example', T0 + 40 * MIN).state, 'unreachable')
})

t.test('a lapsed record is reset: no streaks, no hold, unknown since its expiry, updated when the lapse was noticed', async (t) => {
  const { tbl, transitions } = table()
  tbl.observe('l.example', obs(T0, 'fail', 'pod', 'i/o timeout'))
  tbl.observe('l.example', obs(T0 + MIN, 'fail', 'probe', 'no answer'))
  t.strictSame(tbl.expire(T0 + 31 * MIN - 1), [], 'a millisecond before its expiry')
  t.strictSame(tbl.expire(T0 + 32 * MIN), [{ registry: 'l.example', from: 'unreachable', to: 'unknown' }])
  const o1 = obs(T0, 'fail', 'pod', 'i/o timeout')
  const o2 = obs(T0 + MIN, 'fail', 'probe', 'no answer')
  t.strictSame(tbl.get('l.example'), {
    registry: 'l.example',
    state: 'unknown',
    since: T0 + 31 * MIN,
    expiresAt: undefined,
    confirmations: 0,
    updatedAt: T0 + 32 * MIN,
    consecutiveFailures: 0,
    consecutiveSuccesses: 0,
    holdUntil: undefined,
    recent: [o1, o2],
    lastObservation: o2,
    decidedBy: o2,
  })
  t.strictSame(transitions.at(-1), { registry: 'l.example', from: 'unreachable', to: 'unknown' })
  // Lapsing on the next observation: a probe success after the lapse decides from unknown.
  const { tbl: other, transitions: heard } = table()
  other.observe('l.example', obs(T0, 'fail', 'probe'))
  const ok = obs(T0 + 30 * MIN, 'ok', 'probe')
  t.strictSame(other.observe('l.example', ok), { registry: 'l.example', from: 'unknown', to: 'reachable', observation: ok })
  t.strictSame(heard, [
    { registry: 'l.example', from: 'unknown', to: 'unreachable', observation: obs(T0, 'fail', 'probe') },
    { registry: 'l.example', from: 'unreachable', to: 'unknown' },
    { registry: 'l.example', from: 'unknown', to: 'reachable', observation: ok },
  ])
  t.equal(other.get('l.example')!.since, T0 + 30 * MIN)
})

t.test('expire leaves unknown records and records without an expiry alone', async (t) => {
  const { tbl, transitions } = table()
  tbl.merge(
    [
      record('u.example', { state: 'unknown', expiresAt: T0 }),
      record('none.example', { state: 'unreachable', expiresAt: undefined }),
      record('due.example', { state: 'slow', expiresAt: T0 }),
    ],
    [],
    T0,
  )
  t.strictSame(tbl.expire(T0 + 1), [{ registry: 'due.example', from: 'slow', to: 'unknown' }])
  t.strictSame(transitions, [{ registry: 'due.example', from: 'slow', to: 'unknown' }])
  t.equal(tbl.get('u.example')!.expiresAt, T0)
  t.equal(tbl.get('none.example')!.state, 'unreachable')
})

t.test('refusals are dropped by expire at exactly their expiry', async (t) => {
  const { tbl } = table()
  tbl.refuse('m.example/a', 'HTTP 403', T0)
  tbl.refuse('m.example/b', 'HTTP 403', T0 + 1)
  tbl.expire(T0 + 60 * MIN)
  t.strictSame(
    tbl.refusalEntries().map((r) => r.repository),
    ['m.example/b'],
  )
})

t.test('the hold of a failed pull ends at exactly holdUntil; later pull failures extend it, earlier ones do not shorten it', async (t) => {
  const { tbl } = table()
  tbl.observe('h.example', obs(T0 + 5 * MIN, 'fail', 'pod', 'i/o timeout'))
  t.equal(tbl.get('h.example')!.holdUntil, T0 + 15 * MIN)
  tbl.observe('h.example', obs(T0, 'fail', 'event', 'i/o timeout (reported late)'))
  t.equal(tbl.get('h.example')!.holdUntil, T0 + 15 * MIN, 'an older report does not shorten the hold')
  tbl.observe('h.example', obs(T0 + 6 * MIN, 'fail', 'pod', 'i/o timeout'))
  t.equal(tbl.get('h.example')!.holdUntil, T0 + 16 * MIN)
  t.equal(tbl.observe('h.example', obs(T0 + 16 * MIN - 1, 'ok', 'probe')), undefined, 'held')
  t.equal(tbl.get('h.example')!.consecutiveSuccesses, 1)
  t.strictSame(
    tbl.observe('h.example', obs(T0 + 16 * MIN, 'ok', 'probe', 'HTTP 401')),
    { registry: 'h.example', from: 'unreachable', to: 'reachable', observation: obs(T0 + 16 * MIN, 'ok', 'probe', 'HTTP 401') },
    'the hold is over at holdUntil, and the second good probe in a row decides',
  )
  t.equal(tbl.get('h.example')!.holdUntil, undefined)
})

t.test('a good pull ends unreachable during a hold and clears the hold', async (t) => {
  const { tbl } = table()
  tbl.observe('g.example', obs(T0, 'fail', 'pod', 'i/o timeout'))
  const pulled = obs(T0 + MIN, 'ok', 'event', 'pull took 2 s')
  t.strictSame(tbl.observe('g.example', pulled), { registry: 'g.example', from: 'unreachable', to: 'reachable', observation: pulled })
  t.equal(tbl.get('g.example')!.holdUntil, undefined)
  // With the hold gone, a failed probe is only doubt again.
  t.equal(tbl.observe('g.example', obs(T0 + 2 * MIN, 'fail', 'probe')), undefined)
})

t.test('a single good probe after a failed one, with no hold, does not yet end unreachable', async (t) => {
  const { tbl } = table()
  tbl.observe('k.example', obs(T0, 'fail', 'probe'))
  t.equal(tbl.get('k.example')!.holdUntil, undefined, 'probes set no hold')
  t.equal(tbl.observe('k.example', obs(T0 + 1, 'ok', 'probe')), undefined)
  t.equal(tbl.status('k.example', T0 + 1).state, 'unreachable')
})

t.test('the refusal cap: 2000, the least recently refused goes, a repeat of a known one evicts nothing', async (t) => {
  const { tbl } = table()
  const repo = (i: number) => `m.example/docker.io/org/image-${i}`
  // image-0 and image-1 share the oldest time: the first of them listed goes first.
  tbl.refuse(repo(0), 'HTTP 403', T0)
  t.equal(tbl.refusalEntries().length, 1)
  tbl.refuse(repo(1), 'HTTP 403', T0)
  t.equal(tbl.refusalEntries().length, 2, 'below the cap nothing is evicted')
  for (let i = 2; i < 2000; i++) tbl.refuse(repo(i), 'HTTP 403', T0 + i)
  t.equal(tbl.refusalEntries().length, 2000)
  t.equal(tbl.refuse(repo(1999), 'HTTP 403 again', T0 + 3000), false)
  t.equal(tbl.refusalEntries().length, 2000, 'a repeat at the cap evicts nothing')
  t.equal(tbl.refusal(repo(0), T0 + 3000), 'HTTP 403, since 2026-03-01T10:00:00Z')
  t.equal(tbl.refuse(repo(2000), 'HTTP 403', T0 + 3001), true)
  t.equal(tbl.refusalEntries().length, 2000)
  t.equal(tbl.refusal(repo(0), T0 + 3001), undefined, 'the oldest (first of two at the same time) went')
  t.equal(tbl.refusal(repo(1), T0 + 3001), 'HTTP 403, since 2026-03-01T10:00:00Z')
  t.equal(tbl.refusal(repo(2000), T0 + 3001), 'HTTP 403, since 2026-03-01T10:00:03Z')
  t.equal(tbl.refuse(repo(2001), 'HTTP 403', T0 + 3002), true)
  t.equal(tbl.refusal(repo(1), T0 + 3002), undefined, 'then the next oldest')
  t.equal(tbl.refusal(repo(2), T0 + 3002), 'HTTP 403, since 2026-03-01T10:00:00Z')
  // image-2, now listed first, refused again: image-3 is the least recently refused.
  t.equal(tbl.refuse(repo(2), 'HTTP 403 again', T0 + 3003), false)
  t.equal(tbl.refuse(repo(2002), 'HTTP 403', T0 + 3004), true)
  t.equal(tbl.refusal(repo(3), T0 + 3004), undefined, 'not the first listed, the least recently refused')
  t.equal(tbl.refusal(repo(2), T0 + 3004), 'HTTP 403 again, 2x, since 2026-03-01T10:00:00Z')
})

t.test('the registry cap: lapsed records go first, the first listed among equals; else the least recently updated', async (t) => {
  const { tbl } = table()
  // r0..r9 decided at T0 (lapse at T0 + 30 min), the rest later.
  for (let i = 0; i < 10; i++) tbl.observe(`r${i}.example`, obs(T0, 'fail', 'pod', 'i/o timeout'))
  for (let i = 10; i < 500; i++) tbl.observe(`r${i}.example`, obs(T0 + 20 * MIN + i, 'fail', 'pod', 'i/o timeout'))
  tbl.observe('new.example', obs(T0 + 35 * MIN, 'fail', 'pod', 'i/o timeout'))
  t.equal(tbl.entries().length, 500)
  t.equal(tbl.get('r0.example'), undefined, 'the first lapsed one went')
  t.equal(tbl.get('r1.example')?.state, 'unknown', 'the other lapsed ones stay, lapsed')
  t.equal(tbl.get('r9.example')?.state, 'unknown')
  t.equal(tbl.get('r10.example')?.state, 'unreachable', 'not the least recently updated one that still holds a state')
  tbl.observe('new2.example', obs(T0 + 35 * MIN, 'fail', 'pod', 'i/o timeout'))
  t.equal(tbl.get('r1.example'), undefined)
  t.equal(tbl.get('r2.example')?.state, 'unknown')

  // Among lapsed records, the one whose lapse was noticed first, wherever it is listed.
  const { tbl: lapsed } = table()
  lapsed.observe('a.example', obs(T0 + 10 * MIN, 'ok')) // expires T0 + 40 min
  lapsed.observe('b.example', obs(T0, 'ok')) // expires T0 + 30 min
  for (let i = 2; i < 500; i++) lapsed.observe(`r${i}.example`, obs(T0 + 20 * MIN + i, 'ok'))
  lapsed.expire(T0 + 35 * MIN) // b lapses: updated at T0 + 35 min
  lapsed.expire(T0 + 45 * MIN) // a lapses: updated at T0 + 45 min
  t.equal(lapsed.get('b.example')?.updatedAt, T0 + 35 * MIN)
  t.equal(lapsed.get('a.example')?.updatedAt, T0 + 45 * MIN)
  lapsed.observe('c.example', obs(T0 + 45 * MIN, 'ok'))
  t.equal(lapsed.get('b.example'), undefined)
  t.equal(lapsed.get('a.example')?.state, 'unknown')

  // Without lapsed records, the least recently updated; among equals the first listed.
  const { tbl: full } = table()
  full.observe('a0.example', obs(T0, 'ok'))
  full.observe('a1.example', obs(T0, 'ok'))
  for (let i = 2; i < 500; i++) full.observe(`a${i}.example`, obs(T0 + i, 'ok'))
  full.observe('a0.example', obs(T0 + 1000, 'ok'))
  full.observe('b.example', obs(T0 + 1001, 'ok'))
  t.equal(full.entries().length, 500)
  t.equal(full.get('a1.example'), undefined, 'a1: updated at T0, and a0 was confirmed since')
  t.equal(full.get('a0.example')?.state, 'reachable')
  t.equal(full.get('a2.example')?.state, 'reachable')
  full.observe('c.example', obs(T0 + 1002, 'ok'))
  t.equal(full.get('a2.example'), undefined)
  t.equal(full.get('a3.example')?.state, 'reachable')

  // Two at the same oldest time, neither lapsed: the first listed goes.
  const { tbl: tie } = table()
  for (let i = 0; i < 500; i++) tie.observe(`t${i}.example`, obs(i < 2 ? T0 : T0 + i, 'ok'))
  tie.observe('x.example', obs(T0 + 600, 'ok'))
  t.equal(tie.get('t0.example'), undefined)
  t.equal(tie.get('t1.example')?.state, 'reachable')
})

t.test('a merge adds a record never seen here up to 500 registries', async (t) => {
  const { tbl } = table()
  for (let i = 0; i < 499; i++) tbl.observe(`r${i}.example`, obs(T0 + i, 'ok'))
  t.equal(tbl.merge([record('a.example', { updatedAt: T0 + 600 }), record('b.example', { updatedAt: T0 + 600 })], [], T0 + 600), true)
  t.equal(tbl.entries().length, 500)
  t.equal(tbl.get('a.example')?.state, 'reachable', 'the 500th is added')
  t.equal(tbl.get('b.example'), undefined, 'the 501st is not')
})

t.test('merge: held pull failures, then hold length, then the later update decide; ties keep the local record', async (t) => {
  const now = T0 + 5 * MIN
  type Case = [name: string, local: Partial<RegistryRecord>, remote: Partial<RegistryRecord>, remoteWins: boolean]
  const cases: Case[] = [
    [
      'remote held, local later but not held: remote',
      { state: 'reachable', updatedAt: T0 + 4 * MIN },
      { state: 'unreachable', holdUntil: T0 + 10 * MIN, updatedAt: T0 },
      true,
    ],
    [
      'local held, remote later but not held: local',
      { state: 'unreachable', holdUntil: T0 + 10 * MIN, updatedAt: T0 },
      { state: 'reachable', updatedAt: T0 + 4 * MIN },
      false,
    ],
    [
      'both held: the longer hold, although updated earlier',
      { state: 'unreachable', holdUntil: T0 + 10 * MIN, updatedAt: T0 + 4 * MIN },
      { state: 'unreachable', holdUntil: T0 + 11 * MIN, updatedAt: T0 },
      true,
    ],
    [
      'both held: a shorter hold loses, although updated later',
      { state: 'unreachable', holdUntil: T0 + 11 * MIN, updatedAt: T0 },
      { state: 'unreachable', holdUntil: T0 + 10 * MIN, updatedAt: T0 + 4 * MIN },
      false,
    ],
    [
      'both held as long: local',
      { state: 'unreachable', holdUntil: T0 + 10 * MIN, updatedAt: T0 },
      { state: 'unreachable', holdUntil: T0 + 10 * MIN, updatedAt: T0 + 4 * MIN },
      false,
    ],
    [
      'a hold ending now is over: the later update wins',
      { state: 'unreachable', holdUntil: now, updatedAt: T0 + 4 * MIN },
      { state: 'reachable', updatedAt: T0 + 4 * MIN + 1 },
      true,
    ],
    [
      'a remote hold ending now is over: the later local update stays',
      { state: 'reachable', updatedAt: T0 + 4 * MIN },
      { state: 'unreachable', holdUntil: now, updatedAt: T0 },
      false,
    ],
    [
      'a hold on a record that is not unreachable holds nothing',
      { state: 'reachable', updatedAt: T0 + 4 * MIN },
      { state: 'slow', holdUntil: T0 + 10 * MIN, updatedAt: T0 },
      false,
    ],
    [
      'unreachable without a hold holds nothing',
      { state: 'reachable', updatedAt: T0 + 4 * MIN },
      { state: 'unreachable', updatedAt: T0 },
      false,
    ],
    ['neither held: the later update', { state: 'reachable', updatedAt: T0 }, { state: 'slow', updatedAt: T0 + 1 }, true],
    ['neither held: an earlier update loses', { state: 'reachable', updatedAt: T0 + 1 }, { state: 'slow', updatedAt: T0 }, false],
    ['neither held: the same time keeps local', { state: 'reachable', updatedAt: T0 }, { state: 'slow', updatedAt: T0 }, false],
  ]
  for (const [name, local, remote, remoteWins] of cases) {
    const { tbl } = table()
    tbl.merge([record('m.example', local)], [], T0)
    const version = tbl.version
    const incoming = record('m.example', remote)
    t.equal(tbl.merge([incoming], [], now), remoteWins, name)
    t.strictSame(tbl.get('m.example'), remoteWins ? incoming : record('m.example', local), `${name}: the record`)
    t.equal(tbl.version, remoteWins ? version + 1 : version, `${name}: version`)
  }
})

t.test('a merge that changes the state tells the listener; one that keeps it does not', async (t) => {
  const { tbl, transitions } = table()
  tbl.merge([record('a.example', { state: 'reachable', updatedAt: T0 })], [], T0)
  t.strictSame(transitions, [], 'a record new here is no transition')
  tbl.merge([record('a.example', { state: 'reachable', updatedAt: T0 + 1, confirmations: 2 })], [], T0 + 1)
  t.equal(tbl.get('a.example')?.confirmations, 2, 'taken')
  t.strictSame(transitions, [], 'same state')
  tbl.merge([record('a.example', { state: 'unreachable', updatedAt: T0 + 2 })], [], T0 + 2)
  t.strictSame(transitions, [{ registry: 'a.example', from: 'reachable', to: 'unreachable' }])
})

t.test('a merged record is a copy: changing what was merged changes nothing here', async (t) => {
  const { tbl } = table()
  const incoming = record('c.example', { recent: [obs(T0, 'ok')] })
  tbl.merge([incoming], [], T0)
  incoming.state = 'unreachable'
  incoming.recent.push(obs(T0 + 1, 'fail'))
  t.equal(tbl.get('c.example')?.state, 'reachable')
  t.equal(tbl.get('c.example')?.recent.length, 1)
})

t.test('merging refusals: expired at now is skipped; a newer one keeps the higher count of the two', async (t) => {
  const repo = 'm.example/docker.io/a/b'
  const refusal = (fields: Partial<Refusal>): Refusal => ({
    repository: repo,
    detail: 'HTTP 403',
    firstAt: T0,
    at: T0,
    count: 1,
    expiresAt: T0 + 60 * MIN,
    ...fields,
  })
  const { tbl } = table()
  t.equal(tbl.merge([], [refusal({ expiresAt: T0 + MIN })], T0 + MIN), false, 'expiring at now')
  t.strictSame(tbl.refusalEntries(), [])
  t.equal(tbl.merge([], [refusal({ expiresAt: T0 + MIN + 1 })], T0 + MIN), true, 'a millisecond left')
  t.strictSame(tbl.refusalEntries(), [refusal({ expiresAt: T0 + MIN + 1 })])

  const { tbl: here } = table()
  here.refuse(repo, 'HTTP 403 here', T0)
  here.refuse(repo, 'HTTP 403 here', T0 + 1)
  here.refuse(repo, 'HTTP 403 here', T0 + 2)
  t.equal(here.merge([], [refusal({ detail: 'HTTP 403 there', at: T0 + 3, count: 1 })], T0 + 3), true)
  t.strictSame(
    here.refusalEntries(),
    [refusal({ detail: 'HTTP 403 there', at: T0 + 3, count: 3 })],
    'the newer refusal, with the count seen here',
  )
  t.equal(here.merge([], [refusal({ detail: 'HTTP 403 later', at: T0 + 4, count: 5 })], T0 + 4), true)
  t.strictSame(here.refusalEntries(), [refusal({ detail: 'HTTP 403 later', at: T0 + 4, count: 5 })], 'or the count seen there')
})
