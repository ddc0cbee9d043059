// The few Kubernetes API calls pre-pull makes, over one keep-alive connection pool
// with a timeout on every request (a hung API server must not hold writes forever).
import https from 'node:https'
import type { OutgoingHttpHeaders } from 'node:http'
import type { KubeConfig } from '@kubernetes/client-node'
import { ORIGINAL_IMAGES_ANNOTATION } from '../core/pod.js'
import { GROUP, type ImageCache, isKubeFledgedPod, MANAGED_SELECTOR, PLURAL, VERSION } from './imagecache.js'

export class ApiError extends Error {
  constructor(
    // 0: no HTTP answer (connection refused, reset, timeout).
    readonly status: number,
    message: string,
    readonly reason?: string,
    readonly retryAfterMs?: number,
    readonly details?: { name?: string; kind?: string },
  ) {
    super(message)
    this.name = 'ApiError'
  }

  /** Worth retrying as is: throttling, server errors, no answer. */
  get transient(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500
  }
}

const HEADER_TTL_MS = 60_000

export class KubeHttp {
  private readonly server: URL
  private agent?: https.Agent
  private headers?: { value: OutgoingHttpHeaders; until: number }
  private closed = false

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly options: { timeoutMs?: number; maxSockets?: number } = {},
  ) {
    const cluster = kubeConfig.getCurrentCluster()
    if (!cluster) throw new Error('the kubeconfig has no current cluster')
    this.server = new URL(cluster.server)
  }

  // TLS material and credentials as kubectl would use them; headers re-read now and then (rotating tokens).
  private async prepare(): Promise<{ agent: https.Agent; headers: OutgoingHttpHeaders }> {
    const now = Date.now()
    if (this.agent && this.headers && this.headers.until > now) return { agent: this.agent, headers: this.headers.value }
    const opts: https.RequestOptions & { headers?: OutgoingHttpHeaders } = { headers: {} }
    await this.kubeConfig.applyToHTTPSOptions(opts)
    if (!this.agent) {
      this.agent = new https.Agent({
        keepAlive: true,
        maxSockets: this.options.maxSockets ?? 16,
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        servername: opts.servername,
        ...(opts.rejectUnauthorized !== undefined ? { rejectUnauthorized: opts.rejectUnauthorized } : {}),
      })
    }
    const headers: OutgoingHttpHeaders = { ...(opts.headers ?? {}) }
    if (opts.auth) headers.Authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`
    this.headers = { value: headers, until: now + HEADER_TTL_MS }
    return { agent: this.agent, headers }
  }

  async request<T = unknown>(
    method: string,
    path: string,
    options: { query?: Record<string, string | undefined>; body?: unknown; contentType?: string; accept?: string } = {},
  ): Promise<T> {
    if (this.closed) throw new ApiError(0, 'client closed')
    const { agent, headers } = await this.prepare()
    const url = new URL(path.replace(/^\//, ''), this.server.href.endsWith('/') ? this.server.href : `${this.server.href}/`)
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, v)
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body)
    return new Promise<T>((resolve, reject) => {
      const req = https.request(
        url,
        {
          method,
          agent,
          headers: {
            ...headers,
            Accept: options.accept ?? 'application/json',
            ...(payload !== undefined
              ? { 'Content-Type': options.contentType ?? 'application/json', 'Content-Length': Buffer.byteLength(payload) }
              : {}),
          },
          timeout: this.options.timeoutMs ?? 15_000,
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('error', (e) => reject(new ApiError(0, `${method} ${url.pathname}: ${e.message}`)))
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8')
            const status = res.statusCode ?? 0
            let body: unknown
            try {
              body = text ? JSON.parse(text) : undefined
            } catch {
              body = text
            }
            if (status >= 200 && status < 300) return resolve(body as T)
            const s = (typeof body === 'object' && body !== null ? body : {}) as {
              message?: string
              reason?: string
              details?: { name?: string; kind?: string }
            }
            const retryAfter = Number(res.headers['retry-after'])
            reject(
              new ApiError(
                status,
                `${method} ${url.pathname}: ${status} ${s.message ?? (typeof body === 'string' ? body.slice(0, 200) : '')}`.trim(),
                s.reason,
                Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined,
                s.details,
              ),
            )
          })
        },
      )
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.options.timeoutMs ?? 15_000} ms`)))
      req.on('error', (e) => reject(e instanceof ApiError ? e : new ApiError(0, `${method} ${url.pathname}: ${e.message}`)))
      req.end(payload)
    })
  }

  close(): void {
    this.closed = true
    this.agent?.destroy()
  }
}

interface ListPage<T> {
  metadata?: { resourceVersion?: string; continue?: string }
  items?: T[]
}

/** What the reconciler needs from the API: four verbs on ImageCaches in one namespace. */
export interface ImageCacheApi {
  create(cache: ImageCache): Promise<void>
  // A JSON merge patch of annotations (null removes), refused with 409 if the object changed since `resourceVersion`.
  annotate(name: string, annotations: Record<string, string | null>, resourceVersion: string): Promise<void>
  // Refused with 409 if the object is not the one seen (uid and resourceVersion).
  remove(name: string, precondition: { uid: string; resourceVersion: string }): Promise<void>
  list(): Promise<{ items: ImageCache[]; resourceVersion: string }>
}

export function imageCachePath(namespace: string, name?: string): string {
  return `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(namespace)}/${PLURAL}${name ? `/${encodeURIComponent(name)}` : ''}`
}

export class KubeImageCacheApi implements ImageCacheApi {
  constructor(
    private readonly http: KubeHttp,
    private readonly namespace: string,
    private readonly pageSize = 500,
  ) {}

  async create(cache: ImageCache): Promise<void> {
    await this.http.request('POST', imageCachePath(this.namespace), { body: cache })
  }

  async annotate(name: string, annotations: Record<string, string | null>, resourceVersion: string): Promise<void> {
    await this.http.request('PATCH', imageCachePath(this.namespace, name), {
      body: { metadata: { resourceVersion, annotations } },
      contentType: 'application/merge-patch+json',
    })
  }

  async remove(name: string, precondition: { uid: string; resourceVersion: string }): Promise<void> {
    await this.http.request('DELETE', imageCachePath(this.namespace, name), {
      body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: precondition },
    })
  }

  async list(): Promise<{ items: ImageCache[]; resourceVersion: string }> {
    const items: ImageCache[] = []
    let cont: string | undefined
    let resourceVersion = ''
    do {
      const page = await this.http.request<ListPage<ImageCache>>('GET', imageCachePath(this.namespace), {
        query: { labelSelector: MANAGED_SELECTOR, limit: String(this.pageSize), continue: cont },
      })
      items.push(...(page.items ?? []))
      resourceVersion ||= page.metadata?.resourceVersion ?? ''
      cont = page.metadata?.continue || undefined
    } while (cont)
    return { items, resourceVersion }
  }
}

interface PodLike {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }
  spec?: { initContainers?: { name?: string; image?: string }[]; containers?: { name?: string; image?: string }[] }
}

/** Mirror references a Pod runs because mirrorhook rewrote them, with their originals. */
export function rewrittenImagesOf(pod: PodLike): Map<string, string> {
  const out = new Map<string, string>()
  if (isKubeFledgedPod(pod.metadata?.labels)) return out
  const raw = pod.metadata?.annotations?.[ORIGINAL_IMAGES_ANNOTATION]
  if (!raw) return out
  let originals: Record<string, unknown>
  try {
    const parsed: unknown = JSON.parse(raw)
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return out
    originals = parsed as Record<string, unknown>
  } catch {
    return out
  }
  for (const c of [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])]) {
    const original = c.name !== undefined ? originals[c.name] : undefined
    if (typeof original === 'string' && typeof c.image === 'string' && c.image !== original) out.set(c.image, original)
  }
  return out
}

export interface PodSource {
  /** Mirror reference → original, for every Pod not finished. */
  imagesInUse(): Promise<Map<string, string>>
}

export class KubePodSource implements PodSource {
  constructor(
    private readonly http: KubeHttp,
    private readonly pageSize = 500,
  ) {}

  async imagesInUse(): Promise<Map<string, string>> {
    const out = new Map<string, string>()
    let cont: string | undefined
    do {
      const page = await this.http.request<ListPage<PodLike>>('GET', '/api/v1/pods', {
        query: {
          limit: String(this.pageSize),
          continue: cont,
          fieldSelector: 'status.phase!=Succeeded,status.phase!=Failed',
        },
      })
      for (const pod of page.items ?? [])
        for (const [image, original] of rewrittenImagesOf(pod)) if (!out.has(image)) out.set(image, original)
      cont = page.metadata?.continue || undefined
    } while (cont)
    return out
  }
}
