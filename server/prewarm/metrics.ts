// Pre-warm's metrics. The registry label is a key of `prewarm.registries`: bounded by the configuration.
import { Counter, Gauge, type Registry } from 'prom-client'

export class PrewarmMetrics {
  readonly runs: Counter<'result'>
  readonly tags: Counter<'registry' | 'result'>
  readonly requests: Counter<'registry'>
  readonly registryDown: Counter<'registry'>
  readonly images: Gauge
  readonly lastRun: Gauge
  readonly duration: Gauge

  constructor(registry: Registry) {
    const registers = [registry]
    this.runs = new Counter({
      name: 'mirrorhook_prewarm_runs_total',
      help: 'Pre-warm runs by result: ok, partial (a registry did not answer), failed (nothing handed to pre-pull).',
      labelNames: ['result'],
      registers,
    })
    this.tags = new Counter({
      name: 'mirrorhook_prewarm_tags_resolved_total',
      help: 'Newest-tag questions per configured registry, by result: newer, current (no newer tag), error.',
      labelNames: ['registry', 'result'],
      registers,
    })
    this.requests = new Counter({
      name: 'mirrorhook_prewarm_registry_requests_total',
      help: 'HTTP requests sent to each configured registry to find newest tags.',
      labelNames: ['registry'],
      registers,
    })
    this.registryDown = new Counter({
      name: 'mirrorhook_prewarm_registry_errors_total',
      help: 'Runs in which a configured registry did not answer (its newest tags are tried again next run).',
      labelNames: ['registry'],
      registers,
    })
    this.images = new Gauge({
      name: 'mirrorhook_prewarm_images',
      help: 'Images the last pre-warm run handed to pre-pull.',
      registers,
    })
    this.lastRun = new Gauge({
      name: 'mirrorhook_prewarm_last_run_timestamp_seconds',
      help: 'When the last pre-warm run on this replica finished.',
      registers,
    })
    this.duration = new Gauge({
      name: 'mirrorhook_prewarm_last_run_duration_seconds',
      help: 'How long the last pre-warm run on this replica took.',
      registers,
    })
  }
}
