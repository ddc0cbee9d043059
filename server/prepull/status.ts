// Per-image state as last seen in kube-fledged's status: counted in metrics, logged when it changes.
import type { Logger } from 'pino'
import type { CacheState, ImageCache, NodeFailure } from './imagecache.js'
import type { PrepullMetrics } from './metrics.js'

function sameFailures(a: NodeFailure[], b: NodeFailure[]): boolean {
  return a.length === b.length && a.every((f, i) => f.node === b[i]?.node && f.reason === b[i]?.reason)
}

export class CacheStatus {
  private readonly states = new Map<string, { state: CacheState; failed: NodeFailure[] }>()
  private readonly countByState = new Map<CacheState, number>()

  constructor(
    private readonly metrics: PrepullMetrics,
    private readonly logger: Logger,
  ) {}

  get(image: string): { state: CacheState; failed: NodeFailure[] } | undefined {
    return this.states.get(image)
  }

  counts(): Record<string, number> {
    return Object.fromEntries(this.countByState)
  }

  set(image: string, state: CacheState | undefined, failed: NodeFailure[], cache: ImageCache | undefined): void {
    const m = this.metrics
    const prev = this.states.get(image)
    if (prev) {
      this.countByState.set(prev.state, (this.countByState.get(prev.state) ?? 1) - 1)
      m.images.set({ state: prev.state }, this.countByState.get(prev.state) ?? 0)
      if (prev.state !== 'cached') m.imageState.remove({ image, state: prev.state })
      for (const f of prev.failed) m.imageFailedNode.remove({ image, node: f.node, reason: f.reason })
    }
    if (!state) {
      this.states.delete(image)
      return
    }
    this.states.set(image, { state, failed })
    this.countByState.set(state, (this.countByState.get(state) ?? 0) + 1)
    m.images.set({ state }, this.countByState.get(state) ?? 0)
    if (state !== 'cached') m.imageState.set({ image, state }, 1)
    for (const f of failed) m.imageFailedNode.set({ image, node: f.node, reason: f.reason }, 1)
    if (prev?.state === state && sameFailures(prev.failed, failed)) return
    const name = cache?.metadata.name
    const log = this.logger
    if (state === 'cached') log.info({ image, name }, 'image cached on the nodes')
    else if (state === 'failed') {
      log.warn(
        { image, name, status: cache?.status?.status, reason: cache?.status?.reason, failures: failed },
        `image pre-pull failed on ${failed.length} node(s)${failed.length ? `: ${failed.map((f) => f.node).join(', ')}` : ''}`,
      )
    } else if (state === 'purged') log.info({ image, name }, 'image purged from the nodes')
    else if (state === 'purge-failed') log.warn({ image, name, failures: failed }, 'image purge failed on some nodes')
    else log.debug({ image, name, state }, 'ImageCache state')
  }
}
