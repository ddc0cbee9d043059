// Pod-level rules and JSON Patch building. Pure: objects in, decisions and patch out.
import type { Policy } from './policy.js'
import { decideImage, type ImageDecision, type KeepCode, type ReachabilityView } from './rewrite.js'

export const ORIGINAL_IMAGES_ANNOTATION = 'mirrorhook.io/original-images'
export const SKIP_LABEL = 'mirrorhook.io/skip'
export const ENABLED_LABEL = 'mirrorhook.io/enabled'

export const CONTAINER_FIELDS = ['initContainers', 'containers', 'ephemeralContainers'] as const
export type ContainerField = (typeof CONTAINER_FIELDS)[number]

export interface JsonPatchOp {
  op: 'add' | 'replace'
  path: string
  value: unknown
}

export interface ImagePlan {
  readonly field: ContainerField
  readonly index: number
  readonly name: string
  readonly decision: ImageDecision
}

type Obj = Record<string, unknown>

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function containersOf(spec: Obj, field: ContainerField): Obj[] {
  const list = spec[field]
  return Array.isArray(list) ? list.filter(isObj) : []
}

// JSON Pointer escaping (RFC 6901): `~` → `~0`, `/` → `~1`.
export function escapePointer(segment: string): string {
  return segment.replace(/~/g, '~0').replace(/\//g, '~1')
}

export interface PodSkip {
  readonly code: 'skip-label' | 'excluded-namespace' | 'owner-kind'
  readonly reason: string
}

interface OwnerReference {
  kind?: unknown
  name?: unknown
  controller?: unknown
}

/** Why a whole Pod is left alone, if it is. */
export function podSkipReason(pod: Obj, namespace: string | undefined, policy: Policy): PodSkip | undefined {
  const metadata = isObj(pod.metadata) ? pod.metadata : {}
  const labels = isObj(metadata.labels) ? metadata.labels : {}
  if (String(labels[SKIP_LABEL] ?? '').toLowerCase() === 'true') {
    return { code: 'skip-label', reason: `the Pod is labelled ${SKIP_LABEL}=true` }
  }
  const ns = namespace || (typeof metadata.namespace === 'string' ? metadata.namespace : '')
  if (ns && policy.excludedNamespaces.has(ns)) {
    return { code: 'excluded-namespace', reason: `namespace ${ns} is excluded` }
  }
  const owners = Array.isArray(metadata.ownerReferences) ? (metadata.ownerReferences as OwnerReference[]) : []
  const controller = owners.find((o) => isObj(o) && o.controller === true)
  if (controller && !policy.podOwners.has(String(controller.kind))) {
    // Operators that own Pods directly compare the image with their spec and recreate the Pod.
    return {
      code: 'owner-kind',
      reason: `the Pod is controlled by ${String(controller.kind)} ${String(controller.name ?? '')}, which is not in podOwners`.trim(),
    }
  }
  return undefined
}

function imagesByName(spec: Obj | undefined, field: ContainerField): Map<string, unknown> {
  const out = new Map<string, unknown>()
  if (!spec) return out
  for (const c of containersOf(spec, field)) if (typeof c.name === 'string') out.set(c.name, c.image)
  return out
}

export interface PlanOptions {
  // On UPDATE only containers whose image changed are considered, so an
  // unrelated update never restarts a container the webhook left alone.
  readonly oldSpec?: Obj
  readonly fields?: readonly ContainerField[]
}

/** Decides every container image of a Pod spec. */
export function planSpec(spec: Obj, policy: Policy, reachability: ReachabilityView, options: PlanOptions = {}): ImagePlan[] {
  const plans: ImagePlan[] = []
  for (const field of options.fields ?? CONTAINER_FIELDS) {
    const old = options.oldSpec ? imagesByName(options.oldSpec, field) : undefined
    containersOf(spec, field).forEach((container, index) => {
      const name = typeof container.name === 'string' ? container.name : `#${index}`
      const image = container.image
      if (typeof image !== 'string' || image === '') return
      if (old && old.has(name) && old.get(name) === image) return
      plans.push({ field, index, name, decision: decideImage(image, policy, reachability) })
    })
  }
  return plans
}

function parseAnnotation(value: unknown): Record<string, string> {
  if (typeof value !== 'string') return {}
  try {
    const parsed: unknown = JSON.parse(value)
    if (!isObj(parsed)) return {}
    const out: Record<string, string> = {}
    for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string') out[k] = v
    return out
  } catch {
    return {}
  }
}

export interface PatchTarget {
  // JSON Pointers to the Pod spec and to the metadata holding the annotation.
  readonly specPointer: string
  readonly metadataPointer: string
  readonly metadata: unknown
}

export const POD_TARGET = (pod: Obj): PatchTarget => ({ specPointer: '/spec', metadataPointer: '/metadata', metadata: pod.metadata })

/** One `replace` per rewritten image and the original-images annotation, merged with any already there. */
export function buildPatch(target: PatchTarget, plans: readonly ImagePlan[]): JsonPatchOp[] {
  const rewrites = plans.filter((p) => p.decision.action === 'rewrite')
  if (rewrites.length === 0) return []
  const ops: JsonPatchOp[] = []
  const originals: Record<string, string> = {}
  for (const p of rewrites) {
    if (p.decision.action !== 'rewrite') continue
    ops.push({ op: 'replace', path: `${target.specPointer}/${p.field}/${p.index}/image`, value: p.decision.rewritten })
    originals[p.name] = p.decision.original
  }
  const metadata = isObj(target.metadata) ? target.metadata : undefined
  const annotations = metadata && isObj(metadata.annotations) ? metadata.annotations : undefined
  const merged = JSON.stringify({ ...parseAnnotation(annotations?.[ORIGINAL_IMAGES_ANNOTATION]), ...originals })
  if (!metadata) {
    ops.push({ op: 'add', path: target.metadataPointer, value: { annotations: { [ORIGINAL_IMAGES_ANNOTATION]: merged } } })
  } else if (!annotations) {
    ops.push({ op: 'add', path: `${target.metadataPointer}/annotations`, value: { [ORIGINAL_IMAGES_ANNOTATION]: merged } })
  } else {
    // `add` on an existing member replaces it (RFC 6902 4.1).
    ops.push({ op: 'add', path: `${target.metadataPointer}/annotations/${escapePointer(ORIGINAL_IMAGES_ANNOTATION)}`, value: merged })
  }
  return ops
}

// kubectl shows warnings as they are; the API server truncates long ones.
const MAX_WARNING = 256

function clip(s: string): string {
  return s.length <= MAX_WARNING ? s : `${s.slice(0, MAX_WARNING - 1)}…`
}

// Kept images an operator would expect to see mirrored get a warning saying why not.
const WARN_WHEN_KEPT: ReadonlySet<KeepCode> = new Set(['unparseable', 'inexpressible', 'mirror-unreachable', 'mirror-refused'])

/** Warnings for the admission response: each rewrite, and each image left alone because it is invalid. */
export function warningsFor(plans: readonly ImagePlan[]): string[] {
  const out: string[] = []
  for (const p of plans) {
    const d = p.decision
    if (d.action === 'rewrite') {
      out.push(clip(`mirrorhook: ${p.name}: ${d.original} -> ${d.rewritten} (${d.reason})`))
    } else if (WARN_WHEN_KEPT.has(d.code)) {
      out.push(clip(`mirrorhook: ${p.name}: ${d.original} left unchanged: ${d.reason}`))
    }
  }
  return out
}
