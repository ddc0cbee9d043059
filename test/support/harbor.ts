// A thin Harbor v2 double: Harbor's artifacts API in front of the real test registry, because
// Harbor itself (a dozen services and a database) cannot run here.
//
// Its shape follows Harbor's API reference (goharbor/harbor api/v2.0/swagger.yaml):
//   GET /api/v2.0/projects/{project_name}/repositories/{repository_name}/artifacts
//       ?page=&page_size=&with_tag=&sort=   → 200 [Artifact], headers X-Total-Count and
//       Link (`<…?page=N…>; rel="prev"`, `rel="next"`); page_size default 10, at most 100
//   GET …/artifacts/{reference}              → 200 Artifact (reference: a tag or a digest)
//   repository_name: "If it contains slash, encode it twice over with URL encoding. e.g.
//   a/b -> a%2Fb -> a%252Fb" — the server decodes the path once before routing, so a name
//   encoded only once does not route (404 here too).
//   Artifact: {id, type, media_type, manifest_media_type, project_id, repository_id, digest,
//   size, push_time, pull_time, extra_attrs, annotations, tags: [Tag] | null};
//   Tag: {id, repository_id, artifact_id, name, push_time, pull_time, immutable}.
//   Errors: {"errors": [{"code", "message"}]}; security: basicAuth.
// The registry stores no push time: the double keeps one per tag, set by the test
// (`recordPush`) or the moment it first saw the tag. An artifact's push_time is its first push.
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { issueServing, type KeyPairPem } from '../../server/tls/certs.js'
import { httpRequest } from './controlplane.js'
import type { Registry } from './registry.js'

export interface HarborDouble {
  host: string
  url: string
  /** Request paths as received (raw, still encoded). */
  requests: { path: string; authorization?: string }[]
  /** Sets the push time of `<project>/<repository>:<tag>`. */
  recordPush(repository: string, tag: string, time: string): void
  stop(): Promise<void>
}

export interface HarborDoubleOptions {
  ca: KeyPairPem
  registry: Registry
  /** Basic credentials required (user → password); absent: anonymous access (a public project). */
  users?: Record<string, string>
  address?: string
}

const ACCEPT = 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json'

interface Artifact {
  id: number
  type: string
  media_type: string
  manifest_media_type: string
  project_id: number
  repository_id: number
  digest: string
  size: number
  push_time: string
  pull_time: string
  extra_attrs: Record<string, unknown>
  annotations: Record<string, string> | null
  tags:
    | { id: number; repository_id: number; artifact_id: number; name: string; push_time: string; pull_time: string; immutable: boolean }[]
    | null
}

export async function startHarborDouble(opts: HarborDoubleOptions): Promise<HarborDouble> {
  const address = opts.address ?? '127.0.0.1'
  const reg = opts.registry
  const pushes = new Map<string, string>()
  const requests: HarborDouble['requests'] = []
  const upstream = (repository: string) => ({ ...(reg.pushAuthorization ? { Authorization: reg.pushAuthorization(repository) } : {}) })

  async function artifacts(repository: string): Promise<Artifact[] | undefined> {
    const tags: string[] = []
    for (let next: string | undefined = `/v2/${repository}/tags/list?n=1000`; next;) {
      const r = await httpRequest(`${reg.url}${next}`, { ca: reg.caPem, headers: upstream(repository) })
      if (r.status === 404) return undefined
      if (r.status !== 200) throw new Error(`registry tags of ${repository}: HTTP ${r.status}`)
      const page = JSON.parse(r.body) as { tags: string[] | null }
      tags.push(...(page.tags ?? []))
      next =
        page.tags && page.tags.length === 1000
          ? `/v2/${repository}/tags/list?n=1000&last=${encodeURIComponent(page.tags[999]!)}`
          : undefined
    }
    const byDigest = new Map<string, Artifact>()
    let id = 0
    for (const tag of tags) {
      const head = await new Promise<{ digest: string; type: string; size: number }>((resolve, reject) => {
        const q = https.request(
          `${reg.url}/v2/${repository}/manifests/${tag}`,
          { method: 'HEAD', ca: reg.caPem, agent: false, headers: { ...upstream(repository), Accept: ACCEPT } },
          (res) => {
            res.resume()
            resolve({
              digest: String(res.headers['docker-content-digest']),
              type: String(res.headers['content-type']),
              size: Number(res.headers['content-length']),
            })
          },
        )
        q.on('error', reject)
        q.end()
      })
      const key = `${repository}:${tag}`
      if (!pushes.has(key)) pushes.set(key, new Date().toISOString())
      const pushTime = pushes.get(key)!
      let a = byDigest.get(head.digest)
      if (!a) {
        a = {
          id: ++id,
          type: 'IMAGE',
          media_type: 'application/vnd.oci.image.config.v1+json',
          manifest_media_type: head.type,
          project_id: 1,
          repository_id: 1,
          digest: head.digest,
          size: head.size,
          push_time: pushTime,
          pull_time: '0001-01-01T00:00:00.000Z',
          extra_attrs: {},
          annotations: null,
          tags: [],
        }
        byDigest.set(head.digest, a)
      }
      if (pushTime < a.push_time) a.push_time = pushTime
      a.tags!.push({
        id: 1000 + a.tags!.length,
        repository_id: 1,
        artifact_id: a.id,
        name: tag,
        push_time: pushTime,
        pull_time: '0001-01-01T00:00:00.000Z',
        immutable: false,
      })
    }
    return [...byDigest.values()]
  }

  const serving = await issueServing(opts.ca, { dnsNames: ['localhost'], ipAddresses: [address], validDays: 7 })
  const server = https.createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
    const raw = req.url ?? '/'
    requests.push({ path: raw, authorization: req.headers.authorization })
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'Content-Type': 'application/json', ...headers })
      res.end(JSON.stringify(body))
    }
    const error = (status: number, code: string, message: string) => reply(status, { errors: [{ code, message }] })
    void (async () => {
      if (opts.users) {
        const [scheme, value] = (req.headers.authorization ?? '').split(' ')
        const [user, ...pw] = Buffer.from(value ?? '', 'base64')
          .toString('utf8')
          .split(':')
        if (scheme?.toLowerCase() !== 'basic' || !user || opts.users[user] !== pw.join(':'))
          return error(401, 'UNAUTHORIZED', 'unauthorized')
      }
      const url = new URL(raw, `https://${address}`)
      // The server decodes the path once, then routes on `/`.
      const parts = decodeURIComponent(url.pathname).split('/')
      // ['', 'api', 'v2.0', 'projects', p, 'repositories', r, 'artifacts', ref?]
      if (
        parts.length < 8 ||
        parts.length > 9 ||
        parts[1] !== 'api' ||
        parts[2] !== 'v2.0' ||
        parts[3] !== 'projects' ||
        parts[5] !== 'repositories' ||
        parts[7] !== 'artifacts'
      ) {
        return error(404, 'NOT_FOUND', `no route for ${url.pathname}`)
      }
      const repository = `${parts[4]}/${decodeURIComponent(parts[6]!)}`
      const list = await artifacts(repository)
      if (!list) return error(404, 'NOT_FOUND', `repository ${repository} not found`)
      const withTag = url.searchParams.get('with_tag') !== 'false'
      const shape = (a: Artifact): Artifact => ({ ...a, tags: withTag && a.tags!.length > 0 ? a.tags : null })
      if (parts.length === 9) {
        const ref = parts[8]!
        const found = list.find((a) => a.digest === ref || a.tags!.some((t) => t.name === ref))
        return found ? reply(200, shape(found)) : error(404, 'NOT_FOUND', `artifact ${repository}:${ref} not found`)
      }
      const sort = url.searchParams.get('sort')
      if (sort === '-push_time') list.sort((a, b) => (a.push_time < b.push_time ? 1 : a.push_time > b.push_time ? -1 : 0))
      else if (sort === 'push_time') list.sort((a, b) => (a.push_time < b.push_time ? -1 : a.push_time > b.push_time ? 1 : 0))
      const page = Math.max(1, Number(url.searchParams.get('page') ?? 1) || 1)
      const size = Number(url.searchParams.get('page_size') ?? 10) || 10
      if (size > 100) return error(400, 'BAD_REQUEST', 'page_size must be <= 100')
      const items = list.slice((page - 1) * size, page * size)
      const link = (p: number, rel: string) => {
        const u = new URL(url)
        u.searchParams.set('page', String(p))
        u.searchParams.set('page_size', String(size))
        // The URL keeps the path as sent (still encoded twice).
        return `<${u.pathname}${u.search}>; rel="${rel}"`
      }
      const links = [...(page > 1 ? [link(page - 1, 'prev')] : []), ...(page * size < list.length ? [link(page + 1, 'next')] : [])]
      reply(200, items.map(shape), { 'X-Total-Count': String(list.length), ...(links.length ? { Link: links.join(' , ') } : {}) })
    })().catch((e: unknown) => error(500, 'INTERNAL_SERVER_ERROR', String(e)))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, address, () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  return {
    host: `${address}:${port}`,
    url: `https://${address}:${port}`,
    requests,
    recordPush: (repository, tag, time) => pushes.set(`${repository}:${tag}`, new Date(time).toISOString()),
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
