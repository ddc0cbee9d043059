// The shared copy of the state: one ConfigMap the webhook owns, read and
// written with optimistic concurrency (resourceVersion; a 409 means another
// replica wrote first, so read again, merge again, write again).
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node'
import { apiClient } from '../kube/client.js'
import { statusOf } from '../kube/errors.js'
import { managedLabels } from '../kube/labels.js'
import { parseSnapshot, type StateSnapshot } from './snapshot.js'

export const STATE_KEY = 'state.json'
export const MANAGED_BY = managedLabels('reachability')

export interface StoredState {
  snapshot?: StateSnapshot
  resourceVersion?: string
  exists: boolean
}

export class ConfigMapStore {
  private readonly core: CoreV1Api

  constructor(
    kubeConfig: KubeConfig,
    readonly namespace: string,
    readonly name: string,
  ) {
    this.core = apiClient(kubeConfig, CoreV1Api)
  }

  get where(): string {
    return `ConfigMap ${this.namespace}/${this.name}`
  }

  async read(): Promise<StoredState> {
    let cm: V1ConfigMap
    try {
      cm = await this.core.readNamespacedConfigMap({ name: this.name, namespace: this.namespace })
    } catch (error) {
      if (statusOf(error) === 404) return { exists: false }
      throw error
    }
    const text = cm.data?.[STATE_KEY]
    const resourceVersion = cm.metadata?.resourceVersion
    if (!text) return { exists: true, resourceVersion }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      // A hand-edited or truncated copy is replaced on the next write.
      return { exists: true, resourceVersion }
    }
    return { exists: true, resourceVersion, snapshot: parseSnapshot(json, this.where) }
  }

  /**
   * Read-merge-write until it sticks: `update` gets what is stored now and returns what to store,
   * or undefined to write nothing. Returns the number of conflicts met.
   */
  async update(
    update: (stored: StateSnapshot | undefined) => StateSnapshot | undefined | Promise<StateSnapshot | undefined>,
    maxAttempts = 5,
  ): Promise<{ written: boolean; conflicts: number }> {
    let conflicts = 0
    for (let attempt = 1; ; attempt++) {
      const stored = await this.read()
      const next = await update(stored.snapshot)
      if (!next) return { written: false, conflicts }
      const body: V1ConfigMap = {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: this.name, namespace: this.namespace, labels: MANAGED_BY, resourceVersion: stored.resourceVersion },
        data: { [STATE_KEY]: JSON.stringify(next) },
      }
      try {
        if (stored.exists) await this.core.replaceNamespacedConfigMap({ name: this.name, namespace: this.namespace, body })
        else await this.core.createNamespacedConfigMap({ namespace: this.namespace, body })
        return { written: true, conflicts }
      } catch (error) {
        // 409: changed since we read it (or created by another replica meanwhile).
        if (statusOf(error) !== 409 || attempt >= maxAttempts) throw error
        conflicts += 1
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 150 * attempt))
      }
    }
  }
}
