// A list+watch of the ImageCaches mirrorhook manages: the store the reconciler
// reads and the source of status feedback. Reconnects with backoff (server/kube/informer.ts).
import type { KubeConfig } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { statusOf } from '../kube/errors.js'
import { Informer } from '../kube/informer.js'
import { MANAGED_SELECTOR } from '../kube/labels.js'
import type { Clock } from './clock.js'
import type { ImageCache } from './imagecache.js'
import { imageCachePath, type ImageCacheApi } from './kubeapi.js'

export interface CacheWatcherOptions {
  kubeConfig: KubeConfig
  api: ImageCacheApi
  namespace: string
  clock: Clock
  logger: Logger
  onChange: (cache: ImageCache) => void
  onDelete: (cache: ImageCache) => void
  // The first full list is in the store.
  onSynced: () => void
  // The list or watch answered 404: no CRD.
  onMissing: () => void
}

// Reconnects: 1 s, doubling to 30 s.
export const CACHE_WATCH_BACKOFF = { initialMs: 1000, maxMs: 30_000 }

export class CacheWatcher {
  private informer?: Informer<ImageCache>

  constructor(private readonly o: CacheWatcherOptions) {}

  get synced(): boolean {
    return this.informer?.synced ?? false
  }

  get(name: string): ImageCache | undefined {
    return this.informer?.get(name, this.o.namespace)
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
      informer.on('add', (obj) => this.o.onChange(obj))
      informer.on('update', (obj) => this.o.onChange(obj))
      informer.on('delete', (obj) => this.o.onDelete(obj))
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
