// Tag resolution for pre-warm: the newest tag of a repository in one configured registry.
//
//   const resolver = createTagResolver('harbor.corp.example', entry, { dockerConfigJson, caPem })
//   const r = await resolver.newest('shop/api', '1.4.2')   // { newest?: {tag, order, evidence}, reason, requests }
//
// `newest` never returns a tag older than `currentTag` (it may return `currentTag` itself when
// nothing is newer); when `newest` is undefined, `reason` says why. A registry that cannot be
// asked (unreachable, TLS, refused credentials, 5xx, rate limited beyond Retry-After) rejects
// with a RegistryError whose message names the registry and what failed.
// Only `host` is ever queried (never a host from a Pod spec); its credentials go nowhere else.
import type { Logger } from 'pino'
import { RegistryClient, RegistryError, type Tally } from './client.js'
import { credentialsFor, parseDockerConfigJson } from './dockerconfig.js'
import { resolveHarbor } from './harbor.js'
import { isRepositoryName, isTag } from './names.js'
import { DigestCache, resolveOci } from './oci.js'
import { registryEntrySchema, REGISTRY_ENTRY_DEFAULTS, type RegistryEntry } from './schema.js'

export { registryEntrySchema, REGISTRY_ENTRY_DEFAULTS, RegistryError }
export type { RegistryEntry }
export { parseDockerConfigJson, credentialsFor } from './dockerconfig.js'
export { parseVersion, compareVersions, pickSemver, pickByTime } from './order.js'

export interface TagChoice {
  tag: string
  order: RegistryEntry['order']
  /** What the choice rests on, e.g. `version 1.5.0 (12 of 40 tags compared)` or `tag push_time 2026-…`. */
  evidence: string
}

export interface Resolution {
  newest?: TagChoice
  reason: string
  /** HTTP requests this resolution sent (token requests included). */
  requests: number
}

export interface TagResolver {
  newest(repository: string, currentTag: string | undefined): Promise<Resolution>
}

/** Counts registry requests; `outcome` is the HTTP status or `error`. */
export interface RegistryMetrics {
  registryRequest(host: string, outcome: string): void
}

export interface TagResolverDeps {
  /** The `.dockerconfigjson` of the entry's credentialsSecret. */
  dockerConfigJson?: string
  /** The PEM of the entry's caFile, trusted besides the system's CAs. */
  caPem?: string
  logger?: Logger
  metrics?: RegistryMetrics
  now?: () => number
  sleep?: (ms: number) => Promise<void>
  /** Tags per page of `/v2/<name>/tags/list` (default 1000), artifacts per Harbor page (at most 100). */
  pageSize?: number
  timeoutMs?: number
  /** Longest 429 Retry-After waited for (default 60 s). */
  maxRetryAfterMs?: number
}

export function createTagResolver(host: string, entry: RegistryEntry, deps: TagResolverDeps = {}): TagResolver & { close(): void } {
  const config = deps.dockerConfigJson === undefined ? undefined : parseDockerConfigJson(deps.dockerConfigJson)
  if (config && config.problems.length > 0) {
    deps.logger?.warn({ registry: host, problems: config.problems }, 'prewarm: some credentials entries were skipped')
  }
  const credentials = config ? credentialsFor(config, host) : undefined
  if (deps.dockerConfigJson !== undefined && !credentials) {
    deps.logger?.warn({ registry: host }, 'prewarm: the credentials Secret has no entry for this registry; asking anonymously')
  }
  const client = new RegistryClient({
    host,
    caPem: deps.caPem,
    credentials,
    credentialsForHost: config ? (h) => credentialsFor(config, h) : undefined,
    requestsPerSecond: entry.requestsPerSecond ?? REGISTRY_ENTRY_DEFAULTS.requestsPerSecond,
    now: deps.now ?? Date.now,
    sleep: deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms))),
    timeoutMs: deps.timeoutMs,
    maxRetryAfterMs: deps.maxRetryAfterMs,
    basicUpFront: entry.api === 'harbor',
    onRequest: deps.metrics ? (outcome) => deps.metrics!.registryRequest(host, outcome) : undefined,
  })
  const cache = new DigestCache()
  const pageSize = deps.pageSize ?? 1000
  return {
    close: () => client.close(),
    async newest(repository, currentTag) {
      const tally: Tally = { requests: 0 }
      if (!isRepositoryName(repository)) return { reason: `"${repository.slice(0, 300)}" is not a repository name`, requests: 0 }
      if (currentTag !== undefined && !isTag(currentTag)) return { reason: `"${currentTag.slice(0, 200)}" is not a tag`, requests: 0 }
      const { pick, note } =
        entry.api === 'harbor' && entry.order !== 'build-time'
          ? await resolveHarbor(client, entry, repository, currentTag, {
              pageSize: Math.min(pageSize, entry.maxTagsPerRepository ?? pageSize),
              tally,
            })
          : await resolveOci(client, entry, repository, currentTag, { pageSize, cache, tally })
      const reason = note ? `${pick.reason} (${note})` : pick.reason
      if (pick.tag === undefined) return { reason, requests: tally.requests }
      return { newest: { tag: pick.tag, order: entry.order, evidence: pick.evidence }, reason, requests: tally.requests }
    },
  }
}
