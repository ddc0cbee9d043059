// The decision-time histogram is counted by hand; scraped, it reads exactly as prom-client's own
// histogram with the same buckets and observations.
import t from 'tap'
import { Histogram, Registry } from 'prom-client'
import { ADMISSION_DURATION_BUCKETS, PlainHistogram } from '../../server/observability/metrics.js'

const observations: readonly (readonly number[])[] = [
  [],
  [0.000004],
  // Exactly on bounds, between bounds, above the last bound.
  [0.00001, 0.00002, 0.0000249, 0.000025, 0.00026, 0.05, 0.0500001, 3],
  Array.from({ length: 1000 }, (_, i) => (i * i) / 1e7),
]

for (const values of observations) {
  t.test(`${values.length} observations`, async (t) => {
    const ours = new Registry()
    const theirs = new Registry()
    const plain = new PlainHistogram('decision_seconds', 'Decision time.', ADMISSION_DURATION_BUCKETS, ours)
    const reference = new Histogram({
      name: 'decision_seconds',
      help: 'Decision time.',
      buckets: ADMISSION_DURATION_BUCKETS,
      registers: [theirs],
    })
    for (const v of values) {
      plain.observe(v)
      reference.observe(v)
    }
    t.equal(await ours.metrics(), await theirs.metrics())
    // After a reset, as a new histogram (prom-client's own then shows no series at all).
    ours.resetMetrics()
    const fresh = new Registry()
    new Histogram({ name: 'decision_seconds', help: 'Decision time.', buckets: ADMISSION_DURATION_BUCKETS, registers: [fresh] })
    t.equal(await ours.metrics(), await fresh.metrics(), 'after a reset')
  })
}
