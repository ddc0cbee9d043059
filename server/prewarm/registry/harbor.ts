// Harbor v2 resolver: `GET /api/v2.0/projects/{project}/repositories/{repository}/artifacts
// ?with_tag=true&sort=-push_time&page_size=&page=` (Harbor's swagger, api/v2.0/swagger.yaml:
// a `/` in the repository name is URL-encoded twice, `a/b` → `a%252Fb`; pages follow `Link`
// rel="next"; an artifact carries `push_time` and `tags[]` with `name` and `push_time`).
// Harbor 1.x's `/api/repositories/{name}/tags?detail=1` was removed in Harbor 2.0.
import { header, RegistryError, type RegistryClient, type Tally } from './client.js'
import { nextLink } from './headers.js'
import { isTag } from './names.js'
import { MAX_LIST_BYTES, statusError } from './oci.js'
import { pickByTime, pickSemver, type Pick, type TimedTag } from './order.js'
import { REGISTRY_ENTRY_DEFAULTS, type RegistryEntry } from './schema.js'

// Harbor caps page_size at 100.
export const HARBOR_PAGE_SIZE = 100

/** `project/a/b` → the artifacts path of repository `a/b` in project `project`; undefined without a project. */
export function harborArtifactsPath(repository: string, reference?: string): string | undefined {
  const slash = repository.indexOf('/')
  if (slash <= 0) return undefined
  const project = repository.slice(0, slash)
  const name = repository.slice(slash + 1)
  const base = `/api/v2.0/projects/${encodeURIComponent(project)}/repositories/${encodeURIComponent(encodeURIComponent(name))}/artifacts`
  return reference === undefined ? base : `${base}/${encodeURIComponent(reference)}`
}

interface HarborTag {
  name?: unknown
  push_time?: unknown
}
interface HarborArtifact {
  push_time?: unknown
  tags?: HarborTag[] | null
}

/** Tags with their push time (the tag's own, else its artifact's), pure. */
export function tagsOfArtifacts(artifacts: readonly HarborArtifact[]): TimedTag[] {
  const out: TimedTag[] = []
  for (const a of artifacts) {
    for (const t of a.tags ?? []) {
      if (typeof t.name !== 'string' || !isTag(t.name)) continue
      const own = typeof t.push_time === 'string' ? Date.parse(t.push_time) : NaN
      const art = typeof a.push_time === 'string' ? Date.parse(a.push_time) : NaN
      const time = !Number.isNaN(own) ? own : !Number.isNaN(art) ? art : undefined
      out.push({ tag: t.name, time, source: !Number.isNaN(own) ? 'tag push_time' : 'artifact push_time' })
    }
  }
  return out
}

export async function resolveHarbor(
  client: RegistryClient,
  entry: RegistryEntry,
  repository: string,
  current: string | undefined,
  opts: { pageSize: number; tally: Tally },
): Promise<{ pick: Pick; note: string }> {
  const { tally } = opts
  const base = harborArtifactsPath(repository)
  if (!base) return { pick: { evidence: '', reason: `Harbor repositories are <project>/<name>; "${repository}" has no project` }, note: '' }
  const cap = entry.maxTagsPerRepository ?? REGISTRY_ENTRY_DEFAULTS.maxTagsPerRepository
  const pageSize = Math.min(HARBOR_PAGE_SIZE, opts.pageSize)
  let next: string | undefined = `${base}?with_tag=true&sort=-push_time&page=1&page_size=${pageSize}`
  const items: TimedTag[] = []
  let pages = 0
  let more = false
  while (next !== undefined) {
    const res = await client.get(next, { accept: 'application/json', maxBytes: MAX_LIST_BYTES, tally })
    if (res.status === 404 && pages === 0)
      return { pick: { evidence: '', reason: `repository ${repository} not found on ${client.host}` }, note: '' }
    if (res.status !== 200) throw statusError(client, `artifacts of ${repository}`, res.status, res.body)
    pages++
    let page: unknown
    try {
      page = JSON.parse(res.body.toString('utf8'))
    } catch {
      throw new RegistryError(`${client.host}: artifacts of ${repository} are not JSON`)
    }
    if (!Array.isArray(page))
      throw new RegistryError(`${client.host}: artifacts of ${repository} are not a JSON array (is this Harbor v2?)`)
    items.push(...tagsOfArtifacts(page as HarborArtifact[]))
    next = nextLink(header(res.headers, 'link'))
    if (page.length === 0) next = undefined
    if (items.length >= cap && next !== undefined) {
      more = true
      break
    }
  }
  // The current tag may be older than every tag read: ask for its artifact.
  if (current !== undefined && entry.order === 'push-time' && !items.some((i) => i.tag === current)) {
    const res = await client.get(`${harborArtifactsPath(repository, current)!}?with_tag=true`, {
      accept: 'application/json',
      maxBytes: MAX_LIST_BYTES,
      tally,
    })
    if (res.status === 200) {
      try {
        items.push(...tagsOfArtifacts([JSON.parse(res.body.toString('utf8')) as HarborArtifact]).filter((i) => i.tag === current))
      } catch {
        throw new RegistryError(`${client.host}: artifact ${repository}:${current} is not JSON`)
      }
    } else if (res.status !== 404) {
      throw statusError(client, `artifact ${repository}:${current}`, res.status, res.body)
    }
  }
  const note = `${items.length} tags in ${pages} page${pages === 1 ? '' : 's'}${more ? ` (stopped at maxTagsPerRepository ${cap}, newest pushes first)` : ''}`
  if (entry.order === 'semver')
    return {
      pick: pickSemver(
        items.map((i) => i.tag),
        current,
        entry,
      ),
      note,
    }
  return { pick: pickByTime(items, current, { ...entry, what: 'push time' }), note }
}
