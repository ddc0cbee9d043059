// The core's part of the configuration: its keys, their defaults, and how problems are
// reported. The whole file (with the features' sections, the environment overlay and
// reading the file) is composed above core/ and the features, in server/config/.
import { z } from 'zod'

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

// One mirror, or several in order of preference.
const mirrorList = z.union([z.string().trim().min(1), z.array(z.string().trim().min(1, 'must not be empty')).min(1, 'must not be empty')])

const mirrorSchema = z
  .object({
    // `<prefix>/<source registry>/<path>` (DaoCloud style).
    prefix: mirrorList.optional(),
    // Source registry → mirror repository prefix (`docker.m.daocloud.io`, `harbor.corp/dockerhub`).
    hosts: z.record(z.string().trim().min(1), mirrorList).optional(),
    // Mirror host or repository prefix → the list of repositories it serves (allows.txt format):
    // a file path (re-read when it changes) or an https:// URL (fetched on a schedule).
    allowlists: z.record(z.string().trim().min(1), z.string().trim().min(1)).optional(),
    // Mirror registry host → pull Secret (in mirrorhook's namespace) for mirrors that need credentials.
    pullSecrets: z.record(z.string().trim().min(1), z.string().trim().min(1)).optional(),
  })
  .strict()

// Rules that depend on the container or the Pod, not only on the image (server/core/pullrules.ts).
export const pullSchema = z
  .object({
    // `:latest` or no tag (no digest): mirror (the mirror may serve the tag's old manifest for
    // as long as it caches manifests) or keep (pulled from the source, as written).
    mutableTags: z.enum(['mirror', 'keep']).default('mirror'),
    // Images of Pods with imagePullSecrets: keep (sent only to a mirror with credentials of its
    // own) or mirror (sent to any mirror, as if public).
    privateImages: z.enum(['keep', 'mirror']).default('keep'),
    // kube-fledged's pull-Job init image (senthilrch/busybox, its BUSYBOX_IMAGE) is replaced by this
    // image when it is mirrored (tag kept when none is given here); empty leaves it as is.
    kubeFledgedBusybox: z.string().trim().default('docker.io/library/busybox'),
    // Seconds between checks that the copies of mirror pull Secrets match their source.
    secretResyncSeconds: z.number().int().positive().max(86400).default(60),
  })
  .strict()

// auto: rewrite while the registry is unreachable or slow, as learned at run time.
export const modes = ['always', 'unreachable', 'auto'] as const
export type Mode = (typeof modes)[number]

// The core's keys; server/config/schema.ts adds the features' sections and makes the whole strict.
export const coreConfigShape = {
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
  // Seconds between re-checks of failing Pods by remediation (IMAGE_CHECK_INTERVAL).
  imageCheckIntervalSeconds: z.number().int().positive().max(86400).default(10),
  // Pull policy, private images, mirror credentials and kube-fledged's own pulls.
  pull: pullSchema.prefault({}),
}

// Only its type is used: what the core's keys parse to.
type CoreConfig = z.infer<z.ZodObject<typeof coreConfigShape>>

/**
 * What the core reads: its own keys, from the reachability section only what an `unknown`
 * registry means in mode auto, and kube-fledged's namespace.
 */
export type PolicyConfig = CoreConfig & {
  readonly reachability: { readonly unknown: 'mirror' | 'direct' }
  // Where kube-fledged runs its image-pull Jobs (their init image is replaced by pull.kubeFledgedBusybox).
  readonly kubeFledged: { readonly namespace: string }
}

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

export function describeIssue(issue: z.core.$ZodIssue): string[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => `${keyPath([...issue.path, key])}: unknown key`)
  }
  const where = keyPath(issue.path) || '(top level)'
  return [`${where}: ${issue.message}`]
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
