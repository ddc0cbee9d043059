// `mirrorhook serve`: wires configuration, TLS, the two listeners and the
// Kubernetes client together. Everything here is start-up and shutdown.
import type { Logger } from 'pino'
import { staticReachability } from './core/rewrite.js'
import { loadConfig, type LoadedConfig } from './config-file.js'
import { buildOpsApp, buildWebhookApp, httpsServerOf, type WebhookApp } from './http/app.js'
import { statePlugin } from './http/plugins/state.js'
import { DEFAULT_NAMESPACE } from './core/config.js'
import type { ProbeOptions } from './reachability/probe.js'
import { ReachabilityService } from './reachability/service.js'
import { type AdmissionContext, type AdmittedEvent, Readiness } from './http/context.js'
import { findKubeConfig, type FoundKubeConfig } from './kube/kubeconfig.js'
import { Metrics } from './observability/metrics.js'
import type { Prepull } from './prepull/index.js'
import { CertificateReloader, readKeyPair } from './tls/reloader.js'
import type { SelfManagedTls, SelfManagedTlsOptions } from './tls/selfmanaged.js'
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
  readonly reloader: CertificateReloader
  readonly selfManagedTls?: SelfManagedTls
  readonly kube?: FoundKubeConfig
  readonly reachability?: ReachabilityService
  readonly prepull?: Prepull
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
  const kube = options.kube === undefined ? await findKubeConfig(options.env) : (options.kube ?? undefined)
  if (kube) logger.info({ source: kube.source, server: kube.kubeConfig.getCurrentCluster()?.server }, 'Kubernetes API configured')
  else logger.info('no Kubernetes API found (in-cluster, KUBECONFIG or ~/.kube/config); admission works, cluster features are off')

  let certFile = options.tlsCertFile
  let keyFile = options.tlsKeyFile
  let caFile: string | undefined
  let selfManagedTls: SelfManagedTls | undefined
  if (options.selfManagedTls) {
    if (certFile || keyFile) throw new Error('--tls-mode self-managed keeps its own certificate: drop --tls-cert and --tls-key')
    if (!kube) throw new Error('--tls-mode self-managed needs the Kubernetes API (in-cluster, KUBECONFIG or ~/.kube/config)')
    // Modules needed only by some configurations are loaded when used: start-up stays quick without them.
    const { SelfManagedTls } = await import('./tls/selfmanaged.js')
    selfManagedTls = new SelfManagedTls(options.selfManagedTls, { kubeConfig: kube.kubeConfig, logger, registry: metrics.registry })
    await selfManagedTls.ensure(options.selfManagedTls.setupTimeoutMs)
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
  const keyPair = await readKeyPair(certFile, keyFile).catch((error: Error) => {
    throw new Error(`cannot load the TLS certificate ${certFile} and key ${keyFile}: ${error.message}`)
  })

  // Learned registry state; without an API server it still probes, but neither persists nor learns from Pods.
  const reachability = loaded.config.reachability.enabled
    ? new ReachabilityService({
        policy: loaded.policy,
        logger,
        kubeConfig: kube?.kubeConfig,
        namespace: options.env.POD_NAMESPACE?.trim() || DEFAULT_NAMESPACE,
        metricsRegistry: metrics.registry,
        probe: options.reachabilityProbe,
      })
    : undefined
  await reachability?.start()
  const kubeFledged = loaded.config.kubeFledged
  const prepull =
    kube && kubeFledged.enabled
      ? new (await import('./prepull/index.js')).Prepull({
          kubeConfig: kube.kubeConfig,
          config: kubeFledged,
          logger: logger.child({ component: 'prepull' }),
          registry: metrics.registry,
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
  const reloader = new CertificateReloader(certFile, keyFile, keyPair, httpsServerOf(webhook), {
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
  })

  await webhook.listen({ port: options.port, host: options.host })
  reloader.start(options.certReloadIntervalMs)
  prepull?.start()
  selfManagedTls?.start(options.selfManagedTls?.checkIntervalMs ?? 60_000, () => void reloader.check())
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
    await ops.register(statePlugin, { snapshot: () => reachability?.snapshot() ?? staticState() })
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
    reloader,
    selfManagedTls,
    kube,
    reachability,
    prepull,
    close() {
      closing ??= (async () => {
        readiness.beginShutdown()
        logger.info({ delayMs: options.shutdownDelayMs }, 'shutting down: not ready, draining in-flight reviews')
        if (options.shutdownDelayMs > 0) await new Promise((r) => setTimeout(r, options.shutdownDelayMs))
        reloader.stop()
        await selfManagedTls?.stop()
        await webhook.close()
        await prepull?.stop()
        await reachability?.stop()
        await ops?.close()
        logger.info('stopped')
      })()
      return closing
    },
  }
}
