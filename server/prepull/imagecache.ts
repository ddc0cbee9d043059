// kube-fledged's ImageCache as mirrorhook writes and reads it: one object per
// image, named from a hash of the reference, never updated in its spec.
import { createHash } from 'node:crypto'
import { managedLabels } from '../kube/labels.js'
import type { KubeFledgedConfig } from './config.js'

export const GROUP = 'kubefledged.io'
export const VERSION = 'v1alpha2'
export const PLURAL = 'imagecaches'
export const API_VERSION = `${GROUP}/${VERSION}`

// Why the object exists: the reference as the Pod's manifest wrote it.
export const ORIGINAL_IMAGE_ANNOTATION = 'mirrorhook.io/original-image'
// Set when no Pod uses the image any more; the purge clock, shared by replicas and restarts.
export const UNUSED_SINCE_ANNOTATION = 'mirrorhook.io/unused-since'
export const REFRESH_ANNOTATION = 'kubefledged.io/refresh-imagecache'
export const PURGE_ANNOTATION = 'kubefledged.io/purge-imagecache'

// kube-fledged's own image-pull and purge Pods carry these labels.
export const KUBE_FLEDGED_POD_LABELS: Readonly<Record<string, string>> = {
  app: 'kubefledged',
  kubefledged: 'kubefledged-image-manager',
}

export interface NodeFailure {
  node: string
  reason: string
  message: string
}

export interface ImageCacheStatus {
  status?: string
  reason?: string
  message?: string
  failures?: Record<string, NodeFailure[]>
  startTime?: string
  completionTime?: string
}

export interface ImageCache {
  apiVersion?: string
  kind?: string
  metadata: {
    name?: string
    namespace?: string
    uid?: string
    resourceVersion?: string
    creationTimestamp?: string | Date
    labels?: Record<string, string>
    annotations?: Record<string, string>
  }
  spec: {
    cacheSpec: { images: string[]; nodeSelector?: Record<string, string> }[]
    imagePullSecrets?: { name?: string }[]
  }
  status?: ImageCacheStatus
}

// 32 hex digits: unique in practice, and `<name>-xxxxx-yyyyy` (kube-fledged's Job
// and Pod names, also used as label values) stays under 63 characters.
export function imageCacheName(image: string): string {
  return `mirrorhook-${createHash('sha256').update(image).digest('hex').slice(0, 32)}`
}

export type CacheSettings = Pick<KubeFledgedConfig, 'namespace' | 'nodeSelector' | 'imagePullSecrets'>

/** The object to create for one image. No status: kube-fledged ignores caches created with one. */
export function buildImageCache(image: string, original: string | undefined, settings: CacheSettings): ImageCache {
  const list: ImageCache['spec']['cacheSpec'][number] = { images: [image] }
  if (settings.nodeSelector && Object.keys(settings.nodeSelector).length > 0) list.nodeSelector = { ...settings.nodeSelector }
  const spec: ImageCache['spec'] = { cacheSpec: [list] }
  if (settings.imagePullSecrets.length > 0) spec.imagePullSecrets = settings.imagePullSecrets.map((name) => ({ name }))
  return {
    apiVersion: API_VERSION,
    kind: 'ImageCache',
    metadata: {
      name: imageCacheName(image),
      namespace: settings.namespace,
      labels: managedLabels(),
      annotations: { [ORIGINAL_IMAGE_ANNOTATION]: original ?? image },
    },
    spec,
  }
}

/** The image a managed cache holds, if it has the one-image layout. */
export function imageOf(cache: ImageCache): string | undefined {
  const lists = cache.spec?.cacheSpec
  if (!Array.isArray(lists) || lists.length !== 1) return undefined
  const images = lists[0]?.images
  return Array.isArray(images) && images.length === 1 && typeof images[0] === 'string' ? images[0] : undefined
}

function sameRecord(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  const ea = Object.entries(a ?? {})
  const eb = b ?? {}
  return ea.length === Object.keys(eb).length && ea.every(([k, v]) => eb[k] === v)
}

/** Whether an existing cache has the nodeSelector and pull secrets the configuration asks for. */
export function specMatches(cache: ImageCache, settings: CacheSettings): boolean {
  const list = cache.spec?.cacheSpec?.[0]
  if (!list) return false
  const wanted = settings.nodeSelector && Object.keys(settings.nodeSelector).length > 0 ? settings.nodeSelector : undefined
  if (!sameRecord(list.nodeSelector, wanted)) return false
  const have = (cache.spec.imagePullSecrets ?? []).map((s) => s.name ?? '').sort()
  const want = [...settings.imagePullSecrets].sort()
  return have.length === want.length && have.every((n, i) => n === want[i])
}

export type CacheState =
  | 'pending' // created, not processed yet, or pulling
  | 'cached' // pulled on every selected node
  | 'failed' // a terminal status other than success
  | 'purging' // purge asked for or running
  | 'purged' // purge finished
  | 'purge-failed'

export interface CacheView {
  readonly state: CacheState
  // kube-fledged is working on it: no spec or annotation change may be sent.
  readonly processing: boolean
  readonly failedNodes: NodeFailure[]
  readonly refreshRequested: boolean
  readonly purgeRequested: boolean
  // The last purge's terminal outcome, whether or not kube-fledged has removed its annotation yet.
  readonly purgeFinished?: 'succeeded' | 'failed'
  readonly unusedSince?: number
  readonly completedAt?: number
}

const FAILED_STATUSES = new Set(['Failed', 'Unknown', 'Aborted'])

function time(value: string | undefined): number | undefined {
  if (!value) return undefined
  const t = Date.parse(value)
  return Number.isNaN(t) ? undefined : t
}

/** Reads kube-fledged's status (written by full updates) into one state. */
export function viewOf(cache: ImageCache): CacheView {
  const status = cache.status ?? {}
  const annotations = cache.metadata.annotations ?? {}
  const processing = status.status === 'Processing'
  const purgeRequested = PURGE_ANNOTATION in annotations
  const refreshRequested = REFRESH_ANNOTATION in annotations
  const failedNodes = Object.values(status.failures ?? {}).flat()
  const purge = status.reason === 'ImageCachePurge'
  let state: CacheState
  if (purge && status.status === 'Succeeded' && !purgeRequested) state = 'purged'
  else if (purge && FAILED_STATUSES.has(status.status ?? '') && !purgeRequested) state = 'purge-failed'
  else if (purge || purgeRequested) state = 'purging'
  else if (status.status === 'Succeeded') state = 'cached'
  else if (FAILED_STATUSES.has(status.status ?? '')) state = 'failed'
  else state = 'pending'
  return {
    state,
    processing,
    failedNodes,
    refreshRequested,
    purgeRequested,
    purgeFinished: !purge
      ? undefined
      : status.status === 'Succeeded'
        ? 'succeeded'
        : FAILED_STATUSES.has(status.status ?? '')
          ? 'failed'
          : undefined,
    unusedSince: time(annotations[UNUSED_SINCE_ANNOTATION]),
    completedAt: time(status.completionTime),
  }
}

/** Whether a Pod is one of kube-fledged's own pull or purge Pods. */
export function isKubeFledgedPod(labels: unknown): boolean {
  if (typeof labels !== 'object' || labels === null) return false
  const l = labels as Record<string, unknown>
  return Object.entries(KUBE_FLEDGED_POD_LABELS).every(([k, v]) => l[k] === v)
}
