// The admission outcome of a Pod shape, reused. The Pods of one ReplicaSet (or Job, or
// DaemonSet) arrive one after the other with the same images, labels and annotations, and get
// the same decision, patch and warnings; only the review's uid, the Pod's name and what the API
// server generated per Pod (the token volume's name, managedFields' times) differ, and the
// decision reads none of those. So a CREATE is compared on exactly what `admit` reads (its
// shape), and the outcome is reused while the policy, the reachability view and its generation, and the pull
// Secret copies it saw stay the same. The uid is spliced into the response per request. An
// outcome is kept when its shape is seen the second time, and reused from the third Pod on.
import { admit, type AdmissionResult, type AdmissionReview, responseJson } from '../admission/review.js'
import type { AdmissionContext } from './context.js'
import { isObj, type Obj } from '../core/json.js'

// At most this many Pod shapes (the oldest go first), each at most OUTCOME_SHAPE_MAX characters
// of values: a shape beyond that (a huge annotation, hundreds of containers) or nested deeper than
// OUTCOME_SHAPE_DEPTH is decided every time.
export const OUTCOME_MEMO_SIZE = 1024
export const OUTCOME_SHAPE_MAX = 16 * 1024
export const OUTCOME_SHAPE_DEPTH = 32
// Shapes kept per anchor (one namespace and first image: the ReplicaSets of one Deployment).
const SHAPES_PER_ANCHOR = 16

/**
 * What `admit` reads of a CREATE of a Pod (server/admission/review.ts, server/core/pod.ts,
 * pullrules.ts), as the request's own values (not copied: nothing writes to a review):
 * - the request's kind, resource and namespace;
 * - of the Pod's metadata: its namespace, labels (skip label, kube-fledged's pull Jobs),
 *   ownerReferences (the controller's kind and name) and annotations (the original-images
 *   annotation, the annotations' size), and whether it has metadata at all;
 * - of the spec: each container list entry by position (an entry that is not an object still
 *   counts for the positions in the patch) with its name, image and imagePullPolicy, and
 *   spec.imagePullSecrets;
 * - whether each mirror pull Secret is copied to the Pod's namespace (`secrets`).
 * Two shapes are the same when every value is the same JSON (sameShape). Comparing them needs no
 * string building and no hashing of the whole: only the anchor, a short string, is hashed.
 */
export interface PodShape {
  // The namespace and the first container's image: where the memo looks for the shape.
  readonly anchor: string
  readonly values: readonly unknown[]
  // initContainers, containers, ephemeralContainers.
  readonly lists: readonly unknown[]
  readonly secrets: string
}

const LISTS = ['initContainers', 'containers', 'ephemeralContainers'] as const

/** The shape of a review, or undefined for one decided every time (an UPDATE, a subresource, no Pod spec, metadata that is not an object). */
export function podShape(review: AdmissionReview, context: AdmissionContext): PodShape | undefined {
  const req = review.request
  if ((req.operation ?? 'CREATE') !== 'CREATE' || (req.subResource ?? '') !== '') return undefined
  const pod = req.object
  if (!isObj(pod) || !isObj(pod.spec)) return undefined
  const metadata = pod.metadata
  if (metadata !== undefined && !isObj(metadata)) return undefined
  const spec = pod.spec
  const values = [
    req.kind?.kind,
    req.resource?.resource,
    req.namespace,
    metadata === undefined,
    metadata?.namespace,
    metadata?.labels,
    metadata?.ownerReferences,
    metadata?.annotations,
    spec.imagePullSecrets,
  ]
  const lists = [spec[LISTS[0]], spec[LISTS[1]], spec[LISTS[2]]]
  let secrets = ''
  if (context.secrets) {
    const namespace = req.namespace || (isObj(metadata) && typeof metadata.namespace === 'string' ? metadata.namespace : '')
    for (const m of context.policy.mirrors) {
      if (m.pullSecret !== undefined) secrets += namespace !== '' && context.secrets.has(namespace, m.pullSecret) ? '1' : '0'
    }
  }
  const containers = lists[1]
  const first = Array.isArray(containers) && isObj(containers[0]) ? containers[0].image : undefined
  return { anchor: `${req.namespace ?? ''} ${typeof first === 'string' ? first : ''}`, values, lists, secrets }
}

/** Whether two values parsed from JSON are the same JSON (object keys in any order). */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i], b[i])) return false
    return true
  }
  if (Array.isArray(b)) return false
  const x = a as Obj
  const y = b as Obj
  let keys = 0
  for (const k in x) {
    if (!Object.hasOwn(y, k) || !sameJson(x[k], y[k])) return false
    keys += 1
  }
  for (const _ in y) if (--keys < 0) return false
  return keys === 0
}

// A container list as the decision reads it: by position, an object by name, image and pull
// policy, anything else as it is; a value that is not a list by its type.
function sameList(a: unknown, b: unknown): boolean {
  if (!Array.isArray(a) || !Array.isArray(b)) return !Array.isArray(a) && !Array.isArray(b) && typeof a === typeof b
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) {
    const x: unknown = a[i]
    const y: unknown = b[i]
    if (isObj(x)) {
      if (!isObj(y) || !sameJson(x.name, y.name) || !sameJson(x.image, y.image) || !sameJson(x.imagePullPolicy, y.imagePullPolicy))
        return false
    } else if (isObj(y) || !sameJson(x, y)) return false
  }
  return true
}

export function sameShape(a: PodShape, b: PodShape): boolean {
  if (a.anchor !== b.anchor || a.secrets !== b.secrets) return false
  for (let i = 0; i < a.values.length; i++) if (!sameJson(a.values[i], b.values[i])) return false
  for (let i = 0; i < a.lists.length; i++) if (!sameList(a.lists[i], b.lists[i])) return false
  return true
}

// What a JSON value adds to a shape's size (characters of its strings and keys, one per other
// value), counted down from `budget`; negative when over it or nested deeper than OUTCOME_SHAPE_DEPTH.
function sizeLeft(v: unknown, budget: number, depth = 0): number {
  if (typeof v === 'string') return budget - v.length - 1
  if (typeof v !== 'object' || v === null) return budget - 1
  if (depth >= OUTCOME_SHAPE_DEPTH) return -1
  budget -= 1
  if (Array.isArray(v)) {
    for (const item of v as unknown[]) if ((budget = sizeLeft(item, budget, depth + 1)) < 0) return budget
    return budget
  }
  for (const k in v as Obj) {
    budget -= k.length
    if ((budget = sizeLeft((v as Obj)[k], budget, depth + 1)) < 0) return budget
  }
  return budget
}

/** Whether a shape is small enough to keep (OUTCOME_SHAPE_MAX, OUTCOME_SHAPE_DEPTH). */
export function shapeFits(shape: PodShape): boolean {
  let budget = OUTCOME_SHAPE_MAX - shape.anchor.length - shape.secrets.length
  for (const v of shape.values) if ((budget = sizeLeft(v, budget)) < 0) return false
  for (const list of shape.lists) {
    if (!Array.isArray(list)) continue
    for (const c of list as unknown[]) {
      budget = isObj(c) ? sizeLeft(c.imagePullPolicy, sizeLeft(c.image, sizeLeft(c.name, budget, 1), 1), 1) : sizeLeft(c, budget, 1)
      if (budget < 0) return false
    }
  }
  return true
}

// A uid as the API server makes it (a UUID) is its own JSON string.
const PLAIN_UID = /^[\w.-]{1,128}$/

/** The start of `responseJson`'s text, up to and with the uid. */
function responseHead(review: AdmissionReview): string {
  const uid = review.request.uid
  const uidJson = PLAIN_UID.test(uid) ? `"${uid}"` : JSON.stringify(uid)
  return `{"apiVersion":${JSON.stringify(review.apiVersion)},"kind":"AdmissionReview","response":{"uid":${uidJson}`
}

/**
 * The shape as kept: its lists copied, so that the arrays podShape makes on every review all die
 * young. Were the kept ones the same arrays, a stream of new shapes (each kept) would teach V8 that
 * podShape's array literals live long; it then allocates them in the old generation (allocation-site
 * pretenuring), where, garbage already on the next review, they keep the review's parsed body alive
 * through every young collection until a full one: measured, the reused path afterwards ran at
 * 0.75 of its speed, with a full collection every second.
 */
function keptCopy(shape: PodShape): PodShape {
  return { anchor: shape.anchor, values: shape.values.slice(), lists: shape.lists.slice(), secrets: shape.secrets }
}

interface Kept<T> {
  readonly shape: PodShape
  // Set when the shape is seen the second time.
  outcome: Entry<T> | undefined
}

interface Entry<T> {
  readonly result: AdmissionResult
  // responseJson's text after the uid.
  readonly tail: string
  readonly derived: T
}

export interface Outcome<T> {
  readonly result: AdmissionResult
  // The response: exactly responseJson(review, result.patch, result.warnings). Text, which Node
  // writes with the response's header in one piece (bytes would be a second piece).
  readonly body: string
  // What `derive` made of the result (when the outcome was first decided).
  readonly derived: T
  readonly reused: boolean
}

/**
 * A bounded memo of admission outcomes by Pod shape. `derive` computes, once per outcome, what
 * the caller makes of every result (log fields, metric labels); it must depend on the result and
 * the context's policy only.
 */
export class OutcomeMemo<T> {
  // Shapes by anchor, oldest anchor first. A shape seen once is kept without an outcome; its
  // outcome is kept when it is seen again, so a stream of shapes that never repeat (every Pod
  // with new tags) keeps no outcomes.
  private readonly anchors = new Map<string, Kept<T>[]>()
  private kept = 0
  private policy: AdmissionContext['policy'] | undefined
  private view: AdmissionContext['reachability'] | undefined
  private secrets: AdmissionContext['secrets'] | undefined
  private generation: number | undefined

  constructor(
    private readonly derive: (result: AdmissionResult, context: AdmissionContext) => T,
    readonly capacity = OUTCOME_MEMO_SIZE,
  ) {}

  /** Shapes kept. */
  get size(): number {
    return this.kept
  }

  /** The outcome of the review in this context: reused when the same shape was decided in the same state. */
  admit(review: AdmissionReview, context: AdmissionContext): Outcome<T> {
    const { policy, reachability, secrets } = context
    const generation = reachability.generation?.()
    const shape = generation === undefined || this.capacity <= 0 ? undefined : podShape(review, context)
    if (shape === undefined) return this.decide(review, context)
    if (this.policy !== policy || this.view !== reachability || this.secrets !== secrets || this.generation !== generation) {
      this.anchors.clear()
      this.kept = 0
      this.policy = policy
      this.view = reachability
      this.secrets = secrets
      this.generation = generation
    }
    const bucket = this.anchors.get(shape.anchor)
    let found: Kept<T> | undefined
    if (bucket) {
      for (const k of bucket) {
        if (sameShape(k.shape, shape)) {
          found = k
          break
        }
      }
    }
    const entry = found?.outcome
    if (entry) {
      return { result: entry.result, body: responseHead(review) + entry.tail, derived: entry.derived, reused: true }
    }
    if (!found && !shapeFits(shape)) return this.decide(review, context)
    const outcome = this.decide(review, context)
    if (found) {
      const head = responseHead(review)
      // The rest of the response after the head is kept, never a response of another uid.
      if (outcome.body.startsWith(head))
        found.outcome = { result: outcome.result, tail: outcome.body.slice(head.length), derived: outcome.derived }
    } else this.keep(shape, bucket)
    return outcome
  }

  private keep(shape: PodShape, bucket: Kept<T>[] | undefined): void {
    const shapes = bucket ?? []
    // The anchor becomes the newest.
    if (bucket) this.anchors.delete(shape.anchor)
    if (shapes.length >= SHAPES_PER_ANCHOR) {
      shapes.shift()
      this.kept -= 1
    }
    while (this.kept >= this.capacity && this.anchors.size > 0) {
      const [anchor, oldest] = this.anchors.entries().next().value as [string, Kept<T>[]]
      this.anchors.delete(anchor)
      this.kept -= oldest.length
    }
    while (this.kept >= this.capacity && shapes.length > 0) {
      shapes.shift()
      this.kept -= 1
    }
    shapes.push({ shape: keptCopy(shape), outcome: undefined })
    this.anchors.set(shape.anchor, shapes)
    this.kept += 1
  }

  private decide(review: AdmissionReview, context: AdmissionContext): Outcome<T> {
    const result = admit(review.request, context.policy, context.reachability, context.secrets)
    // Shared by every review of the same shape: read-only from here on.
    Object.freeze(result.patch)
    Object.freeze(result.warnings)
    Object.freeze(result.plans)
    Object.freeze(result)
    const body = responseJson(review, result.patch, result.warnings)
    return { result, body, derived: this.derive(result, context), reused: false }
  }
}
