// Where Pod specs live in workload manifests, for the offline dry-run.
import type { Policy } from './policy.js'
import { type ImagePlan, type JsonPatchOp, mutatePod, planSpec, podSkipReason, type PodSkip } from './pod.js'
import type { ReachabilityView } from './rewrite.js'
import { isObj } from './json.js'

// Kind → JSON Pointer of the Pod template; mirrorhook mutates the Pods these create.
// A Map: the kind is user data (`kind: __proto__` must not find Object.prototype).
const TEMPLATE_POINTERS: ReadonlyMap<string, string> = new Map([
  ['Deployment', '/spec/template'],
  ['StatefulSet', '/spec/template'],
  ['DaemonSet', '/spec/template'],
  ['ReplicaSet', '/spec/template'],
  ['ReplicationController', '/spec/template'],
  ['Job', '/spec/template'],
  ['CronJob', '/spec/jobTemplate/spec/template'],
  ['PodTemplate', '/template'],
])

function at(obj: unknown, pointer: string): unknown {
  let cur: unknown = obj
  for (const part of pointer.split('/').slice(1)) {
    if (!isObj(cur) || !Object.hasOwn(cur, part)) return undefined
    cur = cur[part]
  }
  return cur
}

export interface ManifestResult {
  readonly kind: string
  readonly name: string
  readonly plans: ImagePlan[]
  // JSON Patch against the whole document (paths include the template's pointer).
  readonly patch: JsonPatchOp[]
  // Why the original-images annotation was left out, when it was.
  readonly annotationSkipped?: string
  readonly skip?: PodSkip
  // Set when the document holds no Pod spec mirrorhook knows about.
  readonly unsupported?: boolean
}

/** Decides the Pod spec of one manifest as if its Pods were admitted now. */
export function planManifest(doc: unknown, policy: Policy, reachability: ReachabilityView): ManifestResult {
  const kind = isObj(doc) && typeof doc.kind === 'string' ? doc.kind : '(no kind)'
  const meta = isObj(doc) && isObj(doc.metadata) ? doc.metadata : {}
  const name = typeof meta.name === 'string' ? meta.name : typeof meta.generateName === 'string' ? `${meta.generateName}*` : '(unnamed)'
  const pointer = kind === 'Pod' ? '' : TEMPLATE_POINTERS.get(kind)
  const pod = pointer === undefined ? undefined : pointer === '' ? doc : at(doc, pointer)
  if (!isObj(pod) || !isObj(pod.spec)) return { kind, name, plans: [], patch: [], unsupported: true }

  const namespace = typeof meta.namespace === 'string' ? meta.namespace : undefined
  // A template's Pods get their namespace from the workload; they have no owner yet to judge.
  const judged = pointer === '' ? pod : { ...pod, metadata: { ...(isObj(pod.metadata) ? pod.metadata : {}), ownerReferences: undefined } }
  const skip = podSkipReason(judged, namespace, policy)
  if (skip) return { kind, name, plans: [], patch: [], skip }
  const plans = planSpec(pod.spec, policy, reachability, { pod, namespace })
  const mutation = mutatePod(pod, plans, { annotate: true })
  const patch = mutation.patch.map((op) => ({ ...op, path: `${pointer}${op.path}` }))
  return { kind, name, plans, patch, ...(mutation.annotationSkipped ? { annotationSkipped: mutation.annotationSkipped } : {}) }
}
