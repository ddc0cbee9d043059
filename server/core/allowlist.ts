// A mirror's list of the repositories it serves, in the format DaoCloud publishes for its
// public mirror (allows.txt in DaoCloud/public-image-mirror, read by its proxy crproxy through
// wzshiming/hostmatcher): one `registry/path` pattern per line, `*` for one path segment
// (within a segment: the rest of it), `**` at the end for one or more further segments.
// Blank lines are ignored; so are lines starting with `#` (not in DaoCloud's file, allowed here).
// Pure: text in, a compiled trie out; matching walks the trie once per segment.
import type { ReachabilityView } from './rewrite.js'

interface TrieNode {
  // Literal next segments.
  children?: Map<string, TrieNode>
  // `*`: exactly one segment, any name.
  star?: TrieNode
  // Segments with `*` inside (`foo*`): rare, so tested one by one.
  globs?: { test: RegExp; node: TrieNode }[]
  // A pattern ends here: the repository matches when no segment is left.
  end?: boolean
  // `**` ends a pattern here: one or more further segments match.
  deep?: boolean
}

export interface IgnoredLine {
  readonly line: number
  readonly text: string
  readonly reason: string
}

export class Allowlist {
  constructor(
    private readonly root: TrieNode,
    // Patterns compiled (lines that are neither blank, comments nor ignored).
    readonly patterns: number,
  ) {}

  /** True when the list names `repository` (`<registry>/<path>` without tag or digest, e.g. `docker.io/library/nginx`). */
  allows(repository: string): boolean {
    return matchFrom(this.root, repository, 0)
  }
}

function matchFrom(node: TrieNode, repository: string, start: number): boolean {
  if (start >= repository.length) return node.end === true
  if (node.deep) return true
  const slash = repository.indexOf('/', start)
  const stop = slash === -1 ? repository.length : slash
  const next = slash === -1 ? repository.length : slash + 1
  if (stop === start) return false
  const segment = repository.slice(start, stop)
  const child = node.children?.get(segment)
  if (child && matchFrom(child, repository, next)) return true
  if (node.star && matchFrom(node.star, repository, next)) return true
  if (node.globs) for (const g of node.globs) if (g.test.test(segment) && matchFrom(g.node, repository, next)) return true
  return false
}

const SEGMENT = /^[a-z0-9._*:[\]-]+$/

function globOf(segment: string): RegExp {
  return new RegExp(`^${segment.replace(/[.+?^${}()|[\]\\-]/g, '\\$&').replace(/\*/g, '[^/]*')}$`)
}

/** Compiles a list; lines that cannot be patterns are ignored and reported (an ignored line only narrows the list). */
export function parseAllowlist(text: string): { list: Allowlist; ignored: IgnoredLine[] } {
  const root: TrieNode = {}
  const ignored: IgnoredLine[] = []
  let patterns = 0
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim()
    if (raw === '' || raw.startsWith('#')) continue
    const segments = raw.toLowerCase().split('/')
    const problem =
      segments.length < 2
        ? 'not a registry/path pattern'
        : segments.some((s) => !SEGMENT.test(s))
          ? 'empty segment or a character a repository name cannot hold'
          : segments.slice(0, -1).includes('**')
            ? '** is only understood at the end of a pattern'
            : segments.some((s) => s.includes('**') && s !== '**')
              ? '** must be a whole segment'
              : undefined
    if (problem) {
      if (ignored.length < 100) ignored.push({ line: i + 1, text: raw.slice(0, 200), reason: problem })
      continue
    }
    let node = root
    for (const segment of segments) {
      if (segment === '**') {
        node.deep = true
        break
      }
      if (segment === '*') {
        node = node.star ??= {}
      } else if (segment.includes('*')) {
        node.globs ??= []
        let glob = node.globs.find((g) => g.test.source === globOf(segment).source)
        if (!glob) node.globs.push((glob = { test: globOf(segment), node: {} }))
        node = glob.node
      } else {
        node.children ??= new Map()
        let child = node.children.get(segment)
        if (!child) node.children.set(segment, (child = {}))
        node = child
      }
    }
    if (segments[segments.length - 1] !== '**') node.end = true
    patterns += 1
  }
  return { list: new Allowlist(root, patterns), ignored }
}

/** A compiled list and where it came from, as admission reads it. */
export interface LoadedAllowlist {
  readonly list: Allowlist
  // The file path or URL.
  readonly source: string
}

/** What admission reads of the mirrors' lists: in memory, replaced whole when a list changes. */
export interface AllowlistLookup {
  // By the mirror's repository prefix; undefined while the mirror has no list loaded.
  get(repoPrefix: string): LoadedAllowlist | undefined
  // Changes whenever `get` could answer differently.
  readonly version: number
}

/**
 * `base` plus the mirrors' allowlists: a mirror whose list does not name a repository is not
 * offered it. The generation changes with either, so decisions are remembered across neither.
 */
export function withAllowlists(base: ReachabilityView, lists: AllowlistLookup): ReachabilityView {
  let seenBase: number | undefined
  let seenVersion = -1
  let epoch = 0
  const view: ReachabilityView = {
    status: (registry) => base.status(registry),
    notAllowed(mirror, repository) {
      const loaded = lists.get(mirror.repoPrefix)
      if (!loaded || loaded.list.allows(repository)) return undefined
      return `${repository} is not on the allowlist of mirror ${mirror.repoPrefix} (${loaded.source}, ${loaded.list.patterns} patterns)`
    },
  }
  if (base.mirrorRefusal) view.mirrorRefusal = (repository) => base.mirrorRefusal!(repository)
  if (base.generation) {
    const generation = base.generation.bind(base)
    view.generation = () => {
      const g = generation()
      if (g !== seenBase || lists.version !== seenVersion) {
        seenBase = g
        seenVersion = lists.version
        epoch += 1
      }
      return epoch
    }
  }
  return view
}
