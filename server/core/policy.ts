// The compiled form of a configuration: sets, matchers and mirror targets ready for
// the admission path, plus the semantic checks the schema cannot express.
import { ConfigError, type PolicyConfig } from './config.js'
import { compileNoProxy, type NoProxyMatcher } from './noproxy.js'
import { tryParseNormalizedNamed } from './reference.js'

// Docker Hub is reachable under names the reference grammar does not fold into docker.io.
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io'])

export function registryKey(domain: string): string {
  const lower = domain.toLowerCase()
  return DOCKER_HUB_ALIASES.has(lower) ? 'docker.io' : lower
}

/**
 * A source registry as a metric label: its name when the configuration names it (`registries`,
 * `unreachable`, `mirror.hosts`, a mirror), `other` for any name that came only from a Pod spec,
 * so the number of series stays bounded by the configuration.
 */
export function registryMetricLabel(policy: Policy, registry: string): string {
  if (policy.registries.has(registry) || policy.unreachable.has(registry) || policy.hosts.has(registry)) return registry
  return policy.mirrors.some((m) => registryKey(m.domain) === registry) ? registry : 'other'
}

export interface MirrorTarget {
  // Repository prefix written before the path, e.g. `m.daocloud.io` or `harbor.corp/dockerhub`.
  readonly repoPrefix: string
  // Its registry host, the only host a rewrite may point at.
  readonly domain: string
  // The pull Secret rewritten Pods get for this mirror (mirror.pullSecrets, keyed by host).
  readonly pullSecret?: string
}

// `C`: the configuration it was compiled from; a feature that reads its own section names it.
export interface Policy<C extends PolicyConfig = PolicyConfig> {
  readonly config: C
  // Prefix-style mirrors, in order of preference (empty: none).
  readonly prefix: readonly MirrorTarget[]
  // Host-style mirrors per source registry, in order of preference; tried before the prefix mirrors.
  readonly hosts: ReadonlyMap<string, readonly MirrorTarget[]>
  // Where each mirror's allowlist comes from (file path or https URL), by the mirror's repoPrefix.
  readonly allowlists: ReadonlyMap<string, string>
  readonly anyRegistry: boolean
  readonly registries: ReadonlySet<string>
  readonly unreachable: ReadonlySet<string>
  readonly noProxy: NoProxyMatcher
  readonly mirrors: readonly MirrorTarget[]
  readonly podOwners: ReadonlySet<string>
  readonly excludedNamespaces: ReadonlySet<string>
}

function mirrorTarget(value: string, key: string, problems: string[]): MirrorTarget | undefined {
  const repoPrefix = value.replace(/\/+$/, '')
  // The prefix must survive the kubelet's own normalisation as a registry host:
  // `mirror/docker.io/x` would otherwise mean Docker Hub's `mirror` organisation.
  const parsed = tryParseNormalizedNamed(`${repoPrefix}/probe`)
  const firstComponent = repoPrefix.split('/')[0] ?? ''
  if (!parsed.ok) {
    problems.push(`${key}: "${value}" is not a valid registry/repository prefix (${parsed.error.message})`)
    return undefined
  }
  if (parsed.ref.domain !== firstComponent) {
    problems.push(`${key}: "${value}" must start with a registry host (a name with a dot or a port, or localhost)`)
    return undefined
  }
  if (repoPrefix !== repoPrefix.toLowerCase() || `${parsed.ref.domain}/${parsed.ref.path}` !== `${repoPrefix}/probe`) {
    problems.push(`${key}: "${value}" must be written in lowercase canonical form`)
    return undefined
  }
  return { repoPrefix, domain: parsed.ref.domain }
}

const SECRET_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

function registryName(value: string, key: string, problems: string[]): string | undefined {
  if (value === '*') return value
  if (!/^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?)(:[0-9]{1,5})?$/.test(value)) {
    problems.push(`${key}: "${value}" is not a registry host`)
    return undefined
  }
  return registryKey(value)
}

function mirrorList(value: string | readonly string[]): readonly string[] {
  return typeof value === 'string' ? [value] : value
}

const HTTPS_URL = /^https:\/\/[^/\s]+(\/\S*)?$/i

export function compilePolicy<C extends PolicyConfig>(config: C, source?: string): Policy<C> {
  const problems: string[] = []
  // Every target on a host gets that host's pull Secret.
  const secrets = new Map<string, string>()
  for (const [host, name] of Object.entries(config.mirror.pullSecrets ?? {})) {
    const key = registryName(host, `mirror.pullSecrets.${host}`, problems)
    // A Secret holds one registry's credentials: no wildcard, or it would be dropped unused.
    if (key === '*') problems.push(`mirror.pullSecrets.${host}: a pull Secret is for one mirror host, not "*"`)
    if (!SECRET_NAME.test(name) || name.length > 253) problems.push(`mirror.pullSecrets.${host}: "${name}" is not a Secret name`)
    else if (key && key !== '*') secrets.set(key, name)
  }
  const withSecret = (m: MirrorTarget): MirrorTarget => {
    const pullSecret = secrets.get(registryKey(m.domain))
    return pullSecret ? { ...m, pullSecret } : m
  }
  // One object per repository prefix, whichever list names it.
  const byPrefix = new Map<string, MirrorTarget>()
  const targets = (value: string | readonly string[] | undefined, key: string): MirrorTarget[] => {
    const out: MirrorTarget[] = []
    mirrorList(value ?? []).forEach((entry, i) => {
      const where = typeof value === 'string' ? key : `${key}[${i}]`
      const made = mirrorTarget(entry, where, problems)
      if (!made) return
      const target = withSecret(made)
      const known = byPrefix.get(target.repoPrefix) ?? target
      byPrefix.set(known.repoPrefix, known)
      if (out.includes(known)) problems.push(`${where}: "${entry}" is listed twice`)
      else out.push(known)
    })
    return out
  }

  const prefix = targets(config.mirror.prefix, 'mirror.prefix')
  const hosts = new Map<string, MirrorTarget[]>()
  for (const [src, dst] of Object.entries(config.mirror.hosts ?? {})) {
    const source = registryName(src, `mirror.hosts.${src}`, problems)
    const list = targets(dst, `mirror.hosts.${src}`)
    if (source && source !== '*' && list.length > 0) hosts.set(source, list)
    if (source === '*') problems.push(`mirror.hosts.${src}: a host-mode mirror needs a source registry, not "*"`)
  }
  const mirrors = [...byPrefix.values()]
  for (const host of secrets.keys()) {
    if (!mirrors.some((m) => registryKey(m.domain) === host)) problems.push(`mirror.pullSecrets.${host}: no mirror is on this host`)
  }

  // Keyed by a mirror's repository prefix, or by its host for every mirror on that host
  // (an entry for the repository prefix itself wins).
  const allowlists = new Map<string, string>()
  const entries = Object.entries(config.mirror.allowlists ?? {}).map(([key, where]) => ({ key, name: key.replace(/\/+$/, ''), where }))
  const usable = entries.filter(({ key, name, where }) => {
    if (!mirrors.some((m) => m.repoPrefix === name || m.domain === name)) {
      problems.push(`mirror.allowlists.${key}: not a configured mirror (a mirror's host or repository prefix)`)
      return false
    }
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(where) && !HTTPS_URL.test(where)) {
      problems.push(`mirror.allowlists.${key}: "${where}" is neither a file path nor an https:// URL`)
      return false
    }
    return true
  })
  for (const m of mirrors) {
    const entry = usable.find((e) => e.name === m.repoPrefix) ?? usable.find((e) => e.name === m.domain)
    if (entry) allowlists.set(m.repoPrefix, entry.where)
  }

  const registries = new Set<string>()
  config.registries.forEach((r, i) => {
    const name = registryName(r, `registries[${i}]`, problems)
    if (name) registries.add(name)
  })
  const unreachable = new Set<string>()
  config.unreachable.forEach((r, i) => {
    const name = registryName(r, `unreachable[${i}]`, problems)
    if (name === '*') problems.push(`unreachable[${i}]: "*" is not allowed; use mode: always`)
    else if (name) unreachable.add(name)
  })

  const compiled = compileNoProxy(config.noProxy, { alwaysExclude: mirrors.map((m) => m.domain) })
  for (const error of compiled.errors) problems.push(`noProxy: ${error}`)

  if (problems.length > 0) throw new ConfigError(problems, source)
  return {
    config,
    prefix,
    hosts,
    allowlists,
    anyRegistry: registries.has('*'),
    registries,
    unreachable,
    noProxy: compiled.matcher,
    mirrors,
    podOwners: new Set(config.podOwners),
    excludedNamespaces: new Set(config.excludedNamespaces),
  }
}
