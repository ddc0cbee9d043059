// AdmissionReview in, AdmissionReview out. Pure: validation, the decision
// and the response; the HTTP plugin around it does logging, metrics and queues.
import type { Policy } from '../core/policy.js'
import { type ImagePlan, type JsonPatchOp, mutatePod, planSpec, podSkipReason, type PodSkip, warningsFor } from '../core/pod.js'
import type { PullSecretView } from '../core/pullrules.js'
import type { ReachabilityView } from '../core/rewrite.js'
import { z } from 'zod'
import { isObj, type Obj } from '../core/json.js'

const optionalString = (key: string) => z.string({ error: `request.${key} must be a string` }).optional()

// What mirrorhook reads of an AdmissionRequest (k8s.io/api/admission/v1); other fields are
// dropped. The object itself is checked where it is read: any Pod must be answered.
const requestSchema = z.object(
  {
    uid: z.string({ error: 'request.uid must be a non-empty string' }).min(1, { error: 'request.uid must be a non-empty string' }),
    kind: z
      .object(
        { group: z.string().optional(), version: z.string().optional(), kind: z.string().optional() },
        { error: 'request.kind must be an object' },
      )
      .optional(),
    resource: z
      .object(
        { group: z.string().optional(), version: z.string().optional(), resource: z.string().optional() },
        { error: 'request.resource must be an object' },
      )
      .optional(),
    subResource: optionalString('subResource'),
    name: optionalString('name'),
    namespace: optionalString('namespace'),
    operation: optionalString('operation'),
    dryRun: z.boolean({ error: 'request.dryRun must be a boolean' }).optional(),
    object: z.unknown().optional(),
    oldObject: z.unknown().optional(),
  },
  { error: (issue) => (issue.input === undefined ? 'request is missing' : 'request must be an object') },
)

// Issues are reported in this order: kind, apiVersion, request.
export const reviewSchema = z.object(
  {
    kind: z.literal('AdmissionReview', { error: (issue) => `kind must be AdmissionReview, got ${JSON.stringify(issue.input)}` }),
    apiVersion: z.enum(['admission.k8s.io/v1', 'admission.k8s.io/v1beta1'], {
      error: (issue) => `apiVersion must be admission.k8s.io/v1, got ${JSON.stringify(issue.input)}`,
    }),
    request: requestSchema,
  },
  { error: 'the body must be a JSON AdmissionReview object' },
)

export type AdmissionRequest = z.infer<typeof requestSchema>
export type AdmissionReview = z.infer<typeof reviewSchema>

export type ParsedReview = { ok: true; review: AdmissionReview } | { ok: false; message: string }

const API_VERSIONS: readonly unknown[] = ['admission.k8s.io/v1', 'admission.k8s.io/v1beta1']
const REQUEST_STRINGS = ['subResource', 'name', 'namespace', 'operation'] as const

const GROUP_VERSION_KEYS = { kind: ['group', 'version', 'kind'], resource: ['group', 'version', 'resource'] } as const

// request.kind and request.resource: an object of optional strings, other keys dropped.
function groupVersion(v: unknown, last: 'kind' | 'resource'): Obj | undefined {
  if (!isObj(v)) return undefined
  const out: Obj = {}
  for (const key of GROUP_VERSION_KEYS[last]) {
    if (!Object.hasOwn(v, key)) continue
    if (typeof v[key] !== 'string') return undefined
    out[key] = v[key]
  }
  return out
}

/**
 * What reviewSchema gives for a review it accepts, checked and copied by hand (the schema's
 * generic walk costs about a microsecond per review); undefined for anything else, which the
 * schema then checks, to say what is wrong.
 */
function acceptedReview(body: unknown): AdmissionReview | undefined {
  if (!isObj(body) || body.kind !== 'AdmissionReview' || !API_VERSIONS.includes(body.apiVersion)) return undefined
  const request = body.request
  if (!isObj(request) || typeof request.uid !== 'string' || request.uid.length === 0) return undefined
  const out: Obj = { uid: request.uid }
  for (const key of ['kind', 'resource'] as const) {
    if (!Object.hasOwn(request, key)) continue
    const value = groupVersion(request[key], key)
    if (value === undefined) return undefined
    out[key] = value
  }
  for (const key of REQUEST_STRINGS) {
    if (!Object.hasOwn(request, key)) continue
    if (typeof request[key] !== 'string') return undefined
    out[key] = request[key]
  }
  if (Object.hasOwn(request, 'dryRun')) {
    if (typeof request.dryRun !== 'boolean') return undefined
    out.dryRun = request.dryRun
  }
  if (Object.hasOwn(request, 'object')) out.object = request.object
  if (Object.hasOwn(request, 'oldObject')) out.oldObject = request.oldObject
  return { kind: 'AdmissionReview', apiVersion: body.apiVersion, request: out } as AdmissionReview
}

/** Checks the shape of an AdmissionReview; the message says what is wrong (the first problem found). */
export function parseAdmissionReview(body: unknown): ParsedReview {
  const accepted = acceptedReview(body)
  if (accepted) return { ok: true, review: accepted }
  const parsed = reviewSchema.safeParse(body)
  if (parsed.success) return { ok: true, review: parsed.data }
  const issue = parsed.error.issues[0]
  if (!issue) return { ok: false, message: 'invalid AdmissionReview' }
  // Messages set above already name their field; others (request.kind.kind) get the path.
  const path = issue.path.map(String).join('.')
  return { ok: false, message: issue.message.includes(path) || path === '' ? issue.message : `${path}: ${issue.message}` }
}

export type Outcome = 'mutated' | 'unchanged' | 'skipped' | 'ignored' | 'error'

export interface AdmissionResult {
  readonly outcome: Outcome
  readonly patch: JsonPatchOp[]
  readonly warnings: string[]
  readonly plans: ImagePlan[]
  readonly skip?: PodSkip
  // Why the request was not looked at (not a Pod, a Pod without a spec, …).
  readonly ignoredBecause?: string
}

/** What the admission path hands to the features that act after a decision (pre-pull). */
export interface AdmittedEvent {
  readonly request: AdmissionRequest
  readonly result: AdmissionResult
}

function isPodRequest(req: AdmissionRequest): boolean {
  const kind = req.kind?.kind
  const resource = req.resource?.resource
  return (kind === undefined || kind === 'Pod') && (resource === undefined || resource === 'pods')
}

/** Decides one admission request. Throws only on a programming error; the caller fails open. */
export function admit(req: AdmissionRequest, policy: Policy, reachability: ReachabilityView, secrets?: PullSecretView): AdmissionResult {
  const none = { patch: [], warnings: [], plans: [] }
  if (!isPodRequest(req)) return { outcome: 'ignored', ...none, ignoredBecause: `not a Pod (${req.kind?.kind ?? '?'})` }
  const operation = req.operation ?? 'CREATE'
  if (operation !== 'CREATE' && operation !== 'UPDATE') return { outcome: 'ignored', ...none, ignoredBecause: `operation ${operation}` }
  const sub = req.subResource ?? ''
  if (sub !== '' && sub !== 'ephemeralcontainers') return { outcome: 'ignored', ...none, ignoredBecause: `subresource ${sub}` }
  const pod = req.object
  if (!isObj(pod) || !isObj(pod.spec)) return { outcome: 'ignored', ...none, ignoredBecause: 'the request carries no Pod spec' }

  const skip = podSkipReason(pod, req.namespace, policy)
  if (skip) return { outcome: 'skipped', ...none, skip }

  const old = operation === 'UPDATE' && isObj(req.oldObject) && isObj(req.oldObject.spec) ? req.oldObject.spec : undefined
  // The API server keeps only spec.ephemeralContainers from this subresource: only
  // ephemeral containers are decided, and no annotation is written.
  const ephemeral = sub === 'ephemeralcontainers'
  const plans = planSpec(pod.spec, policy, reachability, {
    oldSpec: old,
    fields: ephemeral ? ['ephemeralContainers'] : undefined,
    pod,
    namespace: req.namespace,
    // imagePullSecrets can be set only when the Pod is created.
    canAddPullSecrets: operation === 'CREATE' && !ephemeral,
    secrets,
  })
  const mutation = mutatePod(pod, plans, { annotate: !ephemeral })
  const patch = mutation.patch
  return { outcome: patch.length > 0 ? 'mutated' : 'unchanged', patch, warnings: warningsFor(plans, mutation), plans }
}

export interface AdmissionResponseBody {
  apiVersion: string
  kind: 'AdmissionReview'
  response: {
    uid: string
    allowed: true
    patchType?: 'JSONPatch'
    patch?: string
    warnings?: string[]
  }
}

/** Always allows: mirrorhook never blocks a Pod. */
export function buildResponse(review: AdmissionReview, patch: readonly JsonPatchOp[], warnings: readonly string[]): AdmissionResponseBody {
  const response: AdmissionResponseBody['response'] = { uid: review.request.uid, allowed: true }
  if (patch.length > 0) {
    response.patchType = 'JSONPatch'
    response.patch = Buffer.from(JSON.stringify(patch)).toString('base64')
  }
  if (warnings.length > 0) response.warnings = [...warnings]
  return { apiVersion: review.apiVersion, kind: 'AdmissionReview', response }
}

/**
 * `JSON.stringify(buildResponse(review, patch, warnings))`, written directly: the response has one
 * known shape, so only the uid, the patch and the warnings need encoding.
 */
export function responseJson(review: AdmissionReview, patch: readonly JsonPatchOp[], warnings: readonly string[]): string {
  let out = `{"apiVersion":${JSON.stringify(review.apiVersion)},"kind":"AdmissionReview","response":{"uid":${JSON.stringify(review.request.uid)},"allowed":true`
  if (patch.length > 0) out += `,"patchType":"JSONPatch","patch":"${Buffer.from(JSON.stringify(patch)).toString('base64')}"`
  if (warnings.length > 0) out += `,"warnings":${JSON.stringify(warnings)}`
  return `${out}}}`
}
