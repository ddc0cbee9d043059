// OCI distribution resolver: tags from `GET /v2/<name>/tags/list?n=` following `Link`, ordered
// by semver or by build time (manifest → platform manifest → config blob, cached by digest).
import { createHash } from 'node:crypto'
import { buildTime, choosePlatform, MANIFEST_ACCEPT, readManifest, type BuildTime } from './buildtime.js'
import { header, RegistryError, type RegistryClient, type Tally } from './client.js'
import { nextLink } from './headers.js'
import { isTag } from './names.js'
import { compileTagFilter, inspectionOrder, pickByTime, pickSemver, type Pick, type TimedTag } from './order.js'
import { REGISTRY_ENTRY_DEFAULTS, type RegistryEntry } from './schema.js'

export const MAX_LIST_BYTES = 4 * 1024 * 1024
// distribution refuses manifests over 4 MiB; configs of real images stay far below 8 MiB.
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024
/** Tags listed per repository at most (the listing stops there, and says so). */
export const MAX_TAGS_LISTED = 10_000
const DIGEST_CACHE_MAX = 50_000

export interface TagListing {
  readonly tags: string[]
  readonly pages: number
  readonly truncated: boolean
  /** Tags the registry sent that are not valid tags (left out). */
  readonly invalid: number
}

export async function listTags(
  client: RegistryClient,
  repository: string,
  pageSize: number,
  tally: Tally,
): Promise<TagListing | undefined> {
  const scope = `repository:${repository}:pull`
  let next: string | undefined = `/v2/${repository}/tags/list?n=${pageSize}`
  const tags: string[] = []
  let pages = 0
  let invalid = 0
  while (next !== undefined) {
    const res = await client.get(next, { accept: 'application/json', maxBytes: MAX_LIST_BYTES, scope, tally })
    if (res.status === 404 && pages === 0) return undefined
    if (res.status !== 200) throw statusError(client, `tags of ${repository}`, res.status, res.body)
    pages++
    let doc: { tags?: unknown }
    try {
      doc = JSON.parse(res.body.toString('utf8'))
    } catch {
      throw new RegistryError(`${client.host}: tag list of ${repository} is not JSON`)
    }
    const page = Array.isArray(doc.tags) ? doc.tags : []
    for (const t of page) {
      if (typeof t === 'string' && isTag(t)) tags.push(t)
      else invalid++
    }
    if (tags.length >= MAX_TAGS_LISTED) return { tags: tags.slice(0, MAX_TAGS_LISTED), pages, truncated: true, invalid }
    next = nextLink(header(res.headers, 'link'))
    // An empty page with a next link would loop forever on a broken registry.
    if (page.length === 0) break
  }
  return { tags, pages, truncated: false, invalid }
}

export function statusError(client: RegistryClient, what: string, status: number, body: Buffer): RegistryError {
  // distribution's error body: {"errors":[{"code":"DENIED","message":"..."}]}
  let detail = ''
  try {
    const errors = (JSON.parse(body.toString('utf8')) as { errors?: { code?: unknown; message?: unknown }[] }).errors
    const first = errors?.[0]
    if (first) detail = `: ${String(first.code ?? '')} ${String(first.message ?? '')}`.slice(0, 300)
  } catch {
    detail = ''
  }
  const hint = status === 401 || status === 403 ? ' (credentials missing or refused)' : ''
  return new RegistryError(`${client.host}: ${what}: HTTP ${status}${hint}${detail}`, status)
}

/** Build times by manifest digest (what a digest names never changes), bounded. */
export class DigestCache {
  private readonly map = new Map<string, BuildTime>()
  constructor(private readonly max = DIGEST_CACHE_MAX) {}
  get(digest: string): BuildTime | undefined {
    return this.map.get(digest)
  }
  set(digest: string, value: BuildTime): void {
    if (this.map.size >= this.max) this.map.delete(this.map.keys().next().value as string)
    this.map.set(digest, value)
  }
  get size(): number {
    return this.map.size
  }
}

/** The build time of `<repository>:<tag>` for `platform`; undefined when the tag does not exist. */
export async function tagBuildTime(
  client: RegistryClient,
  repository: string,
  tag: string,
  platform: string,
  cache: DigestCache,
  tally: Tally,
): Promise<BuildTime | undefined> {
  const scope = `repository:${repository}:pull`
  const res = await client.get(`/v2/${repository}/manifests/${tag}`, {
    accept: MANIFEST_ACCEPT,
    maxBytes: MAX_MANIFEST_BYTES,
    scope,
    tally,
  })
  if (res.status === 404) return undefined
  if (res.status !== 200) throw statusError(client, `manifest ${repository}:${tag}`, res.status, res.body)
  const digest = header(res.headers, 'docker-content-digest') ?? `sha256:${createHash('sha256').update(res.body).digest('hex')}`
  const key = `${digest} ${platform}`
  const cached = cache.get(key)
  if (cached) return cached
  let facts = readManifest(res.body.toString('utf8'), header(res.headers, 'content-type'))
  const annotations: Record<string, string>[] = []
  if (facts.kind === 'index') {
    annotations.push(facts.annotations)
    const chosen = choosePlatform(facts.manifests, platform)
    if (!chosen) {
      const found: BuildTime = { source: `index has no ${platform} image` }
      cache.set(key, found)
      return found
    }
    const child = await client.get(`/v2/${repository}/manifests/${chosen.digest}`, {
      accept: MANIFEST_ACCEPT,
      maxBytes: MAX_MANIFEST_BYTES,
      scope,
      tally,
    })
    if (child.status !== 200) throw statusError(client, `manifest ${repository}@${chosen.digest}`, child.status, child.body)
    facts = readManifest(child.body.toString('utf8'), header(child.headers, 'content-type'))
  }
  if (facts.kind !== 'image') {
    const found: BuildTime = { source: facts.kind === 'unknown' ? facts.why : 'an index inside an index' }
    cache.set(key, found)
    return found
  }
  annotations.unshift(facts.annotations)
  const blob = await client.get(`/v2/${repository}/blobs/${facts.configDigest}`, { maxBytes: MAX_CONFIG_BYTES, scope, tally })
  if (blob.status !== 200) throw statusError(client, `config ${repository}@${facts.configDigest}`, blob.status, blob.body)
  const found = buildTime(blob.body.toString('utf8'), annotations)
  cache.set(key, found)
  return found
}

export interface OciChoice {
  readonly pick: Pick
  readonly note: string
}

/** The newest tag of `repository` by the entry's order, with a note on what was read. */
export async function resolveOci(
  client: RegistryClient,
  entry: RegistryEntry,
  repository: string,
  current: string | undefined,
  opts: { pageSize: number; cache: DigestCache; tally: Tally },
): Promise<OciChoice> {
  const listing = await listTags(client, repository, opts.pageSize, opts.tally)
  if (!listing) return { pick: { evidence: '', reason: `repository ${repository} not found on ${client.host}` }, note: '' }
  const listed = `${listing.tags.length} tags in ${listing.pages} page${listing.pages === 1 ? '' : 's'}${listing.truncated ? ` (listing stopped at ${MAX_TAGS_LISTED})` : ''}`
  if (entry.order === 'semver') {
    return { pick: pickSemver(listing.tags, current, entry), note: listed }
  }
  // build-time: read up to the cap of the tags that pass the filter, plus the current one.
  const cap = entry.maxTagsPerRepository ?? REGISTRY_ENTRY_DEFAULTS.maxTagsPerRepository
  const candidates = listing.tags.filter((t) => t !== current)
  const filtered = candidates.filter(compileTagFilter(entry))
  const chosen = inspectionOrder(filtered, cap)
  if (current !== undefined) chosen.push(current)
  const platform = entry.platform ?? REGISTRY_ENTRY_DEFAULTS.platform
  const items: TimedTag[] = []
  for (const tag of chosen) {
    const bt = await tagBuildTime(client, repository, tag, platform, opts.cache, opts.tally)
    if (bt) items.push({ tag, time: bt.time, source: bt.source })
  }
  const capped = filtered.length > cap ? `; ${cap} of ${filtered.length} tags read (maxTagsPerRepository)` : ''
  return { pick: pickByTime(items, current, { ...entry, what: 'build time' }), note: `${listed}${capped}` }
}
