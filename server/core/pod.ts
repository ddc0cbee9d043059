// Pod-level rules and the patch. Pure: objects in, decisions and patch out.
import jsonpatch, { type Operation } from 'fast-json-patch'
import type { Policy } from './policy.js'
import { type ContainerDecision, decideContainer, podContext, type PullSecretView } from './pullrules.js'
import type { ReachabilityView } from './rewrite.js'
import { isObj, type Obj } from './json.js'

export const ORIGINAL_IMAGES_ANNOTATION = 'mirrorhook.io/original-images'
export const SKIP_LABEL = 'mirrorhook.io/skip'
export const ENABLED_LABEL = 'mirrorhook.io/enabled'

export const CONTAINER_FIELDS = ['initContainers', 'containers', 'ephemeralContainers'] as const
export type ContainerField = (typeof CONTAINER_FIELDS)[number]

export type JsonPatchOp = Operation

// k8s.io/apimachinery/pkg/api/validation: ValidateAnnotationsSize refuses an object whose
// annotations sum to more than TotalAnnotationSizeLimitB = 256 * 1024 bytes of len(key) + len(value).
export const ANNOTATIONS_SIZE_LIMIT = 256 * 1024

export interface ImagePlan {
  readonly field: ContainerField
  // Position in the list as sent, counting entries that are not containers.
  readonly index: number
  readonly name: string
  readonly decision: ContainerDecision
  // The mirror's pull Secret the Pod must carry for this rewrite.
  readonly pullSecret?: string
}

/** The containers of one list with their positions in it; entries that are not objects are passed over, not removed. */
function containersOf(spec: Obj, field: ContainerField): [Obj, number][] {
  const list = spec[field]
  const out: [Obj, number][] = []
  if (Array.isArray(list)) list.forEach((c: unknown, index) => isObj(c) && out.push([c, index]))
  return out
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
  for (const [c] of containersOf(spec, field)) if (typeof c.name === 'string') out.set(c.name, c.image)
  return out
}

export interface PlanOptions {
  // On UPDATE only containers whose image changed are considered, so an
  // unrelated update never restarts a container the webhook left alone.
  readonly oldSpec?: Obj
  readonly fields?: readonly ContainerField[]
  // The Pod the spec belongs to (labels, namespace) and its namespace as the request names it.
  readonly pod?: Obj
  readonly namespace?: string
  // Only a CREATE may add imagePullSecrets (default true: a manifest's Pods are new).
  readonly canAddPullSecrets?: boolean
  // Which mirror pull Secret copies exist; undefined assumes they all do (dry-run).
  readonly secrets?: PullSecretView
}

/** Decides every container image of a Pod spec. */
export function planSpec(spec: Obj, policy: Policy, reachability: ReachabilityView, options: PlanOptions = {}): ImagePlan[] {
  const plans: ImagePlan[] = []
  const pod = podContext(options.pod ?? { spec }, spec, policy, {
    namespace: options.namespace,
    canAddPullSecrets: options.canAddPullSecrets ?? true,
    secrets: options.secrets,
  })
  for (const field of options.fields ?? CONTAINER_FIELDS) {
    const old = options.oldSpec ? imagesByName(options.oldSpec, field) : undefined
    for (const [container, index] of containersOf(spec, field)) {
      const name = typeof container.name === 'string' ? container.name : `#${index}`
      const image = container.image
      if (typeof image !== 'string' || image === '') continue
      if (old && old.has(name) && old.get(name) === image) continue
      const outcome = decideContainer({ field, container, image, pod }, policy, reachability)
      plans.push({ field, index, name, decision: outcome.decision, ...(outcome.pullSecret ? { pullSecret: outcome.pullSecret } : {}) })
    }
  }
  return plans
}

type Rewrite = ImagePlan & { readonly decision: Extract<ContainerDecision, { action: 'rewrite' }> }

// Names are user data (`__proto__` is a valid container name): a Map, never object keys.
function originals(existing: unknown, rewrites: readonly Rewrite[]): Map<string, string> {
  const merged = new Map<string, string>()
  if (typeof existing === 'string') {
    try {
      const parsed: unknown = JSON.parse(existing)
      if (isObj(parsed)) for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string') merged.set(k, v)
    } catch {
      // Not ours to repair: replaced by what this review knows.
    }
  }
  for (const p of rewrites) merged.set(p.name, p.decision.original)
  return merged
}

function encodeOriginals(map: ReadonlyMap<string, string>): string {
  const members: string[] = []
  for (const [k, v] of map) members.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`)
  return `{${members.join(',')}}`
}

/** Bytes the API server counts for a set of annotations (ValidateAnnotationsSize). */
export function annotationsSize(annotations: Obj): number {
  let n = 0
  for (const [k, v] of Object.entries(annotations)) n += Buffer.byteLength(k) + Buffer.byteLength(typeof v === 'string' ? v : String(v))
  return n
}

export interface MutateOptions {
  // Whether the original-images annotation may be written. The ephemeralcontainers
  // subresource keeps nothing but spec.ephemeralContainers, so there it may not.
  readonly annotate: boolean
}

export interface PodMutation {
  readonly patch: JsonPatchOp[]
  // Why the original-images annotation was left out, when it was.
  readonly annotationSkipped?: string
}

/**
 * The patch from `pod` to the Pod as admitted, by diff. Only what mirrorhook may change takes
 * part: the touched container lists (the list as sent against a copy whose rewritten containers
 * carry the new image) and the original-images annotation (as sent against as admitted), each
 * at its place in the Pod. fast-json-patch's `compare` of the two gives ops that apply to
 * exactly the object that was sent; nothing else of the Pod is copied or walked.
 */
export function mutatePod(pod: Obj, plans: readonly ImagePlan[], options: MutateOptions): PodMutation {
  const rewrites = plans.filter((p): p is Rewrite => p.decision.action === 'rewrite')
  if (rewrites.length === 0 || !isObj(pod.spec)) return { patch: [] }
  const spec = pod.spec
  const sentSpec: Obj = {}
  const admittedSpec: Obj = {}
  for (const p of rewrites) {
    const list = spec[p.field]
    if (!Array.isArray(list) || !isObj(list[p.index])) continue
    sentSpec[p.field] = list
    const copy = (admittedSpec[p.field] ??= [...list]) as unknown[]
    copy[p.index] = { ...(list[p.index] as Obj), image: p.decision.rewritten }
  }
  // The mirrors' pull Secrets the Pod lacks, appended once each (planSpec kept the images whose
  // Secret cannot be added: an UPDATE, or a spec.imagePullSecrets that is not a list).
  const current = Array.isArray(spec.imagePullSecrets) ? spec.imagePullSecrets : undefined
  const have = new Set((current ?? []).map((e: unknown) => (isObj(e) ? e.name : undefined)))
  const missing = [...new Set(rewrites.map((p) => p.pullSecret).filter((s): s is string => s !== undefined && !have.has(s)))]
  if (missing.length > 0 && (current !== undefined || spec.imagePullSecrets === undefined)) {
    if (current) sentSpec.imagePullSecrets = current
    admittedSpec.imagePullSecrets = [...(current ?? []), ...missing.map((name) => ({ name }))]
  }
  let sentMetadata: Obj | undefined
  let admittedMetadata: Obj | undefined

  let annotationSkipped: string | undefined
  if (options.annotate) {
    const metadata = pod.metadata
    const annotations = isObj(metadata) ? metadata.annotations : undefined
    if ((metadata !== undefined && !isObj(metadata)) || (annotations !== undefined && !isObj(annotations))) {
      annotationSkipped = 'the Pod metadata or its annotations are not an object'
    } else {
      const current =
        annotations && Object.hasOwn(annotations, ORIGINAL_IMAGES_ANNOTATION) ? annotations[ORIGINAL_IMAGES_ANNOTATION] : undefined
      const value = encodeOriginals(originals(current, rewrites))
      const others = annotations
        ? annotationsSize(annotations) - (current === undefined ? 0 : annotationsSize({ [ORIGINAL_IMAGES_ANNOTATION]: current }))
        : 0
      const size = others + Buffer.byteLength(ORIGINAL_IMAGES_ANNOTATION) + Buffer.byteLength(value)
      if (size > ANNOTATIONS_SIZE_LIMIT) {
        annotationSkipped = `the Pod's annotations would take ${size} bytes, over the API server's 256 KiB limit`
      } else {
        // What exists decides the op: add /metadata, add /metadata/annotations, or add/replace the one key.
        if (metadata !== undefined) {
          sentMetadata =
            annotations === undefined ? {} : { annotations: current === undefined ? {} : { [ORIGINAL_IMAGES_ANNOTATION]: current } }
        }
        admittedMetadata = { annotations: { [ORIGINAL_IMAGES_ANNOTATION]: value } }
      }
    }
  }
  // Key order is document order (compare lists the images first, then the annotation).
  const sent = sentMetadata ? { metadata: sentMetadata, spec: sentSpec } : { spec: sentSpec }
  const admitted = admittedMetadata ? { metadata: admittedMetadata, spec: admittedSpec } : { spec: admittedSpec }
  return { patch: jsonpatch.compare(sent, admitted), ...(annotationSkipped ? { annotationSkipped } : {}) }
}

// kubectl shows warnings as they are; the API server truncates long ones.
const MAX_WARNING = 256

function clip(s: string): string {
  return s.length <= MAX_WARNING ? s : `${s.slice(0, MAX_WARNING - 1)}…`
}

// Kept images an operator would expect to see mirrored get a warning saying why not.
export const WARN_WHEN_KEPT: ReadonlySet<string> = new Set([
  'unparseable',
  'inexpressible',
  'mirror-unreachable',
  'mirror-refused',
  'needs-credentials',
  'pull-policy-never',
  'mutable-tag',
  'mirror-credentials-missing',
])

/** Warnings for the admission response: each rewrite, each image left alone because it is invalid, a missing annotation. */
export function warningsFor(plans: readonly ImagePlan[], mutation?: PodMutation): string[] {
  const out: string[] = []
  // First: the API server shortens and drops warnings when a response carries many.
  if (mutation?.annotationSkipped) {
    out.push(
      clip(
        `mirrorhook: annotation ${ORIGINAL_IMAGES_ANNOTATION} not written: ${mutation.annotationSkipped}; the originals are in the rewrite warnings and the webhook log`,
      ),
    )
  }
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
