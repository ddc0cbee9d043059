// Rules that need the container or its Pod, not only the image string: the pull policy, mutable
// tags, private images, the mirror's pull Secret, and kube-fledged's pull-Job init image. Pure:
// plain objects in, a decision out; decideImage stays a function of the image alone.
import type { MirrorTarget, Policy } from './policy.js'
import { tryParseNormalizedNamed } from './reference.js'
import { decideImage, type ImageDecision, type ReachabilityView } from './rewrite.js'
import { isObj, type Obj } from './json.js'

export type PullPolicy = 'Always' | 'IfNotPresent' | 'Never'

// Keep codes of the rules here (decideImage has its own).
export type PodKeepCode = 'pull-policy-never' | 'mutable-tag' | 'mirror-credentials-missing' | 'kube-fledged-pull'

/** What a container's decision may say beyond decideImage's. */
export type ContainerDecision =
  | Extract<ImageDecision, { action: 'rewrite' }>
  | Extract<ImageDecision, { action: 'keep' }>
  | {
      readonly action: 'keep'
      readonly original: string
      readonly code: PodKeepCode
      readonly registry?: string
      readonly reason: string
    }

/**
 * The policy the API server gives a container without one, before any mutating webhook runs
 * (k8s.io/kubernetes/pkg/apis/core/v1/defaults.go SetDefaults_Container: the tag from
 * parsers.ParseImageName is "latest" for `:latest` and for a name with neither tag nor digest).
 */
export function effectivePullPolicy(image: string, written: unknown): PullPolicy {
  if (written === 'Always' || written === 'IfNotPresent' || written === 'Never') return written
  const parsed = tryParseNormalizedNamed(image)
  if (!parsed.ok) return 'IfNotPresent'
  const { tag, digest } = parsed.ref
  return tag === 'latest' || (tag === undefined && digest === undefined) ? 'Always' : 'IfNotPresent'
}

/** A tag that may move: `:latest`, or neither tag nor digest. A digest pins whatever tag is beside it. */
export function isMutableTag(image: string): boolean {
  const parsed = tryParseNormalizedNamed(image)
  if (!parsed.ok) return false
  const { tag, digest } = parsed.ref
  return digest === undefined && (tag === undefined || tag === 'latest')
}

/** The names in a Pod's imagePullSecrets (entries that are not `{name: string}` are passed over). */
export function pullSecretNames(spec: Obj): string[] {
  const list = spec.imagePullSecrets
  if (!Array.isArray(list)) return []
  const out: string[] = []
  for (const entry of list) if (isObj(entry) && typeof entry.name === 'string' && entry.name !== '') out.push(entry.name)
  return out
}

/**
 * The Pod's own pull Secrets, for its source registries: every name that is not a mirror's pull
 * Secret (those are what mirrorhook adds, and are seen again on reinvocation and UPDATE).
 */
export function sourcePullSecrets(spec: Obj, policy: Policy): string[] {
  const mirrorSecrets = new Set(policy.mirrors.map((m) => m.pullSecret).filter((s): s is string => s !== undefined))
  return pullSecretNames(spec).filter((name) => !mirrorSecrets.has(name))
}

// kube-fledged's image-pull Job Pods (pkg/images/helpers.go newImagePullJob): in the ImageCache's
// namespace, labelled imagecache=<name> (with kubefledged=kubefledged-image-manager, or app=imagecache
// before v0.8), an init container `busybox` that copies /bin/echo for the puller.
export const KUBE_FLEDGED_INIT_CONTAINER = 'busybox'
export const KUBE_FLEDGED_BUSYBOX_REPOSITORY = 'docker.io/senthilrch/busybox'

/** True for a kube-fledged image-pull Job Pod in the configured kube-fledged namespace. */
export function isKubeFledgedPullPod(metadata: Obj, namespace: string | undefined, policy: Policy): boolean {
  const ns = namespace || (typeof metadata.namespace === 'string' ? metadata.namespace : '')
  if (ns !== policy.config.kubeFledged.namespace) return false
  const labels = isObj(metadata.labels) ? metadata.labels : {}
  if (typeof labels.imagecache !== 'string') return false
  return labels.kubefledged === 'kubefledged-image-manager' || labels.app === 'imagecache' || labels.app === 'kubefledged'
}

/**
 * The image kube-fledged's init image is replaced by, when it is the busybox of senthilrch
 * (DaoCloud's allowlist has docker.io/library/busybox, not docker.io/senthilrch/*). The init
 * container only runs `cp /bin/echo /tmp/bin`, which any busybox does. The tag is kept unless
 * the configured image has its own.
 */
export function kubeFledgedBusyboxFor(image: string, policy: Policy): string | undefined {
  const replacement = policy.config.pull.kubeFledgedBusybox
  if (!replacement) return undefined
  const parsed = tryParseNormalizedNamed(image)
  if (!parsed.ok || `${parsed.ref.domain}/${parsed.ref.path}` !== KUBE_FLEDGED_BUSYBOX_REPOSITORY) return undefined
  const to = tryParseNormalizedNamed(replacement)
  if (!to.ok) return undefined
  if (to.ref.tag !== undefined || to.ref.digest !== undefined) return replacement
  return `${replacement}${parsed.ref.tag !== undefined ? `:${parsed.ref.tag}` : ''}${parsed.ref.digest !== undefined ? `@${parsed.ref.digest}` : ''}`
}

/** The mirror a rewritten reference points at (the longest matching prefix). */
export function targetOf(rewritten: string, policy: Policy): MirrorTarget | undefined {
  let best: MirrorTarget | undefined
  for (const m of policy.mirrors) {
    if (rewritten.startsWith(`${m.repoPrefix}/`) && (!best || m.repoPrefix.length > best.repoPrefix.length)) best = m
  }
  return best
}

/** Whether a mirror pull Secret is in a namespace, as far as mirrorhook knows (in memory). */
export interface PullSecretView {
  has(namespace: string, name: string): boolean
}

export interface ContainerContext {
  readonly field: 'initContainers' | 'containers' | 'ephemeralContainers'
  readonly container: Obj
  readonly image: string
  // Set once per Pod.
  readonly pod: PodContext
}

export interface PodContext {
  readonly namespace?: string
  // CREATE may add imagePullSecrets; UPDATE (and the ephemeralcontainers subresource) may not.
  readonly canAddPullSecrets: boolean
  // The Pod's current imagePullSecrets names, and whether the list can be extended at all.
  readonly pullSecrets: readonly string[]
  readonly pullSecretsListValid: boolean
  readonly sourcePullSecrets: readonly string[]
  readonly kubeFledgedPullPod: boolean
  // Undefined where no cluster is known (dry-run): the copies are assumed to be in place.
  readonly secrets?: PullSecretView
}

export function podContext(
  pod: Obj,
  spec: Obj,
  policy: Policy,
  options: { namespace?: string; canAddPullSecrets: boolean; secrets?: PullSecretView },
): PodContext {
  const metadata = isObj(pod.metadata) ? pod.metadata : {}
  const namespace = options.namespace || (typeof metadata.namespace === 'string' ? metadata.namespace : undefined)
  return {
    namespace,
    canAddPullSecrets: options.canAddPullSecrets,
    pullSecrets: pullSecretNames(spec),
    pullSecretsListValid: spec.imagePullSecrets === undefined || Array.isArray(spec.imagePullSecrets),
    sourcePullSecrets: sourcePullSecrets(spec, policy),
    kubeFledgedPullPod: isKubeFledgedPullPod(metadata, namespace, policy),
    secrets: options.secrets,
  }
}

/** The decision for one container, with the mirror pull Secret the Pod must carry for it. */
export interface ContainerOutcome {
  readonly decision: ContainerDecision
  readonly pullSecret?: string
}

function kept(original: string, code: PodKeepCode, reason: string, registry?: string): ContainerOutcome {
  return { decision: { action: 'keep', original, code, reason, registry } }
}

export function decideContainer(c: ContainerContext, policy: Policy, reachability: ReachabilityView): ContainerOutcome {
  const { image, pod } = c
  // The API server's default is never Never: the written value decides, with no parse.
  if (c.container.imagePullPolicy === 'Never') {
    return kept(image, 'pull-policy-never', 'imagePullPolicy is Never: the node must already have the image under this name')
  }

  // kube-fledged's init image: its allowlisted replacement goes through the mirror, never the original.
  const kubeFledgedInit = pod.kubeFledgedPullPod && c.field === 'initContainers' && c.container.name === KUBE_FLEDGED_INIT_CONTAINER
  if (pod.kubeFledgedPullPod && !kubeFledgedInit) {
    // The image kube-fledged caches is the one its ImageCache names: it must land on the node under that name.
    return kept(
      image,
      'kube-fledged-pull',
      "kube-fledged pulls the image its ImageCache names (mirrorhook's own ImageCaches name the mirror)",
    )
  }
  const substitute = kubeFledgedInit ? kubeFledgedBusyboxFor(image, policy) : undefined

  const subject = substitute ?? image
  // A public helper image needs no credentials, whatever secrets the Pod carries for its own images.
  const needsCredentials = substitute === undefined && policy.config.pull.privateImages === 'keep' && pod.sourcePullSecrets.length > 0
  const d = decideImage(subject, policy, reachability, { needsCredentials })
  if (d.action === 'keep') {
    if (substitute === undefined) return { decision: d }
    return { decision: { ...d, original: image, reason: `kube-fledged's init image would be ${substitute}, but: ${d.reason}` } }
  }

  if (policy.config.pull.mutableTags === 'keep' && isMutableTag(subject)) {
    return kept(
      image,
      'mutable-tag',
      `the tag may move and pull.mutableTags is keep (a mirror may serve its old manifest for up to its cache time)`,
      d.registry,
    )
  }

  const target = targetOf(d.rewritten, policy)
  const pullSecret = target?.pullSecret
  if (pullSecret !== undefined) {
    const present = pod.pullSecrets.includes(pullSecret)
    if (!present && !pod.canAddPullSecrets) {
      return kept(
        image,
        'mirror-credentials-missing',
        `mirror ${target!.domain} needs pull Secret ${pullSecret}, which only a new Pod can be given`,
        d.registry,
      )
    }
    if (!present && !pod.pullSecretsListValid) {
      return kept(
        image,
        'mirror-credentials-missing',
        `spec.imagePullSecrets is not a list: pull Secret ${pullSecret} cannot be added`,
        d.registry,
      )
    }
    if (pod.secrets && pod.namespace !== undefined && !pod.secrets.has(pod.namespace, pullSecret)) {
      return kept(
        image,
        'mirror-credentials-missing',
        `mirror ${target!.domain} needs pull Secret ${pullSecret}, which is not (yet) copied to namespace ${pod.namespace}`,
        d.registry,
      )
    }
  }
  const reason = substitute === undefined ? d.reason : `kube-fledged's init image ${image} replaced by ${substitute}; ${d.reason}`
  const decision = substitute === undefined ? d : { ...d, original: image, reason }
  return pullSecret === undefined
    ? { decision }
    : { decision: { ...decision, reason: `${decision.reason}; pull Secret ${pullSecret}` }, pullSecret }
}

/** The pull Secret names the configuration's mirrors use. */
export function mirrorPullSecretNames(mirrors: readonly { pullSecret?: string }[]): string[] {
  return [...new Set(mirrors.map((m) => m.pullSecret).filter((s): s is string => s !== undefined))].sort()
}
