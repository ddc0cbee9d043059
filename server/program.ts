// The `mirrorhook` command line: serve, dry-run, rewrite.
import { readFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Command, InvalidArgumentError, Option } from 'commander'
import { isMap, isScalar, isSeq, parseAllDocuments, type Document } from 'yaml'
import { ConfigError } from './core/config.js'
import { planManifest } from './core/manifests.js'
import type { ImagePlan, JsonPatchOp } from './core/pod.js'
import { decideImage, type ImageDecision, staticReachability } from './core/rewrite.js'
import { loadConfig } from './config-file.js'
import { configOnlyView, formatState, loadState, type StateSource, viewFor } from './reachability/cli.js'
import { createLogger } from './observability/logger.js'
import { startServer } from './serve.js'
import type { SelfManagedTlsOptions } from './tls/selfmanaged.js'

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

function describe(decision: ImageDecision): string {
  return decision.action === 'rewrite'
    ? `${decision.original} -> ${decision.rewritten} (${decision.reason})`
    : `${decision.original} kept: ${decision.reason}`
}

// JSON Pointer → yaml path; numeric segments index sequences.
function pointerPath(pointer: string): (string | number)[] {
  return pointer
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s))
}

// Applied to the YAML document itself so comments and layout survive.
function applyToDocument(doc: Document, ops: readonly JsonPatchOp[]): void {
  for (const op of ops) {
    if (op.op !== 'add' && op.op !== 'replace') continue
    const path = pointerPath(op.path)
    const node = doc.getIn(path, true)
    if (isScalar(node) && typeof op.value === 'string') node.value = op.value
    else doc.setIn(path, doc.createNode(op.value))
  }
}

async function readInput(file: string): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = []
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
    return Buffer.concat(chunks).toString('utf8')
  }
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    throw new CliError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
  }
}

class CliError extends Error {}

function reportPlans(kind: string, name: string, plans: readonly ImagePlan[]): void {
  for (const p of plans) process.stderr.write(`${kind}/${name} ${p.field}[${p.name}]: ${describe(p.decision)}\n`)
}

async function dryRun(options: { file: string; config?: string }): Promise<void> {
  const { policy } = await loadConfig(options.config)
  const reachability = staticReachability(policy)
  const text = await readInput(options.file)
  const docs = parseAllDocuments(text)
  if (!Array.isArray(docs)) return
  for (const [i, doc] of docs.entries()) {
    const error = doc.errors[0]
    if (error) throw new CliError(`${options.file}: document ${i + 1} is not valid YAML: ${error.message.split('\n')[0]}`)
  }
  const out: string[] = []
  for (const doc of docs) {
    const contents = doc.contents
    if (contents === null) continue
    const value: unknown = doc.toJS()
    const kind = isMap(contents) ? String(doc.get('kind') ?? '') : ''
    const items = kind === 'List' && isSeq(doc.get('items')) ? (value as { items: unknown[] }).items : undefined
    const targets = items ? items.map((item, index) => ({ item, prefix: `/items/${index}` })) : [{ item: value, prefix: '' }]
    for (const { item, prefix } of targets) {
      const result = planManifest(item, policy, reachability)
      if (result.unsupported) {
        process.stderr.write(`${result.kind}/${result.name}: no Pod spec, left as is\n`)
        continue
      }
      if (result.skip) {
        process.stderr.write(`${result.kind}/${result.name}: skipped: ${result.skip.reason}\n`)
        continue
      }
      reportPlans(result.kind, result.name, result.plans)
      applyToDocument(
        doc,
        result.patch.map((op) => ({ ...op, path: `${prefix}${op.path}` })),
      )
    }
    out.push(doc.toString())
  }
  process.stdout.write(out.map((d, i) => (i === 0 || d.startsWith('---') ? d : `---\n${d}`)).join(''))
}

async function rewrite(images: string[], options: { config?: string } & StateSource): Promise<void> {
  const { policy } = await loadConfig(options.config)
  // The decision as the server would take it now, with the evidence it has.
  const reachability = options.url || options.fromCluster ? viewFor(policy, await loadState(policy, options)) : configOnlyView(policy)
  for (const image of images) process.stdout.write(`${describe(decideImage(image, policy, reachability))}\n`)
}

async function state(options: { config?: string; output: string } & StateSource): Promise<void> {
  const { policy } = await loadConfig(options.config)
  const loaded = await loadState(policy, options)
  if (options.output === 'json') process.stdout.write(`${JSON.stringify(loaded.snapshot, null, 2)}\n`)
  else process.stdout.write(formatState(loaded, [...policy.unreachable]))
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

export function buildCli(): Command {
  const program = new Command('mirrorhook')
    .description('Rewrites Pod images to a registry mirror at admission time, and pre-pulls them with kube-fledged.')
    .showHelpAfterError()

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

  program
    .command('dry-run')
    .description('print the manifests as mirrorhook would admit them; decisions go to stderr (no cluster needed)')
    .requiredOption('-f, --filename <file>', 'YAML file with one or more documents, or - for stdin')
    .option('-c, --config <file>', 'configuration file (YAML)')
    .action(async (opts) => dryRun({ file: opts.filename, config: opts.config }))

  program
    .command('rewrite')
    .description('show what mirrorhook does with each image reference')
    .argument('<image...>', 'image references as written in a Pod spec')
    .option('-c, --config <file>', 'configuration file (YAML)')
    .option('--url <url>', 'use the learned state of a running server (its metrics listener, e.g. http://127.0.0.1:9090)')
    .option('--from-cluster', 'use the learned state kept in the cluster (the ConfigMap, through the kubeconfig)')
    .action(async (images: string[], opts) => rewrite(images, { config: opts.config, url: opts.url, fromCluster: opts.fromCluster }))

  program
    .command('state')
    .description('list each registry with its state, the evidence and since when')
    .option('--url <url>', 'ask a running server (its metrics listener, e.g. http://127.0.0.1:9090); default: read the ConfigMap')
    .option('-c, --config <file>', 'configuration file (YAML): where the ConfigMap is, the static unreachable list')
    .addOption(
      new Option(
        '-n, --namespace <namespace>',
        "the ConfigMap's namespace (default: reachability.persistence.namespace, POD_NAMESPACE, mirrorhook)",
      ),
    )
    .option('--configmap <name>', 'the ConfigMap (default: reachability.persistence.configMap)')
    .addOption(new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table'))
    .action(async (opts) =>
      state({
        config: opts.config,
        url: opts.url,
        namespace: opts.namespace,
        configMap: opts.configmap,
        output: opts.output,
        fromCluster: !opts.url,
      }),
    )

  return program
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildCli().parseAsync(argv)
    return 0
  } catch (error) {
    if (error instanceof ConfigError || error instanceof CliError) {
      process.stderr.write(`mirrorhook: ${error.message}\n`)
      return 1
    }
    process.stderr.write(`mirrorhook: ${(error as Error).message}\n`)
    return 1
  }
}
