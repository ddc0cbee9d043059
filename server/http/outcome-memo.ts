// The admission outcome of a Pod shape, reused. The Pods of one ReplicaSet (or Job, or
// DaemonSet) arrive one after the other with the same images, labels and annotations, and get
// the same decision, patch and warnings; only the review's uid, the Pod's name and what the API
// server generated per Pod (the token volume's name, managedFields' times) differ, and the
// decision reads none of those. So a CREATE is keyed on exactly what `admit` reads, and the
// outcome is reused while the policy, the reachability view and its generation, and the pull
// Secret copies it saw stay the same. The uid is spliced into the response per request. An
// outcome is kept when its shape is seen the second time, and reused from the third Pod on.
import { admit, type AdmissionResult, type AdmissionReview, responseJson } from '../admission/review.js'
import type { AdmissionContext } from './context.js'

// At most this many Pod shapes (the oldest goes first), each at most OUTCOME_KEY_MAX characters
// of key: a shape beyond that (a huge annotation, hundreds of containers) is decided every time.
export const OUTCOME_MEMO_SIZE = 1024
export const OUTCOME_KEY_MAX = 16 * 1024

type Obj = Record<string, unknown>

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

// One to one and self-delimiting, so that a sequence of them is too: a string by its length and
// text (most of what is read: no JSON encoding needed), any other JSON value (the body was JSON)
// as JSON, absent as its own mark.
function enc(v: unknown): string {
  if (typeof v === 'string') return `${v.length}:${v}`
  return v === undefined ? '~' : `j${JSON.stringify(v)}`
}

const LISTS = ['initContainers', 'containers', 'ephemeralContainers'] as const

/**
 * What `admit` reads of a CREATE of a Pod (server/admission/review.ts, server/core/pod.ts,
 * pullrules.ts), as one string, or undefined for a request decided every time (an UPDATE, a
 * subresource, no Pod spec, metadata that is not an object, a key over OUTCOME_KEY_MAX):
 * - the request's kind, resource and namespace;
 * - of the Pod's metadata: its namespace, labels (skip label, kube-fledged's pull Jobs),
 *   ownerReferences (the controller's kind and name) and annotations (the original-images
 *   annotation, the annotations' size), and whether it has metadata at all;
 * - of the spec: each container list entry by position (an entry that is not an object still
 *   counts for the positions in the patch) with its name, image and imagePullPolicy, and
 *   spec.imagePullSecrets;
 * - whether each mirror pull Secret is copied to the Pod's namespace (`secrets`).
 */
export function outcomeKey(review: AdmissionReview, context: AdmissionContext): string | undefined {
  const req = review.request
  if ((req.operation ?? 'CREATE') !== 'CREATE' || (req.subResource ?? '') !== '') return undefined
  const pod = req.object
  if (!isObj(pod) || !isObj(pod.spec)) return undefined
  const metadata = pod.metadata
  if (metadata !== undefined && !isObj(metadata)) return undefined
  const spec = pod.spec
  let key = `${enc(req.kind?.kind)}|${enc(req.resource?.resource)}|${enc(req.namespace)}|`
  if (metadata === undefined) key += 'no metadata|'
  else {
    key += `${enc(metadata.namespace)}|${enc(metadata.labels)}|${enc(metadata.ownerReferences)}|${enc(metadata.annotations)}|`
  }
  for (const field of LISTS) {
    const list = spec[field]
    key += `${field}:`
    if (!Array.isArray(list)) key += `${enc(list === undefined ? undefined : typeof list)};`
    else {
      for (const c of list as unknown[]) {
        key += isObj(c) ? `[${enc(c.name)},${enc(c.image)},${enc(c.imagePullPolicy)}]` : `(${enc(c)})`
      }
      key += ';'
    }
    if (key.length > OUTCOME_KEY_MAX) return undefined
  }
  key += `|${enc(spec.imagePullSecrets)}`
  const secrets = context.secrets
  if (secrets) {
    const namespace = req.namespace || (isObj(metadata) && typeof metadata.namespace === 'string' ? metadata.namespace : '')
    key += '|'
    for (const m of context.policy.mirrors) {
      if (m.pullSecret !== undefined) key += namespace !== '' && secrets.has(namespace, m.pullSecret) ? '1' : '0'
    }
  }
  return key.length > OUTCOME_KEY_MAX ? undefined : key
}

/** The start of `responseJson`'s text, up to and with the uid. */
function responseHead(review: AdmissionReview): string {
  return `{"apiVersion":${JSON.stringify(review.apiVersion)},"kind":"AdmissionReview","response":{"uid":${JSON.stringify(review.request.uid)}`
}

interface Entry<T> {
  readonly result: AdmissionResult
  // responseJson's text after the uid.
  readonly tail: string
  readonly derived: T
}

export interface Outcome<T> {
  readonly result: AdmissionResult
  // The response: exactly responseJson(review, result.patch, result.warnings).
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
  // A shape seen once is kept by its key alone (null); its outcome is kept when it is seen again, so
  // a stream of shapes that never repeat (every Pod with new tags) keeps no outcomes.
  private readonly entries = new Map<string, Entry<T> | null>()
  private policy: AdmissionContext['policy'] | undefined
  private view: AdmissionContext['reachability'] | undefined
  private secrets: AdmissionContext['secrets'] | undefined
  private generation: number | undefined

  constructor(
    private readonly derive: (result: AdmissionResult, context: AdmissionContext) => T,
    readonly capacity = OUTCOME_MEMO_SIZE,
  ) {}

  get size(): number {
    return this.entries.size
  }

  /** The outcome of the review in this context: reused when the same shape was decided in the same state. */
  admit(review: AdmissionReview, context: AdmissionContext): Outcome<T> {
    const { policy, reachability, secrets } = context
    const generation = reachability.generation?.()
    const key = generation === undefined || this.capacity <= 0 ? undefined : outcomeKey(review, context)
    if (key === undefined) return this.decide(review, context)
    if (this.policy !== policy || this.view !== reachability || this.secrets !== secrets || this.generation !== generation) {
      this.entries.clear()
      this.policy = policy
      this.view = reachability
      this.secrets = secrets
      this.generation = generation
    }
    const entry = this.entries.get(key)
    if (entry) return { result: entry.result, body: responseHead(review) + entry.tail, derived: entry.derived, reused: true }
    const outcome = this.decide(review, context)
    const head = responseHead(review)
    if (entry === undefined) {
      if (this.entries.size >= this.capacity) this.entries.delete(this.entries.keys().next().value as string)
      this.entries.set(key, null)
    } else if (outcome.body.startsWith(head)) {
      this.entries.set(key, { result: outcome.result, tail: outcome.body.slice(head.length), derived: outcome.derived })
    }
    return outcome
  }

  private decide(review: AdmissionReview, context: AdmissionContext): Outcome<T> {
    const result = admit(review.request, context.policy, context.reachability, context.secrets)
    // Shared by every review of the same shape: read-only from here on.
    Object.freeze(result.patch)
    Object.freeze(result.warnings)
    Object.freeze(result.plans)
    Object.freeze(result)
    return { result, body: responseJson(review, result.patch, result.warnings), derived: this.derive(result, context), reused: false }
  }
}
