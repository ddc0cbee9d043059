// Prometheus metrics. One registry per process (or per test app), never the global one.
// No label value comes from a Pod spec: registries are the configured ones or `other`, the rest
// are fixed codes. The admission path adds to plain numbers (a Map lookup per count); the counters
// read them when scraped.
import { Counter, type CounterConfiguration, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import { logStats } from './logger.js'

// Decision times: fine steps from 10 µs to 250 µs, where a review's decision falls, then coarse.
export const ADMISSION_DURATION_BUCKETS = [
  0.00001, 0.00002, 0.000025, 0.00003, 0.00004, 0.00005, 0.00006, 0.000075, 0.0001, 0.000125, 0.00015, 0.0002, 0.00025, 0.0005, 0.001,
  0.0025, 0.005, 0.01, 0.05,
]

// Counts by label set, as plain numbers: prom-client hashes and validates the labels on every
// `inc`, even through a label child, which the admission path would pay per image.
class Tally<L extends string> {
  private readonly counts = new Map<string, { readonly labels: Partial<Record<L, string>>; n: number }>()

  // The labels are made from the key the first time it is seen (no closure per call: that would
  // be garbage on every review).
  add(key: string, labelsOf: (key: string) => Partial<Record<L, string>>, n = 1): void {
    const entry = this.counts.get(key)
    if (entry) entry.n += n
    else this.counts.set(key, { labels: labelsOf(key), n })
  }

  /** A counter whose values are the tally's, read when it is collected. */
  counter(config: CounterConfiguration<L>): Counter<L> {
    const counts = this.counts
    return new Counter<L>({
      ...config,
      collect() {
        this.reset()
        for (const { labels, n } of counts.values()) this.inc(labels, n)
      },
    })
  }
}

// A tally key back to its labels: a review's key is its outcome, then NUL and dry-run unless false.
function reviewLabels(key: string): { outcome: string; dry_run: string } {
  const [outcome = '', dryRun = 'false'] = key.split('\0')
  return { outcome, dry_run: dryRun }
}
const registryLabels = (registry: string) => ({ registry })
const reasonLabels = (reason: string) => ({ reason })

/**
 * A histogram without labels whose observations are plain additions to an array (prom-client's
 * `observe` turns the bucket bound into a property name every time, a third of a microsecond per
 * review). The registry reads it like its own histograms: the same exposition.
 */
export class PlainHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly counts: Float64Array
  private sum = 0
  private count = 0

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    this.counts = new Float64Array(bounds.length)
    registry.registerMetric(this as unknown as Histogram)
  }

  observe(seconds: number): void {
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && seconds > bounds[i]!) i++
    if (i < bounds.length) this.counts[i]! += 1
    this.sum += seconds
    this.count += 1
  }

  get() {
    const bucket = `${this.name}_bucket`
    let cumulative = 0
    const values: { labels: { le: number | string }; value: number; metricName: string }[] = this.bounds.map((le, i) => ({
      labels: { le },
      value: (cumulative += this.counts[i]!),
      metricName: bucket,
    }))
    values.push({ labels: { le: '+Inf' }, value: this.count, metricName: bucket })
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: [
        ...values,
        { labels: {}, value: this.sum, metricName: `${this.name}_sum` },
        { labels: {}, value: this.count, metricName: `${this.name}_count` },
      ],
    }
  }

  reset(): void {
    this.counts.fill(0)
    this.sum = 0
    this.count = 0
  }
}

export class Metrics {
  readonly registry = new Registry()

  private readonly reviewTally = new Tally<'outcome' | 'dry_run'>()
  private readonly rewriteTally = new Tally<'registry'>()
  private readonly keptTally = new Tally<'reason'>()

  readonly reviews = this.reviewTally.counter({
    name: 'mirrorhook_admission_reviews_total',
    help: 'Admission reviews answered, by outcome (mutated, unchanged, skipped, ignored, error, invalid) and dry-run.',
    labelNames: ['outcome', 'dry_run'] as const,
    registers: [this.registry],
  })

  readonly rewrites = this.rewriteTally.counter({
    name: 'mirrorhook_image_rewrites_total',
    help: 'Container images rewritten to a mirror, by source registry.',
    labelNames: ['registry'] as const,
    registers: [this.registry],
  })

  readonly kept = this.keptTally.counter({
    name: 'mirrorhook_images_kept_total',
    help: 'Container images left unchanged, by reason code.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })

  readonly errors = new Counter({
    name: 'mirrorhook_errors_total',
    help: 'Internal errors, by stage; admission errors let the Pod through unchanged.',
    labelNames: ['stage'] as const,
    registers: [this.registry],
  })

  readonly latency = new PlainHistogram(
    'mirrorhook_admission_duration_seconds',
    'Time spent deciding one admission review, excluding network and JSON parsing.',
    ADMISSION_DURATION_BUCKETS,
    this.registry,
  )

  readonly certReloads = new Counter({
    name: 'mirrorhook_tls_reloads_total',
    help: 'Serving certificate reloads, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })

  readonly logQueue = new Gauge({
    name: 'mirrorhook_log_queue_bytes',
    help: 'Log bytes accepted but not yet written to standard output (bounded; beyond the bound lines are dropped).',
    registers: [this.registry],
    collect() {
      this.set(logStats().queuedBytes)
    },
  })

  readonly logDropped = new Counter({
    name: 'mirrorhook_log_dropped_total',
    help: 'Log lines dropped because standard output was not read fast enough.',
    registers: [this.registry],
    collect() {
      this.reset()
      this.inc(logStats().droppedLines)
    },
  })

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'mirrorhook_' })
  }

  /** One answered review; `dryRun` is 'unknown' when the request could not be read. */
  countReview(outcome: string, dryRun: boolean | 'unknown'): void {
    this.reviewTally.add(dryRun === false ? outcome : `${outcome}\0${String(dryRun)}`, reviewLabels)
  }

  /** `n` rewritten images; `registry` must be a configured registry or `other` (see registryMetricLabel). */
  countRewrite(registry: string, n = 1): void {
    this.rewriteTally.add(registry, registryLabels, n)
  }

  /** `n` kept images, by their reason code. */
  countKept(reason: string, n = 1): void {
    this.keptTally.add(reason, reasonLabels, n)
  }
}
