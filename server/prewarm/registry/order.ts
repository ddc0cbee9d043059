// Tag ordering, pure: which tag of a repository is the newest, never older than the current one.
//
// semver: `1.2.3`, `v1.2.3`, `1.2`, `1` and pre-releases (`1.2.3-rc.1`, compared as semver
// 2.0.0 §11: numeric identifiers numerically and below alphanumeric ones, which compare in ASCII
// order). Digit-only tags (`42`, `20240101`) are a family of their own, compared numerically with
// each other and never with dotted versions, so a build number never outranks `2.0.0`.
// Time orders: the newest time wins; a tag without a time is never chosen.

export interface Version {
  readonly tag: string
  readonly numbers: readonly [number, number, number]
  /** How many numeric components the tag spells (`1.25` → 2). */
  readonly components: number
  readonly pre: readonly (string | number)[]
  /** `number` for digit-only tags without a dot or `v`, `dotted` for the rest. */
  readonly family: 'dotted' | 'number'
}

const VERSION = /^(v|V)?(0|[0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/

export function parseVersion(tag: string): Version | undefined {
  const m = VERSION.exec(tag)
  if (!m) return undefined
  const nums = [m[2], m[3], m[4]].map((s) => (s === undefined ? 0 : Number(s)))
  if (nums.some((n) => !Number.isSafeInteger(n))) return undefined
  const pre = m[5] === undefined ? [] : m[5].split('.').map((id) => (/^[0-9]+$/.test(id) ? Number(id) : id))
  if (pre.some((id) => typeof id === 'number' && !Number.isSafeInteger(id))) return undefined
  const components = m[4] !== undefined ? 3 : m[3] !== undefined ? 2 : 1
  return {
    tag,
    numbers: [nums[0]!, nums[1]!, nums[2]!],
    components,
    pre,
    family: components === 1 && m[1] === undefined ? 'number' : 'dotted',
  }
}

function compareIdentifiers(a: string | number, b: string | number): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b
  if (typeof a === 'number') return -1
  if (typeof b === 'number') return 1
  return a < b ? -1 : a > b ? 1 : 0
}

/** Semver precedence: negative when a is older than b, 0 when equal (`1.2` equals `1.2.0`). */
export function compareVersions(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) {
    const d = a.numbers[i]! - b.numbers[i]!
    if (d !== 0) return d
  }
  if (a.pre.length === 0 || b.pre.length === 0) return b.pre.length - a.pre.length
  for (let i = 0; i < Math.min(a.pre.length, b.pre.length); i++) {
    const d = compareIdentifiers(a.pre[i]!, b.pre[i]!)
    if (d !== 0) return d
  }
  return a.pre.length - b.pre.length
}

export interface TagFilterSpec {
  readonly include?: readonly string[]
  readonly exclude: readonly string[]
}

/** A tag passes when it matches one of `include` (if any is given) and none of `exclude`. */
export function compileTagFilter(spec: TagFilterSpec): (tag: string) => boolean {
  const include = spec.include?.map((s) => new RegExp(s))
  const exclude = spec.exclude.map((s) => new RegExp(s))
  return (tag) => (include === undefined || include.some((r) => r.test(tag))) && !exclude.some((r) => r.test(tag))
}

export interface Pick {
  /** The newest acceptable tag; may be the current tag itself. */
  readonly tag?: string
  readonly evidence: string
  /** Why this tag, or why none. */
  readonly reason: string
}

export interface SemverOptions extends TagFilterSpec {
  readonly prerelease?: boolean
}

/** The highest version among `tags`, never below `current` (same family as `current`). */
export function pickSemver(tags: readonly string[], current: string | undefined, opts: SemverOptions): Pick {
  const cur = current === undefined ? undefined : parseVersion(current)
  if (current !== undefined && cur === undefined) {
    return { evidence: '', reason: `the current tag "${current}" is not a version, so no tag can be shown to be newer` }
  }
  if (cur && cur.pre.length > 0 && !opts.prerelease) {
    return {
      evidence: '',
      reason: `the current tag "${current}" is a pre-release or a variant; set prerelease: true (with an include regex for its variant) to follow it`,
    }
  }
  const pass = compileTagFilter(opts)
  const parsed: Version[] = []
  for (const tag of tags) {
    if (!pass(tag)) continue
    const v = parseVersion(tag)
    if (v && (opts.prerelease || v.pre.length === 0)) parsed.push(v)
  }
  const family = cur?.family ?? (parsed.some((v) => v.family === 'dotted') ? 'dotted' : 'number')
  const candidates = parsed.filter((v) => v.family === family && (cur === undefined || compareVersions(v, cur) >= 0))
  if (current !== undefined && cur && !candidates.some((v) => v.tag === current)) candidates.push(cur)
  let best: Version | undefined
  for (const v of candidates) {
    if (!best) {
      best = v
      continue
    }
    const d = compareVersions(v, best)
    if (d > 0 || (d === 0 && tieBreak(v, best, current) > 0)) best = v
  }
  if (!best) {
    return {
      evidence: '',
      reason: `none of ${tags.length} tags is a ${opts.prerelease ? '' : 'release '}version that passes include/exclude`,
    }
  }
  const evidence = `version ${best.numbers.join('.')}${best.pre.length ? `-${best.pre.join('.')}` : ''} (${candidates.length} of ${tags.length} tags compared)`
  if (best.tag === current) return { tag: best.tag, evidence, reason: 'the current tag is the newest version' }
  return { tag: best.tag, evidence, reason: current === undefined ? 'the highest version' : `the highest version, above ${current}` }
}

// Equal versions (`1.2`, `1.2.0`, `v1.2.0`): the current tag, then the spelling closest to it, then more components, then ASCII.
function tieBreak(a: Version, b: Version, current: string | undefined): number {
  if (a.tag === current) return 1
  if (b.tag === current) return -1
  const vA = /^[vV]/.test(a.tag) === /^[vV]/.test(current ?? '') ? 1 : 0
  const vB = /^[vV]/.test(b.tag) === /^[vV]/.test(current ?? '') ? 1 : 0
  if (vA !== vB) return vA - vB
  if (a.components !== b.components) return a.components - b.components
  return a.tag > b.tag ? 1 : a.tag < b.tag ? -1 : 0
}

export interface TimedTag {
  readonly tag: string
  /** Milliseconds since the epoch; undefined when the registry gave no usable time. */
  readonly time?: number
  /** What the time was read from, e.g. `config created` or `push_time`. */
  readonly source?: string
}

/**
 * The tag with the newest time, never older than the current tag's. Ties prefer the current tag,
 * then the higher version, then ASCII order. The current tag need not pass include/exclude.
 */
export function pickByTime(items: readonly TimedTag[], current: string | undefined, opts: TagFilterSpec & { readonly what: string }): Pick {
  const pass = compileTagFilter(opts)
  let curTime: number | undefined
  if (current !== undefined) {
    const cur = items.find((i) => i.tag === current)
    if (!cur) return { evidence: '', reason: `the current tag "${current}" was not found, so no tag can be shown to be newer` }
    if (cur.time === undefined) {
      return { evidence: '', reason: `the current tag "${current}" has no ${opts.what}, so no tag can be shown to be newer` }
    }
    curTime = cur.time
  }
  let best: TimedTag | undefined
  let untimed = 0
  for (const item of items) {
    if (item.tag !== current && !pass(item.tag)) continue
    if (item.time === undefined) {
      untimed++
      continue
    }
    if (curTime !== undefined && item.time < curTime) continue
    if (!best || item.time > best.time! || (item.time === best.time && timeTieBreak(item.tag, best.tag, current) > 0)) best = item
  }
  const note = untimed > 0 ? `; ${untimed} without ${opts.what}` : ''
  if (!best) return { evidence: '', reason: `none of ${items.length} tags has a ${opts.what} and passes include/exclude${note}` }
  const evidence = `${best.source ?? opts.what} ${new Date(best.time!).toISOString()}`
  if (best.tag === current) return { tag: best.tag, evidence, reason: `the current tag has the newest ${opts.what}${note}` }
  return { tag: best.tag, evidence, reason: `the newest ${opts.what}${current === undefined ? '' : `, not older than ${current}`}${note}` }
}

function timeTieBreak(a: string, b: string, current: string | undefined): number {
  if (a === current) return 1
  if (b === current) return -1
  const va = parseVersion(a)
  const vb = parseVersion(b)
  if (va && vb && va.family === vb.family) {
    const d = compareVersions(va, vb)
    if (d !== 0) return d
  }
  if (va && !vb) return 1
  if (vb && !va) return -1
  return a > b ? 1 : a < b ? -1 : 0
}

/**
 * Which tags to inspect when a time costs requests and only `cap` may be read: the highest
 * versions first, then the rest in reverse ASCII order (newer builds usually sort later).
 */
export function inspectionOrder(tags: readonly string[], cap: number): string[] {
  const sorted = [...tags].sort((a, b) => -timeTieBreak(a, b, undefined))
  return sorted.slice(0, Math.max(0, cap))
}
