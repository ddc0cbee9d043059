// The whole configuration, composed once above core/ and the features (as fastify composes
// its options in one place): the core's keys and each feature's section make one strict
// schema; the seed tool's environment variables are laid over the file; the result is
// validated once, with every problem named by its key.
import { z } from 'zod'
import { ConfigError, coreConfigShape, DEFAULT_NAMESPACE, describeIssue, normaliseMirrorPrefix, splitList } from '../core/config.js'
import { serverSchema } from '../http/config.js'
import { kubeFledgedSchema } from '../prepull/config.js'
import { prewarmSchema } from '../prewarm/config.js'
import { reachabilitySchema } from '../reachability/config.js'
import { remediationSchema } from '../remediation/config.js'

export const configSchema = z
  .object({
    ...coreConfigShape,
    // Registry reachability: probes, learning, shared state (server/reachability/config.ts).
    reachability: reachabilitySchema.prefault({}),
    // Pre-pull with kube-fledged (server/prepull/config.ts).
    kubeFledged: kubeFledgedSchema.prefault({}),
    // Timeouts, drain and review memory of the listeners (server/http/config.ts).
    server: serverSchema.prefault({}),
    // Pods already failing to pull (server/remediation/config.ts).
    remediation: remediationSchema.prefault({}),
    // Scheduled pre-warm of workloads' images (server/prewarm/config.ts).
    prewarm: prewarmSchema.prefault({}),
  })
  .strict()

export type Config = z.infer<typeof configSchema>
export type ConfigInput = z.input<typeof configSchema>

// The environment variables of the seed tool (k8s-docker-proxy), applied over `input`.
export interface EnvOverlay {
  DOCKER_PROXY_URL?: string
  NO_PROXY_DOCKER_DOMAIN?: string
  KUBE_FLEDGED_NAMESPACE?: string
  IMAGE_CHECK_INTERVAL?: string
  POD_NAMESPACE?: string
}

/**
 * Builds the effective configuration.
 * `file` is the parsed YAML (undefined when no --config was given).
 * Without a file, DOCKER_PROXY_URL alone means what it meant for the seed tool:
 * rewrite every registry that is not excluded.
 */
export function resolveConfig(file: unknown, env: EnvOverlay = {}, source?: string): Config {
  const problems: string[] = []
  if (file !== undefined && file !== null && (typeof file !== 'object' || Array.isArray(file))) {
    throw new ConfigError(['the configuration must be a YAML mapping'], source)
  }
  const input: Record<string, unknown> = { ...((file as Record<string, unknown> | null) ?? {}) }

  const proxyUrl = env.DOCKER_PROXY_URL?.trim()
  if (proxyUrl) {
    const prefix = normaliseMirrorPrefix(proxyUrl)
    const mirror = (input.mirror && typeof input.mirror === 'object' ? input.mirror : {}) as Record<string, unknown>
    input.mirror = { ...mirror, prefix }
    if (file === undefined || file === null) {
      input.registries = ['*']
      input.mode = 'always'
    }
  } else if (file === undefined || file === null) {
    input.mode = 'auto'
  }
  if (env.NO_PROXY_DOCKER_DOMAIN?.trim()) {
    const fromFile = Array.isArray(input.noProxy) ? input.noProxy : []
    input.noProxy = [...fromFile, ...splitList(env.NO_PROXY_DOCKER_DOMAIN)]
  }
  if (env.KUBE_FLEDGED_NAMESPACE?.trim()) {
    const kf = (input.kubeFledged && typeof input.kubeFledged === 'object' ? input.kubeFledged : {}) as Record<string, unknown>
    input.kubeFledged = { ...kf, namespace: env.KUBE_FLEDGED_NAMESPACE.trim() }
  }
  if (env.IMAGE_CHECK_INTERVAL?.trim()) {
    const seconds = Number(env.IMAGE_CHECK_INTERVAL.trim())
    if (!Number.isInteger(seconds) || seconds <= 0) {
      problems.push(`IMAGE_CHECK_INTERVAL: expected a positive whole number of seconds, got "${env.IMAGE_CHECK_INTERVAL}"`)
    } else {
      input.imageCheckIntervalSeconds = seconds
    }
  }
  // The webhook's own namespace is always excluded unless the file lists namespaces itself.
  if (input.excludedNamespaces === undefined) {
    input.excludedNamespaces = ['kube-system', env.POD_NAMESPACE?.trim() || DEFAULT_NAMESPACE]
  }

  const parsed = configSchema.safeParse(input)
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(...describeIssue(issue))
  }
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems, source)
  const config = parsed.data
  if (!config.mirror.prefix && Object.keys(config.mirror.hosts ?? {}).length === 0) {
    throw new ConfigError(['mirror: set mirror.prefix or mirror.hosts (or DOCKER_PROXY_URL)'], source)
  }
  return config
}
