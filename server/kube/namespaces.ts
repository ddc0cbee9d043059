// The namespaces that opted in (label selector, mirrorhook.io/enabled=true by default): one
// watch for the process, read by every feature that acts only there.
import { CoreV1Api, type KubeConfig, type V1Namespace } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { apiClient } from './client.js'
import { Informer, SharedWatch, type Timers } from './informer.js'

export interface NamespaceHandler {
  add?(namespace: string): void
  delete?(namespace: string): void
}

export interface OptedInNamespacesOptions {
  kubeConfig: KubeConfig
  selector: string
  logger: Logger
  timers?: Timers
}

// Reconnects: 1 s, doubling to 60 s.
export const NAMESPACE_WATCH_BACKOFF = { initialMs: 1000, maxMs: 60_000 }

function slimNamespace(ns: V1Namespace): V1Namespace {
  const m = ns.metadata ?? {}
  return { metadata: { name: m.name, uid: m.uid, resourceVersion: m.resourceVersion, labels: m.labels } }
}

export class OptedInNamespaces extends SharedWatch<V1Namespace, NamespaceHandler> {
  constructor(o: OptedInNamespacesOptions) {
    const core = apiClient(o.kubeConfig, CoreV1Api)
    super(
      new Informer<V1Namespace>({
        kubeConfig: o.kubeConfig,
        what: 'namespaces',
        path: '/api/v1/namespaces',
        labelSelector: o.selector,
        list: (page) => core.listNamespace({ labelSelector: o.selector, limit: page.limit, _continue: page.continue }),
        transform: slimNamespace,
        logger: o.logger,
        backoff: NAMESPACE_WATCH_BACKOFF,
        timers: o.timers,
      }),
    )
    this.informer.on('add', (ns) => this.each((h) => h.add?.(ns.metadata?.name ?? '')))
    this.informer.on('delete', (ns) => this.each((h) => h.delete?.(ns.metadata?.name ?? '')))
  }

  has(namespace: string | undefined): boolean {
    return namespace !== undefined && this.informer.get(namespace) !== undefined
  }

  names(): string[] {
    return this.informer
      .list()
      .map((ns) => ns.metadata?.name ?? '')
      .sort()
  }
}
