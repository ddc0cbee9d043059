// Credentials from a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`, pure.
//
// The shape is Docker's config.json (`{"auths": {"<key>": {"auth": base64(user:pass)} |
// {"username","password"} | {"identitytoken"}}}`); keys are written as `host`, `host:port`,
// `https://host`, `https://host/v1/`, `http://host/v2/`... The older `.dockercfg` shape (the
// `auths` map at the top level) is read too. A key only ever matches its own host and port.

export interface Credentials {
  readonly username?: string
  readonly password?: string
  /** An OAuth2 refresh token (`docker login` with an identity provider). */
  readonly identityToken?: string
}

export interface DockerConfig {
  /** Normalised host (lower-case, `host[:port]`) → credentials. */
  readonly hosts: ReadonlyMap<string, Credentials>
  /** Entries skipped, with why (never the secret itself). */
  readonly problems: readonly string[]
}

// Docker Hub answers under several names; they share one entry.
const DOCKER_HUB = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com'])

/** `https://Host:443/v1/` → `host:443`; undefined when the key names no host. */
export function normaliseRegistryKey(key: string): string | undefined {
  let s = key.trim().toLowerCase()
  s = s.replace(/^[a-z][a-z0-9+.-]*:\/\//, '')
  s = s.replace(/[/?#].*$/, '')
  s = s.replace(/\.(?=:|$)/, '')
  if (!/^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)(:[0-9]{1,5})?$/.test(s)) return undefined
  const host = s.replace(/:[0-9]+$/, '')
  return DOCKER_HUB.has(host) && !/:[0-9]+$/.test(s) ? 'docker.io' : s
}

function decodeAuth(auth: string): { username: string; password: string } | undefined {
  const text = Buffer.from(auth.trim(), 'base64').toString('utf8')
  const colon = text.indexOf(':')
  if (colon <= 0) return undefined
  return { username: text.slice(0, colon), password: text.slice(colon + 1) }
}

const MAX_CONFIG_BYTES = 1024 * 1024

export function parseDockerConfigJson(json: string): DockerConfig {
  const hosts = new Map<string, Credentials>()
  const problems: string[] = []
  if (Buffer.byteLength(json) > MAX_CONFIG_BYTES) return { hosts, problems: [`larger than ${MAX_CONFIG_BYTES} bytes`] }
  let doc: unknown
  try {
    doc = JSON.parse(json)
  } catch {
    return { hosts, problems: ['not JSON'] }
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { hosts, problems: ['not a JSON object'] }
  const rec = doc as Record<string, unknown>
  const auths = 'auths' in rec ? rec.auths : rec
  if (typeof auths !== 'object' || auths === null || Array.isArray(auths)) return { hosts, problems: ['"auths" is not an object'] }
  for (const [key, value] of Object.entries(auths as Record<string, unknown>)) {
    const host = normaliseRegistryKey(key)
    if (!host) {
      problems.push(`"${key.slice(0, 100)}" names no registry host`)
      continue
    }
    if (typeof value !== 'object' || value === null) {
      problems.push(`${host}: entry is not an object`)
      continue
    }
    const e = value as Record<string, unknown>
    const str = (k: string) => (typeof e[k] === 'string' && (e[k] as string) !== '' ? (e[k] as string) : undefined)
    let creds: Credentials | undefined
    const identityToken = str('identitytoken') ?? str('identityToken')
    if (str('username') !== undefined && str('password') !== undefined) {
      creds = { username: str('username'), password: str('password') }
    } else if (str('auth') !== undefined) {
      creds = decodeAuth(str('auth')!)
      if (!creds) problems.push(`${host}: "auth" is not base64 of user:password`)
    }
    if (identityToken !== undefined) creds = { ...creds, identityToken }
    if (!creds) {
      if (!problems.some((p) => p.startsWith(`${host}:`))) problems.push(`${host}: no username/password, auth or identitytoken`)
      continue
    }
    // The first entry for a host wins (kubelet's keyring keeps them all; one per host is enough here).
    if (!hosts.has(host)) hosts.set(host, creds)
  }
  return { hosts, problems }
}

/** The credentials for exactly `host` (`host[:port]` as configured), if any. */
export function credentialsFor(config: DockerConfig, host: string): Credentials | undefined {
  const key = normaliseRegistryKey(host)
  return key === undefined ? undefined : config.hosts.get(key)
}
