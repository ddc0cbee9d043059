// One active probe: `GET https://<registry>/v2/`, as a container runtime pings
// a registry first. 200 or 401 means a registry answered; anything that keeps a
// runtime from pulling (DNS, refused, reset, TLS, timeout, 5xx) means unreachable.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import https from 'node:https'
import type { Agent } from 'node:http'
import { HttpsProxyAgent } from 'hpagent'
import { compileNoProxy, type NoProxyMatcher } from '../core/noproxy.js'

export interface ProbeResult {
  readonly ok: boolean
  readonly durationMs: number
  readonly status?: number
  // Short and operator-facing: "HTTP 401 in 35 ms", "connection refused".
  readonly detail: string
}

export type LookupFunction = (
  hostname: string,
  options: { all?: boolean; family?: number },
  callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
) => void

export interface ProbeOptions {
  readonly timeoutMs: number
  // CA certificates trusted instead of Node's bundle (tests, private registries).
  readonly ca?: string | string[]
  readonly env?: NodeJS.ProcessEnv
  readonly lookup?: LookupFunction
  readonly maxRedirects?: number
  // Hosts a redirect may lead to besides the probed registry itself: the registries and
  // mirrors the configuration names (`host` matches any port, `host:port` that port only).
  // A redirect anywhere else is not followed, and the result says so.
  readonly redirectHosts?: readonly string[]
}

// Where each registry's API lives when it differs from its name.
const API_HOSTS: Record<string, string> = { 'docker.io': 'registry-1.docker.io' }

export function probeUrl(registry: string): URL {
  return new URL(`https://${API_HOSTS[registry] ?? registry}/v2/`)
}

// RFC 6761: `.invalid` never resolves, so do not ask a resolver about it.
const specialLookup: LookupFunction = (hostname, options, callback) => {
  if (/(^|\.)invalid\.?$/i.test(hostname)) {
    const error: NodeJS.ErrnoException = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', hostname })
    process.nextTick(() => callback(error, options.all ? [] : ''))
    return
  }
  dnsLookup(hostname, { ...options, all: options.all === true } as never, callback as never)
}

export interface ProxySettings {
  readonly proxy?: string
  readonly noProxy: NoProxyMatcher
}

/** HTTPS_PROXY / NO_PROXY as curl and Go read them (lowercase wins, as in curl). */
export function proxySettings(env: NodeJS.ProcessEnv): ProxySettings {
  const proxy = env.https_proxy || env.HTTPS_PROXY || env.all_proxy || env.ALL_PROXY || undefined
  const list = (env.no_proxy ?? env.NO_PROXY ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  // Invalid NO_PROXY entries are dropped: the environment is not ours to reject.
  const compiled = compileNoProxy(list.filter((entry) => compileNoProxy([entry]).errors.length === 0))
  return { proxy: proxy?.trim() || undefined, noProxy: compiled.matcher }
}

function hostOf(url: URL): string {
  return url.port ? `${url.hostname}:${url.port}` : url.hostname
}

function splitHost(host: string): { name: string; port?: string } {
  const url = new URL(`https://${host}/`)
  return { name: url.hostname.toLowerCase().replace(/\.$/, ''), port: url.port || undefined }
}

/**
 * Whether a redirect from the probed registry to `target` may be followed: to the registry's
 * own host (any port), or to a named host (`host`: any port; `host:port`: that port only).
 */
export function redirectAllowed(registry: string, target: URL, named: readonly string[] = []): boolean {
  const to = splitHost(hostOf(target))
  const own = [registry, probeUrl(registry).host].map((h) => ({ ...splitHost(h), port: undefined }))
  const others = named.flatMap((h) => {
    try {
      return [splitHost(h), splitHost(probeUrl(h).host)]
    } catch {
      return []
    }
  })
  return [...own, ...others].some((entry) => entry.name === to.name && (entry.port === undefined || entry.port === to.port))
}

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|ERR_OSSL)/

export function describeError(error: NodeJS.ErrnoException, timeoutMs: number): string {
  const code = error.code ?? ''
  if (code === 'PROBE_TIMEOUT') return `no answer within ${formatMs(timeoutMs)}`
  if (code === 'ENOTFOUND') return 'DNS: no such host'
  if (code === 'EAI_AGAIN') return 'DNS: temporary failure'
  if (code === 'ECONNREFUSED') return 'connection refused'
  if (code === 'ECONNRESET' || /socket hang up/i.test(error.message)) return 'connection reset'
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'no route to host'
  if (code === 'ETIMEDOUT') return 'connect timed out'
  if (TLS_CODES.test(code) || /tls|ssl|certificate/i.test(error.message)) return `TLS: ${error.message}`
  if (/proxy|tunnel/i.test(error.message)) return `proxy: ${error.message}`
  return code ? `${code}: ${error.message}` : error.message
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s` : `${Math.round(ms)} ms`
}

interface Answer {
  status: number
  location?: string
}

function request(url: URL, options: ProbeOptions, agent: Agent | undefined, signal: AbortSignal): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      method: 'GET',
      headers: { 'user-agent': 'mirrorhook-probe', accept: 'application/json' },
      agent: agent ?? false,
      ca: agent ? undefined : options.ca,
      lookup: agent ? undefined : ((options.lookup ?? specialLookup) as never),
      signal,
    })
    req.on('response', (res) => {
      res.resume()
      resolve({ status: res.statusCode ?? 0, location: res.headers.location })
    })
    req.on('error', reject)
    req.end()
  })
}

/** Probes one registry; never throws. */
export async function probeRegistry(registry: string, options: ProbeOptions): Promise<ProbeResult> {
  const started = performance.now()
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), options.timeoutMs)
  const proxy = proxySettings(options.env ?? process.env)
  let url = probeUrl(registry)
  try {
    for (let hop = 0; ; hop++) {
      const useProxy = proxy.proxy && !proxy.noProxy.match(hostOf(url)).excluded
      const agent = useProxy
        ? new HttpsProxyAgent({ proxy: proxy.proxy!, ca: options.ca as never, keepAlive: false, timeout: options.timeoutMs })
        : undefined
      let answer: Answer
      try {
        answer = await request(url, options, agent, controller.signal)
      } finally {
        agent?.destroy()
      }
      const durationMs = performance.now() - started
      const took = `in ${formatMs(durationMs)}`
      const { status } = answer
      if (status >= 300 && status < 400 && answer.location && hop < (options.maxRedirects ?? 3)) {
        const next = new URL(answer.location, url)
        if (next.protocol !== 'https:')
          return { ok: false, durationMs, status, detail: `HTTP ${status} redirects to non-HTTPS ${next.host}` }
        // Never connect to a host the configuration did not name (an internal address, say).
        if (!redirectAllowed(registry, next, options.redirectHosts))
          return {
            ok: false,
            durationMs,
            status,
            detail: `HTTP ${status} redirects to ${next.host}, a host the configuration does not name: not followed`,
          }
        url = next
        continue
      }
      const via = hop > 0 ? ` (via ${url.host})` : ''
      if (status === 200 || status === 401) return { ok: true, durationMs, status, detail: `HTTP ${status} ${took}${via}` }
      if (status >= 500) return { ok: false, durationMs, status, detail: `HTTP ${status} ${took}${via}` }
      if (status === 429) return { ok: false, durationMs, status, detail: `HTTP 429 (rate limited) ${took}${via}` }
      return { ok: false, durationMs, status, detail: `HTTP ${status} from /v2/ ${took}${via}: not a registry API` }
    }
  } catch (error) {
    const e = error as NodeJS.ErrnoException
    const aborted = controller.signal.aborted || e.name === 'AbortError'
    const err = aborted ? Object.assign(new Error('timeout'), { code: 'PROBE_TIMEOUT' }) : e
    return { ok: false, durationMs: performance.now() - started, detail: describeError(err, options.timeoutMs) }
  } finally {
    clearTimeout(timer)
  }
}
