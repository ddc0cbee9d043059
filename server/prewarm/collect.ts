// The images of workloads' Pod templates: every container and init container. Pure; objects
// come from the API as JSON and anything malformed is passed over, never a crash.
import type { WorkloadKind } from './config.js'
import { isObj, type Obj } from '../core/json.js'

// The singular kind an object of each configured kind carries.
export const KIND_OF: Readonly<Record<WorkloadKind, string>> = {
  Deployments: 'Deployment',
  StatefulSets: 'StatefulSet',
  DaemonSets: 'DaemonSet',
  CronJobs: 'CronJob',
}

export interface WorkloadImage {
  readonly kind: string
  readonly namespace: string
  readonly name: string
  readonly container: string
  readonly init: boolean
  readonly image: string
  // What admission's per-container rules read: the container's pull policy and the Pod's pull Secrets.
  readonly pullPolicy?: string
  readonly pullSecrets?: unknown
}

const at = (o: unknown, ...keys: string[]): unknown => keys.reduce<unknown>((v, k) => (isObj(v) ? v[k] : undefined), o)

/** The Pod template's spec: spec.template.spec, or a CronJob's spec.jobTemplate.spec.template.spec. */
export function podSpecOf(kind: WorkloadKind, workload: unknown): Obj | undefined {
  const spec =
    kind === 'CronJobs' ? at(workload, 'spec', 'jobTemplate', 'spec', 'template', 'spec') : at(workload, 'spec', 'template', 'spec')
  return isObj(spec) ? spec : undefined
}

/** One entry per init container and container (in that order) with a non-empty image. */
export function imagesOf(kind: WorkloadKind, workload: unknown): WorkloadImage[] {
  const spec = podSpecOf(kind, workload)
  const namespace = at(workload, 'metadata', 'namespace')
  const name = at(workload, 'metadata', 'name')
  if (!spec || typeof name !== 'string') return []
  const out: WorkloadImage[] = []
  for (const field of ['initContainers', 'containers'] as const) {
    const list = spec[field]
    if (!Array.isArray(list)) continue
    for (const c of list) {
      if (!isObj(c) || typeof c.image !== 'string' || c.image.trim() === '') continue
      out.push({
        kind: KIND_OF[kind],
        namespace: typeof namespace === 'string' ? namespace : '',
        name,
        container: typeof c.name === 'string' ? c.name : '',
        init: field === 'initContainers',
        image: c.image,
        ...(typeof c.imagePullPolicy === 'string' ? { pullPolicy: c.imagePullPolicy } : {}),
        ...(spec.imagePullSecrets !== undefined ? { pullSecrets: spec.imagePullSecrets } : {}),
      })
    }
  }
  return out
}
