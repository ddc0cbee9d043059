// Pull failures reported late (an Event read after a newer one, a Pod status seen late) carry
// an older timestamp than the record they confirm. A record's time never moves backwards:
// the late report must not shorten an unreachable record's expiry, nor make it lose a merge
// to a record decided before its own last update. Times are written out.
import t from 'tap'
import { type Observation, type RegistryRecord, StateTable } from '../../server/reachability/state.js'

const MIN = 60_000
// 2026-03-01T10:00:00.000Z
const T0 = Date.parse('2026-03-01T10:00:00Z')
// ttl 30 min, refusals 60 min, two failed or two good probes in a row, pull failures hold for 10 min.
const params = { ttlMs: 30 * MIN, refusalTtlMs: 60 * MIN, failureThreshold: 2, successThreshold: 2, holdMs: 10 * MIN }

const failedPull: Observation = { at: T0 + 5 * MIN, source: 'pod', outcome: 'fail', detail: 'i/o timeout' }
const lateReport: Observation = { at: T0, source: 'event', outcome: 'fail', detail: 'i/o timeout (reported late)' }

function unreachableThenLate(): StateTable {
  const tbl = new StateTable(params)
  tbl.observe('late.example', failedPull)
  tbl.observe('late.example', lateReport)
  return tbl
}

t.test('a late pull failure confirms an unreachable record without moving its update or expiry back', async (t) => {
  const tbl = unreachableThenLate()
  const r = tbl.get('late.example')!
  t.equal(r.state, 'unreachable')
  t.equal(r.confirmations, 2)
  t.equal(r.since, T0 + 5 * MIN)
  t.equal(r.updatedAt, T0 + 5 * MIN, 'updated at the newer failure, not at the late report')
  t.equal(r.expiresAt, T0 + 35 * MIN, 'expires 30 min after the newer failure')
  t.equal(r.holdUntil, T0 + 15 * MIN)
})

t.test('after a late report the unreachable state still lasts until its expiry', async (t) => {
  const tbl = unreachableThenLate()
  t.equal(tbl.status('late.example', T0 + 35 * MIN - 1).state, 'unreachable', 'one millisecond before expiry')
  t.equal(tbl.status('late.example', T0 + 35 * MIN).state, 'unknown', 'at expiry')
  t.equal(tbl.nextExpiry(T0 + 20 * MIN), T0 + 35 * MIN)
})

t.test('after a late report the record does not lose a merge to one updated before its last failure', async (t) => {
  const tbl = unreachableThenLate()
  // The hold ended at T0 + 15 min; another replica saw the registry reachable at T0 + 3 min.
  const remote: RegistryRecord = {
    registry: 'late.example',
    state: 'reachable',
    since: T0 + 3 * MIN,
    confirmations: 1,
    updatedAt: T0 + 3 * MIN,
    expiresAt: T0 + 33 * MIN,
    consecutiveFailures: 0,
    consecutiveSuccesses: 1,
    recent: [],
  }
  t.equal(tbl.merge([remote], [], T0 + 20 * MIN), false, 'nothing changed')
  t.equal(tbl.get('late.example')!.state, 'unreachable')
  t.equal(tbl.get('late.example')!.updatedAt, T0 + 5 * MIN)
})

// A pull failure reported after a later success (an Event read late, a Pod status seen late)
// says nothing about the registry now: it is kept among the observations, but the working
// state, its times, the streaks and the hold stay as the success left them.
const pulledOk: Observation = { at: T0 + 5 * MIN, source: 'pod', outcome: 'ok', detail: 'pulled in 2 s' }

t.test('a pull failure older than the last success does not mark a reachable registry unreachable', async (t) => {
  const transitions: string[] = []
  const tbl = new StateTable(params, { onTransition: (tr) => transitions.push(`${tr.from}->${tr.to}`) })
  tbl.observe('ok.example', pulledOk)
  t.equal(tbl.observe('ok.example', lateReport), undefined, 'no transition')
  t.strictSame(tbl.get('ok.example'), {
    registry: 'ok.example',
    state: 'reachable',
    since: T0 + 5 * MIN,
    confirmations: 1,
    updatedAt: T0 + 5 * MIN,
    expiresAt: T0 + 35 * MIN,
    decidedBy: pulledOk,
    consecutiveFailures: 0,
    consecutiveSuccesses: 1,
    lastObservation: lateReport,
    recent: [pulledOk, lateReport],
  })
  t.strictSame(transitions, ['unknown->reachable'])
  t.equal(tbl.status('ok.example', T0 + 6 * MIN).state, 'reachable')
  t.equal(tbl.version, 2, 'the observation is still recorded')
})

t.test('a probe failure after a late failure still needs its own streak: the late one is not counted', async (t) => {
  const tbl = new StateTable(params)
  tbl.observe('ok.example', pulledOk)
  tbl.observe('ok.example', lateReport)
  const probe: Observation = { at: T0 + 6 * MIN, source: 'probe', outcome: 'fail', detail: 'HTTP 503' }
  t.equal(tbl.observe('ok.example', probe), undefined, 'one failed probe of two')
  t.equal(tbl.get('ok.example')!.state, 'reachable')
  t.equal(tbl.get('ok.example')!.consecutiveFailures, 1)
  t.equal(tbl.get('ok.example')!.holdUntil, undefined)
})

t.test('a pull failure older than the last slow pull does not mark the registry unreachable', async (t) => {
  const tbl = new StateTable(params)
  const slowPull: Observation = { at: T0 + 5 * MIN, source: 'event', outcome: 'slow', detail: 'took 4 min' }
  tbl.observe('slow.example', slowPull)
  t.equal(tbl.observe('slow.example', lateReport), undefined)
  const r = tbl.get('slow.example')!
  t.equal(r.state, 'slow')
  t.equal(r.since, T0 + 5 * MIN)
  t.equal(r.updatedAt, T0 + 5 * MIN)
  t.equal(r.expiresAt, T0 + 35 * MIN)
  t.equal(r.decidedBy, slowPull)
  t.equal(r.consecutiveFailures, 0)
  t.equal(r.holdUntil, undefined)
})

t.test('the last success is the latest confirmation, not the one that entered the state', async (t) => {
  const tbl = new StateTable(params)
  tbl.observe('ok.example', { at: T0 - 5 * MIN, source: 'probe', outcome: 'ok', detail: 'HTTP 401' })
  tbl.observe('ok.example', { at: T0 + 1, source: 'probe', outcome: 'ok', detail: 'HTTP 401' })
  // Entered at T0 - 5 min, confirmed at T0 + 1 ms: the failure at T0 is older than that.
  tbl.observe('ok.example', lateReport)
  t.equal(tbl.get('ok.example')!.state, 'reachable')
  t.equal(tbl.get('ok.example')!.since, T0 - 5 * MIN)
})

t.test('a pull failure at the same millisecond as the last success, or after it, marks the registry unreachable', async (t) => {
  const tbl = new StateTable(params)
  tbl.observe('same.example', { at: T0, source: 'pod', outcome: 'ok', detail: 'pulled in 2 s' })
  t.strictSame(tbl.observe('same.example', lateReport), {
    registry: 'same.example',
    from: 'reachable',
    to: 'unreachable',
    observation: lateReport,
  })
  t.equal(tbl.get('same.example')!.holdUntil, T0 + 10 * MIN)

  tbl.observe('after.example', { at: T0 - 1, source: 'pod', outcome: 'ok', detail: 'pulled in 2 s' })
  tbl.observe('after.example', lateReport)
  t.equal(tbl.get('after.example')!.state, 'unreachable')
  t.equal(tbl.get('after.example')!.since, T0)
})

t.test('after the success lapsed, a failure newer than that success is evidence again', async (t) => {
  const tbl = new StateTable(params)
  tbl.observe('lapsed.example', { at: T0, source: 'pod', outcome: 'ok', detail: 'pulled in 2 s' })
  tbl.expire(T0 + 40 * MIN)
  t.equal(tbl.get('lapsed.example')!.state, 'unknown')
  t.equal(tbl.get('lapsed.example')!.updatedAt, T0 + 40 * MIN)
  // Reported after the lapse, seen at T0 + 35 min: after the success at T0.
  const failure: Observation = { at: T0 + 35 * MIN, source: 'event', outcome: 'fail', detail: 'i/o timeout' }
  t.strictSame(tbl.observe('lapsed.example', failure), {
    registry: 'lapsed.example',
    from: 'unknown',
    to: 'unreachable',
    observation: failure,
  })
  t.equal(tbl.get('lapsed.example')!.expiresAt, T0 + 65 * MIN)
  t.equal(tbl.get('lapsed.example')!.holdUntil, T0 + 45 * MIN)
})
