// Configuration: the YAML schema, the embedded defaults and the seed tool's
// environment variables. Pure: callers pass the parsed file and the environment.
import { z } from 'zod'
import { serverSchema } from '../http/config.js'
import { kubeFledgedSchema } from '../prepull/config.js'
import { reachabilitySchema } from '../reachability/config.js'

// Registries DaoCloud's public mirror serves (its host-mode table).
export const DAOCLOUD_REGISTRIES = [
  'docker.elastic.co',
  'docker.io',
  'dhi.io',
  'gcr.io',
  'ghcr.io',
  'k8s.gcr.io',
  'registry.k8s.io',
  'mcr.microsoft.com',
  'nvcr.io',
  'quay.io',
  'registry.ollama.ai',
] as const

export const DEFAULT_MIRROR_PREFIX = 'm.daocloud.io'
export const DEFAULT_POD_OWNERS = ['ReplicaSet', 'StatefulSet', 'DaemonSet', 'Job'] as const
export const DEFAULT_NAMESPACE = 'mirrorhook'

const hostList = z.array(z.string().trim().min(1, 'must not be empty'))

const mirrorSchema = z
  .object({
    // `<prefix>/<source registry>/<path>` (DaoCloud style).
    prefix: z.string().trim().min(1).optional(),
    // Source registry → mirror repository prefix (`docker.m.daocloud.io`, `harbor.corp/dockerhub`).
    hosts: z.record(z.string().trim().min(1), z.string().trim().min(1)).optional(),
  })
  .strict()

// auto: rewrite while the registry is unreachable or slow, as learned at run time.
export const modes = ['always', 'unreachable', 'auto'] as const
export type Mode = (typeof modes)[number]

export const configSchema = z
  .object({
    mirror: mirrorSchema.default({ prefix: DEFAULT_MIRROR_PREFIX }),
    // Source registries eligible for rewriting; `*` means any.
    registries: hostList.default([...DAOCLOUD_REGISTRIES]),
    // Never rewrite these (NO_PROXY syntax).
    noProxy: hostList.default([]),
    mode: z.enum(modes).default('always'),
    // Registries known to be unreachable (used by mode `unreachable`).
    unreachable: hostList.default([]),
    // Controlling owner kinds whose Pods may be rewritten; Pods without an owner always may.
    podOwners: z.array(z.string().trim().min(1)).default([...DEFAULT_POD_OWNERS]),
    // Namespaces never mutated, whatever their labels say.
    excludedNamespaces: z.array(z.string().trim().min(1)).default(['kube-system']),
    // Seconds between re-checks of Pod image-pull status (IMAGE_CHECK_INTERVAL).
    imageCheckIntervalSeconds: z.number().int().positive().max(86400).default(10),
    reachability: reachabilitySchema.prefault({}),
    // Pre-pull with kube-fledged (server/prepull/config.ts).
    kubeFledged: kubeFledgedSchema.prefault({}),
    // Timeouts, drain and review memory of the listeners (server/http/config.ts).
    server: serverSchema.prefault({}),
  })
  .strict()

export type Config = z.infer<typeof configSchema>
export type ConfigInput = z.input<typeof configSchema>

export class ConfigError extends Error {
  constructor(
    readonly problems: string[],
    source?: string,
  ) {
    super(`invalid configuration${source ? ` in ${source}` : ''}:\n  - ${problems.join('\n  - ')}`)
    this.name = 'ConfigError'
  }
}

function keyPath(path: readonly PropertyKey[]): string {
  let out = ''
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`
    else out += out ? `.${String(part)}` : String(part)
  }
  return out
}

function describeIssue(issue: z.core.$ZodIssue): string[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => `${keyPath([...issue.path, key])}: unknown key`)
  }
  const where = keyPath(issue.path) || '(top level)'
  return [`${where}: ${issue.message}`]
}

// The environment variables of the seed tool (k8s-docker-proxy), applied over `input`.
export interface EnvOverlay {
  DOCKER_PROXY_URL?: string
  NO_PROXY_DOCKER_DOMAIN?: string
  KUBE_FLEDGED_NAMESPACE?: string
  IMAGE_CHECK_INTERVAL?: string
  POD_NAMESPACE?: string
}

// Strips a scheme and trailing slashes: DOCKER_PROXY_URL was often written as a URL.
export function normaliseMirrorPrefix(value: string): string {
  return value
    .trim()
    .replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')
    .replace(/\/+$/, '')
}

export function splitList(value: string): string[] {
  return value
    .split(/[,\s]+/)
    .map((s) => s.trim())
    .filter(Boolean)
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
