// `mirrorhook serve`: the admission webhook and its ops listener, until SIGTERM or SIGINT.
import { isIP } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Command, InvalidArgumentError, Option } from 'commander'
import { createLogger } from '../observability/logger.js'
import { startServer } from '../serve.js'
import type { SelfManagedTlsOptions } from '../tls/selfmanaged.js'

function port(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port number from 0 to 65535')
  return n
}

function seconds(value: string): number {
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number of seconds')
  return n
}

function selfManagedOptions(opts: Record<string, string | undefined>): SelfManagedTlsOptions {
  const sans = (opts.tlsExtraSans ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  return {
    namespace: opts.namespace ?? 'mirrorhook',
    secretName: opts.tlsSecret ?? 'mirrorhook-tls',
    webhookConfigName: opts.webhookConfigName ?? 'mirrorhook',
    serviceName: opts.serviceName ?? 'mirrorhook',
    certDir: opts.tlsCertDir ?? join(tmpdir(), 'mirrorhook-tls'),
    extraDnsNames: sans.filter((s) => isIP(s) === 0),
    extraIpAddresses: sans.filter((s) => isIP(s) !== 0),
  }
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run the admission webhook (HTTPS) and the metrics listener')
    .option('-c, --config <file>', 'configuration file (YAML); without it the embedded default is used')
    .addOption(new Option('-p, --port <port>', 'HTTPS port for /mutate and probes').env('PORT').default(8443).argParser(port))
    .addOption(new Option('--host <address>', 'address to listen on').default('0.0.0.0'))
    .addOption(new Option('--metrics-port <port>', 'plain-HTTP port for /metrics and probes; "off" disables it').default('9090'))
    .addOption(new Option('--tls-cert <file>', 'serving certificate (PEM), reloaded when it changes').env('TLS_CERT_FILE'))
    .addOption(new Option('--tls-key <file>', 'serving key (PEM), reloaded when it changes').env('TLS_KEY_FILE'))
    .addOption(new Option('--dev-cert-dir <dir>', 'where development certificates go when no certificate is set').default('.dev-certs'))
    .addOption(
      new Option(
        '--tls-mode <mode>',
        'self-managed: keep a CA and serving certificate in a Secret and the caBundle in the webhook configuration',
      )
        .choices(['self-managed'])
        .env('TLS_MODE'),
    )
    .addOption(
      new Option('--tls-secret <name>', 'self-managed: the Secret holding the certificates')
        .env('TLS_SECRET_NAME')
        .default('mirrorhook-tls'),
    )
    .addOption(
      new Option('--tls-cert-dir <dir>', 'self-managed: writable folder for the serving files').default(join(tmpdir(), 'mirrorhook-tls')),
    )
    .addOption(
      new Option('--tls-extra-sans <names>', 'self-managed: extra DNS names or IPs for the serving certificate, comma-separated').env(
        'TLS_EXTRA_SANS',
      ),
    )
    .addOption(
      new Option('--webhook-config-name <name>', 'self-managed: the MutatingWebhookConfiguration whose caBundle it keeps')
        .env('WEBHOOK_CONFIG_NAME')
        .default('mirrorhook'),
    )
    .addOption(
      new Option('--service-name <name>', 'self-managed: the Service in front of the webhook (certificate names)')
        .env('SERVICE_NAME')
        .default('mirrorhook'),
    )
    .addOption(new Option('--namespace <namespace>', "the webhook's own namespace").env('POD_NAMESPACE').default('mirrorhook'))
    .addOption(new Option('--cert-reload-interval <seconds>', 'how often the certificate files are checked').default(10).argParser(seconds))
    .addOption(
      new Option('--shutdown-delay <seconds>', 'time between turning not-ready and closing, so endpoints drop the Pod first')
        .default(process.env.KUBERNETES_SERVICE_HOST ? 5 : 0)
        .argParser(seconds),
    )
    .addOption(new Option('--log-level <level>', 'pino log level').env('LOG_LEVEL').default('info'))
    .action(async (opts) => {
      const logger = createLogger(opts.logLevel)
      const metricsPort = opts.metricsPort === 'off' ? undefined : port(opts.metricsPort)
      const server = await startServer({
        configPath: opts.config,
        port: opts.port,
        host: opts.host,
        metricsPort,
        tlsCertFile: opts.tlsCert,
        tlsKeyFile: opts.tlsKey,
        devCertDir: opts.devCertDir,
        selfManagedTls: opts.tlsMode === 'self-managed' ? selfManagedOptions(opts) : undefined,
        certReloadIntervalMs: opts.certReloadInterval * 1000,
        shutdownDelayMs: opts.shutdownDelay * 1000,
        // --namespace is the one source of the own namespace (excluded namespaces, state ConfigMap).
        env: { ...process.env, POD_NAMESPACE: opts.namespace },
        logger,
      })
      const stop = (signal: string) => {
        logger.info({ signal }, 'signal received')
        server.close().then(
          () => process.exit(0),
          (error: unknown) => {
            logger.error({ err: error }, 'shutdown failed')
            process.exit(1)
          },
        )
      }
      process.once('SIGTERM', stop)
      process.once('SIGINT', stop)
    })
}
