// Reachability metrics, registered into the process's registry. The state table also holds
// registries learned from Pods (any name a Pod spec mentions), so every `registry` label goes
// through `label`: the configured registries keep their name, all others count as `other`.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { RegistryState, RegistryStatus } from '../core/rewrite.js'

const STATES: readonly RegistryState[] = ['reachable', 'unreachable', 'slow', 'unknown']

export interface StateSource {
  registries(): string[]
  status(registry: string): RegistryStatus
  refusals(): number
  // The label for a registry: its name when configured, else `other` (see registryMetricLabel).
  label(registry: string): string
}

export class ReachabilityMetrics {
  readonly probes: { inc(labels: { registry: string; result: string }): void }
  readonly probeDuration: { observe(labels: { registry: string }, seconds: number): void }
  readonly observations: Counter<'source' | 'outcome'>
  readonly transitions: { inc(labels: { registry: string; to: string }): void }
  readonly syncs: Counter<'result'>

  constructor(registry: Registry, source: StateSource) {
    new Gauge({
      name: 'mirrorhook_registry_state',
      help:
        'Current state of each configured registry: 1 for its state, 0 for the others (expired states read as unknown); ' +
        'registry="other": how many other registries (learned from Pods) are in each state.',
      labelNames: ['registry', 'state'] as const,
      registers: [registry],
      collect() {
        this.reset()
        const other = new Map<RegistryState, number>(STATES.map((s) => [s, 0]))
        let others = false
        for (const name of source.registries()) {
          const { state } = source.status(name)
          const label = source.label(name)
          if (label === 'other') {
            others = true
            other.set(state, (other.get(state) ?? 0) + 1)
          } else {
            for (const s of STATES) this.set({ registry: label, state: s }, s === state ? 1 : 0)
          }
        }
        if (others) for (const [s, n] of other) this.set({ registry: 'other', state: s }, n)
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
    const probes = new Counter({
      name: 'mirrorhook_registry_probes_total',
      help: 'Active probes of registries (GET /v2/), by registry and result (reachable, unreachable).',
      labelNames: ['registry', 'result'] as const,
      registers: [registry],
    })
    const probeDuration = new Histogram({
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
    const transitions = new Counter({
      name: 'mirrorhook_registry_state_transitions_total',
      help: 'Registry state changes, by registry (configured, or other) and new state.',
      labelNames: ['registry', 'to'] as const,
      registers: [registry],
    })
    this.syncs = new Counter({
      name: 'mirrorhook_reachability_sync_total',
      help: 'Merges with the shared state ConfigMap, by result (ok, conflict, error).',
      labelNames: ['result'] as const,
      registers: [registry],
    })
    this.probes = { inc: (l) => probes.inc({ registry: source.label(l.registry), result: l.result }) }
    this.probeDuration = { observe: (l, seconds) => probeDuration.observe({ registry: source.label(l.registry) }, seconds) }
    this.transitions = { inc: (l) => transitions.inc({ registry: source.label(l.registry), to: l.to }) }
  }
}
