// Reachability metrics, registered into the process's registry.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { RegistryState, RegistryStatus } from '../core/rewrite.js'

const STATES: readonly RegistryState[] = ['reachable', 'unreachable', 'slow', 'unknown']

export interface StateSource {
  registries(): string[]
  status(registry: string): RegistryStatus
  refusals(): number
}

export class ReachabilityMetrics {
  readonly probes: Counter<'registry' | 'result'>
  readonly probeDuration: Histogram<'registry'>
  readonly observations: Counter<'source' | 'outcome'>
  readonly transitions: Counter<'registry' | 'to'>
  readonly syncs: Counter<'result'>

  constructor(registry: Registry, source: StateSource) {
    new Gauge({
      name: 'mirrorhook_registry_state',
      help: 'Current state of each known registry: 1 for its state, 0 for the others (expired states read as unknown).',
      labelNames: ['registry', 'state'] as const,
      registers: [registry],
      collect() {
        this.reset()
        for (const name of source.registries()) {
          const { state } = source.status(name)
          for (const s of STATES) this.set({ registry: name, state: s }, s === state ? 1 : 0)
        }
      },
    })
    new Gauge({
      name: 'mirrorhook_mirror_refused_images',
      help: 'Mirrored repositories the mirror refused (e.g. not in its allowlist); they are not rewritten.',
      registers: [registry],
      collect() {
        this.set(source.refusals())
      },
    })
    this.probes = new Counter({
      name: 'mirrorhook_registry_probes_total',
      help: 'Active probes of registries (GET /v2/), by registry and result (reachable, unreachable).',
      labelNames: ['registry', 'result'] as const,
      registers: [registry],
    })
    this.probeDuration = new Histogram({
      name: 'mirrorhook_registry_probe_duration_seconds',
      help: 'Time a probe took to answer or fail, by registry.',
      labelNames: ['registry'] as const,
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    })
    this.observations = new Counter({
      name: 'mirrorhook_reachability_observations_total',
      help: 'Evidence about registries, by source (probe, pod, event) and outcome (ok, fail, slow).',
      labelNames: ['source', 'outcome'] as const,
      registers: [registry],
    })
    this.transitions = new Counter({
      name: 'mirrorhook_registry_state_transitions_total',
      help: 'Registry state changes, by registry and new state.',
      labelNames: ['registry', 'to'] as const,
      registers: [registry],
    })
    this.syncs = new Counter({
      name: 'mirrorhook_reachability_sync_total',
      help: 'Merges with the shared state ConfigMap, by result (ok, conflict, error).',
      labelNames: ['result'] as const,
      registers: [registry],
    })
  }
}
