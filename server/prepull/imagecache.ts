// kube-fledged's ImageCache as mirrorhook writes and reads it: batches of images, one
// cacheSpec list each (every node, or the configured nodeSelector), written by one replica
// at a time (the Lease in kubeapi's namespace). A batch is created with its images, may lose
// images (a spec change kube-fledged turns into a purge of those images on the nodes) and is
// purged and deleted once empty; it never gains images (kube-fledged would pull every image
// of the list again) and its nodeSelector and number of lists never change.
import { managedLabels } from '../kube/labels.js'
import type { KubeFledgedConfig } from './config.js'

export const GROUP = 'kubefledged.io'
export const VERSION = 'v1alpha2'
export const PLURAL = 'imagecaches'
export const API_VERSION = `${GROUP}/${VERSION}`

// Why each image is there: {"<mirror reference>": "<reference as the Pod's manifest wrote it>"}.
export const ORIGINALS_ANNOTATION = 'mirrorhook.io/originals'
// The one-image layout of earlier versions: the original of its sole image.
export const ORIGINAL_IMAGE_ANNOTATION = 'mirrorhook.io/original-image'
// Images no Pod uses any more: {"<image>": "<since, RFC 3339>"}; the purge clock, shared by
// replicas and restarts. (A plain time, in earlier versions, applies to the sole image.)
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

// `mirrorhook-<time>-<random>`: distinct per batch (one writer names them; the name is kept
// across retries of its create) and short enough that kube-fledged's Job and Pod names
// (`<name>-xxxxx-yyyyy`, also used as label values) stay under 63 characters.
export function batchName(now: number, random: () => number = Math.random): string {
  const suffix = Math.floor(random() * 36 ** 5)
    .toString(36)
    .padStart(5, '0')
  return `mirrorhook-${Math.max(0, Math.floor(now)).toString(36)}-${suffix}`
}

export type CacheSettings = Pick<KubeFledgedConfig, 'namespace' | 'nodeSelector' | 'imagePullSecrets'>

/** The batch to create. No status: kube-fledged ignores caches created with one. */
export function buildImageCache(
  name: string,
  images: readonly string[],
  originals: ReadonlyMap<string, string | undefined>,
  settings: CacheSettings,
): ImageCache {
  const list: ImageCache['spec']['cacheSpec'][number] = { images: [...images] }
  if (settings.nodeSelector && Object.keys(settings.nodeSelector).length > 0) list.nodeSelector = { ...settings.nodeSelector }
  const spec: ImageCache['spec'] = { cacheSpec: [list] }
  if (settings.imagePullSecrets.length > 0) spec.imagePullSecrets = settings.imagePullSecrets.map((name) => ({ name }))
  const why: Record<string, string> = {}
  for (const image of images) why[image] = originals.get(image) ?? image
  return {
    apiVersion: API_VERSION,
    kind: 'ImageCache',
    metadata: {
      name,
      namespace: settings.namespace,
      labels: managedLabels(),
      annotations: { [ORIGINALS_ANNOTATION]: JSON.stringify(why) },
    },
    spec,
  }
}

/** The images a managed cache holds, if it has mirrorhook's layout (one list of images). */
export function imagesOf(cache: ImageCache): string[] | undefined {
  const lists = cache.spec?.cacheSpec
  if (!Array.isArray(lists) || lists.length !== 1) return undefined
  const images = lists[0]?.images
  return Array.isArray(images) && images.length > 0 && images.every((i) => typeof i === 'string') ? images : undefined
}

function jsonMap(raw: string | undefined): Record<string, string> | undefined {
  if (!raw?.startsWith('{')) return undefined
  try {
    const parsed: unknown = JSON.parse(raw)
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined
    return Object.fromEntries(Object.entries(parsed).filter((e): e is [string, string] => typeof e[1] === 'string'))
  } catch {
    return undefined
  }
}

/** The originals recorded on a cache: image → the reference as the Pod's manifest wrote it. */
export function originalsOf(cache: ImageCache): Map<string, string> {
  const a = cache.metadata.annotations ?? {}
  const out = new Map(Object.entries(jsonMap(a[ORIGINALS_ANNOTATION]) ?? {}))
  const images = imagesOf(cache)
  if (images?.length === 1 && a[ORIGINAL_IMAGE_ANNOTATION] && !out.has(images[0]!)) out.set(images[0]!, a[ORIGINAL_IMAGE_ANNOTATION])
  return out
}

/** Images marked unused on a cache, with the time the mark was set. */
export function unusedSinceOf(cache: ImageCache): Map<string, number> {
  const raw = cache.metadata.annotations?.[UNUSED_SINCE_ANNOTATION]
  const out = new Map<string, number>()
  if (raw === undefined) return out
  const map = jsonMap(raw)
  if (map) {
    for (const [image, at] of Object.entries(map)) {
      const t = time(at)
      if (t !== undefined) out.set(image, t)
    }
    return out
  }
  const images = imagesOf(cache)
  const t = time(raw)
  if (images?.length === 1 && t !== undefined) out.set(images[0]!, t)
  return out
}

/** The annotation values for a set of unused marks (null removes the annotation). */
export function unusedSinceValue(marks: ReadonlyMap<string, number>): string | null {
  if (marks.size === 0) return null
  return JSON.stringify(Object.fromEntries([...marks].sort(([a], [b]) => (a < b ? -1 : 1)).map(([i, t]) => [i, new Date(t).toISOString()])))
}

/** The originals annotation for the images kept. */
export function originalsValue(cache: ImageCache, keep: readonly string[]): string {
  const all = originalsOf(cache)
  return JSON.stringify(Object.fromEntries(keep.map((i) => [i, all.get(i) ?? i])))
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
  | 'pending' // created, not processed yet, or pulling for the first time
  | 'cached' // pulled on every selected node
  | 'failed' // Failed: the pull failed on the nodes listed (an empty reason: the pull Job expired)
  | 'unknown' // Unknown: kube-fledged could not tell
  | 'aborted' // Aborted: kube-fledged restarted while pulling; it refreshes the cache later
  | 'no-nodes' // NoImagesPulledOrDeleted: the nodeSelector matched no node
  | 'purging' // purge asked for or running
  | 'purged' // purge finished
  | 'purge-failed'

export interface CacheView {
  // The state of the cache as a whole (of every image, unless `failures` names some).
  readonly state: CacheState
  // kube-fledged is working on it: no spec or annotation change may be sent.
  readonly processing: boolean
  // kube-fledged has not taken it yet (no status).
  readonly untouched: boolean
  readonly failedNodes: NodeFailure[]
  readonly failures: Readonly<Record<string, NodeFailure[]>>
  readonly refreshRequested: boolean
  readonly purgeRequested: boolean
  // The last purge's terminal outcome, whether or not kube-fledged has removed its annotation yet.
  readonly purgeFinished?: 'succeeded' | 'failed'
  readonly unusedSince: ReadonlyMap<string, number>
  readonly startedAt?: number
  readonly completedAt?: number
}

// kube-fledged's terminal statuses other than Succeeded (pkg/apis/kubefledged/v1alpha2/types.go),
// and NoImagesPulledOrDeleted (its master).
const TERMINAL: Readonly<Record<string, CacheState>> = {
  Failed: 'failed',
  Unknown: 'unknown',
  Aborted: 'aborted',
  NoImagesPulledOrDeleted: 'no-nodes',
}

/** States kube-fledged is asked to retry (refresh) while the images are in use. */
export const RETRIED_STATES: ReadonlySet<CacheState> = new Set(['failed', 'unknown', 'aborted', 'no-nodes'])

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
  const failures = status.failures && typeof status.failures === 'object' ? status.failures : {}
  const failedNodes = Object.values(failures).flat()
  const purge = status.reason === 'ImageCachePurge'
  const terminal = TERMINAL[status.status ?? '']
  // A purge that ends in any status but success failed (NoImagesPulledOrDeleted included: nothing was deleted).
  const purgeFailed = status.status !== undefined && status.status !== 'Succeeded' && status.status !== 'Processing'
  let state: CacheState
  if (purge && status.status === 'Succeeded' && !purgeRequested) state = 'purged'
  else if (purge && purgeFailed && !purgeRequested) state = 'purge-failed'
  else if (purge || purgeRequested) state = 'purging'
  else if (status.status === 'Succeeded') state = 'cached'
  else if (terminal) state = terminal
  else state = 'pending'
  return {
    state,
    processing,
    untouched: !status.status,
    failedNodes,
    failures,
    refreshRequested,
    purgeRequested,
    purgeFinished: !purge ? undefined : status.status === 'Succeeded' ? 'succeeded' : purgeFailed ? 'failed' : undefined,
    unusedSince: unusedSinceOf(cache),
    startedAt: time(status.startTime),
    completedAt: time(status.completionTime),
  }
}

/**
 * One image's state inside its batch. A Failed status names the images that failed and on
 * which nodes (`failures`); the other images of the batch were pulled everywhere.
 */
export function imageStateOf(view: CacheView, image: string): { state: CacheState; failed: NodeFailure[] } {
  const mine = view.failures[image] ?? []
  if (view.state === 'failed' || view.state === 'unknown') {
    if (view.failedNodes.length === 0) return { state: view.state, failed: [] }
    return mine.length > 0 ? { state: view.state, failed: mine } : { state: 'cached', failed: [] }
  }
  if (view.state === 'purge-failed') return { state: 'purge-failed', failed: mine }
  return { state: view.state, failed: [] }
}

/** The nodes an image failed on, with an empty reason (a pull Job whose completion kube-fledged did not record) spelled out. */
export function describeFailure(f: NodeFailure): NodeFailure {
  return f.reason
    ? f
    : { ...f, reason: 'JobExpired', message: f.message || 'no result before the pull deadline (kube-fledged gave no reason)' }
}

/** Whether a Pod is one of kube-fledged's own pull or purge Pods. */
export function isKubeFledgedPod(labels: unknown): boolean {
  if (typeof labels !== 'object' || labels === null) return false
  const l = labels as Record<string, unknown>
  return Object.entries(KUBE_FLEDGED_POD_LABELS).every(([k, v]) => l[k] === v)
}
