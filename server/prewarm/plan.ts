// What one pre-warm run pulls: from the workloads' images and the newest tags the configured
// registries answered, the references the nodes will pull, each through the same decision as
// admission. Pure: the resolutions come in as data (the run asks the registries first).
import { type Policy, registryKey } from '../core/policy.js'
import { decideContainer, podContext, type PullSecretView } from '../core/pullrules.js'
import type { ReachabilityView } from '../core/rewrite.js'
import { tryParseNormalizedNamed } from '../core/reference.js'
import type { WorkloadImage } from './collect.js'
import type { RegistryEntry, Resolution } from './registry-api.js'

/** A question for one configured registry: the newest tag of a repository, not older than `currentTag`. */
export interface TagQuestion {
  // The key of `prewarm.registries` it goes to: the only hosts ever asked.
  readonly registry: string
  readonly repository: string
  readonly currentTag: string | undefined
}

export type Answer = { readonly resolution: Resolution } | { readonly error: string }

export function questionKey(q: TagQuestion): string {
  return `${q.registry}/${q.repository}:${q.currentTag ?? ''}`
}

/** The configured registries by the name admission uses for a reference's host (docker.io aliases folded, lowercase). */
export function registryTable(registries: Readonly<Record<string, RegistryEntry>>): Map<string, string> {
  const table = new Map<string, string>()
  for (const host of Object.keys(registries)) table.set(registryKey(host), host)
  return table
}

interface Parsed {
  readonly domain: string
  readonly path: string
  readonly tag?: string
  readonly digest?: string
  // The configured registry this image's host is, if any.
  readonly registry?: string
}

function parse(image: string, table: ReadonlyMap<string, string>): Parsed | undefined {
  const parsed = tryParseNormalizedNamed(image)
  if (!parsed.ok) return undefined
  const { domain, path, tag, digest } = parsed.ref
  return { domain, path, tag, digest, registry: table.get(registryKey(domain)) }
}

/** What to ask the registries: one question per configured repository and current tag, in first-seen order. */
export function questionsFor(images: readonly WorkloadImage[], table: ReadonlyMap<string, string>): TagQuestion[] {
  const out = new Map<string, TagQuestion>()
  for (const w of images) {
    const p = parse(w.image, table)
    // A digest pins the image: there is no "newer" to find for it.
    if (!p?.registry || p.digest !== undefined) continue
    const q = { registry: p.registry, repository: p.path, currentTag: p.tag }
    const key = questionKey(q)
    if (!out.has(key)) out.set(key, q)
  }
  return [...out.values()]
}

export type Role = 'current' | 'newest'

export interface PlannedPull {
  readonly role: Role
  // The reference as the workload has it (current) or with the chosen tag (newest).
  readonly reference: string
  // What the nodes will pull: the mirror reference when admission would rewrite it, the reference otherwise.
  readonly pull: string
  // Why that reference: admission's reason.
  readonly decision: string
}

export interface PlanRow {
  readonly workload: WorkloadImage
  // Why no newer tag is pulled, or the chosen one and its evidence.
  readonly tag: string
  readonly pulls: readonly PlannedPull[]
  // Set when the image cannot be warmed at all.
  readonly skipped?: string
}

export interface PlanOptions {
  readonly current: boolean
  readonly policy: Policy
  readonly reachability: ReachabilityView
  readonly table: ReadonlyMap<string, string>
  readonly answers: ReadonlyMap<string, Answer>
  // The mirror pull Secrets' copies, as admission sees them.
  readonly secrets?: PullSecretView
}

/** Admission's decision for this container of a new Pod of the workload, with `reference` as its image. */
function pulled(role: Role, reference: string, w: WorkloadImage, o: PlanOptions): PlannedPull | undefined {
  const spec = w.pullSecrets === undefined ? {} : { imagePullSecrets: w.pullSecrets }
  const pod = podContext({ metadata: { namespace: w.namespace } }, spec, o.policy, {
    namespace: w.namespace,
    canAddPullSecrets: true,
    secrets: o.secrets,
  })
  const container = { name: w.container, image: reference, ...(w.pullPolicy === undefined ? {} : { imagePullPolicy: w.pullPolicy }) }
  const d = decideContainer(
    { field: w.init ? 'initContainers' : 'containers', container, image: reference, pod },
    o.policy,
    o.reachability,
  ).decision
  if (d.action === 'keep' && d.code === 'unparseable') return undefined
  return d.action === 'rewrite'
    ? { role, reference, pull: d.rewritten, decision: `mirrored: ${d.reason}` }
    : { role, reference, pull: d.original, decision: `as is: ${d.reason}` }
}

function tagNote(p: Parsed, answer: Answer | undefined): { note: string; newest?: string } {
  if (!p.registry) return { note: `registry ${p.domain} is not in prewarm.registries: not asked` }
  if (p.digest !== undefined) return { note: 'pinned by digest: no newer tag looked for' }
  if (!answer) return { note: 'not asked' }
  if ('error' in answer) return { note: `registry ${p.registry} not answering: ${answer.error}` }
  const { newest, reason } = answer.resolution
  if (!newest) return { note: `no newer tag: ${reason}` }
  if (newest.tag === (p.tag ?? 'latest')) return { note: `${newest.tag} is the newest (${newest.order}: ${newest.evidence})` }
  return { note: `${newest.tag} (${newest.order}: ${newest.evidence})`, newest: newest.tag }
}

/** One row per workload container: the tag chosen and why, and what the nodes will pull. */
export function planRows(images: readonly WorkloadImage[], o: PlanOptions): PlanRow[] {
  return images.map((workload) => {
    const p = parse(workload.image, o.table)
    if (!p) return { workload, tag: '-', pulls: [], skipped: 'not a valid image reference' }
    const q = p.registry && p.digest === undefined ? { registry: p.registry, repository: p.path, currentTag: p.tag } : undefined
    const { note, newest } = tagNote(p, q ? o.answers.get(questionKey(q)) : undefined)
    const pulls: PlannedPull[] = []
    if (o.current) {
      const current = pulled('current', workload.image, workload, o)
      if (current) pulls.push(current)
    }
    if (newest !== undefined) {
      const next = pulled('newest', `${p.domain}/${p.path}:${newest}`, workload, o)
      if (next) pulls.push(next)
    }
    return { workload, tag: note, pulls }
  })
}

export interface PrewarmEntry {
  image: string
  original?: string
}

/** The distinct references to pre-pull, with the reference each stands for. */
export function entriesOf(rows: readonly PlanRow[]): PrewarmEntry[] {
  const out = new Map<string, PrewarmEntry>()
  for (const row of rows)
    for (const p of row.pulls)
      if (!out.has(p.pull)) out.set(p.pull, p.pull === p.reference ? { image: p.pull } : { image: p.pull, original: p.reference })
  return [...out.values()]
}
