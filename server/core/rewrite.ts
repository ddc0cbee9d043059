// The rewrite decision for one image string. Pure and synchronous: it reads
// the compiled policy and an in-memory view of registry reachability.
import { LRUCache } from 'lru-cache'
import { type MirrorTarget, type Policy, registryKey } from './policy.js'
import { formatReference, type ImageReference, tryParseNormalizedNamed } from './reference.js'

export type RegistryState = 'reachable' | 'unreachable' | 'slow' | 'unknown'

export interface RegistryStatus {
  readonly state: RegistryState
  // What decided the state, for warnings and `mirrorhook rewrite`.
  readonly evidence: string
}

// What admission knows about registries; the static form comes from `unreachable:`.
export interface ReachabilityView {
  status(registry: string): RegistryStatus
  // Set when the mirror refused this mirrored repository (e.g. not in its allowlist): why.
  mirrorRefusal?(repository: string): string | undefined
  // Set when the mirror's published allowlist does not name this source repository
  // (`docker.io/library/nginx`): why. Unset while the mirror has no list (or none loaded yet).
  notAllowed?(mirror: MirrorTarget, repository: string): string | undefined
  // Changes whenever `status`, `mirrorRefusal` or `notAllowed` could answer differently (new
  // evidence, an expiry passing, a new list). A view with it lets `decideImage` reuse decisions;
  // one without is never cached.
  generation?(): number
}

export interface DecideOptions {
  // The image needs credentials (a private image): only mirrors with a pull secret can serve it.
  readonly needsCredentials?: boolean
}

export function staticReachability(policy: Policy): ReachabilityView {
  return {
    generation: () => 0,
    status(registry) {
      return policy.unreachable.has(registry)
        ? { state: 'unreachable', evidence: 'listed in config unreachable' }
        : { state: 'unknown', evidence: 'not listed in config unreachable' }
    },
  }
}

export type KeepCode =
  | 'unparseable'
  | 'already-mirrored'
  | 'no-proxy'
  | 'not-eligible'
  | 'no-mirror'
  | 'reachable'
  | 'inexpressible'
  | 'mirror-unreachable'
  | 'mirror-refused'
  | 'needs-credentials'

export type ImageDecision =
  | {
      readonly action: 'rewrite'
      readonly original: string
      readonly rewritten: string
      readonly registry: string
      readonly reason: string
    }
  | {
      readonly action: 'keep'
      readonly original: string
      readonly code: KeepCode
      readonly registry?: string
      readonly reason: string
    }

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`
}

function keep(original: string, code: KeepCode, reason: string, registry?: string): ImageDecision {
  return { action: 'keep', original, code, reason, registry }
}

function onMirror(ref: ImageReference, mirrors: readonly MirrorTarget[]): MirrorTarget | undefined {
  const name = `${ref.domain}/${ref.path}`
  return mirrors.find((m) => name.startsWith(`${m.repoPrefix}/`))
}

const IP_HOST = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:.]+\])$/i

// A mirror host's subdomains belong to the mirror's operator (docker.m.daocloud.io beside
// m.daocloud.io): like the mirror host itself, never a source.
function underMirrorHost(domain: string, mirrors: readonly MirrorTarget[]): string | undefined {
  const host = domain.replace(/:\d+$/, '').toLowerCase()
  for (const m of mirrors) {
    const mirrorHost = m.domain.replace(/:\d+$/, '').toLowerCase()
    if (!IP_HOST.test(mirrorHost) && host.endsWith(`.${mirrorHost}`)) return m.domain
  }
  return undefined
}

// Why a source registry cannot become a path component under a prefix mirror, if it cannot.
function prefixObstacle(domain: string): string | undefined {
  const host = domain.replace(/:\d+$/, '')
  if (host !== domain && !domain.startsWith('[')) return 'a registry with a port cannot be expressed in prefix mode'
  if (domain.startsWith('[') && /\]:\d+$/.test(domain)) return 'a registry with a port cannot be expressed in prefix mode'
  if (IP_HOST.test(host)) return 'an IP-address registry cannot be expressed in prefix mode'
  if (host.toLowerCase() === 'localhost') return 'localhost cannot be expressed in prefix mode'
  if (!host.includes('.')) return 'the mirror expects a dotted domain name as the source registry'
  return undefined
}

function buildCandidate(ref: ImageReference, registry: string, target: MirrorTarget, style: 'prefix' | 'host'): string {
  const path = style === 'prefix' ? `${target.repoPrefix}/${registry}/${ref.path}` : `${target.repoPrefix}/${ref.path}`
  return `${path}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`
}

// A lowercase DNS name (labels of letters, digits and inner dashes, joined by dots) is one valid
// repository path component: alphanumeric runs joined by `.` or dashes.
const PLAIN_SOURCE = /^[a-z0-9]+(?:(?:\.|-+)[a-z0-9]+)*$/

/**
 * True when `verify` is certain to accept the candidate, without parsing it again. The candidate
 * is `<repoPrefix>/<source>/<path>` (prefix style) or `<repoPrefix>/<path>` (host style) plus the
 * original tag and digest, where: the prefix was checked at start-up to parse, in canonical
 * lowercase form, with its first component as the registry host; `path`, tag and digest come from
 * parsing the original reference; a plain lowercase DNS name is one path component. The one
 * remaining limit of the grammar is the 255 characters of the path. Docker Hub as the mirror
 * host is left to the full check (the kubelet inserts `library/` into one-component paths).
 * Exported for its equivalence test.
 */
export function certainlyValidRewrite(ref: ImageReference, target: MirrorTarget, source: string | undefined): boolean {
  if (target.domain === 'docker.io') return false
  if (source !== undefined && !PLAIN_SOURCE.test(source)) return false
  const prefixPath = target.repoPrefix.length > target.domain.length ? target.repoPrefix.length - target.domain.length : 0
  const pathLength = prefixPath + (source === undefined ? 0 : source.length + 1) + ref.path.length
  return pathLength <= 255
}

// A rewrite must parse as the kubelet parses it, point at the mirror and keep tag and digest.
export function verify(candidate: string, ref: ImageReference, target: MirrorTarget): string | undefined {
  const parsed = tryParseNormalizedNamed(candidate)
  if (!parsed.ok) return `the mirrored reference would be invalid (${parsed.error.message})`
  const out = parsed.ref
  if (out.domain !== target.domain) return 'the mirrored reference would not point at the mirror'
  if (out.tag !== ref.tag || out.digest !== ref.digest) return 'the mirrored reference would change the tag or digest'
  if (formatReference(out) !== candidate) return 'the mirrored reference would not be canonical'
  return undefined
}

// Decisions are reused while the policy and the view's generation stay the same: the Pods of one
// ReplicaSet repeat the same images. Bounded: at most DECISION_CACHE_SIZE images per view, the
// least recently used forgotten first, and only references short enough to be common. An LRU
// cache with its own order (lru-cache): evicting the oldest key of a Map costs a walk over the
// holes earlier deletions left at its start, about 0.9 µs per new image at this size.
export const DECISION_CACHE_SIZE = 4096
const CACHEABLE_LENGTH = 512

interface DecisionCache {
  policy: Policy
  generation: number
  readonly decisions: LRUCache<string, ImageDecision>
  // The same for images that need credentials.
  readonly withCredentials: LRUCache<string, ImageDecision>
}

const caches = new WeakMap<ReachabilityView, DecisionCache>()

/**
 * The decision for one image: a pure function of the image, the policy, the options and what the
 * view answers. Views with a `generation` get a bounded memo of earlier answers for the same inputs.
 */
export function decideImage(image: string, policy: Policy, reachability: ReachabilityView, options?: DecideOptions): ImageDecision {
  const generation = reachability.generation?.()
  if (generation === undefined || image.length > CACHEABLE_LENGTH) return decideUncached(image, policy, reachability, options)
  let cache = caches.get(reachability)
  if (!cache) {
    cache = {
      policy,
      generation,
      decisions: new LRUCache({ max: DECISION_CACHE_SIZE }),
      withCredentials: new LRUCache({ max: DECISION_CACHE_SIZE }),
    }
    caches.set(reachability, cache)
  } else if (cache.policy !== policy || cache.generation !== generation) {
    cache.policy = policy
    cache.generation = generation
    cache.decisions.clear()
    cache.withCredentials.clear()
  }
  const decisions = options?.needsCredentials === true ? cache.withCredentials : cache.decisions
  let decision = decisions.get(image)
  if (decision === undefined) {
    decision = Object.freeze(decideUncached(image, policy, reachability, options))
    decisions.set(image, decision)
  }
  return decision
}

// Why one mirror was passed over: the keep code it would give alone, the reason as said when it
// is the only mirror, and as said among several (naming the mirror).
interface Skip {
  readonly code: KeepCode
  readonly reason: string
  readonly named: string
}

function decideUncached(image: string, policy: Policy, reachability: ReachabilityView, options?: DecideOptions): ImageDecision {
  const parsed = tryParseNormalizedNamed(image)
  // The grammar's messages repeat the input, which a Pod spec controls: keep them short.
  if (!parsed.ok) return keep(image, 'unparseable', `invalid image reference: ${clip(parsed.error.message, 200)}`)
  const ref = parsed.ref

  const mirror = onMirror(ref, policy.mirrors)
  if (mirror) return keep(image, 'already-mirrored', `already on mirror ${mirror.repoPrefix}`, ref.domain)

  const registry = registryKey(ref.domain)
  const excluded = policy.noProxy.match(ref.domain)
  if (excluded.excluded) return keep(image, 'no-proxy', `registry ${ref.domain} matches noProxy entry "${excluded.entry}"`, registry)
  const mirrorHost = underMirrorHost(ref.domain, policy.mirrors)
  if (mirrorHost) return keep(image, 'no-proxy', `registry ${ref.domain} is a subdomain of mirror ${mirrorHost}`, registry)

  if (!policy.anyRegistry && !policy.registries.has(registry)) {
    return keep(image, 'not-eligible', `registry ${registry} is not in the configured registries`, registry)
  }

  // Host-style mirrors of this registry first, then the prefix mirrors, each list in its order.
  const hostTargets = policy.hosts.get(registry)
  const hostCount = hostTargets?.length ?? 0
  const count = hostCount + policy.prefix.length
  if (count === 0) return keep(image, 'no-mirror', `no mirror is configured for registry ${registry}`, registry)

  let why: string
  const mode = policy.config.mode
  if (mode === 'always') {
    why = 'mode always'
  } else {
    const status = reachability.status(registry)
    const unknownChoice =
      mode === 'auto' && status.state === 'unknown' ? `; reachability.unknown is ${policy.config.reachability.unknown}` : ''
    const mirrored =
      status.state === 'unreachable' ||
      (mode === 'auto' && (status.state === 'slow' || (status.state === 'unknown' && policy.config.reachability.unknown === 'mirror')))
    if (!mirrored) {
      return keep(image, 'reachable', `registry ${registry} is ${status.state} (${status.evidence})${unknownChoice}`, registry)
    }
    why = `registry ${registry} is ${status.state} (${status.evidence})${unknownChoice}`
  }

  const needsCredentials = options?.needsCredentials === true
  let skipped: Skip[] | undefined
  // Mode always: a mirror known to be down is passed over for a later one; when every usable
  // mirror is down the first of them is still used (always means always).
  let downButUsable: { target: MirrorTarget; candidate: string } | undefined
  let prefixProblem: string | null | undefined
  for (let i = 0; i < count; i++) {
    const host = i < hostCount
    const target = host ? hostTargets![i]! : policy.prefix[i - hostCount]!
    const skip = (code: KeepCode, reason: string, named = `mirror ${target.repoPrefix}: ${reason}`) =>
      (skipped ??= []).push({ code, reason, named })

    if (needsCredentials && target.pullSecret === undefined) {
      // Without credentials the mirror would refuse the image.
      skip(
        'needs-credentials',
        `the Pod has imagePullSecrets and mirror ${target.domain} has no pull Secret of its own (pull.privateImages is keep)`,
        `mirror ${target.repoPrefix} has no pull secret and the image needs credentials`,
      )
      continue
    }
    // While the mirror itself is down, pulling directly is the better bet (mode always means always).
    let down: string | undefined
    if (mode !== 'always' || count > 1) {
      const mirrorStatus = reachability.status(registryKey(target.domain))
      if (mirrorStatus.state === 'unreachable') down = `mirror ${target.domain} is unreachable (${mirrorStatus.evidence})`
    }
    if (down !== undefined && mode !== 'always') {
      skip('mirror-unreachable', down, down)
      continue
    }
    let source = registry
    if (!host) {
      if (prefixProblem === undefined) prefixProblem = prefixObstacle(ref.domain) ?? null
      if (prefixProblem !== null) {
        skip('inexpressible', prefixProblem)
        continue
      }
      // DNS names are case-insensitive; the path component must be lowercase.
      source = registry.toLowerCase()
    }
    const candidate = buildCandidate(ref, source, target, host ? 'host' : 'prefix')
    // Parsed again only when a shorter check cannot vouch for it (cached with the decision in any case).
    const problem = certainlyValidRewrite(ref, target, host ? undefined : source) ? undefined : verify(candidate, ref, target)
    if (problem) {
      skip('inexpressible', problem)
      continue
    }
    if (reachability.notAllowed) {
      // The source repository as allowlists name it, e.g. docker.io/library/nginx.
      const notAllowed = reachability.notAllowed(target, `${registry}/${ref.path}`)
      if (notAllowed) {
        skip('mirror-refused', notAllowed, notAllowed)
        continue
      }
    }
    const repository = candidate.replace(/@.*$/, '').replace(/:[^/]*$/, '')
    const refused = reachability.mirrorRefusal?.(repository)
    if (refused) {
      const reason = `mirror refused ${repository} (${refused})`
      skip('mirror-refused', reason, reason)
      continue
    }
    if (down !== undefined) {
      downButUsable ??= { target, candidate }
      skip('mirror-unreachable', down, down)
      continue
    }
    const passedOver = skipped ? `mirror ${target.repoPrefix} chosen (${skipped.map((s) => s.named).join('; ')}); ` : ''
    return { action: 'rewrite', original: image, rewritten: candidate, registry, reason: `${passedOver}${why}` }
  }
  const all = skipped!.map((s) => s.named).join('; ')
  if (downButUsable) {
    const reason = `mirror ${downButUsable.target.repoPrefix} chosen though every usable mirror is unreachable (${all}); ${why}`
    return { action: 'rewrite', original: image, rewritten: downButUsable.candidate, registry, reason }
  }
  // No mirror can take it: the first mirror's obstacle gives the code, the reason names them all.
  const first = skipped![0]!
  return keep(image, first.code, count === 1 ? first.reason : `no mirror can serve it: ${all}`, registry)
}
