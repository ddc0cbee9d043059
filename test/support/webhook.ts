// Shared glue for end-to-end tests: run mirrorhook on loopback and register it
// with the real API server through the project's own webhook configuration.
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino, type Logger } from 'pino'
import { parse as parseYaml, stringify } from 'yaml'
import { startServer, type RunningServer, type ServeOptions } from '../../server/serve.js'
import type { ControlPlane } from './controlplane.js'

const WEBHOOK_CONFIG = new URL('../../webhook-config/mutating-webhook.yaml', import.meta.url)

export interface TestWebhook {
  server: RunningServer
  caPem: string
  url: string
  stop(): Promise<void>
}

export interface TestWebhookOptions {
  // The configuration file's content; omitted = the embedded default.
  config?: Record<string, unknown>
  port?: number
  // Reuse the certificates of an earlier instance (a restart on the same port).
  devCertDir?: string
  logger?: Logger
  extra?: Partial<ServeOptions>
}

/** Starts the webhook in this process on 127.0.0.1 with development certificates. */
export async function startTestWebhook(options: TestWebhookOptions = {}): Promise<TestWebhook & { devCertDir: string }> {
  const dir = options.devCertDir ?? (await mkdtemp(join(tmpdir(), 'mirrorhook-e2e-')))
  let configPath: string | undefined
  if (options.config) {
    configPath = join(dir, 'config.yaml')
    await writeFile(configPath, stringify(options.config))
  }
  const server = await startServer({
    configPath,
    port: options.port ?? 0,
    host: '127.0.0.1',
    devCertDir: dir,
    certReloadIntervalMs: 1000,
    shutdownDelayMs: 0,
    env: {},
    logger: options.logger ?? pino({ level: process.env.MIRRORHOOK_TEST_LOG_LEVEL ?? 'silent' }),
    kube: null,
    ...options.extra,
  })
  const caPem = await readFile(server.caFile!, 'utf8')
  return { server, caPem, url: `https://127.0.0.1:${server.port}/mutate`, devCertDir: dir, stop: () => server.close() }
}

/** The project's MutatingWebhookConfiguration, pointed at a URL instead of a Service. */
export function webhookConfigurationFor(url: string, caPem: string, name = 'mirrorhook'): Record<string, any> {
  const config = parseYaml(readFileSync(WEBHOOK_CONFIG, 'utf8'))
  config.metadata.name = name
  for (const webhook of config.webhooks) {
    webhook.clientConfig = { url, caBundle: Buffer.from(caPem).toString('base64') }
  }
  return config
}

export async function applyObject(cp: ControlPlane, object: unknown): Promise<void> {
  const r = await cp.kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], { input: JSON.stringify(object) })
  if (r.code !== 0) throw new Error(`kubectl apply failed: ${r.stderr}`)
}

export async function createNamespace(cp: ControlPlane, name: string, enabled: boolean): Promise<void> {
  await applyObject(cp, {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, labels: enabled ? { 'mirrorhook.io/enabled': 'true' } : {} },
  })
}

/**
 * Registers the webhook and waits until the API server calls it: it picks up
 * new configurations asynchronously, so poll with a server-side dry-run.
 */
export async function registerWebhook(
  cp: ControlPlane,
  webhook: { url: string; caPem: string },
  namespace: string,
  // An image the webhook's configuration rewrites.
  probeImage = 'registry.k8s.io/pause:3.10',
  name = 'mirrorhook',
): Promise<void> {
  await applyObject(cp, webhookConfigurationFor(webhook.url, webhook.caPem, name))
  const probe = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'mirrorhook-probe', namespace },
    spec: { containers: [{ name: 'probe', image: probeImage }] },
  }
  const deadline = Date.now() + 30_000
  for (;;) {
    const r = await cp.kubectl(['create', '--dry-run=server', '-o', 'json', '-f', '-'], { input: JSON.stringify(probe) })
    if (r.code === 0 && JSON.parse(r.stdout).spec.containers[0].image !== probe.spec.containers[0]!.image) return
    if (Date.now() > deadline) throw new Error(`the API server never called the webhook: ${r.stderr || r.stdout.slice(0, 300)}`)
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
}
