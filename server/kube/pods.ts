// The one Pod watch of the process. Every feature that reads Pods (learning from failed
// pulls, pre-pull's images in use, and the features after them) subscribes here instead
// of opening its own watch or listing Pods.
//
// Selected to what mirrorhook needs: Pods not finished (a Pod that turns Succeeded or Failed
// leaves the watch as a delete). Transformed before it is stored: only the fields below are
// kept, so memory grows with the number of running Pods, not with the size of their specs
// and managedFields.
import { CoreV1Api, type KubeConfig, type V1Container, type V1ContainerStatus, type V1Pod } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { apiClient } from './client.js'
import { Informer, SharedWatch, type Timers } from './informer.js'

export const POD_FIELD_SELECTOR = 'status.phase!=Succeeded,status.phase!=Failed'
// Annotations mirrorhook reads; other annotations are dropped from the cache.
const ANNOTATION_PREFIX = 'mirrorhook.io/'

function slimContainers(list: readonly { name: string; image?: string }[] | undefined): V1Container[] | undefined {
  return list?.map((c) => ({ name: c.name, image: c.image }))
}

function slimStatuses(list: readonly V1ContainerStatus[] | undefined): V1ContainerStatus[] | undefined {
  return list?.map((s) => ({
    name: s.name,
    image: s.image,
    imageID: s.imageID,
    ready: s.ready,
    restartCount: s.restartCount,
    state: s.state?.waiting ? { waiting: { reason: s.state.waiting.reason, message: s.state.waiting.message } } : s.state,
  }))
}

/** The fields of a Pod mirrorhook reads: identity, owners, labels, its own annotations, images and pull states. */
export function slimPod(pod: V1Pod): V1Pod {
  const m = pod.metadata ?? {}
  const annotations = Object.entries(m.annotations ?? {}).filter(([k]) => k.startsWith(ANNOTATION_PREFIX))
  return {
    metadata: {
      name: m.name,
      namespace: m.namespace,
      uid: m.uid,
      resourceVersion: m.resourceVersion,
      creationTimestamp: m.creationTimestamp,
      deletionTimestamp: m.deletionTimestamp,
      labels: m.labels,
      ...(annotations.length ? { annotations: Object.fromEntries(annotations) } : {}),
      ownerReferences: m.ownerReferences?.map((o) => ({
        apiVersion: o.apiVersion,
        kind: o.kind,
        name: o.name,
        uid: o.uid,
        controller: o.controller,
      })),
    },
    spec: pod.spec && {
      nodeName: pod.spec.nodeName,
      initContainers: slimContainers(pod.spec.initContainers),
      containers: slimContainers(pod.spec.containers) ?? [],
      ephemeralContainers: slimContainers(pod.spec.ephemeralContainers),
    },
    status: pod.status && {
      phase: pod.status.phase,
      initContainerStatuses: slimStatuses(pod.status.initContainerStatuses),
      containerStatuses: slimStatuses(pod.status.containerStatuses),
      ephemeralContainerStatuses: slimStatuses(pod.status.ephemeralContainerStatuses),
    },
  }
}

export interface PodHandler {
  add?(pod: V1Pod): void
  update?(pod: V1Pod): void
  delete?(pod: V1Pod): void
}

export interface PodCacheOptions {
  kubeConfig: KubeConfig
  logger: Logger
  timers?: Timers
}

// Reconnects: 1 s, doubling to 60 s.
export const POD_WATCH_BACKOFF = { initialMs: 1000, maxMs: 60_000 }

/** One cluster-wide list+watch of the Pods not finished, shared by every subscriber. */
export class PodCache extends SharedWatch<V1Pod, PodHandler> {
  constructor(o: PodCacheOptions) {
    const core = apiClient(o.kubeConfig, CoreV1Api)
    super(
      new Informer<V1Pod>({
        kubeConfig: o.kubeConfig,
        what: 'Pods',
        path: '/api/v1/pods',
        fieldSelector: POD_FIELD_SELECTOR,
        list: (page) => core.listPodForAllNamespaces({ fieldSelector: POD_FIELD_SELECTOR, limit: page.limit, _continue: page.continue }),
        transform: slimPod,
        logger: o.logger,
        backoff: POD_WATCH_BACKOFF,
        timers: o.timers,
      }),
    )
    this.informer.on('add', (pod) => this.each((h) => h.add?.(pod)))
    this.informer.on('update', (pod) => this.each((h) => h.update?.(pod)))
    this.informer.on('delete', (pod) => this.each((h) => h.delete?.(pod)))
  }

  list(namespace?: string): readonly V1Pod[] {
    return this.informer.list(namespace)
  }

  get(namespace: string, name: string): V1Pod | undefined {
    return this.informer.get(name, namespace)
  }
}
