// A stand-in for kube-fledged's controller (the real one cannot be built here: the Go module
// proxy refuses github.com/senthilrch/kube-fledged). It follows kube-fledged's public code,
// function by function, and says where each piece comes from:
//   cmd/controller/app/controller.go  (PreFlightChecks, enqueueImageCache, runRefreshWorker,
//                                      syncHandler, updateImageCacheStatus, removeAnnotation)
//   pkg/images/image_manager.go       (handlePodStatusChange, updatePendingImageWorkResults,
//                                      updateImageCacheStatus, processNextWorkItem)
//   pkg/images/helpers.go             (newImagePullJob, newImageDeleteJob, checkIfImageNeedsToBePulled)
//   pkg/apis/kubefledged/v1alpha2/types.go (statuses, reasons, messages)
// (read at: controller.go 088024e, image_manager.go 044b5a4, types.go 6ce1217, helpers.go as
// of the kubefledged-image-manager labels and the BUSYBOX_IMAGE parameter)
// and what its release was seen doing in a simulated cluster like this one (the BUSYBOX_IMAGE
// default, NoImagesPulledOrDeleted, the lost completions).
//
// What it does not do: run a validating webhook, or pull anything — kwok completes the pull
// Jobs' Pods (pod-complete Stage), or leaves them in ErrImagePull when their registry is
// declared unreachable. kwok nodes report no images (node.status.images), so every pull
// creates a Job, as it did in the simulated cluster with the real controller.
//
//   const kf = await startKubeFledged({ kubeconfigPath, imagePullDeadlineMs: 20_000 })
//   ...
//   await kf.stop()
import { readFileSync } from 'node:fs'
import https from 'node:https'
import { ListWatch, Watch, KubeConfig, type KubernetesObject } from '@kubernetes/client-node'
import { parse as parseYaml } from 'yaml'

// pkg/apis/kubefledged/v1alpha2/types.go
export const STATUS = {
  Processing: 'Processing',
  Succeeded: 'Succeeded',
  Failed: 'Failed',
  Unknown: 'Unknown',
  Aborted: 'Aborted',
  // Not in the source read here (types.go at 6ce1217); observed with kube-fledged's master
  // (837f2b3) for a cache whose nodeSelector matches no node. The message text is this file's.
  NoImagesPulledOrDeleted: 'NoImagesPulledOrDeleted',
} as const
export const REASON = {
  ImageCacheCreate: 'ImageCacheCreate',
  ImageCacheUpdate: 'ImageCacheUpdate',
  ImageCacheRefresh: 'ImageCacheRefresh',
  ImageCachePurge: 'ImageCachePurge',
  ImagePullStatusUnknown: 'ImagePullStatusUnknown',
  ImagePullAborted: 'ImagePullAborted',
  OldImageCacheNotFound: 'OldImageCacheNotFound',
} as const
export const MESSAGE = {
  PullingImages: 'Images are being pulled on to the nodes. Please view the status after some time',
  UpdatingCache: 'Image cache is being updated. Please view the status after some time',
  RefreshingCache: 'Image cache is being refreshed. Please view the status after some time',
  PurgeCache: 'Image cache is being purged. Please view the status after some time',
  ImagesPulledSuccessfully: 'All requested images pulled succesfully to respective nodes',
  ImagesDeletedSuccessfully: 'All cached images succesfully deleted from respective nodes',
  ImagePullFailedForSomeImages: 'Image pull failed for some images. Please see "failures" section',
  ImageDeleteFailedForSomeImages: 'Image deletion failed for some images. Please see "failures" section',
  ImagePullStatusUnknown: 'Unable to get the status of Image pull. Retry after some time or contact cluster administrator',
  ImagePullAborted: 'Image cache processing aborted. Image cache will get refreshed during next refresh cycle',
  OldImageCacheNotFound: 'Unable to fetch the previous version of Image cache spec before update action.',
  NoImagesPulledOrDeleted: 'No images pulled or deleted: no node matched the nodeSelector',
} as const

const CONTROLLER_AGENT_NAME = 'kubefledged-controller' // controller.go: controllerAgentName
const PURGE_ANNOTATION = 'kubefledged.io/purge-imagecache'
const REFRESH_ANNOTATION = 'kubefledged.io/refresh-imagecache'
const FAKE_JOB_PREFIX = 'fakejob-' // image_manager.go: fakeJobPrefix
const GROUP_VERSION = 'kubefledged.io/v1alpha2'
/** Labels of every Job and Pod it creates (helpers.go newImagePullJob / newImageDeleteJob). */
export const JOB_LABELS = { app: 'kubefledged', kubefledged: 'kubefledged-image-manager' } as const

type WorkType = 'create' | 'update' | 'delete' | 'statusupdate' | 'refresh' | 'purge' // image_manager.go WorkType

interface ImageCache extends KubernetesObject {
  metadata: { name: string; namespace: string; uid: string; resourceVersion?: string; annotations?: Record<string, string> }
  spec: { cacheSpec: { images: string[]; nodeSelector?: Record<string, string> }[]; imagePullSecrets?: { name: string }[] }
  status?: ImageCacheStatus
}
interface NodeReasonMessage {
  node: string
  reason: string
  message: string
}
interface ImageCacheStatus {
  status?: string
  reason?: string
  message?: string
  failures?: Record<string, NodeReasonMessage[]>
  startTime?: string
  completionTime?: string
}
interface Node {
  metadata: { name: string; labels?: Record<string, string> }
  status?: { nodeInfo?: { containerRuntimeVersion?: string }; images?: unknown[] }
}
interface Pod {
  metadata: { name: string; namespace: string; labels?: Record<string, string>; resourceVersion?: string }
  status?: {
    phase?: string
    containerStatuses?: {
      state?: { waiting?: { reason?: string; message?: string }; terminated?: { reason?: string; message?: string } }
    }[]
  }
}

interface ImageWorkRequest {
  image: string
  node: Node | null
  containerRuntimeVersion: string
  workType: WorkType
  imagecache: ImageCache
}
interface ImageWorkResult {
  request: ImageWorkRequest
  status: 'succeeded' | 'failed' | 'jobcreated' | 'alreadypulled' | 'unknown'
  reason?: string
  message?: string
}
interface WorkQueueKey {
  workType: WorkType
  objKey: string // namespace/name
  status?: Map<string, ImageWorkResult>
  oldImageCache?: ImageCache
}

export interface KubeFledgedOptions {
  kubeconfigPath: string
  /** --kubefledged-namespace / KUBEFLEDGED_NAMESPACE (default kube-fledged). */
  namespace?: string
  /** --image-pull-deadline-duration (default 5 min). */
  imagePullDeadlineMs?: number
  /** --image-cache-refresh-frequency (default 15 min; 0 disables the periodic refresh). */
  refreshFrequencyMs?: number
  /** env BUSYBOX_IMAGE (default senthilrch/busybox:1.35.0, on Docker Hub). */
  busyboxImage?: string
  /** --cri-client-image (default senthilrch/kubefledged-cri-client:v0.10.0). */
  criClientImage?: string
  /** --image-pull-policy (default IfNotPresent). */
  imagePullPolicy?: 'IfNotPresent' | 'Always'
  /** --service-account-name (default none). */
  serviceAccountName?: string
  log?: (line: string) => void
}

export interface KubeFledged {
  namespace: string
  /** Jobs created so far (pull and purge), for figures. */
  readonly jobsCreated: number
  /** Pod completions that found no Job in its table (kube-fledged's lost completions). */
  readonly completionsLost: number
  stop(): Promise<void>
}

// ---------------------------------------------------------------------------------------------
// Go's sync.RWMutex, as the image manager uses it: a pending Lock() blocks new readers; Unlock()
// lets every waiting reader in before the next writer. This ordering is what loses completions
// in kube-fledged: a Job's Pod completing while another cache's status update holds the lock
// is looked up (RLock) before the worker that created the Job can record it (Lock).
class RWMutex {
  private readers = 0
  private writer = false
  private writersWaiting: (() => void)[] = []
  private readersWaiting: (() => void)[] = []
  async lock(): Promise<void> {
    if (!this.writer && this.readers === 0 && this.writersWaiting.length === 0) {
      this.writer = true
      return
    }
    await new Promise<void>((r) => this.writersWaiting.push(r))
  }
  unlock(): void {
    this.writer = false
    if (this.readersWaiting.length > 0) {
      const rs = this.readersWaiting.splice(0)
      this.readers += rs.length
      for (const r of rs) r()
    } else this.next()
  }
  async rlock(): Promise<void> {
    if (!this.writer && this.writersWaiting.length === 0) {
      this.readers++
      return
    }
    await new Promise<void>((r) => this.readersWaiting.push(r))
  }
  runlock(): void {
    this.readers--
    if (this.readers === 0) this.next()
  }
  private next(): void {
    const w = this.writersWaiting.shift()
    if (w) {
      this.writer = true
      w()
    }
  }
}

// client-go's workqueue.DefaultControllerRateLimiter(): per item 5 ms exponential (every item
// here is a new struct, so always 5 ms) and an overall token bucket of 10 per second, burst 100.
class RateLimitedQueue<T> {
  private items: T[] = []
  private waiting: ((t: T | null) => void)[] = []
  private tokens = 100
  private last = Date.now()
  private timers = new Set<NodeJS.Timeout>()
  private closed = false
  addRateLimited(item: T): void {
    const now = Date.now()
    this.tokens = Math.min(100, this.tokens + ((now - this.last) / 1000) * 10)
    this.last = now
    this.tokens -= 1
    const bucketDelay = this.tokens >= 0 ? 0 : (-this.tokens / 10) * 1000
    const t = setTimeout(
      () => {
        this.timers.delete(t)
        this.add(item)
      },
      Math.max(5, bucketDelay),
    )
    this.timers.add(t)
  }
  private add(item: T): void {
    if (this.closed) return
    const w = this.waiting.shift()
    if (w) w(item)
    else this.items.push(item)
  }
  get(): Promise<T | null> {
    if (this.closed) return Promise.resolve(null)
    const item = this.items.shift()
    if (item !== undefined) return Promise.resolve(item)
    return new Promise((r) => this.waiting.push(r))
  }
  shutDown(): void {
    this.closed = true
    for (const t of this.timers) clearTimeout(t)
    for (const w of this.waiting.splice(0)) w(null)
  }
}

// ---------------------------------------------------------------------------------------------
// A minimal API client from the kubeconfig (token or client certificate, as the tests write it).

interface Api {
  kc: KubeConfig
  request(method: string, path: string, body?: unknown, contentType?: string): Promise<{ status: number; json: any; text: string }>
}

function apiFromKubeconfig(kubeconfigPath: string): Api {
  const kc = new KubeConfig()
  kc.loadFromFile(kubeconfigPath)
  const raw = parseYaml(readFileSync(kubeconfigPath, 'utf8'))
  const cluster = kc.getCurrentCluster()!
  const user = kc.getCurrentUser()
  const ca = cluster.caData ? Buffer.from(cluster.caData, 'base64').toString() : raw?.clusters?.[0]?.cluster?.['certificate-authority']
  const agent = new https.Agent({ keepAlive: true, maxSockets: 8, ca })
  const once = (method: string, path: string, body?: unknown, contentType = 'application/json') =>
    new Promise<{ status: number; json: any; text: string; retryAfter?: string }>((resolve, reject) => {
      const headers: Record<string, string> = { Accept: 'application/json' }
      if (user?.token) headers.Authorization = `Bearer ${user.token}`
      const data = body === undefined ? undefined : JSON.stringify(body)
      if (data !== undefined) {
        headers['Content-Type'] = contentType
        // Node sends no body framing for DELETE unless told the length.
        headers['Content-Length'] = String(Buffer.byteLength(data))
      }
      const req = https.request(new URL(path, cluster.server), { method, headers, agent, timeout: 30_000 }, (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (text += d))
        res.on('end', () => {
          let json: any
          try {
            json = JSON.parse(text)
          } catch {
            json = undefined
          }
          resolve({ status: res.statusCode ?? 0, json, text, retryAfter: res.headers['retry-after'] as string | undefined })
        })
      })
      req.on('timeout', () => req.destroy(new Error(`timeout: ${method} ${path}`)))
      req.on('error', reject)
      req.end(data)
    })
  return {
    kc,
    async request(method, path, body, contentType) {
      // client-go retries a 429 (or 5xx) that carries Retry-After, up to 10 times.
      for (let attempt = 0; ; attempt++) {
        const r = await once(method, path, body, contentType)
        if (!r.retryAfter || !(r.status === 429 || r.status >= 500) || attempt >= 10) return r
        await sleep(Math.min(10, Number(r.retryAfter) || 1) * 1000)
      }
    },
  }
}

function labelSelector(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',')
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

// ---------------------------------------------------------------------------------------------

export async function startKubeFledged(opts: KubeFledgedOptions): Promise<KubeFledged> {
  const namespace = opts.namespace ?? 'kube-fledged'
  const deadlineMs = opts.imagePullDeadlineMs ?? 5 * 60_000
  const refreshMs = opts.refreshFrequencyMs ?? 15 * 60_000
  const busyboxImage = opts.busyboxImage ?? 'senthilrch/busybox:1.35.0'
  const criClientImage = opts.criClientImage ?? 'senthilrch/kubefledged-cri-client:v0.10.0'
  const imagePullPolicy = opts.imagePullPolicy ?? 'IfNotPresent'
  const log = opts.log ?? (() => {})
  const api = apiFromKubeconfig(opts.kubeconfigPath)
  const cachesPath = `/apis/kubefledged.io/v1alpha2/namespaces/${namespace}/imagecaches`
  let stopped = false
  let jobsCreated = 0
  let completionsLost = 0

  const workqueue = new RateLimitedQueue<WorkQueueKey>() // "ImageCaches"
  const imageworkqueue = new RateLimitedQueue<ImageWorkRequest>() // "ImagePullerStatus"
  const imageworkstatus = new Map<string, ImageWorkResult>()
  const lock = new RWMutex()

  // --- listers (informer caches) -----------------------------------------------------------
  const caches = new Map<string, ImageCache>() // name -> object
  const nodes = new Map<string, Node>()
  const pods = new Map<string, Pod>() // namespace/name -> object
  const informers: ListWatch<KubernetesObject>[] = []
  const synced: Promise<void>[] = []

  function informer<T>(
    path: string,
    selector: string | undefined,
    handlers: { add?: (o: T) => void; update?: (o: T) => void; delete?: (o: T) => void },
  ): void {
    let resolveSynced!: () => void
    synced.push(new Promise((r) => (resolveSynced = r)))
    const listFn = async () => {
      const r = await api.request('GET', selector ? `${path}?labelSelector=${encodeURIComponent(selector)}` : path)
      if (r.status !== 200) throw new Error(`list ${path}: HTTP ${r.status} ${r.text.slice(0, 200)}`)
      setTimeout(resolveSynced, 0)
      return { metadata: { resourceVersion: r.json.metadata.resourceVersion }, items: r.json.items }
    }
    const lw = new ListWatch<KubernetesObject>(path, new Watch(api.kc), listFn as any, false, selector)
    if (handlers.add) lw.on('add', (o) => handlers.add!(o as T))
    if (handlers.update) lw.on('update', (o) => handlers.update!(o as T))
    if (handlers.delete) lw.on('delete', (o) => handlers.delete!(o as T))
    lw.on('error', () => {
      if (!stopped) setTimeout(() => void lw.start().catch(() => {}), 1_000)
    })
    informers.push(lw)
  }

  // --- controller.go -------------------------------------------------------------------------

  async function updateImageCacheStatus(imageCache: ImageCache, status: ImageCacheStatus): Promise<void> {
    // controller.go updateImageCacheStatus: GET, replace the whole status, Update (no status subresource).
    const r = await api.request('GET', `${cachesPath}/${imageCache.metadata.name}`)
    if (r.status !== 200) throw new Error(`get imagecache ${imageCache.metadata.name}: HTTP ${r.status}`)
    const copy = r.json as ImageCache
    copy.status = { ...status }
    // Go's encoding/json: `failures,omitempty` leaves an empty map out.
    if (copy.status.failures && Object.keys(copy.status.failures).length === 0) delete copy.status.failures
    if (copy.status.status !== STATUS.Processing) copy.status.completionTime = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
    const u = await api.request('PUT', `${cachesPath}/${imageCache.metadata.name}`, copy)
    if (u.status !== 200) throw new Error(`update imagecache ${imageCache.metadata.name} status: HTTP ${u.status} ${u.text.slice(0, 300)}`)
  }

  async function removeAnnotation(imageCache: ImageCache, key: string): Promise<void> {
    const copy = structuredClone(imageCache)
    delete copy.metadata.annotations?.[key]
    const u = await api.request('PUT', `${cachesPath}/${imageCache.metadata.name}`, copy)
    if (u.status !== 200) throw new Error(`remove annotation ${key}: HTTP ${u.status}`)
    log(`Annotation ${key} removed from imagecache(${imageCache.metadata.name})`)
  }

  async function recordEvent(imageCache: ImageCache, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    // record.EventRecorder with source component kubefledged-controller
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
    await api.request('POST', `/api/v1/namespaces/${imageCache.metadata.namespace}/events`, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${imageCache.metadata.name}.`, namespace: imageCache.metadata.namespace },
      involvedObject: {
        apiVersion: GROUP_VERSION,
        kind: 'ImageCache',
        name: imageCache.metadata.name,
        namespace: imageCache.metadata.namespace,
        uid: imageCache.metadata.uid,
        resourceVersion: imageCache.metadata.resourceVersion,
      },
      type,
      reason,
      message,
      source: { component: CONTROLLER_AGENT_NAME },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    })
  }

  // PreFlightChecks: danglingJobs, then danglingImageCaches.
  async function danglingJobs(): Promise<void> {
    const r = await api.request('GET', `/apis/batch/v1/namespaces/${namespace}/jobs`)
    if (r.status !== 200) throw new Error(`list jobs: HTTP ${r.status}`)
    for (const job of r.json.items ?? []) {
      const d = await api.request('DELETE', `/apis/batch/v1/namespaces/${namespace}/jobs/${job.metadata.name}`, {
        propagationPolicy: 'Background',
      })
      if (d.status >= 300 && d.status !== 404) throw new Error(`delete job ${job.metadata.name}: HTTP ${d.status}`)
      log(`Dangling Job(${job.metadata.name}) deleted`)
    }
  }

  async function danglingImageCaches(): Promise<void> {
    const r = await api.request('GET', cachesPath)
    if (r.status !== 200) throw new Error(`list imagecaches: HTTP ${r.status}`)
    for (const ic of (r.json.items ?? []) as ImageCache[]) {
      if (ic.status?.status === STATUS.Processing) {
        await updateImageCacheStatus(ic, {
          failures: {},
          status: STATUS.Aborted,
          reason: REASON.ImagePullAborted,
          message: MESSAGE.ImagePullAborted,
          startTime: ic.status.startTime,
        })
        log(`Dangling Image cache(${ic.metadata.name}) status changed to '${STATUS.Aborted}'`)
      }
    }
  }

  const statusEmpty = (s: ImageCacheStatus | undefined) => !s || Object.values(s).every((v) => v === undefined || v === '')
  const specEqual = (a: ImageCache, b: ImageCache) => JSON.stringify(a.spec) === JSON.stringify(b.spec)
  const key = (ic: ImageCache) => `${ic.metadata.namespace}/${ic.metadata.name}`

  function enqueueImageCache(workType: WorkType, old: ImageCache | null, neu: ImageCache | null): boolean {
    let obj: ImageCache
    switch (workType) {
      case 'create':
        obj = neu!
        // "If the ImageCache resource already has a status field, it means it's already synced"
        if (!statusEmpty(neu!.status)) return false
        break
      case 'update':
        obj = neu!
        if (old!.status?.status === STATUS.Processing && !specEqual(neu!, old!)) {
          log(`Received image cache update/purge/delete for '${old!.metadata.name}' while it is under processing, so ignoring.`)
          return false
        }
        if (neu!.metadata.annotations?.[PURGE_ANNOTATION] !== undefined && old!.metadata.annotations?.[PURGE_ANNOTATION] === undefined) {
          workType = 'purge'
          break
        }
        if (
          neu!.metadata.annotations?.[REFRESH_ANNOTATION] !== undefined &&
          old!.metadata.annotations?.[REFRESH_ANNOTATION] === undefined
        ) {
          workType = 'refresh'
          break
        }
        if (specEqual(neu!, old!)) return false
        break
      case 'delete':
        return false
      case 'refresh':
        obj = old!
        break
      default:
        return false
    }
    const wqKey: WorkQueueKey = { workType, objKey: key(obj) }
    if (workType === 'update') wqKey.oldImageCache = old!
    workqueue.addRateLimited(wqKey)
    return true
  }

  function runRefreshWorker(): void {
    for (const ic of caches.values()) {
      if (statusEmpty(ic.status)) continue
      if (ic.status?.status === STATUS.Processing) continue
      if (ic.status?.status === STATUS.Failed && ic.status.reason === 'CacheSpecValidationFailed') continue
      if (ic.status?.reason === REASON.ImageCachePurge) continue
      enqueueImageCache('refresh', ic, null)
    }
  }

  const nodeMatches = (n: Node, selector: Record<string, string> | undefined) =>
    !selector || Object.entries(selector).every(([k, v]) => n.metadata.labels?.[k] === v)

  async function syncHandler(wqKey: WorkQueueKey): Promise<void> {
    const status: ImageCacheStatus = { failures: {} }
    const name = wqKey.objKey.split('/')[1]!
    log(`Starting to sync image cache ${name}(${wqKey.workType})`)
    switch (wqKey.workType) {
      case 'create':
      case 'update':
      case 'refresh':
      case 'purge': {
        status.startTime = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
        let imageCache = caches.get(name)
        if (!imageCache) throw new Error(`Error getting imagecache(${name}): not found`)
        if (wqKey.workType === 'update' && !wqKey.oldImageCache) {
          status.status = STATUS.Failed
          status.reason = REASON.OldImageCacheNotFound
          status.message = MESSAGE.OldImageCacheNotFound
          await updateImageCacheStatus(imageCache, status)
          throw new Error(`${REASON.OldImageCacheNotFound}: ${MESSAGE.OldImageCacheNotFound}`)
        }
        const cacheSpec = imageCache.spec.cacheSpec
        status.status = STATUS.Processing
        if (wqKey.workType === 'create') [status.reason, status.message] = [REASON.ImageCacheCreate, MESSAGE.PullingImages]
        if (wqKey.workType === 'update') [status.reason, status.message] = [REASON.ImageCacheUpdate, MESSAGE.UpdatingCache]
        if (wqKey.workType === 'refresh') [status.reason, status.message] = [REASON.ImageCacheRefresh, MESSAGE.RefreshingCache]
        if (wqKey.workType === 'purge') [status.reason, status.message] = [REASON.ImageCachePurge, MESSAGE.PurgeCache]
        const got = await api.request('GET', `${cachesPath}/${name}`)
        if (got.status !== 200) throw new Error(`Error getting imagecache(${name}) from api server: HTTP ${got.status}`)
        imageCache = got.json as ImageCache
        await updateImageCacheStatus(imageCache, status)
        cacheSpec.forEach((list, k) => {
          const matched = [...nodes.values()].filter((n) => nodeMatches(n, list.nodeSelector))
          if (matched.length === 0) {
            // Its master (837f2b3) reports NoImagesPulledOrDeleted for this cache
            // instead of returning an error and leaving it Processing, as controller.go at 088024e does.
            log(`NodeSelector ${JSON.stringify(list.nodeSelector ?? {})} did not match any nodes.`)
            return
          }
          for (const n of matched) {
            for (const image of list.images) {
              imageworkqueue.addRateLimited({
                image,
                node: n,
                containerRuntimeVersion: n.status?.nodeInfo?.containerRuntimeVersion ?? '',
                workType: wqKey.workType,
                imagecache: imageCache!,
              })
            }
            if (wqKey.workType === 'update') {
              for (const oldimage of wqKey.oldImageCache!.spec.cacheSpec[k]?.images ?? []) {
                if (!list.images.includes(oldimage)) {
                  imageworkqueue.addRateLimited({
                    image: oldimage,
                    node: n,
                    containerRuntimeVersion: n.status?.nodeInfo?.containerRuntimeVersion ?? '',
                    workType: 'purge',
                    imagecache: imageCache!,
                  })
                }
              }
            }
          }
        })
        // "We add an empty image pull request to signal the image manager that all requests
        // for this sync action have been placed in the imageworkqueue"
        imageworkqueue.addRateLimited({
          image: '',
          node: null,
          containerRuntimeVersion: '',
          workType: wqKey.workType,
          imagecache: imageCache,
        })
        break
      }
      case 'statusupdate': {
        const got = await api.request('GET', `${cachesPath}/${name}`)
        if (got.status !== 200) throw new Error(`Error getting image cache ${name}: HTTP ${got.status}`)
        const imageCache = got.json as ImageCache
        if (imageCache.status?.startTime) status.startTime = imageCache.status.startTime
        status.reason = imageCache.status?.reason
        let failures = false
        for (const v of wqKey.status!.values()) {
          if ((v.status === 'succeeded' || v.status === 'alreadypulled') && !failures) {
            status.status = STATUS.Succeeded
            status.message = v.request.workType === 'purge' ? MESSAGE.ImagesDeletedSuccessfully : MESSAGE.ImagesPulledSuccessfully
          }
          if ((v.status === 'failed' || v.status === 'unknown') && !failures) {
            failures = true
            status.status = STATUS.Failed
            status.message = v.request.workType === 'purge' ? MESSAGE.ImageDeleteFailedForSomeImages : MESSAGE.ImagePullFailedForSomeImages
          }
          if (v.status === 'failed' || v.status === 'unknown') {
            ;(status.failures![v.request.image] ??= []).push({
              node: v.request.node!.metadata.labels?.['kubernetes.io/hostname'] ?? '',
              reason: v.reason ?? '',
              message: v.message ?? '',
            })
          }
        }
        if (wqKey.status!.size === 0) {
          status.status = STATUS.NoImagesPulledOrDeleted
          status.message = MESSAGE.NoImagesPulledOrDeleted
        }
        await updateImageCacheStatus(imageCache, status)
        if (imageCache.status?.reason === REASON.ImageCachePurge || imageCache.status?.reason === REASON.ImageCacheRefresh) {
          const again = await api.request('GET', `${cachesPath}/${name}`)
          if (again.status !== 200) throw new Error(`Error getting image cache ${name}: HTTP ${again.status}`)
          const ic = again.json as ImageCache
          if (ic.status?.reason === REASON.ImageCachePurge) await removeAnnotation(ic, PURGE_ANNOTATION)
          if (ic.status?.reason === REASON.ImageCacheRefresh && ic.metadata.annotations?.[REFRESH_ANNOTATION] !== undefined) {
            await removeAnnotation(ic, REFRESH_ANNOTATION)
          }
        }
        if (status.status === STATUS.Succeeded) await recordEvent(imageCache, 'Normal', status.reason ?? '', status.message ?? '')
        if (status.status === STATUS.Failed) await recordEvent(imageCache, 'Warning', status.reason ?? '', status.message ?? '')
        break
      }
    }
    log(`Completed sync actions for image cache ${name}(${wqKey.workType})`)
  }

  async function runWorker(): Promise<void> {
    for (;;) {
      const item = await workqueue.get()
      if (!item) return
      try {
        await syncHandler(item)
      } catch (e) {
        // processNextWorkItem: the error is logged; the item is not put back.
        log(`error syncing imagecache: ${(e as Error).message}`)
      }
    }
  }

  // --- image_manager.go ------------------------------------------------------------------------

  async function handlePodStatusChange(pod: Pod): Promise<void> {
    const jobName = pod.metadata.labels?.['job-name'] ?? ''
    await lock.rlock()
    const iwres = imageworkstatus.get(jobName)
    lock.runlock()
    // "Corresponding job might have expired and got deleted. ignore pod status change for such jobs"
    if (!iwres) {
      completionsLost++
      return
    }
    const updated: ImageWorkResult = { ...iwres }
    if (pod.status?.phase === 'Succeeded') updated.status = 'succeeded'
    if (pod.status?.phase === 'Failed') {
      updated.status = 'failed'
      const cs = pod.status.containerStatuses ?? []
      if (cs.length === 1) {
        if (cs[0]!.state?.terminated) {
          updated.reason = cs[0]!.state.terminated.reason
          updated.message = cs[0]!.state.terminated.message
        }
      } else {
        updated.reason = REASON.ImagePullStatusUnknown
        updated.message = MESSAGE.ImagePullStatusUnknown
      }
    }
    await lock.lock()
    imageworkstatus.set(jobName, updated)
    lock.unlock()
  }

  async function updatePendingImageWorkResults(imageCacheName: string): Promise<void> {
    await lock.lock()
    try {
      for (const [job, iwres] of imageworkstatus) {
        if (iwres.request.imagecache.metadata.name !== imageCacheName || iwres.status !== 'jobcreated') continue
        const matched = [...pods.values()].filter((p) => p.metadata.labels?.['job-name'] === job)
        if (matched.length > 1) throw new Error(`more than one pod matched job ${job}`)
        const res: ImageWorkResult = { ...iwres }
        if (matched.length === 0) {
          res.status = 'unknown'
          res.reason = `No pods matched job ${job}`
          res.message = `No pods matched job ${job}`
        } else {
          const pod = matched[0]!
          res.status = 'failed'
          log(
            `Job ${job} expired (${iwres.request.workType === 'purge' ? 'delete' : 'pull'}: ${iwres.request.image} --> ${hostname(iwres)})`,
          )
          if (pod.status?.phase === 'Pending') {
            const cs = pod.status.containerStatuses ?? []
            if (cs.length === 1) {
              if (cs[0]!.state?.waiting) [res.reason, res.message] = [cs[0]!.state.waiting.reason, cs[0]!.state.waiting.message]
              if (cs[0]!.state?.terminated) [res.reason, res.message] = [cs[0]!.state.terminated.reason, cs[0]!.state.terminated.message]
            } else {
              res.reason = 'Pending'
              res.message = 'Check if node is ready'
            }
          }
          if (iwres.request.workType !== 'purge') {
            const fs = `involvedObject.kind=Pod,involvedObject.name=${pod.metadata.name},involvedObject.namespace=${iwres.request.imagecache.metadata.namespace},reason=Failed`
            const ev = await api.request(
              'GET',
              `/api/v1/namespaces/${iwres.request.imagecache.metadata.namespace}/events?fieldSelector=${encodeURIComponent(fs)}`,
            )
            if (ev.status !== 200) throw new Error(`Error listing events for pod (${pod.metadata.name}): HTTP ${ev.status}`)
            for (const e of ev.json.items ?? []) res.message = `${res.message ?? ''}:${e.message}`
          }
        }
        imageworkstatus.set(job, res)
      }
    } finally {
      lock.unlock()
    }
  }

  const hostname = (r: ImageWorkResult) => r.request.node?.metadata.labels?.['kubernetes.io/hostname'] ?? ''

  async function updateImageCacheStatusOfImageManager(imageCache: ImageCache): Promise<void> {
    // wait.Poll(time.Second, imagePullDeadlineDuration, "no Job of this cache still jobcreated")
    const deadline = Date.now() + deadlineMs
    for (;;) {
      await sleep(1_000)
      if (stopped) return
      await lock.rlock()
      const pending = [...imageworkstatus.values()].some(
        (r) => r.request.imagecache.metadata.name === imageCache.metadata.name && r.status === 'jobcreated',
      )
      lock.runlock()
      if (!pending || Date.now() >= deadline) break
    }
    await updatePendingImageWorkResults(imageCache.metadata.name)
    const iwstatus = new Map<string, ImageWorkResult>()
    await lock.lock()
    try {
      for (const [job, iwres] of [...imageworkstatus]) {
        if (iwres.request.imagecache.metadata.name !== imageCache.metadata.name) continue
        iwstatus.set(job, iwres)
        imageworkstatus.delete(job)
        if (!job.startsWith(FAKE_JOB_PREFIX)) {
          // Deleted one by one while the lock is held (this is what delays other Jobs' records).
          const d = await api.request('DELETE', `/apis/batch/v1/namespaces/${imageCache.metadata.namespace}/jobs/${job}`, {
            propagationPolicy: 'Background',
          })
          if (d.status >= 300) log(`Error deleting job ${job}: HTTP ${d.status}`)
        }
      }
    } finally {
      lock.unlock()
    }
    workqueue.addRateLimited({ workType: 'statusupdate', status: iwstatus, objKey: key(imageCache) })
  }

  function checkIfImageNeedsToBePulled(image: string, node: Node): boolean {
    if (imagePullPolicy === 'IfNotPresent') {
      if (!image.includes(':') && !image.includes('@sha')) return true
      if (image.includes(':latest')) return true
      // "Already on the node": a substring of the node's image list (node.status.images).
      if (JSON.stringify(node.status?.images ?? null).includes(image)) return false
    }
    return true
  }

  function ownerRef(ic: ImageCache) {
    return [
      {
        apiVersion: GROUP_VERSION,
        kind: 'ImageCache',
        name: ic.metadata.name,
        uid: ic.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]
  }

  function newImagePullJob(ic: ImageCache, image: string, node: Node): Record<string, unknown> {
    let pullPolicy = 'IfNotPresent'
    if (imagePullPolicy === 'Always') pullPolicy = 'Always'
    else if (image.includes(':latest') || !image.includes(':')) pullPolicy = 'Always'
    const labels = { ...JOB_LABELS, imagecache: ic.metadata.name, controller: CONTROLLER_AGENT_NAME }
    const mount = [{ name: 'tmp-bin', mountPath: '/tmp/bin' }]
    return {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { generateName: `${ic.metadata.name}-`, namespace: ic.metadata.namespace, ownerReferences: ownerRef(ic), labels },
      spec: {
        backoffLimit: 0,
        activeDeadlineSeconds: 3600,
        template: {
          metadata: { namespace: ic.metadata.namespace, labels },
          spec: {
            nodeSelector: { 'kubernetes.io/hostname': node.metadata.labels?.['kubernetes.io/hostname'] ?? '' },
            initContainers: [
              {
                name: 'busybox',
                image: busyboxImage,
                command: ['cp', '/bin/echo', '/tmp/bin'],
                volumeMounts: mount,
                imagePullPolicy: 'IfNotPresent',
              },
            ],
            containers: [
              {
                name: 'imagepuller',
                image,
                command: ['/tmp/bin/echo', 'Image pulled successfully!'],
                volumeMounts: mount,
                imagePullPolicy: pullPolicy,
              },
            ],
            volumes: [{ name: 'tmp-bin', emptyDir: {} }],
            restartPolicy: 'Never',
            imagePullSecrets: ic.spec.imagePullSecrets,
            tolerations: [{ operator: 'Exists' }],
            ...(opts.serviceAccountName ? { serviceAccountName: opts.serviceAccountName } : {}),
          },
        },
      },
    }
  }

  function newImageDeleteJob(ic: ImageCache, image: string, node: Node, containerRuntimeVersion: string): Record<string, unknown> {
    const labels = { ...JOB_LABELS, imagecache: ic.metadata.name, controller: CONTROLLER_AGENT_NAME }
    let socket = '/var/run/docker.sock'
    let args = ['-c', `exec /usr/bin/docker image rm -f ${image} > /dev/termination-log 2>&1`]
    if (
      containerRuntimeVersion.includes('containerd') ||
      containerRuntimeVersion.includes('crio') ||
      containerRuntimeVersion.includes('cri-o')
    ) {
      socket = containerRuntimeVersion.includes('containerd') ? '/run/containerd/containerd.sock' : '/var/run/crio/crio.sock'
      args = [
        '-c',
        `exec /usr/bin/crictl --runtime-endpoint=unix://${socket} --image-endpoint=unix://${socket} rmi ${image} > /dev/termination-log 2>&1`,
      ]
    }
    return {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { generateName: `${ic.metadata.name}-`, namespace: ic.metadata.namespace, ownerReferences: ownerRef(ic), labels },
      spec: {
        backoffLimit: 0,
        activeDeadlineSeconds: 3600,
        template: {
          metadata: { namespace: ic.metadata.namespace, labels },
          spec: {
            nodeSelector: { 'kubernetes.io/hostname': node.metadata.labels?.['kubernetes.io/hostname'] ?? '' },
            containers: [
              {
                name: 'docker-cri-client',
                image: criClientImage,
                command: ['/bin/bash'],
                args,
                volumeMounts: [{ name: 'runtime-sock', mountPath: socket }],
                imagePullPolicy: 'IfNotPresent',
              },
            ],
            volumes: [{ name: 'runtime-sock', hostPath: { path: socket, type: 'Socket' } }],
            restartPolicy: 'Never',
            imagePullSecrets: ic.spec.imagePullSecrets,
            tolerations: [{ operator: 'Exists' }],
            ...(opts.serviceAccountName ? { serviceAccountName: opts.serviceAccountName } : {}),
          },
        },
      },
    }
  }

  async function createJob(job: Record<string, unknown>, ns: string): Promise<string> {
    const r = await api.request('POST', `/apis/batch/v1/namespaces/${ns}/jobs`, job)
    if (r.status !== 201) throw new Error(`HTTP ${r.status} ${r.text.slice(0, 300)}`)
    jobsCreated++
    return r.json.metadata.name as string
  }

  let fakeSeq = 0
  async function runImageWorker(): Promise<void> {
    for (;;) {
      const iwr = await imageworkqueue.get()
      if (!iwr) return
      try {
        if (iwr.image === '' && iwr.node === null) {
          void updateImageCacheStatusOfImageManager(iwr.imagecache).catch((e) => log(`updateImageCacheStatus: ${(e as Error).message}`))
          continue
        }
        let jobName: string | null = null
        let pull = false
        if (iwr.workType === 'purge') {
          jobName = await createJob(
            newImageDeleteJob(iwr.imagecache, iwr.image, iwr.node!, iwr.containerRuntimeVersion),
            iwr.imagecache.metadata.namespace,
          )
          log(`Job ${jobName} created (delete:- ${iwr.image} --> ${iwr.node!.metadata.name})`)
        } else {
          pull = checkIfImageNeedsToBePulled(iwr.image, iwr.node!)
          if (pull) {
            jobName = await createJob(newImagePullJob(iwr.imagecache, iwr.image, iwr.node!), iwr.imagecache.metadata.namespace)
            log(`Job ${jobName} created (pull:- ${iwr.image} --> ${iwr.node!.metadata.name})`)
          }
        }
        await lock.lock()
        if (jobName) imageworkstatus.set(jobName, { request: iwr, status: 'jobcreated' })
        else
          imageworkstatus.set(`${FAKE_JOB_PREFIX}${(fakeSeq++).toString(36).padStart(5, '0')}`, { request: iwr, status: 'alreadypulled' })
        lock.unlock()
      } catch (e) {
        log(
          `error ${iwr.workType === 'purge' ? 'deleting' : 'pulling'} image '${iwr.image}' on node '${iwr.node?.metadata.name}': ${(e as Error).message}`,
        )
      }
    }
  }

  // --- start: NewController, PreFlightChecks, Run ---------------------------------------------------
  informer<ImageCache>(cachesPath, undefined, {
    add: (ic) => {
      caches.set(ic.metadata.name, ic)
      enqueueImageCache('create', null, ic)
    },
    update: (ic) => {
      const old = caches.get(ic.metadata.name)
      caches.set(ic.metadata.name, ic)
      if (old && old.metadata.resourceVersion !== ic.metadata.resourceVersion) enqueueImageCache('update', old, ic)
    },
    delete: (ic) => {
      caches.delete(ic.metadata.name)
    },
  })
  informer<Node>('/api/v1/nodes', undefined, {
    add: (n) => nodes.set(n.metadata.name, n),
    update: (n) => nodes.set(n.metadata.name, n),
    delete: (n) => nodes.delete(n.metadata.name),
  })
  informer<Pod>('/api/v1/pods', labelSelector(JOB_LABELS), {
    add: (p) => pods.set(`${p.metadata.namespace}/${p.metadata.name}`, p),
    update: (p) => {
      const k = `${p.metadata.namespace}/${p.metadata.name}`
      const old = pods.get(k)
      pods.set(k, p)
      if (!old || old.metadata.resourceVersion === p.metadata.resourceVersion) return
      const done = (ph?: string) => ph === 'Succeeded' || ph === 'Failed'
      if (done(p.status?.phase) && !done(old.status?.phase)) void handlePodStatusChange(p)
    },
    delete: (p) => pods.delete(`${p.metadata.namespace}/${p.metadata.name}`),
  })

  // main.go runs PreFlightChecks before the informers start; its informer add events for caches
  // created with a status are ignored anyway.
  await danglingJobs()
  await danglingImageCaches()
  for (const i of informers) await i.start()
  await Promise.all(synced)
  void runWorker()
  void runImageWorker()
  let refreshTimer: NodeJS.Timeout | undefined
  if (refreshMs > 0) {
    // wait.Until(c.runRefreshWorker, frequency): runs at once, then every `frequency`.
    runRefreshWorker()
    refreshTimer = setInterval(runRefreshWorker, refreshMs)
  }
  log('kube-fledged stand-in started')

  return {
    namespace,
    get jobsCreated() {
      return jobsCreated
    },
    get completionsLost() {
      return completionsLost
    },
    async stop() {
      stopped = true
      if (refreshTimer) clearInterval(refreshTimer)
      workqueue.shutDown()
      imageworkqueue.shutDown()
      await Promise.all(informers.map((i) => i.stop()))
    },
  }
}

/** The ImageCaches mirrorhook manages in a namespace, as the API server has them. */
export async function managedImageCaches(
  api: { request(method: string, path: string): Promise<{ status: number; body: string; json(): any }> },
  namespace = 'kube-fledged',
): Promise<any[]> {
  const r = await api.request(
    'GET',
    `/apis/${GROUP_VERSION}/namespaces/${namespace}/imagecaches?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dmirrorhook`,
  )
  if (r.status !== 200) throw new Error(`list ImageCaches: ${r.status} ${r.body}`)
  return r.json().items
}

/** The managed ImageCache (mirrorhook's batch) whose list holds an image; undefined when none does. */
export async function imageCacheHolding(
  api: { request(method: string, path: string): Promise<{ status: number; body: string; json(): any }> },
  image: string,
  namespace = 'kube-fledged',
): Promise<any | undefined> {
  return (await managedImageCaches(api, namespace)).find((c) => c.spec?.cacheSpec?.[0]?.images?.includes(image))
}
