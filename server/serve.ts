// `mirrorhook serve`: wires configuration, TLS, the two listeners and the
// Kubernetes client together. Everything here is start-up and shutdown.
import type { Logger } from 'pino'
import { staticReachability } from './core/rewrite.js'
import { loadConfig, type LoadedConfig } from './config/load.js'
import { buildOpsApp, buildWebhookApp, httpsServerOf, type WebhookApp } from './http/app.js'
import { statePlugin } from './http/plugins/state.js'
import { DEFAULT_NAMESPACE } from './core/config.js'
import type { ProbeOptions } from './reachability/probe.js'
import { ReachabilityService } from './reachability/service.js'
import type { AdmissionContext, AdmittedEvent } from './http/context.js'
import { Readiness } from './observability/readiness.js'
import { closeClients } from './kube/client.js'
import { findKubeConfig, type FoundKubeConfig } from './kube/kubeconfig.js'
import { OptedInNamespaces } from './kube/namespaces.js'
import { PodCache } from './kube/pods.js'
import { Metrics } from './observability/metrics.js'
import { Prepull } from './prepull/prepull.js'
import { Remediator } from './remediation/remediator.js'
import { ensureDevCertificates } from './tls/devcerts.js'
import { DynamicCertificateSource } from './tls/dynamic-source.js'
import { CertificateReloader, type KeyPair, readKeyPair, type ReloaderEvents } from './tls/reloader.js'
import { SelfManagedTls, type SelfManagedTlsOptions, servingPairOf } from './tls/selfmanaged.js'
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
  readonly remediation?: Remediator
  close(): Promise<void>
}

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
  const kube = options.kube === undefined ? findKubeConfig(options.env) : (options.kube ?? undefined)
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
  const pods = kube && (learning || kubeFledged.enabled || remediating) ? new PodCache({ kubeConfig: kube.kubeConfig, logger }) : undefined
  const namespaces =
    kube && (learning || remediating)
      ? new OptedInNamespaces({ kubeConfig: kube.kubeConfig, selector: loaded.config.reachability.learning.namespaceSelector, logger })
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
  const prepull =
    kube && kubeFledged.enabled
      ? new Prepull({
          kubeConfig: kube.kubeConfig,
          config: kubeFledged,
          logger: logger.child({ component: 'prepull' }),
          registry: metrics.registry,
          pods,
        })
      : undefined
  const ownNamespace = options.env.POD_NAMESPACE?.trim() || DEFAULT_NAMESPACE
  const remediation =
    kube && pods && namespaces && remediating
      ? new Remediator({
          kubeConfig: kube.kubeConfig,
          pods,
          namespaces,
          policy: loaded.policy,
          reachability: () => reachability?.view() ?? staticReachability(loaded.policy),
          config: loaded.config.remediation,
          intervalMs: loaded.config.imageCheckIntervalSeconds * 1000,
          namespace: ownNamespace,
          logger,
          registry: metrics.registry,
          prepull: prepull?.offer,
        })
      : undefined
  const context: AdmissionContext = { policy: loaded.policy, reachability: reachability?.view() ?? staticReachability(loaded.policy) }
  const webhook = await buildWebhookApp({
    logger,
    metrics,
    readiness,
    context: () => context,
    // Pre-pull only enqueues here; its API writes happen later.
    onAdmitted: options.onAdmitted ?? prepull?.onAdmitted,
    tls: keyPair,
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
  remediation?.start()
  selfManagedTls?.start(options.selfManagedTls?.checkIntervalMs ?? 60_000, (pair) => dynamic?.set(pair))
  let ops: FastifyInstance | undefined
  if (options.metricsPort !== undefined) {
    ops = await buildOpsApp({ logger, metrics, readiness })
    const staticState = () => ({
      version: 1 as const,
      writtenAt: new Date().toISOString(),
      registries: [],
      refusals: [],
      static: [...loaded.policy.unreachable],
    })
    await ops.register(statePlugin, {
      snapshot: () => ({ ...(reachability?.snapshot() ?? staticState()), remediations: remediation?.recent() ?? [] }),
    })
    await ops.listen({ port: options.metricsPort, host: options.host })
  }
  const port = addressPort(webhook)
  const metricsPort = ops ? addressPort(ops) : undefined
  logger.info({ port, metricsPort, host: options.host }, `mirrorhook listening on https://${options.host}:${port}/mutate`)

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
    remediation,
    close() {
      closing ??= (async () => {
        readiness.beginShutdown()
        logger.info({ delayMs: options.shutdownDelayMs }, 'shutting down: not ready, draining in-flight reviews')
        if (options.shutdownDelayMs > 0) await new Promise((r) => setTimeout(r, options.shutdownDelayMs))
        certificates.stop()
        await selfManagedTls?.stop()
        await webhook.close()
        await remediation?.stop()
        await prepull?.stop()
        await reachability?.stop()
        await Promise.all([pods?.stop(), namespaces?.stop()])
        if (kube) await closeClients(kube.kubeConfig)
        await ops?.close()
        logger.info('stopped')
      })()
      return closing
    },
  }
}
