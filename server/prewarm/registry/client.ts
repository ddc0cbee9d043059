// The HTTP client of one configured registry: TLS (the registry's CA besides the system's),
// a request rate, 429 + Retry-After, size caps and timeouts, and registry auth as Docker does it:
// a `WWW-Authenticate: Bearer realm,service,scope` challenge is answered by a token from the
// realm (cached per scope until it expires), a `Basic` challenge by the user and password.
//
// Credentials go to the configured registry's origin only, and to a token realm on the same
// host name (any port); a realm elsewhere gets that host's own dockerconfig entry or nothing.
// Redirects are followed here (never by a library), and Authorization is dropped as soon as a
// redirect leaves the registry's origin (blob storage such as S3 takes signed URLs instead).
// Only paths on the configured host are ever requested first-hand.
import https from 'node:https'
import { rootCertificates } from 'node:tls'
import type { IncomingHttpHeaders } from 'node:http'
import type { Credentials } from './dockerconfig.js'
import { parseChallenges, retryAfterMs, type Challenge } from './headers.js'
import { TokenBucket } from './ratelimit.js'

export class RegistryError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message)
    this.name = 'RegistryError'
  }
}

/** Counts the requests of one resolution (several may run at once on one client). */
export interface Tally {
  requests: number
}

export interface RegistryResponse {
  readonly status: number
  readonly headers: IncomingHttpHeaders
  readonly body: Buffer
  /** Where the body came from (after redirects). */
  readonly url: URL
}

export interface ClientOptions {
  /** The configured registry, `host[:port]`. */
  readonly host: string
  readonly caPem?: string
  /** The registry's own credentials. */
  readonly credentials?: Credentials
  /** Credentials for another host by its own dockerconfig entry (a token realm elsewhere). */
  readonly credentialsForHost?: (host: string) => Credentials | undefined
  readonly requestsPerSecond: number
  readonly now: () => number
  readonly sleep: (ms: number) => Promise<void>
  readonly timeoutMs?: number
  /** Longest Retry-After waited for; a longer one fails the request. */
  readonly maxRetryAfterMs?: number
  /** Send Basic credentials without waiting for a challenge (Harbor's API sends none). */
  readonly basicUpFront?: boolean
  /** Called once per HTTP request sent, with the status code or `error`. */
  readonly onRequest?: (outcome: string) => void
}

const MAX_REDIRECTS = 5
const MAX_TOKEN_BYTES = 64 * 1024
const MAX_429_RETRIES = 3
const USER_AGENT = 'mirrorhook-prewarm'

interface CachedToken {
  readonly value: string
  readonly expiresAt: number
}

export class RegistryClient {
  /** HTTP requests sent so far (token requests and redirects included). */
  requests = 0
  readonly origin: string
  readonly host: string
  private readonly bucket: TokenBucket
  private readonly agent: https.Agent
  private readonly tokens = new Map<string, CachedToken>()
  // One token request per scope at a time, however many resolutions wait for it.
  private readonly pending = new Map<string, Promise<string>>()
  private bearer?: { realm: string; service?: string }
  private basic = false

  constructor(private readonly opts: ClientOptions) {
    this.origin = new URL(`https://${opts.host}/`).origin
    this.host = opts.host
    const rate = opts.requestsPerSecond
    this.bucket = new TokenBucket(rate, Math.max(1, Math.ceil(rate)), opts.now)
    const ca = opts.caPem ? [opts.caPem, ...rootCertificates] : undefined
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 4, timeout: opts.timeoutMs ?? 15_000, ca })
  }

  /** Closes kept-alive connections. */
  close(): void {
    this.agent.destroy()
  }

  /**
   * GET of a path (or a same-origin URL, such as a `Link` target) on the registry, answering
   * auth challenges and 429s. Other statuses are returned for the caller to judge.
   */
  async get(pathOrUrl: string, o: { accept?: string; maxBytes: number; scope?: string; tally?: Tally }): Promise<RegistryResponse> {
    const url = new URL(pathOrUrl, this.origin)
    if (url.origin !== this.origin)
      throw new RegistryError(`${this.opts.host}: refusing to follow a link to ${url.origin}: only ${this.origin} is queried`)
    let challenged = false
    let limited = 0
    for (;;) {
      const headers: Record<string, string> = { 'User-Agent': USER_AGENT }
      if (o.accept) headers.Accept = o.accept
      const authorization = await this.authorization(o.scope, o.tally)
      if (authorization) headers.Authorization = authorization
      const res = await this.follow(url, headers, o.maxBytes, o.tally)
      if (res.status === 401 && !challenged) {
        challenged = true
        if (
          await this.answer(
            parseChallenges(header(res.headers, 'www-authenticate')),
            o.scope,
            authorization?.startsWith('Bearer ') ?? false,
          )
        )
          continue
      }
      if (res.status === 429) {
        const wait = retryAfterMs(header(res.headers, 'retry-after'), this.opts.now()) ?? 1000 * 2 ** limited
        const max = this.opts.maxRetryAfterMs ?? 60_000
        if (wait > max) {
          throw new RegistryError(
            `${this.opts.host}: rate limited (HTTP 429), Retry-After ${Math.ceil(wait / 1000)} s is more than the ${max / 1000} s waited`,
            429,
          )
        }
        if (limited >= MAX_429_RETRIES)
          throw new RegistryError(`${this.opts.host}: still rate limited (HTTP 429) after ${limited} retries`, 429)
        limited++
        this.bucket.pause(this.opts.now() + wait)
        continue
      }
      return res
    }
  }

  private async authorization(scope: string | undefined, tally: Tally | undefined): Promise<string | undefined> {
    if (this.bearer) {
      const token = await this.token(this.bearer.realm, this.bearer.service, scope, tally)
      return `Bearer ${token}`
    }
    const c = this.opts.credentials
    if ((this.basic || this.opts.basicUpFront) && c?.username !== undefined && c.password !== undefined) {
      return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`
    }
    return undefined
  }

  /** Takes up a challenge; false when there is nothing to answer it with. */
  private async answer(challenges: readonly Challenge[], scope: string | undefined, sentToken: boolean): Promise<boolean> {
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm)
    if (bearer) {
      const realm = bearer.params.realm!
      const service = bearer.params.service
      this.bearer = { realm, service }
      // A token that was just refused is not used again.
      if (sentToken) this.tokens.delete(tokenKey(realm, service, scope))
      return true
    }
    const c = this.opts.credentials
    if (challenges.some((ch) => ch.scheme === 'basic') && !this.basic && c?.username !== undefined && c.password !== undefined) {
      this.basic = true
      return true
    }
    return false
  }

  private async token(realm: string, service: string | undefined, scope: string | undefined, tally: Tally | undefined): Promise<string> {
    const key = tokenKey(realm, service, scope)
    const cached = this.tokens.get(key)
    if (cached && cached.expiresAt > this.opts.now()) return cached.value
    const pending = this.pending.get(key)
    if (pending) return pending
    const request = this.fetchToken(realm, service, scope, key, tally).finally(() => this.pending.delete(key))
    this.pending.set(key, request)
    return request
  }

  private async fetchToken(
    realm: string,
    service: string | undefined,
    scope: string | undefined,
    key: string,
    tally: Tally | undefined,
  ): Promise<string> {
    let url: URL
    try {
      url = new URL(realm)
    } catch {
      throw new RegistryError(`${this.opts.host}: token realm "${realm.slice(0, 200)}" is not a URL`)
    }
    if (url.protocol !== 'https:')
      throw new RegistryError(`${this.opts.host}: token realm ${url.origin} is not https; credentials are not sent there`)
    const registryHostname = new URL(this.origin).hostname
    const creds = url.hostname === registryHostname ? this.opts.credentials : this.opts.credentialsForHost?.(url.host)
    const headers: Record<string, string> = { 'User-Agent': USER_AGENT, Accept: 'application/json' }
    let res: RegistryResponse
    if (creds?.identityToken) {
      // OAuth2 refresh token grant (distribution's docs/spec/auth/oauth.md), as docker does with an identity token.
      const form = new URLSearchParams({ grant_type: 'refresh_token', client_id: USER_AGENT, refresh_token: creds.identityToken })
      if (service) form.set('service', service)
      if (scope) form.set('scope', scope)
      headers['Content-Type'] = 'application/x-www-form-urlencoded'
      res = await this.send(url, headers, MAX_TOKEN_BYTES, 'POST', tally, Buffer.from(form.toString()))
    } else {
      if (service) url.searchParams.set('service', service)
      if (scope) url.searchParams.set('scope', scope)
      if (creds?.username !== undefined && creds.password !== undefined) {
        url.searchParams.set('account', creds.username)
        headers.Authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`
      }
      res = await this.send(url, headers, MAX_TOKEN_BYTES, 'GET', tally)
    }
    if (res.status !== 200) {
      throw new RegistryError(
        `${this.opts.host}: token from ${url.origin}${url.pathname} for ${scope ?? 'no scope'}: HTTP ${res.status}${creds ? '' : ' (no credentials for it)'}`,
        res.status,
      )
    }
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown }
    try {
      doc = JSON.parse(res.body.toString('utf8'))
    } catch {
      throw new RegistryError(`${this.opts.host}: token response from ${url.origin} is not JSON`)
    }
    const value = typeof doc.token === 'string' && doc.token ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : ''
    if (!value || /[\s]/.test(value)) throw new RegistryError(`${this.opts.host}: token response from ${url.origin} has no token`)
    // The token spec's default lifetime is 60 s; renew 10 s early.
    const lifetime = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : 60
    this.tokens.set(key, { value, expiresAt: this.opts.now() + Math.max(1, lifetime - 10) * 1000 })
    return value
  }

  /** Sends and follows redirects by hand, dropping Authorization once off the registry's origin. */
  private async follow(start: URL, headers: Record<string, string>, maxBytes: number, tally: Tally | undefined): Promise<RegistryResponse> {
    let url = start
    let h = headers
    for (let hop = 0; ; hop++) {
      const res = await this.send(url, h, maxBytes, 'GET', tally)
      if (![301, 302, 303, 307, 308].includes(res.status)) return res
      const location = header(res.headers, 'location')
      if (!location) return res
      if (hop >= MAX_REDIRECTS) throw new RegistryError(`${this.opts.host}: more than ${MAX_REDIRECTS} redirects from ${start.pathname}`)
      const next = new URL(location, url)
      if (next.protocol !== 'https:') throw new RegistryError(`${this.opts.host}: redirect to ${next.protocol}// refused (https only)`)
      if (next.origin !== this.origin) {
        const { Authorization: _dropped, ...rest } = h
        h = rest
      }
      url = next
    }
  }

  private async send(
    url: URL,
    headers: Record<string, string>,
    maxBytes: number,
    method: string,
    tally: Tally | undefined,
    body?: Buffer,
  ): Promise<RegistryResponse> {
    const wait = this.bucket.reserve()
    if (wait > 0) await this.opts.sleep(wait)
    this.requests++
    if (tally) tally.requests++
    const timeoutMs = this.opts.timeoutMs ?? 15_000
    const where = `${url.host}${url.pathname}`
    try {
      const res = await new Promise<RegistryResponse>((resolve, reject) => {
        const h = body ? { ...headers, 'Content-Length': String(body.length) } : headers
        const req = https.request(url, { method, headers: h, agent: this.agent }, (res) => {
          const declared = Number(res.headers['content-length'])
          if (declared > maxBytes) {
            req.destroy(new RegistryError(`${where}: response of ${declared} bytes is more than the ${maxBytes} bytes allowed`))
            return
          }
          const chunks: Buffer[] = []
          let size = 0
          res.on('data', (c: Buffer) => {
            size += c.length
            if (size > maxBytes) req.destroy(new RegistryError(`${where}: response is more than the ${maxBytes} bytes allowed`))
            else chunks.push(c)
          })
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), url }))
          res.on('error', reject)
        })
        const timer = setTimeout(() => req.destroy(new RegistryError(`${where}: no answer within ${timeoutMs} ms`)), timeoutMs)
        req.on('close', () => clearTimeout(timer))
        req.on('error', reject)
        req.end(body)
      })
      this.opts.onRequest?.(String(res.status))
      return res
    } catch (e) {
      this.opts.onRequest?.('error')
      if (e instanceof RegistryError) throw e
      const err = e as NodeJS.ErrnoException
      throw new RegistryError(`${where}: ${err.message}`)
    }
  }
}

export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name]
  return Array.isArray(v) ? v.join(', ') : v
}

function tokenKey(realm: string, service: string | undefined, scope: string | undefined): string {
  return `${realm}\n${service ?? ''}\n${scope ?? ''}`
}
