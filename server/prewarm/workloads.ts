// Reading the workloads pre-warm looks at: the namespaces (a list and/or a label selector) and,
// in each, a paged LIST of each configured kind. Only the images are kept from each page.
import { AppsV1Api, BatchV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node'
import { apiClient } from '../kube/client.js'
import { statusOf } from '../kube/errors.js'
import { imagesOf, type WorkloadImage } from './collect.js'
import { type PrewarmConfig, selectorString, type WorkloadKind } from './config.js'

export const PAGE_SIZE = 250

interface Page {
  items: unknown[]
  metadata?: { _continue?: string }
}

// A paged LIST, each page handed over as it comes (memory: one page); an expired continue token
// (410) starts the listing over once, after `restart` dropped what the first attempt collected.
async function eachPage(
  list: (page: { limit: number; _continue?: string }) => Promise<Page>,
  each: (items: unknown[]) => void,
  restart: () => void = () => undefined,
): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    let token: string | undefined
    try {
      do {
        const page = await list({ limit: PAGE_SIZE, _continue: token })
        each(page.items)
        token = page.metadata?._continue || undefined
      } while (token)
      return
    } catch (error) {
      if (statusOf(error) !== 410 || attempt > 0) throw error
      restart()
    }
  }
}

export class WorkloadSource {
  private readonly core: CoreV1Api
  private readonly apps: AppsV1Api
  private readonly batch: BatchV1Api

  constructor(kubeConfig: KubeConfig) {
    this.core = apiClient(kubeConfig, CoreV1Api)
    this.apps = apiClient(kubeConfig, AppsV1Api)
    this.batch = apiClient(kubeConfig, BatchV1Api)
  }

  /** The configured namespaces and those the selector matches, sorted; `only` narrows to one. */
  async namespaces(config: Pick<PrewarmConfig, 'namespaces' | 'namespaceSelector'>, only?: string): Promise<string[]> {
    const names = new Set(config.namespaces)
    if (config.namespaceSelector) {
      const labelSelector = selectorString(config.namespaceSelector)
      await eachPage(
        (p) => this.core.listNamespace({ labelSelector, ...p }),
        (items) => {
          for (const ns of items as { metadata?: { name?: string } }[]) if (ns.metadata?.name) names.add(ns.metadata.name)
        },
      )
    }
    const all = [...names].sort()
    return only === undefined ? all : all.filter((n) => n === only)
  }

  private lister(kind: WorkloadKind, namespace: string): (p: { limit: number; _continue?: string }) => Promise<Page> {
    switch (kind) {
      case 'Deployments':
        return (p) => this.apps.listNamespacedDeployment({ namespace, ...p })
      case 'StatefulSets':
        return (p) => this.apps.listNamespacedStatefulSet({ namespace, ...p })
      case 'DaemonSets':
        return (p) => this.apps.listNamespacedDaemonSet({ namespace, ...p })
      case 'CronJobs':
        return (p) => this.batch.listNamespacedCronJob({ namespace, ...p })
    }
  }

  /** Every container and init container image of the workloads of these kinds in these namespaces. */
  async images(namespaces: readonly string[], kinds: readonly WorkloadKind[]): Promise<{ images: WorkloadImage[]; workloads: number }> {
    const images: WorkloadImage[] = []
    let workloads = 0
    for (const namespace of namespaces)
      for (const kind of kinds) {
        const before = { images: images.length, workloads }
        await eachPage(
          this.lister(kind, namespace),
          (items) => {
            workloads += items.length
            for (const item of items) images.push(...imagesOf(kind, item))
          },
          () => {
            images.length = before.images
            workloads = before.workloads
          },
        )
      }
    return { images, workloads }
  }
}
