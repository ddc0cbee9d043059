// Self-managed TLS for the in-cluster webhook: no cert-manager, no install Job.
// Every replica runs the same reconcile loop against one Secret:
//   1. read the Secret, or create it (a CA and a serving certificate); when two
//      replicas create at once, the loser (409) reads the winner's;
//   2. rotate what is due, written back with the read resourceVersion so that
//      concurrent rotations collapse into one (409 → read again, re-plan);
//   3. patch the trust bundle into its own MutatingWebhookConfiguration;
//   4. write the files the HTTPS server reloads (one atomic symlink swap).
// The CA rotates in two steps: the next CA joins the trust bundle first, and
// signs serving certificates only once the API server has had time to see it,
// so whatever certificate a replica serves, the caBundle verifies it.
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { mkdir, readFile, readlink, rename, rm, symlink, writeFile, readdir } from 'node:fs/promises'
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
import { Counter, Gauge, type Registry } from 'prom-client'
import { apiClient } from '../kube/client.js'
import { Backoff } from '../kube/backoff.js'
import { statusOf } from '../kube/errors.js'
import { managedLabels } from '../kube/labels.js'
import { createCa, describeCertificate, expiresWithin, issueServing, type KeyPairPem } from './certs.js'

const DAY = 86_400_000

export const SECRET_KEYS = {
  cert: 'tls.crt',
  key: 'tls.key',
  // What clients trust: the current CA, plus the next one or the previous one during a rotation.
  trust: 'ca.crt',
  signerCert: 'signer.crt',
  signerKey: 'signer.key',
  nextSignerCert: 'next-signer.crt',
  nextSignerKey: 'next-signer.key',
} as const
export const STAGED_AT_ANNOTATION = 'mirrorhook.io/next-signer-staged-at'
const MANAGED_BY = managedLabels('tls')

export interface TlsTimings {
  caValidDays: number
  // The next CA is staged this long before the current one expires.
  caRenewBeforeDays: number
  // Time for every API server to see a new caBundle before the next CA signs anything.
  caPromotionDelayMs: number
  servingValidDays: number
  servingRenewBeforeDays: number
}

export const DEFAULT_TIMINGS: TlsTimings = {
  caValidDays: 3650,
  caRenewBeforeDays: 365,
  caPromotionDelayMs: 10 * 60_000,
  servingValidDays: 90,
  servingRenewBeforeDays: 30,
}

export interface TlsState {
  signer: KeyPairPem
  next?: { signer: KeyPairPem; stagedAt: Date }
  // PEM certificates, current signer first.
  trust: string[]
  serving: KeyPairPem
}

export type TlsChange = 'created' | 'ca-staged' | 'ca-promoted' | 'serving-issued' | 'trust-updated'

export interface TlsNames {
  dnsNames: readonly string[]
  ipAddresses?: readonly string[]
}

function splitPems(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((p) => `${p}\n`) ?? []
}

export function joinPems(pems: readonly string[]): string {
  return pems.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join('')
}

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256
}

function keyMatches(pair: KeyPairPem): boolean {
  try {
    return new X509Certificate(pair.certPem).checkPrivateKey(createPrivateKey(pair.keyPem))
  } catch {
    return false
  }
}

function usableSigner(pair: KeyPairPem | undefined, now: Date): pair is KeyPairPem {
  if (!pair || !keyMatches(pair)) return false
  const cert = new X509Certificate(pair.certPem)
  return cert.ca && !expiresWithin(pair.certPem, 0, now)
}

function servingIsGood(serving: KeyPairPem | undefined, signer: KeyPairPem, names: TlsNames, timings: TlsTimings, now: Date): boolean {
  if (!serving || !keyMatches(serving)) return false
  const cert = new X509Certificate(serving.certPem)
  const ca = new X509Certificate(signer.certPem)
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false
  const facts = describeCertificate(serving.certPem)
  if (facts.notAfter.getTime() <= now.getTime()) return false
  // Due for renewal, unless the CA's own expiry caps it: the next CA's promotion renews it then.
  const cappedBySigner = facts.notAfter.getTime() >= describeCertificate(signer.certPem).notAfter.getTime() - 60_000
  if (expiresWithin(serving.certPem, timings.servingRenewBeforeDays, now) && !cappedBySigner) return false
  return names.dnsNames.every((n) => facts.dnsNames.includes(n)) && (names.ipAddresses ?? []).every((ip) => facts.ipAddresses.includes(ip))
}

async function issueFor(signer: KeyPairPem, names: TlsNames, timings: TlsTimings, now: Date): Promise<KeyPairPem> {
  // Never outlive the signer: a serving certificate past its CA verifies nowhere.
  const signerLeftDays = (describeCertificate(signer.certPem).notAfter.getTime() - now.getTime()) / DAY
  const validDays = Math.min(timings.servingValidDays, signerLeftDays)
  return issueServing(signer, { dnsNames: names.dnsNames, ipAddresses: names.ipAddresses, validDays, now })
}

/**
 * The state the Secret should hold next, from what it holds now (undefined: nothing usable).
 * Pure apart from key generation; `changes` is empty when nothing needs writing.
 */
export async function planTls(
  current: TlsState | undefined,
  names: TlsNames,
  timings: TlsTimings,
  now: Date,
): Promise<{ state: TlsState; changes: TlsChange[] }> {
  if (!current || !usableSigner(current.signer, now)) {
    const signer = await createCa('mirrorhook webhook CA', timings.caValidDays, now)
    const serving = await issueFor(signer, names, timings, now)
    return { state: { signer, trust: [signer.certPem], serving }, changes: ['created'] }
  }
  const changes: TlsChange[] = []
  let { signer, next, serving } = current
  if (next && !usableSigner(next.signer, now)) next = undefined
  if (next && now.getTime() - next.stagedAt.getTime() >= timings.caPromotionDelayMs) {
    signer = next.signer
    next = undefined
    changes.push('ca-promoted')
  }
  if (!next && expiresWithin(signer.certPem, timings.caRenewBeforeDays, now)) {
    next = { signer: await createCa('mirrorhook webhook CA', timings.caValidDays, now), stagedAt: now }
    changes.push('ca-staged')
  }
  if (!servingIsGood(serving, signer, names, timings, now)) {
    serving = await issueFor(signer, names, timings, now)
    changes.push('serving-issued')
  }
  // Previous CAs stay trusted until they expire: a replica may still serve a certificate they signed.
  const wanted = [signer.certPem, ...(next ? [next.signer.certPem] : []), ...current.trust]
  const seen = new Set<string>()
  const trust: string[] = []
  for (const pem of wanted) {
    let id: string
    try {
      id = fingerprint(pem)
    } catch {
      continue
    }
    if (seen.has(id) || expiresWithin(pem, 0, now)) continue
    seen.add(id)
    trust.push(pem)
  }
  if (changes.length === 0 && joinPems(trust) !== joinPems(current.trust)) changes.push('trust-updated')
  return { state: { signer, next, trust, serving }, changes }
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64')
const unb64 = (s: string | undefined) => (s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8'))

export function stateFromSecret(secret: V1Secret): TlsState | undefined {
  const data = secret.data ?? {}
  const get = (key: string) => unb64(data[key])
  const signerCert = get(SECRET_KEYS.signerCert)
  const signerKey = get(SECRET_KEYS.signerKey)
  const cert = get(SECRET_KEYS.cert)
  const key = get(SECRET_KEYS.key)
  if (!signerCert || !signerKey) return undefined
  const nextCert = get(SECRET_KEYS.nextSignerCert)
  const nextKey = get(SECRET_KEYS.nextSignerKey)
  const stagedAt = new Date(secret.metadata?.annotations?.[STAGED_AT_ANNOTATION] ?? Number.NaN)
  return {
    signer: { certPem: signerCert, keyPem: signerKey },
    next:
      nextCert && nextKey && !Number.isNaN(stagedAt.getTime()) ? { signer: { certPem: nextCert, keyPem: nextKey }, stagedAt } : undefined,
    trust: splitPems(get(SECRET_KEYS.trust) ?? ''),
    serving: { certPem: cert ?? '', keyPem: key ?? '' },
  }
}

export function secretFromState(name: string, namespace: string, state: TlsState, base?: V1Secret): V1Secret {
  const annotations = { ...(base?.metadata?.annotations ?? {}) }
  delete annotations[STAGED_AT_ANNOTATION]
  if (state.next) annotations[STAGED_AT_ANNOTATION] = state.next.stagedAt.toISOString()
  const data: Record<string, string> = {
    [SECRET_KEYS.cert]: b64(state.serving.certPem),
    [SECRET_KEYS.key]: b64(state.serving.keyPem),
    [SECRET_KEYS.trust]: b64(joinPems(state.trust)),
    [SECRET_KEYS.signerCert]: b64(state.signer.certPem),
    [SECRET_KEYS.signerKey]: b64(state.signer.keyPem),
  }
  if (state.next) {
    data[SECRET_KEYS.nextSignerCert] = b64(state.next.signer.certPem)
    data[SECRET_KEYS.nextSignerKey] = b64(state.next.signer.keyPem)
  }
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'kubernetes.io/tls',
    metadata: {
      ...(base?.metadata ?? {}),
      name,
      namespace,
      labels: { ...(base?.metadata?.labels ?? {}), ...MANAGED_BY },
      annotations,
    },
    data,
  }
}

export interface TlsFiles {
  dir: string
  certFile: string
  keyFile: string
  caFile: string
}

const DATA_LINK = '..data'

/**
 * Writes the three files into a fresh folder and swaps one symlink, the way
 * kubelet updates Secret volumes: a reader never sees a certificate with the
 * other rotation's key. Returns false when the files already held this content.
 */
export async function writeTlsFiles(dir: string, content: { cert: string; key: string; ca: string }): Promise<boolean> {
  const abs = resolve(dir)
  await mkdir(abs, { recursive: true, mode: 0o700 })
  const files = { 'tls.crt': content.cert, 'tls.key': content.key, 'ca.crt': content.ca }
  const existing = await Promise.all(Object.keys(files).map((f) => readFile(join(abs, f), 'utf8').catch(() => undefined)))
  if (Object.values(files).every((text, i) => existing[i] === text)) return false

  const version = `..${new Date().toISOString().replace(/[:.]/g, '_')}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  await mkdir(join(abs, version), { mode: 0o700 })
  for (const [name, text] of Object.entries(files)) {
    await writeFile(join(abs, version, name), text, { mode: name === 'tls.key' ? 0o600 : 0o644 })
  }
  const previous = await readlink(join(abs, DATA_LINK)).catch(() => undefined)
  const tmpLink = join(abs, `${DATA_LINK}_tmp`)
  await rm(tmpLink, { force: true })
  await symlink(version, tmpLink)
  await rename(tmpLink, join(abs, DATA_LINK))
  for (const name of Object.keys(files)) {
    const link = join(abs, name)
    const target = await readlink(link).catch(() => undefined)
    if (target === join(DATA_LINK, name)) continue
    await rm(link, { force: true })
    await symlink(join(DATA_LINK, name), link)
  }
  // Old versions go; anything else in the folder is left alone.
  for (const entry of await readdir(abs)) {
    if (entry.startsWith('..') && entry !== DATA_LINK && entry !== version && entry !== previous && !entry.startsWith(`${DATA_LINK}_`)) {
      await rm(join(abs, entry), { recursive: true, force: true })
    }
  }
  if (previous && previous !== version) await rm(join(abs, previous), { recursive: true, force: true })
  return true
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

class TlsMetrics {
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
          throw new Error(`self-managed TLS: cannot set up the Secret ${this.options.namespace}/${this.options.secretName}: ${message}`)
        }
        this.deps.logger.warn({ err: message, retryInMs: delay }, 'self-managed TLS: set-up failed, retrying')
        await new Promise((r) => setTimeout(r, delay))
      }
    }
  }

  /** Re-checks every `intervalMs`; `onFilesChanged` runs after each rotation reached the files. */
  start(intervalMs: number, onFilesChanged?: () => void): void {
    this.timer = setInterval(() => {
      this.reconcile().then(
        (result) => {
          if (result.filesChanged) onFilesChanged?.()
        },
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
