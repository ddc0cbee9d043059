// The one Node watch of the process: which nodes are Ready, their labels, and the images their
// kubelet reports (`status.images`, capped by the kubelet's `nodeStatusMaxImages`).
//
// Transformed before it is stored: only the name, labels, the Ready condition and the image
// names are kept, so a Node costs a few hundred bytes whatever its status holds.
import { CoreV1Api, type KubeConfig, type V1Node } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { apiClient } from './client.js'
import { Informer, SharedWatch, type Timers } from './informer.js'

/** What mirrorhook reads of a Node. */
export interface NodeView {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly ready: boolean
  // Entries of `status.images` (the kubelet caps them at `nodeStatusMaxImages`), and all their names.
  readonly imageCount: number
  readonly images: readonly string[]
}

/** The fields of a Node mirrorhook reads. */
export function slimNode(node: V1Node): V1Node {
  const m = node.metadata ?? {}
  const ready = node.status?.conditions?.find((c) => c.type === 'Ready')
  return {
    metadata: { name: m.name, uid: m.uid, resourceVersion: m.resourceVersion, labels: m.labels },
    status: node.status && {
      conditions: ready ? [{ type: 'Ready', status: ready.status }] : undefined,
      images: node.status.images?.map((i) => ({ names: i.names ?? [] })),
    },
  }
}

export function viewOfNode(node: V1Node): NodeView {
  const images = node.status?.images ?? []
  return {
    name: node.metadata?.name ?? '',
    labels: node.metadata?.labels ?? {},
    ready: node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    imageCount: images.length,
    images: images.flatMap((i) => i.names ?? []),
  }
}

/**
 * A change of one Node: `prev` is undefined for a Node seen for the first time, `next` for a
 * deleted one. `listed` is true while the first list fills the cache (the state at start, not a change).
 */
export interface NodeChange {
  readonly prev?: NodeView
  readonly next?: NodeView
  readonly listed: boolean
}

export type NodeHandler = (change: NodeChange) => void

export interface NodeWatchOptions {
  kubeConfig: KubeConfig
  logger: Logger
  timers?: Timers
}

// Reconnects: 1 s, doubling to 60 s.
export const NODE_WATCH_BACKOFF = { initialMs: 1000, maxMs: 60_000 }

/** One cluster-wide list+watch of the Nodes, shared by every subscriber; handlers get each change with the state before it. */
export class NodeWatch extends SharedWatch<V1Node, NodeHandler> {
  // The last object seen per Node (the same objects the store holds): the "before" of the next change.
  private readonly last = new Map<string, V1Node>()

  constructor(o: NodeWatchOptions) {
    const core = apiClient(o.kubeConfig, CoreV1Api)
    super(
      new Informer<V1Node>({
        kubeConfig: o.kubeConfig,
        what: 'Nodes',
        path: '/api/v1/nodes',
        list: (page) => core.listNode({ limit: page.limit, _continue: page.continue }),
        transform: slimNode,
        logger: o.logger,
        backoff: NODE_WATCH_BACKOFF,
        timers: o.timers,
      }),
    )
    const changed = (node: V1Node, deleted: boolean) => {
      const name = node.metadata?.name ?? ''
      const before = this.last.get(name)
      if (deleted) this.last.delete(name)
      else this.last.set(name, node)
      const change: NodeChange = {
        prev: before && viewOfNode(before),
        next: deleted ? undefined : viewOfNode(node),
        listed: !this.informer.synced,
      }
      this.each((h) => h(change))
    }
    this.informer.on('add', (node) => changed(node, false))
    this.informer.on('update', (node) => changed(node, false))
    this.informer.on('delete', (node) => changed(node, true))
  }

  get(name: string): NodeView | undefined {
    const node = this.informer.get(name)
    return node && viewOfNode(node)
  }

  list(): NodeView[] {
    return this.informer.list().map(viewOfNode)
  }
}
