// Self-managed TLS for the in-cluster webhook: no cert-manager, no install Job.
// Every replica runs the same reconcile loop against one Secret:
//   1. read the Secret, or create it (a CA and a serving certificate); when two
//      replicas create at once, the loser (409) reads the winner's;
//   2. rotate what is due, written back with the read resourceVersion so that
//      concurrent rotations collapse into one (409 → read again, re-plan);
//   3. patch the trust bundle into its own MutatingWebhookConfiguration;
//   4. hand the serving pair to the HTTPS server in memory (dynamic-source.ts) and write it
//      to files for readers outside the process (one atomic symlink swap).
// The Secret's plan is plan.ts, its encoding secret.ts, the files files.ts.
// The CA rotates in two steps: the next CA joins the trust bundle first, and
// signs serving certificates only once the API server has had time to see it,
// so whatever certificate a replica serves, the caBundle verifies it.
import { join, resolve } from 'node:path'
import {
  AdmissionregistrationV1Api,
  ApiException,
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Secret,
} from '@kubernetes/client-node'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { Backoff } from '../kube/backoff.js'
import { apiClient } from '../kube/client.js'
import { statusOf } from '../kube/errors.js'
import { describeCertificate } from './certs.js'
import type { KeyPair } from './reloader.js'
import { type TlsFiles, writeTlsFiles } from './files.js'
import { TlsMetrics } from './metrics.js'
import { DEFAULT_TIMINGS, joinPems, planTls, type TlsChange, type TlsNames, type TlsState, type TlsTimings } from './plan.js'
import { b64, secretFromState, stateFromSecret } from './secret.js'

/** The pair the HTTPS server serves, from a reconciled state. */
export function servingPairOf(state: TlsState): KeyPair {
  return { cert: state.serving.certPem, key: state.serving.keyPem }
}

export interface SelfManagedTlsOptions {
  namespace: string
  secretName: string
  webhookConfigName: string
  serviceName: string
  certDir: string
  clusterDomain?: string
  // Extra SANs, e.g. 127.0.0.1 when the API server reaches the webhook by URL.
  extraDnsNames?: readonly string[]
  extraIpAddresses?: readonly string[]
  timings?: Partial<TlsTimings>
  now?: () => Date
}

export interface SelfManagedTlsDependencies {
  kubeConfig: KubeConfig
  logger: Logger
  registry?: Registry
}

export interface ReconcileResult {
  changes: TlsChange[]
  filesChanged: boolean
  caBundleSynced: boolean
  state: TlsState
}

// Set-up retries: 500 ms, doubling to 8 s.
export const SETUP_BACKOFF = { initialMs: 500, maxMs: 8_000 }

export class SelfManagedTls {
  private readonly core: CoreV1Api
  private readonly admission: AdmissionregistrationV1Api
  private readonly timings: TlsTimings
  private readonly names: TlsNames
  private readonly metrics: TlsMetrics
  private readonly now: () => Date
  private timer?: NodeJS.Timeout
  private running?: Promise<ReconcileResult>
  readonly files: TlsFiles

  constructor(
    private readonly options: SelfManagedTlsOptions,
    private readonly deps: SelfManagedTlsDependencies,
  ) {
    this.core = apiClient(deps.kubeConfig, CoreV1Api)
    this.admission = apiClient(deps.kubeConfig, AdmissionregistrationV1Api)
    this.timings = { ...DEFAULT_TIMINGS, ...options.timings }
    const { serviceName: svc, namespace: ns } = options
    const domain = options.clusterDomain ?? 'cluster.local'
    this.names = {
      dnsNames: [`${svc}.${ns}.svc`, `${svc}.${ns}.svc.${domain}`, `${svc}.${ns}`, svc, ...(options.extraDnsNames ?? [])],
      ipAddresses: options.extraIpAddresses ?? [],
    }
    this.metrics = new TlsMetrics(deps.registry)
    this.now = options.now ?? (() => new Date())
    const dir = resolve(options.certDir)
    this.files = { dir, certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key'), caFile: join(dir, 'ca.crt') }
  }

  /** One pass: Secret, webhook caBundle, files. Concurrent calls share the pass. */
  reconcile(): Promise<ReconcileResult> {
    this.running ??= this.reconcileOnce().finally(() => {
      this.running = undefined
    })
    return this.running
  }

  private async reconcileOnce(): Promise<ReconcileResult> {
    const { state, changes } = await this.syncSecret()
    const caBundleSynced = await this.syncWebhookConfiguration(joinPems(state.trust))
    const filesChanged = await writeTlsFiles(this.files.dir, {
      cert: state.serving.certPem,
      key: state.serving.keyPem,
      ca: joinPems(state.trust),
    })
    this.metrics.notAfter.set({ certificate: 'serving' }, describeCertificate(state.serving.certPem).notAfter.getTime() / 1000)
    this.metrics.notAfter.set({ certificate: 'ca' }, describeCertificate(state.signer.certPem).notAfter.getTime() / 1000)
    return { changes, filesChanged, caBundleSynced, state }
  }

  private async readSecret(): Promise<V1Secret | undefined> {
    try {
      return await this.core.readNamespacedSecret({ name: this.options.secretName, namespace: this.options.namespace })
    } catch (error) {
      if (statusOf(error) === 404) return undefined
      throw error
    }
  }

  private async syncSecret(): Promise<{ state: TlsState; changes: TlsChange[] }> {
    const { secretName: name, namespace } = this.options
    for (let attempt = 1; ; attempt++) {
      const secret = await this.readSecret()
      const current = secret ? stateFromSecret(secret) : undefined
      const { state, changes } = await planTls(current, this.names, this.timings, this.now())
      if (changes.length === 0) return { state, changes }
      try {
        if (secret) {
          await this.core.replaceNamespacedSecret({ name, namespace, body: secretFromState(name, namespace, state, secret) })
        } else {
          await this.core.createNamespacedSecret({ namespace, body: secretFromState(name, namespace, state) })
        }
      } catch (error) {
        // 409: another replica created or rotated first; start over from what it wrote.
        if (statusOf(error) === 409 && attempt < 5) {
          this.deps.logger.debug({ secret: `${namespace}/${name}`, attempt }, 'TLS Secret written by another replica meanwhile; re-reading')
          continue
        }
        throw error
      }
      for (const change of changes) this.metrics.changes.inc({ change })
      this.deps.logger.info(
        {
          secret: `${namespace}/${name}`,
          changes,
          servingNotAfter: describeCertificate(state.serving.certPem).notAfter,
          caNotAfter: describeCertificate(state.signer.certPem).notAfter,
        },
        'self-managed TLS Secret updated',
      )
      return { state, changes }
    }
  }

  private async syncWebhookConfiguration(bundle: string): Promise<boolean> {
    const name = this.options.webhookConfigName
    const wanted = b64(bundle)
    let config
    try {
      config = await this.admission.readMutatingWebhookConfiguration({ name })
    } catch (error) {
      if (statusOf(error) !== 404) throw error
      this.metrics.bundleSynced.set(0)
      this.deps.logger.warn(
        { webhookConfiguration: name },
        'MutatingWebhookConfiguration not found: the API server cannot verify this webhook until it exists',
      )
      return false
    }
    const webhooks = config.webhooks ?? []
    // `test` pins each index to the name read, so a concurrent reorder fails the patch instead of misplacing a bundle.
    const ops = webhooks.flatMap((webhook, i) =>
      webhook.clientConfig.caBundle === wanted
        ? []
        : [
            { op: 'test', path: `/webhooks/${i}/name`, value: webhook.name },
            { op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: wanted },
          ],
    )
    if (ops.length > 0) {
      await this.admission.patchMutatingWebhookConfiguration(
        { name, body: ops, fieldManager: 'mirrorhook' },
        setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
      )
      this.deps.logger.info(
        { webhookConfiguration: name, webhooks: ops.length / 2 },
        'caBundle written to the MutatingWebhookConfiguration',
      )
    }
    this.metrics.bundleSynced.set(1)
    return true
  }

  /**
   * The first pass, retried until it succeeds or `timeoutMs` passes. Missing
   * permissions (401/403) fail at once: retrying cannot fix RBAC.
   */
  async ensure(timeoutMs = 60_000): Promise<ReconcileResult> {
    const deadline = Date.now() + timeoutMs
    const backoff = new Backoff(SETUP_BACKOFF)
    for (let delay = backoff.next(); ; delay = backoff.next()) {
      try {
        return await this.reconcile()
      } catch (error) {
        this.metrics.errors.inc()
        const status = statusOf(error)
        const message = describeError(error)
        if (status === 401 || status === 403 || Date.now() + delay > deadline) {
          throw new Error(`self-managed TLS: cannot set up the Secret ${this.options.namespace}/${this.options.secretName}: ${message}`, {
            cause: error,
          })
        }
        this.deps.logger.warn({ err: message, retryInMs: delay }, 'self-managed TLS: set-up failed, retrying')
        await new Promise((r) => setTimeout(r, delay))
      }
    }
  }

  /** Re-checks every `intervalMs`; `onPair` gets the serving pair after every pass (the same one, unless rotated). */
  start(intervalMs: number, onPair?: (pair: KeyPair) => void): void {
    this.timer = setInterval(() => {
      this.reconcile().then(
        (result) => onPair?.(servingPairOf(result.state)),
        (error: unknown) => {
          this.metrics.errors.inc()
          this.deps.logger.warn({ err: describeError(error) }, 'self-managed TLS: reconcile failed; the current certificate stays in use')
        },
      )
    }, intervalMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    await this.running?.catch(() => undefined)
  }
}

function describeError(error: unknown): string {
  if (error instanceof ApiException) {
    const body = error.body as { message?: string } | string | undefined
    const detail = typeof body === 'object' && body?.message ? body.message : typeof body === 'string' ? body : ''
    return `HTTP ${error.code}${detail ? `: ${detail}` : ''}`
  }
  return (error as Error)?.message ?? String(error)
}
