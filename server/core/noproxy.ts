// NO_PROXY-style "never rewrite" registry list (config `noProxy`, env NO_PROXY_DOCKER_DOMAIN).
//
// Modelled on golang.org/x/net/http/httpproxy and curl, with these deliberate choices:
// - `corp.example`, `.corp.example` and `*.corp.example` all mean "the domain and its subdomains".
//   Go gives the plain form that meaning too, but treats `.corp.example` as subdomains only;
//   the leading-dot meaning here is curl's. Matching is on label boundaries: not `notcorp.example`.
// - `host:port` matches only references that spell that port. No default port is implied
//   (`registry.corp:443` does not match `registry.corp`), because in image references the port is
//   part of the registry name. An entry without a port matches any port.
// - IP and CIDR entries match only IP-literal hosts, never by name (as in Go). CIDR entries take no port.
// - Invalid entries are reported, not silently dropped as Go does, so config errors surface at start-up.
import { BlockList, isIP } from 'node:net'

export type NoProxyMatch = { excluded: true; entry: string } | { excluded: false }

export interface NoProxyMatcher {
  match(registryHost: string): NoProxyMatch
  /** The valid user entries, trimmed, in list order (built-ins not included). */
  readonly entries: readonly string[]
}

export interface CompileNoProxyOptions {
  /** Mirror hosts (`host` or `host:port`); matched exactly, reported as entry `'mirror'`. */
  alwaysExclude?: readonly string[]
}

interface Rule {
  entry: string
  port?: number
}
interface IpRule extends Rule {
  net: BlockList
}

// Docker reference grammar for a domain component; also rejects non-ASCII and spaces.
const LABEL = /^(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])$/
const PORT = /^[0-9]{1,5}$/

function parsePort(s: string): number | undefined {
  if (!PORT.test(s)) return undefined
  const n = Number(s)
  return n >= 1 && n <= 65535 ? n : undefined
}

/**
 * Splits the registry part of an image reference into lower-cased host and optional port:
 * `Registry.Corp:5000`, `[fd00::1]:5000`, `10.1.2.3`. A bare IPv6 address is accepted as a host.
 * If the port is not a valid port the whole input is returned as the host, so it matches no
 * name or IP rule (only `*`).
 */
export function splitHostPort(registryHost: string): { host: string; port?: number } {
  const s = registryHost.trim().toLowerCase()
  let host = s
  let portText: string | undefined
  if (s.startsWith('[')) {
    const close = s.indexOf(']')
    if (close < 0) return { host: s }
    host = s.slice(1, close)
    const rest = s.slice(close + 1)
    if (rest !== '') {
      if (!rest.startsWith(':')) return { host: s }
      portText = rest.slice(1)
    }
  } else {
    const colon = s.lastIndexOf(':')
    // More than one colon without brackets can only be a bare IPv6 address.
    if (colon >= 0 && s.indexOf(':') === colon) {
      host = s.slice(0, colon)
      portText = s.slice(colon + 1)
    }
  }
  if (host.endsWith('.')) host = host.slice(0, -1)
  if (portText === undefined) return { host }
  const port = parsePort(portText)
  return port === undefined ? { host: s } : { host, port }
}

/** Splits the env-var form: entries separated by commas and/or whitespace. */
export function splitNoProxyList(s: string): string[] {
  return s.split(/[\s,]+/).filter((e) => e !== '')
}

function ipFamily(host: string): 'ipv4' | 'ipv6' | undefined {
  const v = isIP(host)
  return v === 4 ? 'ipv4' : v === 6 ? 'ipv6' : undefined
}

/**
 * Cheap pre-check before `isIP`: every IPv6 literal has a ':' and every IPv4 literal ends in a
 * digit. A name may pass too (it is then parsed and found not to be an address); an address never fails.
 */
function looksLikeIp(host: string): boolean {
  const last = host.charCodeAt(host.length - 1)
  return (last >= 48 && last <= 57) || host.includes(':')
}

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/** True for `localhost`, `*.localhost`, 127.0.0.0/8 and ::1 (also with a port or in brackets). */
export function isLoopbackHost(registryHost: string): boolean {
  return isLoopback(splitHostPort(registryHost).host)
}

function isLoopback(host: string): boolean {
  if (host === 'localhost' || host.endsWith('.localhost')) return true
  const family = ipFamily(host)
  // BlockList also matches IPv4-mapped IPv6 (::ffff:127.0.0.1) against the IPv4 subnet.
  return family !== undefined && LOOPBACK.check(host, family)
}

type Parsed = { kind: 'all' } | { kind: 'ip'; net: BlockList; port?: number } | { kind: 'domain'; domain: string; port?: number }

/** Parses one trimmed, non-empty entry; returns an error reason string when invalid. */
function parseEntry(raw: string, allowWildcards: boolean): Parsed | string {
  const e = raw.toLowerCase()
  if (e === '*') return allowWildcards ? { kind: 'all' } : 'wildcard not allowed here'
  if (e.includes('%')) return 'IPv6 zone IDs are not supported'

  const slash = e.indexOf('/')
  if (slash >= 0) {
    if (!allowWildcards) return 'CIDR range not allowed here'
    let addr = e.slice(0, slash)
    if (addr.startsWith('[') && addr.endsWith(']')) addr = addr.slice(1, -1)
    const family = ipFamily(addr)
    if (family === undefined) return 'invalid CIDR address'
    const bits = e.slice(slash + 1)
    const prefix = /^[0-9]{1,3}$/.test(bits) ? Number(bits) : NaN
    if (!(prefix <= (family === 'ipv4' ? 32 : 128))) return 'invalid CIDR prefix length'
    const net = new BlockList()
    net.addSubnet(addr, prefix, family) // host bits are ignored, like Go's ParseCIDR
    return { kind: 'ip', net }
  }

  // Unlike splitHostPort, a bad port here is an error rather than part of the host.
  let host = e
  let port: number | undefined
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(e)
  const colon = e.lastIndexOf(':')
  if (bracketed) {
    host = bracketed[1] ?? ''
    if (ipFamily(host) !== 'ipv6') return 'invalid IPv6 address in brackets'
    if (bracketed[2] !== undefined) {
      port = parsePort(bracketed[2])
      if (port === undefined) return 'invalid port'
    }
  } else if (colon >= 0 && e.indexOf(':') === colon) {
    host = e.slice(0, colon)
    port = parsePort(e.slice(colon + 1))
    if (port === undefined) return 'invalid port'
  } else if (colon >= 0 && ipFamily(e) !== 'ipv6') {
    return 'invalid IPv6 address'
  }

  const family = ipFamily(host)
  if (family !== undefined) {
    const net = new BlockList()
    net.addAddress(host, family)
    return { kind: 'ip', net, port }
  }

  if (allowWildcards) {
    if (host.startsWith('*.')) host = host.slice(2)
    else if (host.startsWith('.')) host = host.slice(1)
  }
  if (host.endsWith('.')) host = host.slice(0, -1)
  const labels = host.split('.')
  if (host === '' || !labels.every((l) => LABEL.test(l))) return 'invalid host name'
  // A numeric last label is a mistyped IPv4 address (e.g. 10.0.0.256), not a name.
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) return 'invalid IPv4 address'
  return { kind: 'domain', domain: host, port }
}

function portOk(rule: Rule, port: number | undefined): boolean {
  return rule.port === undefined || rule.port === port
}

/**
 * Compiles entries once. Invalid entries are skipped and reported in `errors`, each naming the
 * entry. Check order for `match`: loopback, mirror hosts, `*`, IP/CIDR entries in list order,
 * then name entries from the most specific suffix to the least (list order within one suffix).
 */
export function compileNoProxy(
  entries: readonly string[],
  opts: CompileNoProxyOptions = {},
): { matcher: NoProxyMatcher; errors: string[] } {
  const errors: string[] = []
  const valid: string[] = []
  const ipRules: IpRule[] = []
  const domainRules = new Map<string, Rule[]>() // key: domain; matches it and its subdomains
  const mirrorIps: IpRule[] = []
  const mirrorNames: (Rule & { domain: string })[] = []
  let all: string | undefined

  for (const rawEntry of entries) {
    const entry = rawEntry.trim()
    if (entry === '') continue
    const p = parseEntry(entry, true)
    if (typeof p === 'string') {
      errors.push(`invalid NO_PROXY entry ${JSON.stringify(entry)}: ${p}`)
      continue
    }
    valid.push(entry)
    if (p.kind === 'all') all ??= entry
    else if (p.kind === 'ip') ipRules.push({ entry, net: p.net, port: p.port })
    else {
      const list = domainRules.get(p.domain) ?? []
      list.push({ entry, port: p.port })
      domainRules.set(p.domain, list)
    }
  }

  for (const rawMirror of opts.alwaysExclude ?? []) {
    const mirror = rawMirror.trim()
    if (mirror === '') continue
    const p = parseEntry(mirror, false)
    if (typeof p === 'string') errors.push(`invalid mirror host ${JSON.stringify(mirror)}: ${p}`)
    else if (p.kind === 'ip') mirrorIps.push({ entry: 'mirror', net: p.net, port: p.port })
    else if (p.kind === 'domain') mirrorNames.push({ entry: 'mirror', domain: p.domain, port: p.port })
  }

  const matchIp = (rules: readonly IpRule[], host: string, family: 'ipv4' | 'ipv6', port: number | undefined) =>
    rules.find((r) => portOk(r, port) && r.net.check(host, family))

  const match = (registryHost: string): NoProxyMatch => {
    const { host, port } = splitHostPort(registryHost)
    // Only a host that looks like an address is parsed as one; names go straight to the suffix walk.
    const family = looksLikeIp(host) ? ipFamily(host) : undefined
    if (host === 'localhost' || host.endsWith('.localhost') || (family !== undefined && LOOPBACK.check(host, family))) {
      return { excluded: true, entry: 'loopback' }
    }
    // Mirror names are validated host names, which never equal an IP literal, and the reverse.
    const mirror =
      family !== undefined ? matchIp(mirrorIps, host, family, port) : mirrorNames.find((r) => r.domain === host && portOk(r, port))
    if (mirror) return { excluded: true, entry: mirror.entry }
    if (all !== undefined) return { excluded: true, entry: all }

    if (family !== undefined) {
      const hit = matchIp(ipRules, host, family, port)
      return hit ? { excluded: true, entry: hit.entry } : { excluded: false }
    }
    // Walk suffixes on label boundaries: a.b.corp -> b.corp -> corp.
    for (let suffix: string | undefined = host; suffix;) {
      const hit = domainRules.get(suffix)?.find((r) => portOk(r, port))
      if (hit) return { excluded: true, entry: hit.entry }
      const dot = suffix.indexOf('.')
      suffix = dot < 0 ? undefined : suffix.slice(dot + 1)
    }
    return { excluded: false }
  }

  return { matcher: { match, entries: valid }, errors }
}

/** Throwing form of compileNoProxy for callers that treat any invalid entry as fatal. */
export function compileNoProxyOrThrow(entries: readonly string[], opts?: CompileNoProxyOptions): NoProxyMatcher {
  const { matcher, errors } = compileNoProxy(entries, opts)
  if (errors.length > 0) throw new Error(errors.join('; '))
  return matcher
}
