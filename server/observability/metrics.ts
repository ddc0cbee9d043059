// Prometheus metrics. One registry per process (or per test app), never the global one.
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client'

export class Metrics {
  readonly registry = new Registry()

  readonly reviews = new Counter({
    name: 'mirrorhook_admission_reviews_total',
    help: 'Admission reviews answered, by outcome (mutated, unchanged, skipped, ignored, error, invalid) and dry-run.',
    labelNames: ['outcome', 'dry_run'] as const,
    registers: [this.registry],
  })

  readonly rewrites = new Counter({
    name: 'mirrorhook_image_rewrites_total',
    help: 'Container images rewritten to a mirror, by source registry.',
    labelNames: ['registry'] as const,
    registers: [this.registry],
  })

  readonly kept = new Counter({
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

  readonly latency = new Histogram({
    name: 'mirrorhook_admission_duration_seconds',
    help: 'Time spent deciding one admission review, excluding network and JSON parsing.',
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
    registers: [this.registry],
  })

  readonly certReloads = new Counter({
    name: 'mirrorhook_tls_reloads_total',
    help: 'Serving certificate reloads, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'mirrorhook_' })
  }
}
