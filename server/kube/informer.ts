// Informers as mirrorhook runs them: client-node's ListWatch (list, then watch from the
// list's resourceVersion, relist on 410 Gone), with
// - lists read in pages (limit + continue), so a large cluster never comes back in one answer;
// - a transform applied to every object before it is stored or handed on, so the cache holds
//   only the fields mirrorhook reads (client-go's SetTransform);
// - watch bookmarks, so a reconnect resumes instead of listing again;
// - supervision: ListWatch stops on an error; it is started again after a backoff, until stopped.
import { type KubeConfig, type KubernetesListObject, type KubernetesObject, ListWatch, Watch } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { Backoff, type BackoffOptions } from './backoff.js'
import { statusOf } from './errors.js'

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: never): void
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms)
    t.unref()
    return t
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}

export interface ListPage {
  limit: number
  continue?: string
}

// What a store keys objects by (ImageCaches are typed by the project, not by client-node).
export interface StoredObject {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string }
}

export interface InformerOptions<T extends StoredObject> {
  kubeConfig: KubeConfig
  // For log lines: "Pods", "ImageCaches in kube-fledged".
  what: string
  // The collection's path, e.g. /api/v1/pods.
  path: string
  // One page of the list, with the same selectors as the watch.
  list: (page: ListPage) => Promise<{ metadata?: object; items: T[] }>
  labelSelector?: string
  fieldSelector?: string
  pageSize?: number
  transform?: (object: T) => T
  logger: Logger
  backoff: BackoffOptions
  timers?: Timers
  // Decides what an error means; `stop` ends the informer (e.g. 404: the resource does not exist).
  onError?: (error: unknown) => 'retry' | 'stop'
}

export type Verb = 'add' | 'update' | 'delete'

/** A supervised, transformed, paged list+watch with its store. */
export class Informer<T extends StoredObject> {
  private readonly listWatch: ListWatch<KubernetesObject>
  private readonly backoff: Backoff
  private readonly timers: Timers
  private restartTimer?: unknown
  private running = false
  private listed = false
  private syncedOnce = false
  private readonly syncWaiters: (() => void)[] = []

  constructor(private readonly o: InformerOptions<T>) {
    this.backoff = new Backoff(o.backoff)
    this.timers = o.timers ?? realTimers
    const transform = o.transform ?? ((x: T) => x)
    const inner = new Watch(o.kubeConfig)
    // ListWatch calls watch() right after it filed the listed objects: that is when the store is synced.
    const watch = {
      watch: (
        path: string,
        query: Record<string, unknown>,
        callback: (phase: string, obj: unknown, raw: unknown) => void,
        done: (err: unknown) => void,
      ) => {
        if (this.listed) {
          this.listed = false
          this.markSynced()
        }
        return inner.watch(
          path,
          { ...query, allowWatchBookmarks: true },
          (phase, obj, raw) => {
            this.backoff.reset()
            callback(phase, phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED' ? transform(obj as T) : obj, raw)
          },
          done,
        )
      },
    } as unknown as Watch
    const listFn = async (): Promise<KubernetesListObject<KubernetesObject>> => {
      const items: T[] = []
      let resourceVersion: string | undefined
      let cont: string | undefined
      do {
        const page = await o.list({ limit: o.pageSize ?? 500, continue: cont })
        for (const item of page.items ?? []) items.push(transform(item))
        // A paged list is one snapshot, at the first page's resourceVersion.
        resourceVersion ??= (page.metadata as { resourceVersion?: string } | undefined)?.resourceVersion
        // Typed lists carry `_continue`; custom objects come back as the raw JSON (`continue`).
        const meta = page.metadata as { _continue?: string; continue?: string } | undefined
        cont = meta?._continue || meta?.continue || undefined
      } while (cont)
      this.backoff.reset()
      this.listed = true
      return { metadata: { resourceVersion }, items } as unknown as KubernetesListObject<KubernetesObject>
    }
    this.listWatch = new ListWatch<KubernetesObject>(o.path, watch, listFn, false, o.labelSelector, o.fieldSelector)
    this.listWatch.on('error', (error) => this.failed(error))
  }

  /** The first full list is in the store. */
  get synced(): boolean {
    return this.syncedOnce
  }

  whenSynced(): Promise<void> {
    if (this.syncedOnce) return Promise.resolve()
    return new Promise((resolve) => this.syncWaiters.push(resolve))
  }

  on(verb: Verb, callback: (object: T) => void): void {
    this.listWatch.on(verb, callback as unknown as (object: KubernetesObject) => void)
  }

  get(name: string, namespace?: string): T | undefined {
    return this.listWatch.get(name, namespace) as T | undefined
  }

  list(namespace?: string): readonly T[] {
    return this.listWatch.list(namespace) as unknown as readonly T[]
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.begin()
  }

  async stop(): Promise<void> {
    this.running = false
    if (this.restartTimer !== undefined) this.timers.clearTimeout(this.restartTimer as never)
    this.restartTimer = undefined
    await this.listWatch.stop()
  }

  private begin(): void {
    this.listWatch.start().catch((error: unknown) => this.failed(error))
  }

  private markSynced(): void {
    if (this.syncedOnce) return
    this.syncedOnce = true
    for (const resolve of this.syncWaiters.splice(0)) resolve()
  }

  private failed(error: unknown): void {
    if (!this.running) return
    if (this.o.onError?.(error) === 'stop') {
      void this.stop()
      return
    }
    const delay = this.backoff.next()
    this.o.logger.warn(
      { err: (error as Error)?.message ?? String(error), status: statusOf(error), what: this.o.what, retryInMs: delay },
      'watch interrupted; reconnecting',
    )
    if (this.restartTimer !== undefined) this.timers.clearTimeout(this.restartTimer as never)
    this.restartTimer = this.timers.setTimeout(() => {
      this.restartTimer = undefined
      if (this.running) this.begin()
    }, delay)
  }
}

/** The process's one watch of a kind, shared by subscribers: its lifecycle and the subscriber set. */
export abstract class SharedWatch<T extends StoredObject, Handler> {
  private readonly handlers = new Set<Handler>()

  protected constructor(protected readonly informer: Informer<T>) {}

  /** Changes from now on; what is already there is read from the cache. Returns the unsubscribe function. */
  subscribe(handler: Handler): () => void {
    this.handlers.add(handler)
    return () => this.handlers.delete(handler)
  }

  get synced(): boolean {
    return this.informer.synced
  }

  whenSynced(): Promise<void> {
    return this.informer.whenSynced()
  }

  start(): void {
    this.informer.start()
  }

  stop(): Promise<void> {
    return this.informer.stop()
  }

  protected each(fn: (handler: Handler) => void): void {
    for (const h of this.handlers) fn(h)
  }
}
