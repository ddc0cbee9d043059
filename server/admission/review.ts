// AdmissionReview in, AdmissionReview out. Pure: validation, the decision
// and the response; the HTTP plugin around it does logging, metrics and queues.
import type { Policy } from '../core/policy.js'
import { type ImagePlan, type JsonPatchOp, mutatePod, planSpec, podSkipReason, type PodSkip, warningsFor } from '../core/pod.js'
import type { ReachabilityView } from '../core/rewrite.js'

const API_VERSIONS = new Set(['admission.k8s.io/v1', 'admission.k8s.io/v1beta1'])

type Obj = Record<string, unknown>

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export interface AdmissionRequest {
  uid: string
  kind?: { group?: string; version?: string; kind?: string }
  resource?: { group?: string; version?: string; resource?: string }
  subResource?: string
  name?: string
  namespace?: string
  operation?: string
  dryRun?: boolean
  object?: unknown
  oldObject?: unknown
}

export interface AdmissionReview {
  apiVersion: string
  kind: 'AdmissionReview'
  request: AdmissionRequest
}

export type ParsedReview = { ok: true; review: AdmissionReview } | { ok: false; message: string }

/** Checks the shape of an AdmissionReview; the message says what is wrong. */
export function parseAdmissionReview(body: unknown): ParsedReview {
  if (!isObj(body)) return { ok: false, message: 'the body must be a JSON AdmissionReview object' }
  if (body.kind !== 'AdmissionReview') return { ok: false, message: `kind must be AdmissionReview, got ${JSON.stringify(body.kind)}` }
  if (typeof body.apiVersion !== 'string' || !API_VERSIONS.has(body.apiVersion)) {
    return { ok: false, message: `apiVersion must be admission.k8s.io/v1, got ${JSON.stringify(body.apiVersion)}` }
  }
  const request = body.request
  if (!isObj(request)) return { ok: false, message: 'request is missing' }
  if (typeof request.uid !== 'string' || request.uid === '') return { ok: false, message: 'request.uid must be a non-empty string' }
  if (request.dryRun !== undefined && typeof request.dryRun !== 'boolean') {
    return { ok: false, message: 'request.dryRun must be a boolean' }
  }
  for (const key of ['namespace', 'name', 'operation', 'subResource'] as const) {
    if (request[key] !== undefined && typeof request[key] !== 'string') return { ok: false, message: `request.${key} must be a string` }
  }
  return { ok: true, review: body as unknown as AdmissionReview }
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
export function admit(req: AdmissionRequest, policy: Policy, reachability: ReachabilityView): AdmissionResult {
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
  const plans = planSpec(pod.spec, policy, reachability, { oldSpec: old, fields: ephemeral ? ['ephemeralContainers'] : undefined })
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
