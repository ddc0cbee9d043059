// A list+watch of the ImageCaches mirrorhook manages: the store the reconciler
// reads and the source of status feedback. Reconnects with backoff (server/kube/informer.ts).
import type { KubeConfig } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { statusOf } from '../kube/errors.js'
import { Informer } from '../kube/informer.js'
import { MANAGED_SELECTOR } from '../kube/labels.js'
import type { Clock } from './clock.js'
import { type ImageCache, imagesOf } from './imagecache.js'
import { imageCachePath, type ImageCacheApi } from './kubeapi.js'

export interface CacheWatcherOptions {
  kubeConfig: KubeConfig
  api: ImageCacheApi
  namespace: string
  clock: Clock
  logger: Logger
  // A batch added or changed, with the images it held before (empty when new).
  onChange: (cache: ImageCache, before: readonly string[]) => void
  onDelete: (cache: ImageCache, before: readonly string[]) => void
  // The first full list is in the store.
  onSynced: () => void
  // The list or watch answered 404: no CRD.
  onMissing: () => void
}

// Reconnects: 1 s, doubling to 30 s.
export const CACHE_WATCH_BACKOFF = { initialMs: 1000, maxMs: 30_000 }

export class CacheWatcher {
  private informer?: Informer<ImageCache>
  // Which batch holds which image (an image in two batches is counted, never made by this layout).
  private readonly imagesByBatch = new Map<string, readonly string[]>()
  private readonly batchesByImage = new Map<string, Set<string>>()

  constructor(private readonly o: CacheWatcherOptions) {}

  get synced(): boolean {
    return this.informer?.synced ?? false
  }

  get(name: string): ImageCache | undefined {
    return this.informer?.get(name, this.o.namespace)
  }

  /** The batch holding an image. */
  batchOf(image: string): string | undefined {
    const names = this.batchesByImage.get(image)
    return names ? names.values().next().value : undefined
  }

  /** Images held by more than one batch. */
  get duplicates(): number {
    let n = 0
    for (const names of this.batchesByImage.values()) if (names.size > 1) n++
    return n
  }

  /** Managed ImageCaches in the store. */
  get count(): number {
    return this.informer?.list(this.o.namespace).length ?? 0
  }

  /** Images held by the batches. */
  get images(): number {
    return this.batchesByImage.size
  }

  private index(cache: ImageCache, images: readonly string[]): readonly string[] {
    const name = cache.metadata.name ?? ''
    const before = this.imagesByBatch.get(name) ?? []
    for (const image of before) {
      const names = this.batchesByImage.get(image)
      names?.delete(name)
      if (names?.size === 0) this.batchesByImage.delete(image)
    }
    if (images.length > 0) this.imagesByBatch.set(name, images)
    else this.imagesByBatch.delete(name)
    for (const image of images) {
      const names = this.batchesByImage.get(image) ?? new Set<string>()
      names.add(name)
      this.batchesByImage.set(image, names)
    }
    return before
  }

  list(): ImageCache[] {
    return [...(this.informer?.list(this.o.namespace) ?? [])]
  }

  start(): void {
    if (!this.informer) {
      const informer = new Informer<ImageCache>({
        kubeConfig: this.o.kubeConfig,
        what: `ImageCaches in ${this.o.namespace}`,
        path: imageCachePath(this.o.namespace),
        labelSelector: MANAGED_SELECTOR,
        // The API pages the list itself: one snapshot.
        list: async () => {
          const { items, resourceVersion } = await this.o.api.list()
          return { metadata: { resourceVersion }, items }
        },
        logger: this.o.logger,
        backoff: CACHE_WATCH_BACKOFF,
        timers: this.o.clock,
        onError: (error) => {
          if (statusOf(error) !== 404) return 'retry'
          // Start over with a fresh list once the CRD is back.
          if (this.informer === informer) this.informer = undefined
          this.o.onMissing()
          return 'stop'
        },
      })
      const changed = (obj: ImageCache) => this.o.onChange(obj, this.index(obj, imagesOf(obj) ?? []))
      informer.on('add', changed)
      informer.on('update', changed)
      informer.on('delete', (obj) => this.o.onDelete(obj, this.index(obj, [])))
      void informer.whenSynced().then(() => {
        if (this.informer === informer) this.o.onSynced()
      })
      this.informer = informer
    }
    this.informer.start()
  }

  async stop(): Promise<void> {
    await this.informer?.stop()
  }
}
