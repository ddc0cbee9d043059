// A list+watch of the ImageCaches mirrorhook manages: the store the reconciler
// reads and the source of status feedback. Reconnects with backoff.
import { ListWatch, Watch, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import type { Clock, TimerHandle } from './clock.js'
import { type ImageCache, MANAGED_SELECTOR } from './imagecache.js'
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

function statusOf(error: unknown): number | undefined {
  const e = error as { status?: unknown; statusCode?: unknown; code?: unknown }
  for (const v of [e?.status, e?.statusCode, e?.code]) if (typeof v === 'number') return v
  return undefined
}

export class CacheWatcher {
  private informer?: ListWatch<KubernetesObject>
  private restartTimer?: TimerHandle
  private failures = 0
  private running = false
  private syncedOnce = false

  constructor(private readonly o: CacheWatcherOptions) {}

  get synced(): boolean {
    return this.syncedOnce
  }

  get(name: string): ImageCache | undefined {
    return this.informer?.get(name, this.o.namespace) as ImageCache | undefined
  }

  list(): ImageCache[] {
    return (this.informer?.list(this.o.namespace) ?? []) as unknown as ImageCache[]
  }

  start(): void {
    if (this.running) return
    this.running = true
    if (!this.informer) {
      const listFn = async () => {
        const { items, resourceVersion } = await this.o.api.list()
        this.failures = 0
        if (!this.syncedOnce) {
          // ListWatch files the items right after this promise resolves; a timer runs after that.
          setTimeout(() => {
            if (!this.running || this.syncedOnce) return
            this.syncedOnce = true
            this.o.onSynced()
          }, 0)
        }
        return { metadata: { resourceVersion }, items: items as unknown as KubernetesObject[] }
      }
      const informer = new ListWatch<KubernetesObject>(
        imageCachePath(this.o.namespace),
        new Watch(this.o.kubeConfig),
        listFn,
        false,
        MANAGED_SELECTOR,
      )
      informer.on('add', (obj) => this.o.onChange(obj as unknown as ImageCache))
      informer.on('update', (obj) => {
        this.failures = 0
        this.o.onChange(obj as unknown as ImageCache)
      })
      informer.on('delete', (obj) => this.o.onDelete(obj as unknown as ImageCache))
      informer.on('error', (error) => this.onError(error))
      this.informer = informer
    }
    void this.informer.start()
  }

  private onError(error: unknown): void {
    if (!this.running) return
    if (statusOf(error) === 404) {
      // Start over with a fresh list once the CRD is back.
      this.running = false
      void this.informer?.stop()
      this.informer = undefined
      this.syncedOnce = false
      this.o.onMissing()
      return
    }
    this.failures++
    const delay = Math.min(30_000, 500 * 2 ** Math.min(this.failures, 8))
    this.o.logger.warn({ err: (error as Error)?.message ?? String(error), retryInMs: delay }, 'ImageCache watch interrupted; reconnecting')
    this.restartTimer = this.o.clock.setTimeout(() => {
      this.restartTimer = undefined
      if (this.running) void this.informer?.start()
    }, delay)
  }

  async stop(): Promise<void> {
    this.running = false
    if (this.restartTimer) this.o.clock.clearTimeout(this.restartTimer)
    this.restartTimer = undefined
    await this.informer?.stop()
  }
}
