// Metrics of the self-managed TLS loop.
import { Counter, Gauge, type Registry } from 'prom-client'

export class TlsMetrics {
  readonly notAfter: Gauge<'certificate'>
  readonly changes: Counter<'change'>
  readonly errors: Counter
  readonly bundleSynced: Gauge

  constructor(registry: Registry | undefined) {
    const registers = registry ? [registry] : []
    this.notAfter = new Gauge({
      name: 'mirrorhook_tls_not_after_timestamp_seconds',
      help: 'Expiry of the self-managed certificates (serving, ca), as a Unix time.',
      labelNames: ['certificate'] as const,
      registers,
    })
    this.changes = new Counter({
      name: 'mirrorhook_tls_secret_changes_total',
      help: 'Changes this replica wrote to the self-managed TLS Secret (created, ca-staged, ca-promoted, serving-issued, trust-updated).',
      labelNames: ['change'] as const,
      registers,
    })
    this.errors = new Counter({
      name: 'mirrorhook_tls_sync_errors_total',
      help: 'Self-managed TLS reconcile passes that failed (retried on the next pass).',
      registers,
    })
    this.bundleSynced = new Gauge({
      name: 'mirrorhook_tls_ca_bundle_synced',
      help: '1 when the MutatingWebhookConfiguration carries the trust bundle of the TLS Secret, else 0.',
      registers,
    })
  }
}
