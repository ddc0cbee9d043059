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
