// The API calls pre-pull makes: five verbs on ImageCaches in kube-fledged's namespace,
// through client-node (server/kube/client.ts), and which images running Pods use, read
// from the process's shared Pod watch.
import { CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node'
import { ORIGINAL_IMAGES_ANNOTATION } from '../core/pod.js'
import { apiClient } from '../kube/client.js'
import { apiErrorOf } from '../kube/errors.js'
import type { PodCache } from '../kube/pods.js'
import { MANAGED_SELECTOR } from '../kube/labels.js'
import { GROUP, type ImageCache, isKubeFledgedPod, PLURAL, VERSION } from './imagecache.js'

/** What the reconciler needs from the API: five verbs on ImageCaches in one namespace. Failures are ApiErrors. */
export interface ImageCacheApi {
  create(cache: ImageCache): Promise<void>
  // A JSON merge patch of annotations (null removes), refused with 409 if the object changed since `resourceVersion`.
  annotate(name: string, annotations: Record<string, string | null>, resourceVersion: string): Promise<void>
  // A JSON merge patch of the cacheSpec (its lists as a whole) and annotations, refused with 409 if the object changed since `resourceVersion`.
  update(
    name: string,
    cacheSpec: ImageCache['spec']['cacheSpec'],
    annotations: Record<string, string | null>,
    resourceVersion: string,
  ): Promise<void>
  // Refused with 409 if the object is not the one seen (uid and resourceVersion).
  remove(name: string, precondition: { uid: string; resourceVersion: string }): Promise<void>
  // Every managed ImageCache, read in pages, as one snapshot.
  list(): Promise<{ items: ImageCache[]; resourceVersion: string }>
}

export function imageCachePath(namespace: string, name?: string): string {
  return `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(namespace)}/${PLURAL}${name ? `/${encodeURIComponent(name)}` : ''}`
}

export class KubeImageCacheApi implements ImageCacheApi {
  private readonly api: CustomObjectsApi

  constructor(
    kubeConfig: KubeConfig,
    private readonly namespace: string,
    options: { maxSockets?: number } = {},
    private readonly pageSize = 500,
  ) {
    this.api = apiClient(kubeConfig, CustomObjectsApi, options)
  }

  private get where() {
    return { group: GROUP, version: VERSION, namespace: this.namespace, plural: PLURAL }
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (error) {
      throw apiErrorOf(error, what)
    }
  }

  async create(cache: ImageCache): Promise<void> {
    await this.call(`POST ${imageCachePath(this.namespace)}`, () => this.api.createNamespacedCustomObject({ ...this.where, body: cache }))
  }

  /** A server-side dry-run create: answers whether the API (the CRD and the namespace) is there. */
  async probe(cache: ImageCache): Promise<void> {
    await this.call(`POST ${imageCachePath(this.namespace)}`, () =>
      this.api.createNamespacedCustomObject({ ...this.where, body: cache, dryRun: 'All' }),
    )
  }

  async annotate(name: string, annotations: Record<string, string | null>, resourceVersion: string): Promise<void> {
    await this.call(`PATCH ${imageCachePath(this.namespace, name)}`, () =>
      this.api.patchNamespacedCustomObject(
        { ...this.where, name, body: { metadata: { resourceVersion, annotations } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    )
  }

  async update(
    name: string,
    cacheSpec: ImageCache['spec']['cacheSpec'],
    annotations: Record<string, string | null>,
    resourceVersion: string,
  ): Promise<void> {
    await this.call(`PATCH ${imageCachePath(this.namespace, name)}`, () =>
      this.api.patchNamespacedCustomObject(
        { ...this.where, name, body: { metadata: { resourceVersion, annotations }, spec: { cacheSpec } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    )
  }

  async remove(name: string, precondition: { uid: string; resourceVersion: string }): Promise<void> {
    await this.call(`DELETE ${imageCachePath(this.namespace, name)}`, () =>
      this.api.deleteNamespacedCustomObject({ ...this.where, name, body: { preconditions: precondition } }),
    )
  }

  async list(): Promise<{ items: ImageCache[]; resourceVersion: string }> {
    const items: ImageCache[] = []
    let cont: string | undefined
    let resourceVersion = ''
    do {
      const page = (await this.call(`GET ${imageCachePath(this.namespace)}`, () =>
        this.api.listNamespacedCustomObject({ ...this.where, labelSelector: MANAGED_SELECTOR, limit: this.pageSize, _continue: cont }),
      )) as { items?: ImageCache[]; metadata?: { resourceVersion?: string; continue?: string } }
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

/** The images in use, read from the shared Pod watch (no API request): once it has listed the Pods. */
export class CachedPodSource implements PodSource {
  constructor(private readonly pods: PodCache) {}

  async imagesInUse(): Promise<Map<string, string>> {
    await this.pods.whenSynced()
    const out = new Map<string, string>()
    for (const pod of this.pods.list() as V1Pod[])
      for (const [image, original] of rewrittenImagesOf(pod as PodLike)) if (!out.has(image)) out.set(image, original)
    return out
  }
}
