// What to do about one Pod whose containers wait on a failed pull. Pure: the Pod (as the
// shared Pod cache keeps it), the policy, learned reachability and the loop's memory in;
// a verdict out. The loop (server/remediation/remediator.ts) carries it out.
import type { V1Pod } from '@kubernetes/client-node'
import { ORIGINAL_IMAGES_ANNOTATION, SKIP_LABEL } from '../core/pod.js'
import { type Policy, registryKey } from '../core/policy.js'
import { tryParseNormalizedNamed } from '../core/reference.js'
import { decideImage, type ReachabilityView } from '../core/rewrite.js'
import { classifyPullFailure, type PullFailureKind } from '../reachability/classify.js'
import { pullFailures } from '../reachability/learner.js'

export type Method = 'evict' | 'patch'

// Written by the patch on the Pod it changed: `<ISO time> <Pod UID>`. A restarted mirrorhook has
// no memory of its own; the annotation is that memory, for this Pod UID only (a copy of the Pod
// under another UID is a new Pod).
export const REMEDIATED_ANNOTATION = 'mirrorhook.io/remediated'

/** The value of the remediated annotation for the Pod with this UID, patched at this time. */
export function remediatedMark(at: Date, uid: string): string {
  return `${at.toISOString()} ${uid}`
}

/** Whether the Pod carries the remediated annotation written for its own UID. */
export function markedRemediated(pod: V1Pod): boolean {
  const uid = pod.metadata?.uid
  const value = pod.metadata?.annotations?.[REMEDIATED_ANNOTATION]
  if (!uid || typeof value !== 'string') return false
  const parts = value.trim().split(/\s+/)
  return parts.length === 2 && parts[1] === uid
}

// Silent: nothing for mirrorhook to look at.
export type IgnoreCode = 'not-failing' | 'terminating' | 'excluded-namespace' | 'not-opted-in' | 'skip-label' | 'owner-kind' | 'done'
// Not yet: looked at again at the next re-check.
export type WaitCode = 'too-early' | 'owner-cap' | 'mirror-down'
// Nothing mirrorhook can do: said once, in an Event on the Pod.
export type CannotCode =
  | 'not-found'
  | 'unauthorized'
  | 'forbidden'
  | 'other'
  | 'mirror-failing'
  | 'no-original'
  | 'original-unreachable'
  | 'decision-keeps'
  | 'bare-pod'

export interface Change {
  readonly field: 'initContainers' | 'containers'
  readonly index: number
  readonly container: string
  // The waiting reason (ErrImagePull, ImagePullBackOff) and the classified error.
  readonly reason: string
  readonly failure: PullFailureKind
  readonly cause: string
  readonly from: string
  readonly to: string
  // The image as written before mirrorhook touched it.
  readonly original: string
}

export interface Owner {
  readonly kind: string
  readonly name: string
  readonly uid: string
}

export type Verdict =
  | { readonly kind: 'ignore'; readonly code: IgnoreCode; readonly reason: string }
  | { readonly kind: 'wait'; readonly code: WaitCode; readonly reason: string }
  | { readonly kind: 'cannot'; readonly code: CannotCode; readonly reason: string }
  | {
      readonly kind: 'act'
      readonly method: Method
      readonly owner?: Owner
      readonly changes: readonly Change[]
      // Other failing containers nothing can be done for, said in the same Event.
      readonly notes: readonly string[]
    }

export interface DecideContext {
  readonly policy: Policy
  readonly reachability: ReachabilityView
  // Controlling owner kinds whose Pods may be remediated.
  readonly ownerKinds: ReadonlySet<string>
  readonly method: Method
  readonly barePods: 'leave' | 'patch'
  // mirrorhook's own namespace: never touched.
  readonly ownNamespace: string
  readonly optedIn: (namespace: string) => boolean
  readonly minFailingMs: number
  readonly perOwnerPerHour: number
  readonly now: number
  // When this container of this Pod was first seen failing.
  readonly failingSince: (uid: string, container: string) => number | undefined
  // Whether this Pod UID was remediated already.
  readonly remediated: (uid: string) => boolean
  // Remediations of this owner (by UID) in the last hour.
  readonly ownerCount: (ownerUid: string) => number
}

type ContainerOutcome =
  | { readonly kind: 'act'; readonly change: Change }
  | { readonly kind: 'wait'; readonly code: WaitCode; readonly reason: string }
  | { readonly kind: 'cannot'; readonly code: CannotCode; readonly reason: string }

function originalsOf(pod: V1Pod): Record<string, string> {
  const raw = pod.metadata?.annotations?.[ORIGINAL_IMAGES_ANNOTATION]
  if (!raw) return {}
  try {
    const parsed: unknown = JSON.parse(raw)
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return {}
    return Object.fromEntries(Object.entries(parsed).filter((e): e is [string, string] => typeof e[1] === 'string'))
  } catch {
    return {}
  }
}

function mirrorDomainOf(image: string, policy: Policy): string | undefined {
  const parsed = tryParseNormalizedNamed(image)
  if (!parsed.ok) return undefined
  const name = `${parsed.ref.domain}/${parsed.ref.path}`
  return policy.mirrors.find((m) => name.startsWith(`${m.repoPrefix}/`))?.domain
}

function registryOf(image: string): string | undefined {
  const parsed = tryParseNormalizedNamed(image)
  return parsed.ok ? registryKey(parsed.ref.domain) : undefined
}

const NO_FIX: Partial<Record<PullFailureKind, string>> = {
  'not-found': 'a mirror cannot serve an image that does not exist',
  unauthorized: 'a mirror cannot fix missing or wrong credentials',
  other: 'not a registry failure a mirror can fix',
}

function decideContainer(
  c: { field: 'initContainers' | 'containers'; index: number; container: string; image: string; reason: string; error: string },
  originals: Record<string, string>,
  ctx: DecideContext,
): ContainerOutcome {
  const { policy, reachability } = ctx
  const cls = classifyPullFailure(c.error)
  const what = `${c.container}: ${c.image} failed (${cls.cause})`
  const noFix = NO_FIX[cls.kind]
  if (noFix) return { kind: 'cannot', code: cls.kind as CannotCode, reason: `${what}: ${noFix}` }
  const mirror = mirrorDomainOf(c.image, policy)
  const original = mirror ? originals[c.container] : c.image
  let to: string
  if (mirror) {
    if (cls.kind !== 'forbidden') return { kind: 'cannot', code: 'mirror-failing', reason: `${what}: the mirror itself fails to serve it` }
    if (!original)
      return { kind: 'cannot', code: 'no-original', reason: `${what}: the mirror refused it and the original reference is not recorded` }
    const d = decideImage(original, policy, reachability)
    if (d.action === 'rewrite') {
      if (d.rewritten === c.image) {
        return {
          kind: 'cannot',
          code: 'decision-keeps',
          reason: `${what}: the current decision still pulls it from the mirror (${d.reason})`,
        }
      }
      to = d.rewritten
    } else {
      const registry = registryOf(original)
      const status = registry ? reachability.status(registry) : undefined
      if (!status || status.state === 'unreachable') {
        return {
          kind: 'cannot',
          code: 'original-unreachable',
          reason: `${what}: the mirror refused it and ${registry ?? original} is unreachable${status ? ` (${status.evidence})` : ''}`,
        }
      }
      to = original
    }
  } else {
    if (cls.kind === 'forbidden') return { kind: 'cannot', code: 'forbidden', reason: `${what}: the registry refused it` }
    const d = decideImage(c.image, policy, reachability)
    if (d.action === 'keep') {
      if (d.code === 'mirror-unreachable') return { kind: 'wait', code: 'mirror-down', reason: d.reason }
      return { kind: 'cannot', code: 'decision-keeps', reason: `${what}: the current decision keeps it (${d.reason})` }
    }
    to = d.rewritten
  }
  // Nothing is sent to a mirror known to be down, whatever the mode.
  const target = mirrorDomainOf(to, policy)
  if (target) {
    const status = reachability.status(registryKey(target))
    if (status.state === 'unreachable')
      return { kind: 'wait', code: 'mirror-down', reason: `mirror ${target} is unreachable (${status.evidence})` }
  }
  return {
    kind: 'act',
    change: {
      field: c.field,
      index: c.index,
      container: c.container,
      reason: c.reason,
      failure: cls.kind,
      cause: cls.cause,
      from: c.image,
      to,
      original: original ?? c.image,
    },
  }
}

/** The verdict for one Pod. */
export function decidePod(pod: V1Pod, ctx: DecideContext): Verdict {
  const failures = pullFailures(pod)
  const where = new Map<string, { field: 'initContainers' | 'containers'; index: number }>()
  for (const field of ['initContainers', 'containers'] as const) {
    pod.spec?.[field]?.forEach((c, index) => where.set(c.name, { field, index }))
  }
  // Ephemeral containers are not recreated by a controller nor patchable: left out.
  const failing = failures.filter((f) => where.has(f.container))
  if (failing.length === 0) return { kind: 'ignore', code: 'not-failing', reason: 'no container waits on a failed pull' }
  const m = pod.metadata ?? {}
  const namespace = m.namespace ?? ''
  const uid = m.uid ?? ''
  if (m.deletionTimestamp) return { kind: 'ignore', code: 'terminating', reason: 'the Pod is being deleted' }
  if (namespace === ctx.ownNamespace || ctx.policy.excludedNamespaces.has(namespace)) {
    return { kind: 'ignore', code: 'excluded-namespace', reason: `namespace ${namespace} is excluded` }
  }
  if (!ctx.optedIn(namespace)) return { kind: 'ignore', code: 'not-opted-in', reason: `namespace ${namespace} did not opt in` }
  if (String(m.labels?.[SKIP_LABEL] ?? '').toLowerCase() === 'true') {
    return { kind: 'ignore', code: 'skip-label', reason: `the Pod is labelled ${SKIP_LABEL}=true` }
  }
  if (ctx.remediated(uid)) return { kind: 'ignore', code: 'done', reason: 'this Pod was remediated already' }
  if (markedRemediated(pod))
    return { kind: 'ignore', code: 'done', reason: `this Pod carries ${REMEDIATED_ANNOTATION}: it was patched already` }
  const controller = m.ownerReferences?.find((o) => o.controller === true)
  if (controller && !ctx.ownerKinds.has(controller.kind)) {
    return {
      kind: 'ignore',
      code: 'owner-kind',
      reason: `the Pod is controlled by ${controller.kind} ${controller.name}, not an allowed owner kind`,
    }
  }

  const originals = originalsOf(pod)
  const outcomes = failing.map((f) => decideContainer({ ...f, ...where.get(f.container)! }, originals, ctx))
  const changes = outcomes.flatMap((o) => (o.kind === 'act' ? [o.change] : []))
  const notes = outcomes.flatMap((o) => (o.kind === 'cannot' ? [o.reason] : []))
  const waits = outcomes.flatMap((o) => (o.kind === 'wait' ? [o] : []))
  if (waits[0]) return { kind: 'wait', code: waits[0].code, reason: waits[0].reason }
  // Nothing is done or said about a failure younger than the minimum: the learned state settles first.
  for (const f of failing) {
    const since = ctx.failingSince(uid, f.container) ?? ctx.now
    if (ctx.now - since < ctx.minFailingMs) {
      return { kind: 'wait', code: 'too-early', reason: `${f.container} has been failing for less than ${ctx.minFailingMs / 1000} s` }
    }
  }
  if (changes.length === 0) {
    const first = outcomes.find((o) => o.kind === 'cannot')!
    return { kind: 'cannot', code: first.kind === 'cannot' ? first.code : 'other', reason: notes.join('; ') }
  }
  if (!controller && ctx.barePods === 'leave') {
    return {
      kind: 'cannot',
      code: 'bare-pod',
      reason: `no controller would recreate this Pod (remediation.barePods is leave); it should pull ${changes.map((c) => c.to).join(', ')}`,
    }
  }
  if (controller && ctx.ownerCount(controller.uid) >= ctx.perOwnerPerHour) {
    return {
      kind: 'wait',
      code: 'owner-cap',
      reason: `${ctx.perOwnerPerHour} Pods of ${controller.kind} ${controller.name} were remediated in the last hour`,
    }
  }
  return {
    kind: 'act',
    method: controller ? ctx.method : 'patch',
    owner: controller ? { kind: controller.kind, name: controller.name, uid: controller.uid } : undefined,
    changes,
    notes,
  }
}
