// Reading the kubelet's image-pull messages: why a pull failed (as containerd,
// CRI-O and dockershim word it) and how long a successful pull took.

export type PullFailureKind =
  // The registry could not be reached or did not answer usefully: a mirror helps.
  | 'network'
  // The registry refuses to serve us for now (HTTP 429): a mirror helps.
  | 'rate-limited'
  // The registry refused this image (HTTP 403, an allowlist): only telling for a mirror.
  | 'forbidden'
  // Credentials missing or wrong: a mirror cannot fix that.
  | 'unauthorized'
  // No such repository, tag or manifest: a mirror cannot fix a typo.
  | 'not-found'
  | 'other'

export interface PullFailure {
  readonly kind: PullFailureKind
  // The phrase that decided, short enough for a warning.
  readonly cause: string
}

interface Rule {
  readonly kind: PullFailureKind
  readonly pattern: RegExp
  readonly cause: string | ((m: RegExpExecArray) => string)
}

// Order matters: a token fetch that timed out mentions "authorize" but is a network failure,
// and an allowlist refusal is worded as "pull access denied".
const RULES: readonly Rule[] = [
  // Not about the registry at all.
  {
    kind: 'other',
    pattern: /ErrImageNeverPull|InvalidImageName|signature validation failed|SignatureValidationFailed/i,
    cause: 'not a registry failure',
  },
  { kind: 'other', pattern: /pull QPS exceeded/i, cause: 'kubelet pull QPS limit' },

  { kind: 'network', pattern: /no such host/i, cause: 'DNS: no such host' },
  {
    kind: 'network',
    pattern: /server misbehaving|Temporary failure in name resolution|lookup \S+( on \S+)?: .*(timeout|refused)/i,
    cause: 'DNS lookup failed',
  },
  { kind: 'network', pattern: /TLS handshake timeout/i, cause: 'TLS handshake timeout' },
  { kind: 'network', pattern: /x509: [^"\n]*|tls: [^"\n]*|remote error: tls[^"\n]*/i, cause: (m) => `TLS: ${m[0].slice(0, 80)}` },
  { kind: 'network', pattern: /connection refused/i, cause: 'connection refused' },
  { kind: 'network', pattern: /connection reset by peer/i, cause: 'connection reset' },
  { kind: 'network', pattern: /no route to host|network is unreachable|host is down/i, cause: 'no route to host' },
  {
    kind: 'network',
    pattern: /Client\.Timeout exceeded|request canceled while waiting for connection|awaiting headers/i,
    cause: 'HTTP client timeout',
  },
  { kind: 'network', pattern: /i\/o timeout|connection timed out|connect: operation timed out/i, cause: 'i/o timeout' },
  { kind: 'network', pattern: /context deadline exceeded|code = DeadlineExceeded/i, cause: 'context deadline exceeded' },
  { kind: 'network', pattern: /because of no progress|no progress in/i, cause: 'no progress (stalled download)' },
  { kind: 'network', pattern: /registry is unavailable|RegistryUnavailable/i, cause: 'registry unavailable' },
  { kind: 'network', pattern: /proxyconnect tcp/i, cause: 'proxy connection failed' },
  {
    kind: 'network',
    pattern: /\b(50[0-4]) (Internal Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out|Not Implemented)/i,
    cause: (m) => `HTTP ${m[1]}`,
  },
  {
    kind: 'network',
    pattern: /(unexpected )?status(code)?[: ]+(50[0-4])\b|\bHTTP status: (50[0-4])\b/i,
    cause: (m) => `HTTP ${m[3] ?? m[4]}`,
  },
  { kind: 'network', pattern: /broken pipe|unexpected EOF|: EOF\b|http2: server sent GOAWAY|stream error/i, cause: 'connection dropped' },

  { kind: 'rate-limited', pattern: /toomanyrequests|429 Too Many Requests|pull rate limit/i, cause: 'rate limited (HTTP 429)' },

  { kind: 'forbidden', pattern: /allowlist|白名单/i, cause: 'not in the mirror allowlist' },
  { kind: 'not-found', pattern: /repository does not exist or may require/i, cause: 'repository does not exist or requires login' },
  { kind: 'forbidden', pattern: /403 Forbidden|\bstatus(code)?:? 403\b/i, cause: 'HTTP 403 Forbidden' },

  {
    kind: 'unauthorized',
    pattern: /401 Unauthorized|unauthorized:|authentication required|insufficient_scope|no basic auth credentials|failed to authorize/i,
    cause: 'unauthorized',
  },
  { kind: 'unauthorized', pattern: /denied:|access.*denied/i, cause: 'access denied' },

  { kind: 'not-found', pattern: /manifest unknown|name unknown|blob unknown|not found|NotFound|\b404\b/i, cause: 'not found' },
]

/** Classifies the message of a failed pull (a waiting container's message or a Failed event). */
export function classifyPullFailure(message: string): PullFailure {
  for (const rule of RULES) {
    const m = rule.pattern.exec(message)
    if (m) return { kind: rule.kind, cause: typeof rule.cause === 'string' ? rule.cause : rule.cause(m) }
  }
  return { kind: 'other', cause: 'unrecognised pull error' }
}

/** Kinds that mean the registry, as the node sees it, is unreachable. */
export function meansUnreachable(kind: PullFailureKind): boolean {
  return kind === 'network' || kind === 'rate-limited'
}

const GO_DURATION_PART = /(\d+(?:\.\d+)?)(h|ms|m|s|µs|μs|us|ns)/g
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, µs: 0.001, μs: 0.001, us: 0.001, ns: 0.000001 }

/** Parses a Go duration as printed by time.Duration.String() ("1m2.5s", "523ms", "0s"). */
export function parseGoDuration(text: string): number | undefined {
  if (!/^(\d+(\.\d+)?(h|ms|m|s|µs|μs|us|ns))+$/.test(text)) return undefined
  let total = 0
  for (const m of text.matchAll(GO_DURATION_PART)) total += Number(m[1]) * (UNIT_MS[m[2] ?? ''] ?? 0)
  return total
}

export interface PulledImage {
  readonly image: string
  // Time the pull itself took, without waiting for other pulls.
  readonly durationMs: number
  readonly sizeBytes?: number
}

// `Successfully pulled image "x" in 2.5s (3.1s including waiting). Image size: 123 bytes.`;
// older kubelets print only `… in 2.5s`.
const PULLED =
  /^Successfully pulled image "([^"]+)" in ([0-9.hmsµμun]+)(?: \(([0-9.hmsµμun]+) including waiting\))?(?:\. Image size: (\d+) bytes\.?)?/

/** Reads a `Pulled` event's message; undefined for "already present on machine" and the like. */
export function parsePulledMessage(message: string): PulledImage | undefined {
  const m = PULLED.exec(message.trim())
  if (!m?.[1] || !m[2]) return undefined
  const durationMs = parseGoDuration(m[2])
  if (durationMs === undefined) return undefined
  return { image: m[1], durationMs, sizeBytes: m[4] !== undefined ? Number(m[4]) : undefined }
}

/** Reads a `Failed` event's message: `Failed to pull image "x": <error>`. */
export function parseFailedPullMessage(message: string): { image: string; error: string } | undefined {
  const m = /^Failed to pull image "([^"]+)": ([\s\S]*)$/.exec(message.trim())
  return m?.[1] && m[2] !== undefined ? { image: m[1], error: m[2] } : undefined
}

/** Shortens a pull error for evidence: the last, most specific part of the error chain. */
export function summarisePullError(message: string, max = 160): string {
  const oneLine = message.replace(/\s+/g, ' ').trim()
  return oneLine.length <= max ? oneLine : `…${oneLine.slice(oneLine.length - max + 1)}`
}
