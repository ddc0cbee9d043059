// The registry state machine: transitions, thresholds, the pull-evidence hold,
// expiry, refusals, merging replicas' copies, and the probe schedule it drives.
import t from 'tap'
import { jittered, nextDelayMs, type ProbeSchedule } from '../../server/reachability/prober.js'
import { forStorage, recordFromJson, recordToJson, tableToSnapshot } from '../../server/reachability/snapshot.js'
import {
  type Observation,
  type ObservationOutcome,
  type ObservationSource,
  StateTable,
  type Transition,
} from '../../server/reachability/state.js'

const MIN = 60_000
const T0 = Date.parse('2026-03-01T10:00:00Z')
const params = { ttlMs: 30 * MIN, refusalTtlMs: 60 * MIN, failureThreshold: 2, successThreshold: 2, holdMs: 10 * MIN }

function obs(at: number, outcome: ObservationOutcome, source: ObservationSource = 'probe', detail = `${source} ${outcome}`): Observation {
  return { at, source, outcome, detail }
}

function table() {
  const transitions: Transition[] = []
  const tbl = new StateTable(params, { onTransition: (tr) => transitions.push(tr) })
  return { tbl, transitions }
}

t.test('a registry nothing is known about is unknown', async (t) => {
  const { tbl } = table()
  t.strictSame(tbl.status('quay.io', T0), { state: 'unknown', evidence: 'no evidence yet' })
})

t.test('the first probe decides an unknown registry either way', async (t) => {
  const { tbl } = table()
  t.strictSame(tbl.observe('a.example', obs(T0, 'ok', 'probe', 'HTTP 401 in 20 ms')), {
    registry: 'a.example',
    from: 'unknown',
    to: 'reachable',
    observation: { at: T0, source: 'probe', outcome: 'ok', detail: 'HTTP 401 in 20 ms' },
  })
  t.strictSame(tbl.status('a.example', T0 + 1), { state: 'reachable', evidence: 'probe: HTTP 401 in 20 ms, since 2026-03-01T10:00:00Z' })
  t.strictSame(tbl.observe('b.example', obs(T0, 'fail', 'probe', 'connection refused')), {
    registry: 'b.example',
    from: 'unknown',
    to: 'unreachable',
    observation: { at: T0, source: 'probe', outcome: 'fail', detail: 'connection refused' },
  })
  t.strictSame(tbl.status('b.example', T0 + 1), { state: 'unreachable', evidence: 'probe: connection refused, since 2026-03-01T10:00:00Z' })
})

t.test('a reachable registry needs failureThreshold failed probes in a row to turn unreachable', async (t) => {
  const { tbl } = table()
  tbl.observe('r.example', obs(T0, 'ok'))
  t.equal(tbl.observe('r.example', obs(T0 + 1000, 'fail')), undefined, 'one failure is doubt, not a verdict')
  t.equal(tbl.status('r.example', T0 + 1000).state, 'reachable')
  t.equal(tbl.observe('r.example', obs(T0 + 2000, 'ok')), undefined, 'a success resets the streak')
  tbl.observe('r.example', obs(T0 + 3000, 'fail'))
  t.strictSame(tbl.observe('r.example', obs(T0 + 4000, 'fail', 'probe', 'no answer within 5 s')), {
    registry: 'r.example',
    from: 'reachable',
    to: 'unreachable',
    observation: { at: T0 + 4000, source: 'probe', outcome: 'fail', detail: 'no answer within 5 s' },
  })
  t.strictSame(tbl.status('r.example', T0 + 4000), {
    state: 'unreachable',
    evidence: 'probe: no answer within 5 s, since 2026-03-01T10:00:04Z',
  })
})

t.test('an unreachable registry needs successThreshold good probes to be used directly again', async (t) => {
  const { tbl } = table()
  tbl.observe('r.example', obs(T0, 'fail'))
  tbl.observe('r.example', obs(T0 + 1000, 'fail'))
  t.strictSame(tbl.status('r.example', T0 + 1000), { state: 'unreachable', evidence: 'probe: probe fail, 2x, since 2026-03-01T10:00:00Z' })
  t.equal(tbl.observe('r.example', obs(T0 + 2000, 'ok')), undefined, 'recovering: still unreachable')
  t.equal(tbl.get('r.example')?.consecutiveSuccesses, 1)
  t.strictSame(tbl.observe('r.example', obs(T0 + 3000, 'ok')), {
    registry: 'r.example',
    from: 'unreachable',
    to: 'reachable',
    observation: { at: T0 + 3000, source: 'probe', outcome: 'ok', detail: 'probe ok' },
  })
})

t.test('a failed pull in the cluster marks unreachable at once and outweighs probes while held', async (t) => {
  const { tbl } = table()
  tbl.observe('quay.io', obs(T0, 'ok'))
  const tr = tbl.observe('quay.io', obs(T0 + 1000, 'fail', 'pod', 'i/o timeout pulling quay.io/a/b:1 (pod shop/web)'))
  t.strictSame(
    tr,
    {
      registry: 'quay.io',
      from: 'reachable',
      to: 'unreachable',
      observation: { at: T0 + 1000, source: 'pod', outcome: 'fail', detail: 'i/o timeout pulling quay.io/a/b:1 (pod shop/web)' },
    },
    'one pull failure is enough: it is what nodes see',
  )
  t.equal(
    tbl.status('quay.io', T0 + 2000).evidence,
    'pod status: i/o timeout pulling quay.io/a/b:1 (pod shop/web), since 2026-03-01T10:00:01Z',
  )
  for (let i = 1; i <= 5; i++) tbl.observe('quay.io', obs(T0 + 1000 + i * MIN, 'ok'))
  t.equal(tbl.status('quay.io', T0 + 6 * MIN).state, 'unreachable', 'probes do not clear it during the hold')
  tbl.observe('quay.io', obs(T0 + 12 * MIN, 'ok'))
  t.equal(tbl.status('quay.io', T0 + 12 * MIN).state, 'reachable', 'after the hold the probe streak counts')
})

t.test('a successful pull is proof: it ends unreachable and slow at once', async (t) => {
  const { tbl } = table()
  tbl.observe('gcr.io', obs(T0, 'fail', 'pod'))
  t.strictSame(tbl.observe('gcr.io', obs(T0 + 1000, 'ok', 'event', 'pull took 2 s')), {
    registry: 'gcr.io',
    from: 'unreachable',
    to: 'reachable',
    observation: { at: T0 + 1000, source: 'event', outcome: 'ok', detail: 'pull took 2 s' },
  })
  tbl.observe('gcr.io', obs(T0 + 2000, 'slow', 'event', 'pull took 4 min'))
  t.equal(tbl.status('gcr.io', T0 + 2000).state, 'slow')
  t.equal(tbl.observe('gcr.io', obs(T0 + 3000, 'ok', 'probe')), undefined, 'a probe answering says nothing about pull speed')
  t.equal(tbl.status('gcr.io', T0 + 3000).state, 'slow')
  t.strictSame(tbl.observe('gcr.io', obs(T0 + 4000, 'ok', 'event')), {
    registry: 'gcr.io',
    from: 'slow',
    to: 'reachable',
    observation: { at: T0 + 4000, source: 'event', outcome: 'ok', detail: 'event ok' },
  })
})

t.test('a slow pull turns any state slow, and slow pulls confirm it', async (t) => {
  const { tbl } = table()
  for (const start of ['reachable', 'unreachable'] as const) {
    const name = `${start}.example`
    tbl.observe(name, obs(T0, start === 'reachable' ? 'ok' : 'fail', 'pod'))
    t.strictSame(tbl.observe(name, obs(T0 + 1000, 'slow', 'event')), {
      registry: name,
      from: start,
      to: 'slow',
      observation: { at: T0 + 1000, source: 'event', outcome: 'slow', detail: 'event slow' },
    })
    tbl.observe(name, obs(T0 + 2000, 'slow', 'event'))
    t.equal(tbl.status(name, T0 + 2000).evidence, 'pull event: event slow, 2x, since 2026-03-01T10:00:01Z')
  }
})

t.test('states lapse to unknown when nothing renews them', async (t) => {
  const { tbl, transitions } = table()
  tbl.observe('x.example', obs(T0, 'fail', 'pod', 'connection refused pulling x.example/a (pod ns/p)'))
  t.equal(tbl.status('x.example', T0 + 30 * MIN - 1).state, 'unreachable')
  const lapsed = tbl.status('x.example', T0 + 30 * MIN)
  t.equal(lapsed.state, 'unknown', 'read as unknown at expiry, before any timer ran')
  t.equal(
    lapsed.evidence,
    'unreachable evidence expired at 2026-03-01T10:30:00Z; last: pod status: connection refused pulling x.example/a (pod ns/p), since 2026-03-01T10:00:00Z',
  )
  const out = tbl.expire(T0 + 31 * MIN)
  t.strictSame(out, [{ registry: 'x.example', from: 'unreachable', to: 'unknown' }])
  t.strictSame(transitions.at(-1), { registry: 'x.example', from: 'unreachable', to: 'unknown' })
  t.strictSame(tbl.expire(T0 + 32 * MIN), [], 'only once')
  t.strictSame(
    tbl.observe('x.example', obs(T0 + 40 * MIN, 'ok')),
    {
      registry: 'x.example',
      from: 'unknown',
      to: 'reachable',
      observation: { at: T0 + 40 * MIN, source: 'probe', outcome: 'ok', detail: 'probe ok' },
    },
    'starts over from unknown',
  )
})

t.test('confirmations renew the expiry', async (t) => {
  const { tbl } = table()
  tbl.observe('y.example', obs(T0, 'ok'))
  tbl.observe('y.example', obs(T0 + 20 * MIN, 'ok'))
  t.equal(tbl.status('y.example', T0 + 45 * MIN).state, 'reachable')
  t.equal(tbl.get('y.example')?.confirmations, 2)
  t.equal(tbl.status('y.example', T0 + 50 * MIN).state, 'unknown')
})

t.test('mirror refusals are per repository, counted and forgotten after their TTL', async (t) => {
  const { tbl } = table()
  const repo = 'm.daocloud.io/docker.io/acme/app'
  t.equal(tbl.refusal(repo, T0), undefined)
  t.equal(tbl.refuse(repo, 'not in the mirror allowlist (pod ns/p)', T0), true, 'new')
  t.equal(tbl.refuse(repo, 'not in the mirror allowlist (pod ns/q)', T0 + MIN), false, 'known')
  t.equal(tbl.refusal(repo, T0 + MIN), 'not in the mirror allowlist (pod ns/q), 2x, since 2026-03-01T10:00:00Z')
  t.equal(tbl.refusal('m.daocloud.io/docker.io/acme/other', T0 + MIN), undefined, 'other images of the registry are unaffected')
  t.equal(tbl.refusal(repo, T0 + 61 * MIN), undefined)
  tbl.expire(T0 + 61 * MIN)
  t.equal(tbl.refusalEntries().length, 0)
})

t.test('merging another replica: the later decision wins, a held pull failure wins over probes', async (t) => {
  const a = table().tbl
  const b = table().tbl
  a.observe('docker.io', obs(T0, 'ok'))
  b.observe('docker.io', obs(T0 + 1000, 'fail', 'pod', 'i/o timeout'))
  a.observe('docker.io', obs(T0 + 2000, 'ok'))
  // Through JSON, as the ConfigMap carries it.
  const fromB = tableToSnapshot(b, T0 + 3000).registries.map(recordFromJson)
  t.equal(a.merge(fromB, [], T0 + 3000), true, 'changed')
  t.equal(a.status('docker.io', T0 + 3000).state, 'unreachable', 'held failure beats a later probe success')
  const fromA = tableToSnapshot(a, T0 + 3000).registries.map(recordFromJson)
  t.equal(b.merge(fromA, [], T0 + 3000), false, 'nothing new for b')

  const c = table().tbl
  const d = table().tbl
  c.observe('ghcr.io', obs(T0, 'ok'))
  d.observe('ghcr.io', obs(T0 + 5000, 'fail'))
  t.equal(c.merge(d.entries(), [], T0 + 6000), true)
  t.equal(c.status('ghcr.io', T0 + 6000).state, 'unreachable', 'newer wins')
  t.equal(d.merge(table().tbl.entries(), [], T0 + 6000), false)

  const e = table().tbl
  e.refuse('m.example/docker.io/a/b', 'HTTP 403', T0)
  const f = table().tbl
  t.equal(f.merge([], e.refusalEntries(), T0 + 1), true)
  t.equal(f.refusal('m.example/docker.io/a/b', T0 + 2), 'HTTP 403, since 2026-03-01T10:00:00Z')
})

t.test('records survive the JSON round trip', async (t) => {
  const { tbl } = table()
  tbl.observe('quay.io', obs(T0, 'fail', 'pod', 'no such host'))
  const record = tbl.get('quay.io')!
  t.strictSame(recordFromJson(recordToJson(record)), record)
})

t.test('the table stays bounded when passive learning names many registries', async (t) => {
  const { tbl } = table()
  for (let i = 0; i < 600; i++) tbl.observe(`r${i}.example`, obs(T0 + i, 'fail', 'pod'))
  t.equal(tbl.entries().length, 500)
  t.equal(tbl.get('r0.example'), undefined, 'the least recently updated went first')
  const last = { at: T0 + 599, source: 'pod', outcome: 'fail', detail: 'pod fail' }
  t.strictSame(tbl.get('r599.example'), {
    registry: 'r599.example',
    state: 'unreachable',
    since: T0 + 599,
    confirmations: 1,
    updatedAt: T0 + 599,
    consecutiveFailures: 1,
    consecutiveSuccesses: 0,
    recent: [last],
    lastObservation: last,
    holdUntil: T0 + 599 + 10 * MIN,
    decidedBy: last,
    expiresAt: T0 + 599 + 30 * MIN,
  })
})

const schedule: ProbeSchedule = { intervalMs: 60_000, recheckMs: 5000, maxBackoffMs: 600_000, jitter: 0.2, concurrency: 4 }

t.test('probe schedule: interval, quick re-checks while in doubt, backoff while down', async (t) => {
  const { tbl } = table()
  t.equal(nextDelayMs(undefined, schedule), 60_000, 'never probed')
  tbl.observe('r.example', obs(T0, 'ok'))
  t.equal(nextDelayMs(tbl.get('r.example'), schedule), 60_000, 'reachable: normal interval')
  tbl.observe('r.example', obs(T0 + 1, 'fail'))
  t.equal(nextDelayMs(tbl.get('r.example'), schedule), 5000, 'first failure: re-check quickly')
  const delays: number[] = []
  for (let i = 2; i < 10; i++) {
    tbl.observe('r.example', obs(T0 + i, 'fail'))
    delays.push(nextDelayMs(tbl.get('r.example'), schedule))
  }
  t.strictSame(delays, [60_000, 120_000, 240_000, 480_000, 600_000, 600_000, 600_000, 600_000], 'doubling up to maxBackoff')
  tbl.observe('r.example', obs(T0 + 20, 'ok'))
  t.equal(nextDelayMs(tbl.get('r.example'), schedule), 5000, 'recovering: confirm quickly')
  tbl.observe('r.example', obs(T0 + 21, 'ok'))
  t.equal(tbl.get('r.example')?.state, 'reachable')
  t.equal(nextDelayMs(tbl.get('r.example'), schedule), 60_000)
})

t.test('jitter stays within its fraction', async (t) => {
  t.equal(
    jittered(1000, 0.2, () => 0),
    800,
  )
  t.equal(
    jittered(1000, 0.2, () => 1),
    1200,
  )
  t.equal(
    jittered(1000, 0.2, () => 0.5),
    1000,
  )
  t.equal(jittered(1000, 0, Math.random), 1000)
})

t.test('the ConfigMap copy drops history, then the oldest refusals, then the oldest registries, to fit', async (t) => {
  const { tbl } = table()
  for (let i = 0; i < 50; i++) {
    tbl.observe(`r${i}.example`, obs(T0 + i * 1000, 'fail', 'pod', `i/o timeout #${i}`))
    tbl.refuse(`m.example/docker.io/org/image-${i}`, 'not in the mirror allowlist', T0 + i * 1000)
  }
  tbl.observe('known.example', obs(T0, 'ok'))
  const small = forStorage(tableToSnapshot(tbl, T0 + 10 * MIN), 4000)
  tbl.expire(T0 + 31 * MIN)
  tbl.observe('fresh.example', obs(T0 + 31 * MIN, 'fail'))
  const full = tableToSnapshot(tbl, T0 + 31 * MIN)
  const all = forStorage(full)
  t.strictSame(
    all.registries.map((r) => r.registry),
    ['fresh.example'],
    'lapsed (unknown) records are not shared',
  )
  t.strictSame(all.registries[0]?.recent, [], 'no observation history')
  t.equal(Buffer.byteLength(JSON.stringify(small)), 3546, 'fits in 4000 bytes')
  t.equal(small.refusals.length, 0, 'refusals go first')
  t.strictSame(
    small.registries.map((r) => r.registry),
    ['r49.example', 'r48.example', 'r47.example', 'r46.example', 'r45.example', 'r44.example', 'r43.example', 'r42.example', 'r41.example'],
    'the newest decisions stay',
  )
})

t.test('merging a registry this replica has never seen adds it; a refusal merges only when newer, keeping the higher count', async (t) => {
  const a = table().tbl
  const b = table().tbl
  b.observe('quay.io', obs(T0, 'fail', 'pod', 'i/o timeout'))
  t.equal(a.merge(b.entries(), [], T0 + 1), true, 'changed')
  t.equal(a.status('quay.io', T0 + 1).state, 'unreachable')
  t.strictSame(a.entries(), b.entries(), 'the same record')
  t.equal(a.merge(b.entries(), [], T0 + 2), false, 'merging it again changes nothing')

  const repo = 'm.example/docker.io/a/b'
  const e = table().tbl
  e.refuse(repo, 'HTTP 403 first', T0)
  e.refuse(repo, 'HTTP 403 again', T0 + 1000)
  const f = table().tbl
  f.refuse(repo, 'HTTP 403 here', T0 + 2000)
  t.equal(f.merge([], e.refusalEntries(), T0 + 3000), false, 'an older refusal does not replace a newer one')
  t.equal(f.refusal(repo, T0 + 3000), 'HTTP 403 here, since 2026-03-01T10:00:02Z')
  t.equal(
    f.merge(
      [],
      e.refusalEntries().map((r) => ({ ...r, at: T0 + 2000 })),
      T0 + 3000,
    ),
    false,
    'nor one of the same time',
  )
  t.equal(
    f.merge(
      [],
      e.refusalEntries().map((r) => ({ ...r, at: T0 + 2500 })),
      T0 + 3000,
    ),
    true,
    'a newer one does',
  )
  t.equal(f.refusalEntries()[0]!.count, 2, 'with the higher count')
  const expired = e.refusalEntries().map((r) => ({ ...r, at: T0 + 9000, expiresAt: T0 + 3000 }))
  t.equal(f.merge([], expired, T0 + 3000), false, 'an expired refusal is not merged')
})

t.test(
  'at most 500 registries: unknown ones are evicted first, then the least recently updated; a merge adds none past the cap',
  async (t) => {
    const { tbl } = table()
    for (let i = 0; i < 500; i++) tbl.observe(`r${i}.example`, obs(T0 + i, 'fail', 'pod', 'i/o timeout'))
    t.equal(tbl.entries().length, 500)
    tbl.observe('new.example', obs(T0 + 1000, 'fail', 'pod', 'i/o timeout'))
    t.equal(tbl.entries().length, 500, 'still 500')
    t.equal(tbl.status('r0.example', T0 + 1000).state, 'unknown', 'the least recently updated went')
    t.equal(tbl.status('r1.example', T0 + 1000).state, 'unreachable')
    t.equal(tbl.status('new.example', T0 + 1000).state, 'unreachable')

    const other = table().tbl
    other.observe('elsewhere.example', obs(T0 + 2000, 'fail', 'pod', 'i/o timeout'))
    t.equal(tbl.merge(other.entries(), [], T0 + 2000), false, 'full: a record never seen here is not added')
    t.equal(tbl.status('elsewhere.example', T0 + 2000).state, 'unknown')
  },
)
