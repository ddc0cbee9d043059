// `mirrorhook serve`: wires configuration, TLS, the two listeners and the
// Kubernetes client together. Everything here is start-up and shutdown.
import { readFileSync } from 'node:fs'
import type { Logger } from 'pino'
import { withAllowlists } from './core/allowlist.js'
import { type ReachabilityView, staticReachability } from './core/rewrite.js'
import type { AllowlistStore, AllowlistStoreOptions } from './mirrors/allowlists.js'
import { mirrorStates } from './mirrors/state.js'
import { loadConfig, type LoadedConfig } from './config/load.js'
import { beginDrain, buildOpsApp, buildWebhookApp, httpsServerOf, type WebhookApp } from './http/app.js'
import { statePlugin } from './http/plugins/state.js'
import { DEFAULT_NAMESPACE } from './core/config.js'
import { mirrorPullSecretNames } from './core/pullrules.js'
import type { ProbeOptions } from './reachability/probe.js'
import { ReachabilityService } from './reachability/service.js'
import type { AdmissionContext } from './http/context.js'
import type { AdmittedEvent } from './admission/review.js'
import { Readiness } from './observability/readiness.js'
import { findKubeConfig, type FoundKubeConfig } from './kube/kubeconfig.js'
import type { NodeWatch } from './kube/nodes.js'
import type { PodCache } from './kube/pods.js'
import { Metrics } from './observability/metrics.js'
import type { Prepull } from './prepull/prepull.js'
import type { Prewarmer } from './prewarm/prewarmer.js'
import type { Remediator } from './remediation/remediator.js'
import type { PullSecretCopies } from './kube/pullsecrets.js'
import { DynamicCertificateSource } from './tls/dynamic-source.js'
import { CertificateReloader, type KeyPair, readKeyPair, type ReloaderEvents } from './tls/reloader.js'
import type { SelfManagedTls, SelfManagedTlsOptions } from './tls/selfmanaged.js'
import type { CertificateSource } from './tls/source.js'
import type { FastifyInstance } from 'fastify'

export interface ServeOptions {
  configPath?: string
  port: number
  host: string
  // The plain-HTTP metrics listener; undefined disables it, 0 picks a free port.
  metricsPort?: number
  tlsCertFile?: string
  tlsKeyFile?: string
  devCertDir?: string
  // Certificate kept in a Secret by the webhook itself (see server/tls/selfmanaged.ts).
  selfManagedTls?: SelfManagedTlsOptions & { checkIntervalMs?: number; setupTimeoutMs?: number }
  certReloadIntervalMs: number
  shutdownDelayMs: number
  env: NodeJS.ProcessEnv
  logger: Logger
  // Tests pass their own; otherwise the environment decides.
  kube?: FoundKubeConfig | null
  onAdmitted?: (event: AdmittedEvent) => void
  // Tests trust their own CA or resolver for registry probes.
  reachabilityProbe?: Partial<ProbeOptions>
  // Tests check allowlist files and URLs more often.
  allowlists?: Partial<Pick<AllowlistStoreOptions, 'fileCheckMs' | 'urlRefreshMs' | 'urlRetryMs' | 'timeoutMs'>>
}

export interface RunningServer {
  readonly port: number
  readonly metricsPort?: number
  readonly caFile?: string
  readonly config: LoadedConfig
  readonly metrics: Metrics
  readonly readiness: Readiness
  readonly webhook: WebhookApp
  readonly certificates: CertificateSource
  readonly selfManagedTls?: SelfManagedTls
  readonly kube?: FoundKubeConfig
  readonly reachability?: ReachabilityService
  readonly prepull?: Prepull
  readonly pods?: PodCache
  readonly nodes?: NodeWatch
  readonly remediation?: Remediator
  readonly prewarm?: Prewarmer
  readonly allowlists?: AllowlistStore
  readonly pullSecrets?: PullSecretCopies
  close(): Promise<void>
}

// Each step after the listeners closed (pre-pull stop, the last state sync) gets at most this.
export const FINAL_STEP_TIMEOUT_MS = 5000

function addressPort(app: FastifyInstance): number {
  const address = app.server.address()
  return typeof address === 'object' && address ? address.port : 0
}

export async function startServer(options: ServeOptions): Promise<RunningServer> {
  const { logger } = options
  const loaded = await loadConfig(options.configPath, options.env)
  logger.info(
    {
      source: loaded.source,
      mode: loaded.config.mode,
      mirror: loaded.config.mirror,
      registries: loaded.config.registries,
      noProxy: loaded.config.noProxy,
    },
    'configuration loaded',
  )

  const metrics = new Metrics({ processMetrics: true })
  const readiness = new Readiness()
  const kube = options.kube === undefined ? await findKubeConfig(options.env) : (options.kube ?? undefined)
  if (kube) logger.info({ source: kube.source, server: kube.kubeConfig.getCurrentCluster()?.server }, 'Kubernetes API configured')
  else logger.info('no Kubernetes API found (in-cluster, KUBECONFIG or ~/.kube/config); admission works, cluster features are off')

  let certFile = options.tlsCertFile
  let keyFile = options.tlsKeyFile
  let caFile: string | undefined
  let selfManagedTls: SelfManagedTls | undefined
  let selfManagedPair: KeyPair | undefined
  if (options.selfManagedTls) {
    if (certFile || keyFile) throw new Error('--tls-mode self-managed keeps its own certificate: drop --tls-cert and --tls-key')
    if (!kube) throw new Error('--tls-mode self-managed needs the Kubernetes API (in-cluster, KUBECONFIG or ~/.kube/config)')
    // Modules needed only by some configurations are loaded when used: start-up stays quick without them.
    const { SelfManagedTls, servingPairOf } = await import('./tls/selfmanaged.js')
    selfManagedTls = new SelfManagedTls(options.selfManagedTls, { kubeConfig: kube.kubeConfig, logger, registry: metrics.registry })
    // The pair goes to the HTTPS server in memory; the files are for readers outside the process.
    selfManagedPair = servingPairOf((await selfManagedTls.ensure(options.selfManagedTls.setupTimeoutMs)).state)
    ;({ certFile, keyFile, caFile } = selfManagedTls.files)
    logger.info(
      { secret: `${options.selfManagedTls.namespace}/${options.selfManagedTls.secretName}`, certFile },
      'serving the self-managed certificate',
    )
  } else if (!certFile || !keyFile) {
    if (certFile || keyFile) throw new Error('--tls-cert and --tls-key go together: set both or neither')
    const { ensureDevCertificates } = await import('./tls/devcerts.js')
    const dev = await ensureDevCertificates(options.devCertDir)
    certFile = dev.certFile
    keyFile = dev.keyFile
    caFile = dev.caFile
    logger.warn(
      { caFile, certFile, generated: dev.generated },
      `no TLS certificate configured: serving a development certificate for localhost and 127.0.0.1; its CA is ${caFile}`,
    )
  }
  const keyPair =
    selfManagedPair ??
    (await readKeyPair(certFile, keyFile).catch((error: Error) => {
      throw new Error(`cannot load the TLS certificate ${certFile} and key ${keyFile}: ${error.message}`)
    }))

  // The process's one Pod watch and one watch of the opted-in namespaces, for the features that read them.
  const kubeFledged = loaded.config.kubeFledged
  const learning = loaded.config.reachability.enabled && loaded.config.reachability.learning.enabled
  const remediating = loaded.config.remediation.enabled
  const pods =
    kube && (learning || kubeFledged.enabled || remediating)
      ? new (await import('./kube/pods.js')).PodCache({ kubeConfig: kube.kubeConfig, logger })
      : undefined
  // The mirrors' pull Secrets, copied into the opted-in namespaces (server/kube/pullsecrets.ts).
  const pullSecretNames = mirrorPullSecretNames(loaded.policy.mirrors)
  const namespaces =
    kube && (learning || remediating || pullSecretNames.length > 0)
      ? new (await import('./kube/namespaces.js')).OptedInNamespaces({
          kubeConfig: kube.kubeConfig,
          selector: loaded.config.reachability.learning.namespaceSelector,
          logger,
        })
      : undefined
  pods?.start()
  namespaces?.start()

  // Learned registry state; without an API server it still probes, but neither persists nor learns from Pods.
  const reachability = loaded.config.reachability.enabled
    ? new ReachabilityService({
        policy: loaded.policy,
        logger,
        kubeConfig: kube?.kubeConfig,
        watches: pods && namespaces ? { pods, namespaces } : undefined,
        namespace: options.env.POD_NAMESPACE?.trim() || DEFAULT_NAMESPACE,
        metricsRegistry: metrics.registry,
        probe: options.reachabilityProbe,
      })
    : undefined
  await reachability?.start()
  // The mirrors' allowlists, read before the first review (bounded wait) and kept current.
  const allowlists =
    loaded.policy.allowlists.size > 0
      ? new (await import('./mirrors/allowlists.js')).AllowlistStore({
          sources: loaded.policy.allowlists,
          logger: logger.child({ component: 'allowlists' }),
          ca: loaded.config.reachability.probes.caFile ? readFileSync(loaded.config.reachability.probes.caFile, 'utf8') : undefined,
          env: options.env,
          ...options.allowlists,
        })
      : undefined
  await allowlists?.start()
  const baseView = (): ReachabilityView => reachability?.view() ?? staticReachability(loaded.policy)
  const admissionView = (): ReachabilityView => (allowlists ? withAllowlists(baseView(), allowlists) : baseView())
  const prepull =
    kube && kubeFledged.enabled
      ? new (await import('./prepull/prepull.js')).Prepull({
          kubeConfig: kube.kubeConfig,
          config: kubeFledged,
          logger: logger.child({ component: 'prepull' }),
          registry: metrics.registry,
          pods,
        })
      : undefined
  // New nodes and images the kubelet removed: one Node watch, refreshes through pre-pull.
  const nodes =
    kube && prepull && kubeFledged.nodes.enabled
      ? new (await import('./kube/nodes.js')).NodeWatch({ kubeConfig: kube.kubeConfig, logger })
      : undefined
  const nodeRefresher =
    prepull && nodes
      ? new (await import('./prepull/nodes.js')).NodeRefresher({
          nodes,
          refresh: (choose) => prepull.refreshCaches(choose),
          config: kubeFledged.nodes,
          logger: logger.child({ component: 'prepull-nodes' }),
          registry: metrics.registry,
        })
      : undefined
  const ownNamespace = options.env.POD_NAMESPACE?.trim() || DEFAULT_NAMESPACE
  const remediation =
    kube && pods && namespaces && remediating
      ? new (await import('./remediation/remediator.js')).Remediator({
          kubeConfig: kube.kubeConfig,
          pods,
          namespaces,
          policy: loaded.policy,
          reachability: admissionView,
          config: loaded.config.remediation,
          intervalMs: loaded.config.imageCheckIntervalSeconds * 1000,
          namespace: ownNamespace,
          logger,
          registry: metrics.registry,
          prepull: prepull?.offer,
        })
      : undefined
  const pullSecrets =
    kube && namespaces && pullSecretNames.length > 0
      ? new (await import('./kube/pullsecrets.js')).PullSecretCopies({
          kubeConfig: kube.kubeConfig,
          namespaces,
          sourceNamespace: ownNamespace,
          names: pullSecretNames,
          excludedNamespaces: loaded.policy.excludedNamespaces,
          // kube-fledged's pull Jobs pull from the mirror too (with kubeFledged.imagePullSecrets naming the Secret).
          alsoIn: kubeFledged.enabled ? [kubeFledged.namespace] : [],
          resyncMs: loaded.config.pull.secretResyncSeconds * 1000,
          logger,
        })
      : undefined
  if (pullSecretNames.length > 0 && !pullSecrets) {
    logger.warn(
      { secrets: pullSecretNames },
      'no Kubernetes API: the mirror pull Secrets cannot be copied, so their mirrors get no rewrites',
    )
  }
  pullSecrets?.start()
  // Scheduled pre-warm of workloads' images: off unless configured.
  const prewarm =
    kube && loaded.config.prewarm.enabled
      ? new (await import('./prewarm/prewarmer.js')).Prewarmer({
          kubeConfig: kube.kubeConfig,
          config: loaded.config,
          policy: loaded.policy,
          reachability: admissionView,
          secrets: pullSecretNames.length > 0 ? (pullSecrets ?? { has: () => false }) : undefined,
          prepull,
          namespace: ownNamespace,
          logger: logger.child({ component: 'prewarm' }),
          registry: metrics.registry,
        })
      : undefined
  if (loaded.config.prewarm.enabled && !kube) logger.warn('prewarm is enabled but no Kubernetes API was found: it does not run')
  if (prewarm && !prepull) logger.warn('prewarm is enabled but kubeFledged is not: runs only report what they would pull')
  const context: AdmissionContext = {
    policy: loaded.policy,
    reachability: admissionView(),
    // Without the copies, a credentialed mirror is never written into a Pod (its Secret would be missing).
    secrets: pullSecretNames.length > 0 ? (pullSecrets ?? { has: () => false }) : undefined,
  }
  const webhook = await buildWebhookApp({
    logger,
    metrics,
    readiness,
    context: () => context,
    // Pre-pull only enqueues here; its API writes happen later.
    onAdmitted: options.onAdmitted ?? prepull?.onAdmitted,
    tls: keyPair,
    server: loaded.config.server,
  })
  const certificateEvents: ReloaderEvents = {
    onReload: () => {
      metrics.certReloads.inc({ result: 'success' })
      logger.info({ certFile }, 'serving certificate reloaded')
    },
    onError: (error) => {
      metrics.certReloads.inc({ result: 'error' })
      logger.warn(
        { certFile, err: error.message },
        'serving certificate files changed but do not form a valid pair yet; keeping the previous one',
      )
    },
  }
  // Self-managed: handed over in memory; otherwise the files, reloaded when they change.
  const dynamic = selfManagedTls ? new DynamicCertificateSource(keyPair, httpsServerOf(webhook), certificateEvents) : undefined
  const reloader = dynamic ? undefined : new CertificateReloader(certFile, keyFile, keyPair, httpsServerOf(webhook), certificateEvents)
  const certificates: CertificateSource = dynamic ?? reloader!

  await webhook.listen({ port: options.port, host: options.host })
  reloader?.start(options.certReloadIntervalMs)
  prepull?.start()
  nodeRefresher?.start()
  nodes?.start()
  remediation?.start()
  prewarm?.start()
  selfManagedTls?.start(options.selfManagedTls?.checkIntervalMs ?? 60_000, (pair) => dynamic?.set(pair))
  let ops: FastifyInstance | undefined
  if (options.metricsPort !== undefined) {
    ops = await buildOpsApp({ logger, metrics, readiness, server: loaded.config.server })
    const staticState = () => ({
      version: 1 as const,
      writtenAt: new Date().toISOString(),
      registries: [],
      refusals: [],
      static: [...loaded.policy.unreachable],
    })
    await ops.register(statePlugin, {
      snapshot: () => {
        const snap = reachability?.snapshot() ?? staticState()
        const mirrors = mirrorStates(loaded.policy, context.reachability, snap.refusals, allowlists?.status(), Date.now())
        return { ...snap, remediations: remediation?.recent() ?? [], mirrors, ...(prewarm ? { prewarm: prewarm.lastRun() ?? null } : {}) }
      },
    })
    await ops.listen({ port: options.metricsPort, host: options.host })
  }
  const port = addressPort(webhook)
  const metricsPort = ops ? addressPort(ops) : undefined
  logger.info({ port, metricsPort, host: options.host }, `mirrorhook listening on https://${options.host}:${port}/mutate`)

  const drainMs = loaded.config.server.drainTimeoutSeconds * 1000
  // Listeners first (bounded by the drain timeout), then the final steps, each bounded too.
  const drain = async (): Promise<void> => {
    const listeners = [webhook, ...(ops ? [ops] : [])]
    // Idle connections are closed by close(); busy ones once their response is sent.
    const closed = Promise.all(listeners.map((app) => app.close()))
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<true>((resolve) => (timer = setTimeout(() => resolve(true), drainMs)))
    try {
      if (await Promise.race([closed.then(() => false), expired])) {
        const open = await new Promise<number>((resolve) => webhook.server.getConnections((_e, n) => resolve(n ?? 0)))
        logger.warn({ drainMs, open }, 'drain timeout reached: closing the remaining connections')
        for (const app of listeners) app.server.closeAllConnections()
        await closed
      }
    } finally {
      clearTimeout(timer)
    }
  }
  const finalStep = async (name: string, run: () => Promise<unknown>): Promise<string> => {
    let timer: NodeJS.Timeout | undefined
    const outcome = await Promise.race([
      run().then(
        () => 'done',
        (error: Error) => `failed: ${error.message}`,
      ),
      new Promise<string>((resolve) => (timer = setTimeout(() => resolve('timed out'), FINAL_STEP_TIMEOUT_MS))),
    ])
    clearTimeout(timer)
    logger.info({ step: name, outcome }, `shutdown: ${name} ${outcome}`)
    return `${name}: ${outcome}`
  }

  let closing: Promise<void> | undefined
  return {
    port,
    metricsPort,
    caFile,
    config: loaded,
    metrics,
    readiness,
    webhook,
    certificates,
    selfManagedTls,
    kube,
    reachability,
    prepull,
    pods,
    nodes,
    remediation,
    allowlists,
    pullSecrets,
    prewarm,
    close() {
      closing ??= (async () => {
        readiness.beginShutdown()
        // From now on each answer closes its connection, so clients (the API server keeps its
        // connections) move to other replicas during the shutdown delay, and few stay idle here.
        beginDrain(webhook)
        if (ops) beginDrain(ops)
        logger.info({ delayMs: options.shutdownDelayMs, drainMs }, 'shutting down: not ready, draining in-flight reviews')
        if (options.shutdownDelayMs > 0) await new Promise((r) => setTimeout(r, options.shutdownDelayMs))
        certificates.stop()
        await selfManagedTls?.stop()
        await drain()
        const steps: string[] = []
        if (remediation) steps.push(await finalStep('remediation stop', () => remediation.stop()))
        if (nodeRefresher) steps.push(await finalStep('node refresh stop', () => nodeRefresher.stop()))
        if (prewarm) steps.push(await finalStep('pre-warm stop', () => prewarm.stop()))
        if (prepull) steps.push(await finalStep('pre-pull stop', () => prepull.stop()))
        if (pullSecrets) steps.push(await finalStep('pull Secret copies stop', () => pullSecrets.stop()))
        // With a ConfigMap, stopping writes what this replica learned for the next one.
        const reachabilityStep = reachability?.features.persistence ? 'final state sync' : 'reachability stop'
        if (reachability) steps.push(await finalStep(reachabilityStep, () => reachability.stop()))
        await allowlists?.stop()
        await Promise.all([pods?.stop(), namespaces?.stop(), nodes?.stop()])
        if (kube) await (await import('./kube/client.js')).closeClients(kube.kubeConfig)
        logger.info({ steps }, 'stopped')
      })()
      return closing
    },
  }
}
