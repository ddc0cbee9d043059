// Tag resolution against the real distribution registry (TLS on loopback): tag listing across
// `Link` pages, semver and build-time order (a multi-arch index, a 1970 reproducible build),
// token auth through a token issuer, Basic, 429 + Retry-After, a redirect to another host, and
// Harbor's artifacts API through a double in front of the registry.
import t from 'tap'
import { createCa } from '../../server/tls/certs.js'
import { createTagResolver, registryEntrySchema, type TagResolverDeps } from '../../server/prewarm/registry/index.js'
import { checkBinaries } from '../support/controlplane.js'
import { startHarborDouble } from '../support/harbor.js'
import { startRegistryProxy } from '../support/registry-proxy.js'
import { pushImage, pushIndex, startRegistry, tagManifest } from '../support/registry.js'
import { isCI } from '../support/tap-cluster.js'
import { startTokenIssuer } from '../support/token-issuer.js'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const b64 = (s: string) => Buffer.from(s).toString('base64')
const dockerConfig = (host: string, entry: Record<string, string>) => JSON.stringify({ auths: { [`https://${host}/v1/`]: entry } })
const entryOf = (e: Record<string, unknown>) => registryEntrySchema.parse(e)
// The error a call ends with (undefined when it succeeds), compared whole: t.rejects matches a message as a substring.
const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: Error) => ({ name: e.name, message: e.message }),
  )

const bins = checkBinaries(undefined, ['registry'])
if (!bins.ok) {
  if (isCI()) t.fail(`the registry binary is missing, and with CI=true that is a failure: ${bins.message}`)
  else t.plan(0, `skipped: ${bins.message}`)
} else {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mirrorhook-prewarm-registry-'))
  const ca = await createCa('mirrorhook-e2e-prewarm-ca', 7)
  // An open registry, and one behind token auth (anonymous requests get no access).
  const open = await startRegistry({ ca, dir: path.join(dir, 'open') })
  const issuer = await startTokenIssuer({ ca, dir, users: { robot: 'pw:with:colons' }, identityTokens: { 'refresh-1': 'robot' } })
  const locked = await startRegistry({
    ca,
    dir: path.join(dir, 'locked'),
    auth: { token: issuer.registryConfig },
    pushAuthorization: issuer.pushAuthorization,
  })
  t.teardown(async () => {
    await Promise.all([open.stop(), locked.stop(), issuer.stop()])
    rmSync(dir, { recursive: true, force: true })
  })
  const resolvers: { close(): void }[] = []
  t.teardown(() => resolvers.forEach((r) => r.close()))
  const resolver = (host: string, e: Record<string, unknown>, deps: TagResolverDeps = {}) => {
    const r = createTagResolver(host, entryOf(e), { caPem: ca.certPem, ...deps })
    resolvers.push(r)
    return r
  }

  t.test('semver order across pages of tags', async (t) => {
    const first = await pushImage(open, 'shop/api', '1.0.0')
    // 1.0.0 … 1.5.3, 1.10.0, a pre-release, `latest` and non-versions: 29 tags, 4 a page.
    const versions = Array.from({ length: 24 }, (_, i) => `1.${Math.floor(i / 4)}.${i % 4}`).filter((v) => v !== '1.0.0')
    await tagManifest(open, 'shop/api', first, [...versions, '1.10.0', '2.0.0-rc.1', 'latest', 'main', 'sha-0123abc'])
    const r = resolver(open.host, { api: 'oci', order: 'semver' }, { pageSize: 4 })
    const got = await r.newest('shop/api', '1.2.3')
    t.same(got, {
      newest: { tag: '1.10.0', order: 'semver', evidence: 'version 1.10.0 (14 of 29 tags compared)' },
      reason: 'the highest version, above 1.2.3 (29 tags in 8 pages)',
      requests: 8,
    })
    t.same(await r.newest('shop/api', 'main'), {
      reason: 'the current tag "main" is not a version, so no tag can be shown to be newer (29 tags in 8 pages)',
      requests: 8,
    })
    t.same(await resolver(open.host, { api: 'oci', order: 'semver', prerelease: true }, { pageSize: 4 }).newest('shop/api', '1.2.3'), {
      newest: { tag: '2.0.0-rc.1', order: 'semver', evidence: 'version 2.0.0-rc.1 (15 of 29 tags compared)' },
      reason: 'the highest version, above 1.2.3 (29 tags in 8 pages)',
      requests: 8,
    })
    t.same(await r.newest('shop/nothing', '1.0.0'), { reason: `repository shop/nothing not found on ${open.host}`, requests: 1 })
    t.same(await r.newest('Shop/../x', '1.0.0'), { reason: '"Shop/../x" is not a repository name', requests: 0 })
  })

  t.test('build-time order from the image config, an index and a 1970 build', async (t) => {
    const repo = 'shop/web'
    await pushImage(open, repo, '1.0.0', undefined, { created: '2026-01-01T00:00:00Z' })
    await pushImage(open, repo, '1.1.0', undefined, { created: '2026-02-01T00:00:00Z' })
    await pushIndex(open, repo, '1.2.0', [
      { platform: 'linux/amd64', created: '2026-03-01T00:00:00Z' },
      { platform: 'linux/arm64/v8', created: '2026-06-01T00:00:00Z' },
    ])
    // A reproducible build: created is 1970; one of them carries the annotation.
    await pushImage(open, repo, 'repro', undefined, { created: '1970-01-01T00:00:00Z' })
    await pushImage(open, repo, 'repro-annotated', undefined, {
      created: '1970-01-01T00:00:00Z',
      annotations: { 'org.opencontainers.image.created': '2026-02-15T00:00:00Z' },
    })
    // `latest` is newer than every version and is excluded by default.
    await pushImage(open, repo, 'latest', undefined, { created: '2026-12-01T00:00:00Z' })

    const amd64 = resolver(open.host, { api: 'oci', order: 'build-time' })
    t.same(await amd64.newest(repo, '1.0.0'), {
      newest: { tag: '1.2.0', order: 'build-time', evidence: 'config created 2026-03-01T00:00:00.000Z' },
      reason: 'the newest build time, not older than 1.0.0; 1 without build time (6 tags in 1 page)',
      // list + (manifest + config) × 4 single images + (index + manifest + config)
      requests: 12,
    })
    t.same(
      await amd64.newest(repo, '1.0.0'),
      {
        newest: { tag: '1.2.0', order: 'build-time', evidence: 'config created 2026-03-01T00:00:00.000Z' },
        reason: 'the newest build time, not older than 1.0.0; 1 without build time (6 tags in 1 page)',
        requests: 6,
      },
      'build times are cached by digest: one manifest read per tag',
    )
    t.same(await amd64.newest(repo, 'repro'), {
      reason: 'the current tag "repro" has no build time, so no tag can be shown to be newer (6 tags in 1 page)',
      requests: 6,
    })
    const arm = resolver(open.host, { api: 'oci', order: 'build-time', platform: 'linux/arm64' })
    t.same((await arm.newest(repo, '1.1.0')).newest, {
      tag: '1.2.0',
      order: 'build-time',
      evidence: 'config created 2026-06-01T00:00:00.000Z',
    })
    const withLatest = resolver(open.host, { api: 'oci', order: 'build-time', exclude: [] })
    t.same((await withLatest.newest(repo, undefined)).newest, {
      tag: 'latest',
      order: 'build-time',
      evidence: 'config created 2026-12-01T00:00:00.000Z',
    })
    const annotated = resolver(open.host, { api: 'oci', order: 'build-time', include: ['^1\\.[01]\\.', '^repro'] })
    t.same((await annotated.newest(repo, '1.0.0')).newest, {
      tag: 'repro-annotated',
      order: 'build-time',
      evidence: 'annotation org.opencontainers.image.created 2026-02-15T00:00:00.000Z',
    })
    const capped = resolver(open.host, { api: 'oci', order: 'build-time', maxTagsPerRepository: 1 })
    t.same(await capped.newest(repo, '1.0.0'), {
      newest: { tag: '1.2.0', order: 'build-time', evidence: 'config created 2026-03-01T00:00:00.000Z' },
      reason: 'the newest build time, not older than 1.0.0 (6 tags in 1 page; 1 of 4 tags read (maxTagsPerRepository))',
      requests: 6,
    })
  })

  t.test('token auth: 401 → token from the realm (Basic to it) → 200, cached per scope', async (t) => {
    await pushImage(locked, 'team/app', '1.0.0')
    await pushImage(locked, 'team/app', '1.1.0')
    await pushImage(locked, 'team/other', '2.0.0')
    const anonymous = resolver(locked.host, { api: 'oci', order: 'semver' })
    t.same(await failure(anonymous.newest('team/app', '1.0.0')), {
      name: 'RegistryError',
      message: `${locked.host}: tags of team/app: HTTP 401 (credentials missing or refused): UNAUTHORIZED authentication required`,
    })

    issuer.requests.length = 0
    const robot = resolver(
      locked.host,
      { api: 'oci', order: 'semver' },
      { dockerConfigJson: dockerConfig(locked.host, { auth: b64('robot:pw:with:colons') }) },
    )
    t.same(
      await robot.newest('team/app', '1.0.0'),
      {
        newest: { tag: '1.1.0', order: 'semver', evidence: 'version 1.1.0 (2 of 2 tags compared)' },
        reason: 'the highest version, above 1.0.0 (2 tags in 1 page)',
        requests: 3,
      },
      '401, token, 200',
    )
    t.same((await robot.newest('team/app', '1.0.0')).requests, 1, 'the token is reused for that scope')
    t.same((await robot.newest('team/other', '2.0.0')).requests, 2, 'another scope: a token first, then no 401')
    t.same(
      issuer.requests.map((r) => ({ who: r.who, scopes: r.scopes, service: r.service })),
      [
        { who: 'robot', scopes: ['repository:team/app:pull'], service: 'mirrorhook-test-registry' },
        { who: 'robot', scopes: ['repository:team/other:pull'], service: 'mirrorhook-test-registry' },
      ],
    )

    issuer.requests.length = 0
    const parallel = resolver(
      locked.host,
      { api: 'oci', order: 'semver' },
      { dockerConfigJson: dockerConfig(locked.host, { auth: b64('robot:pw:with:colons') }) },
    )
    const both = await Promise.all([parallel.newest('team/app', '1.0.0'), parallel.newest('team/app', '1.0.0')])
    t.same(
      both.map((r) => r.newest?.tag),
      ['1.1.0', '1.1.0'],
    )
    t.equal(issuer.requests.length, 1, 'one token request for two resolutions at once')

    issuer.requests.length = 0
    const sso = resolver(
      locked.host,
      { api: 'oci', order: 'semver' },
      { dockerConfigJson: dockerConfig(locked.host, { identitytoken: 'refresh-1' }) },
    )
    t.equal((await sso.newest('team/app', '1.0.0')).newest?.tag, '1.1.0')
    t.same(
      issuer.requests.map((r) => [r.method, r.who]),
      [['POST', 'identitytoken:robot']],
      'an identity token is an OAuth2 refresh token',
    )

    const wrong = resolver(
      locked.host,
      { api: 'oci', order: 'semver' },
      { dockerConfigJson: dockerConfig(locked.host, { username: 'robot', password: 'nope' }) },
    )
    t.same(await failure(wrong.newest('team/app', '1.0.0')), {
      name: 'RegistryError',
      message: `${locked.host}: token from ${issuer.realm.replace(/\/token$/, '')}/token for repository:team/app:pull: HTTP 401`,
    })
  })

  t.test('Basic: a registry that challenges with Basic gets the user and password', async (t) => {
    await pushImage(open, 'basic/app', '3.0.0')
    await pushImage(open, 'basic/app', '3.1.0')
    const good = `Basic ${b64('robot:pw')}`
    const proxy = await startRegistryProxy({
      ca,
      upstream: open,
      intercept: (r) =>
        r.authorization === good
          ? undefined
          : {
              status: 401,
              headers: { 'WWW-Authenticate': 'Basic realm="Registry Realm"' },
              body: '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
            },
    })
    t.teardown(() => proxy.stop())
    const r = resolver(
      proxy.host,
      { api: 'oci', order: 'semver' },
      { dockerConfigJson: dockerConfig(proxy.host, { username: 'robot', password: 'pw' }) },
    )
    t.same(await r.newest('basic/app', '3.0.0'), {
      newest: { tag: '3.1.0', order: 'semver', evidence: 'version 3.1.0 (2 of 2 tags compared)' },
      reason: 'the highest version, above 3.0.0 (2 tags in 1 page)',
      requests: 2,
    })
    t.same(
      proxy.requests.map((q) => q.authorization),
      [undefined, good],
      'credentials only after the challenge',
    )
    t.same(await failure(resolver(proxy.host, { api: 'oci', order: 'semver' }).newest('basic/app', '3.0.0')), {
      name: 'RegistryError',
      message: `${proxy.host}: tags of basic/app: HTTP 401 (credentials missing or refused): UNAUTHORIZED authentication required`,
    })
  })

  t.test('429 with Retry-After is waited for, once for the whole registry', async (t) => {
    await pushImage(open, 'busy/app', '1.0.0')
    await pushImage(open, 'busy/app', '1.0.1')
    let limited = 1
    let retryAfter = '2'
    const proxy = await startRegistryProxy({
      ca,
      upstream: open,
      intercept: () =>
        limited-- > 0
          ? { status: 429, headers: { 'Retry-After': retryAfter }, body: '{"errors":[{"code":"TOOMANYREQUESTS"}]}' }
          : undefined,
    })
    t.teardown(() => proxy.stop())
    let clock = Date.parse('2026-11-29T02:30:00Z')
    const sleeps: number[] = []
    const deps: TagResolverDeps = { now: () => clock, sleep: async (ms) => void (sleeps.push(ms), (clock += ms)) }
    const outcomes: string[] = []
    const r = resolver(
      proxy.host,
      { api: 'oci', order: 'semver' },
      { ...deps, metrics: { registryRequest: (host, outcome) => outcomes.push(`${host} ${outcome}`) } },
    )
    t.same(await r.newest('busy/app', '1.0.0'), {
      newest: { tag: '1.0.1', order: 'semver', evidence: 'version 1.0.1 (2 of 2 tags compared)' },
      reason: 'the highest version, above 1.0.0 (2 tags in 1 page)',
      requests: 2,
    })
    t.same(sleeps, [2000], 'the request after the 429 waited Retry-After')
    t.same(outcomes, [`${proxy.host} 429`, `${proxy.host} 200`], 'each request counted by outcome')
    limited = 1
    retryAfter = '3600'
    t.same(await failure(r.newest('busy/app', '1.0.0')), {
      name: 'RegistryError',
      message: `${proxy.host}: rate limited (HTTP 429), Retry-After 3600 s is more than the 60 s waited`,
    })
    // requestsPerSecond: 2 → a burst of 2, then one every 500 ms.
    sleeps.length = 0
    const slow = resolver(proxy.host, { api: 'oci', order: 'semver', requestsPerSecond: 2 }, deps)
    for (let i = 0; i < 4; i++) await slow.newest('busy/app', '1.0.0')
    t.same(sleeps, [500, 500], 'the request rate per registry')
  })

  t.test('a redirect to another host carries no credentials', async (t) => {
    await pushImage(locked, 'team/redirected', '1.0.0', undefined, { created: '2026-01-01T00:00:00Z' })
    await pushImage(locked, 'team/redirected', '1.1.0', undefined, { created: '2026-02-01T00:00:00Z' })
    // Blob storage on "another host" (127.0.0.2) that records what arrives; it reads the
    // registry with its own authority, as a signed storage URL would.
    const storage = await startRegistryProxy({
      ca,
      upstream: locked,
      address: '127.0.0.2',
      upstreamAuthorization: (q) => issuer.pushAuthorization(q.path.split('/blobs/sha256:')[0]!.slice('/v2/'.length)),
    })
    t.teardown(() => storage.stop())
    const front = await startRegistryProxy({
      ca,
      upstream: locked,
      intercept: (q) => (q.path.includes('/blobs/sha256:') ? { status: 307, headers: { Location: `${storage.url}${q.path}` } } : undefined),
    })
    t.teardown(() => front.stop())
    const r = resolver(
      front.host,
      { api: 'oci', order: 'build-time' },
      { dockerConfigJson: dockerConfig(front.host, { auth: b64('robot:pw:with:colons') }) },
    )
    t.same((await r.newest('team/redirected', '1.0.0')).newest, {
      tag: '1.1.0',
      order: 'build-time',
      evidence: 'config created 2026-02-01T00:00:00.000Z',
    })
    const blobsAtFront = front.requests.filter((q) => q.path.includes('/blobs/sha256:'))
    t.equal(blobsAtFront.length, 2, 'two config blobs asked for at the registry')
    t.same(
      blobsAtFront.map((q) => /^Bearer [^\s]+$/.test(q.authorization ?? '')),
      [true, true],
      'with the registry token',
    )
    t.same(
      storage.requests.map((q) => [q.path.includes('/blobs/sha256:'), q.authorization]),
      [
        [true, undefined],
        [true, undefined],
      ],
      'and none at the other host',
    )
  })

  t.test('Harbor v2 artifacts (three artifacts, five tags): push-time order, paging, a repository name with a slash, Basic', async (t) => {
    const repo = 'proj/team/svc'
    const first = await pushImage(open, repo, '1.0.0')
    await tagManifest(open, repo, first, ['2.0.0', 'latest'])
    await pushImage(open, repo, '1.1.0')
    await pushImage(open, repo, 'hotfix')
    const harbor = await startHarborDouble({ ca, registry: open, users: { robot$proj: 'hpw' } })
    t.teardown(() => harbor.stop())
    harbor.recordPush(repo, '1.0.0', '2026-01-01T00:00:00Z')
    harbor.recordPush(repo, '2.0.0', '2026-02-01T00:00:00Z')
    harbor.recordPush(repo, '1.1.0', '2026-03-01T00:00:00Z') // a backport, pushed after 2.0.0
    harbor.recordPush(repo, 'hotfix', '2026-04-01T00:00:00Z')
    harbor.recordPush(repo, 'latest', '2026-05-01T00:00:00Z')
    const creds = { dockerConfigJson: dockerConfig(harbor.host, { auth: b64('robot$proj:hpw') }), pageSize: 2 }

    const push = resolver(harbor.host, { api: 'harbor', order: 'push-time' }, creds)
    t.same(await push.newest(repo, '1.0.0'), {
      newest: { tag: 'hotfix', order: 'push-time', evidence: 'tag push_time 2026-04-01T00:00:00.000Z' },
      reason: 'the newest push time, not older than 1.0.0 (5 tags in 2 pages)',
      requests: 2,
    })
    t.same(
      harbor.requests.map((q) => q.path),
      [
        '/api/v2.0/projects/proj/repositories/team%252Fsvc/artifacts?with_tag=true&sort=-push_time&page=1&page_size=2',
        '/api/v2.0/projects/proj/repositories/team%252Fsvc/artifacts?with_tag=true&sort=-push_time&page=2&page_size=2',
      ],
    )
    t.same(
      harbor.requests.map((q) => q.authorization),
      [`Basic ${b64('robot$proj:hpw')}`, `Basic ${b64('robot$proj:hpw')}`],
      'Basic on every request',
    )
    const versions = resolver(harbor.host, { api: 'harbor', order: 'push-time', include: ['^[0-9]'] }, creds)
    t.equal((await versions.newest(repo, '1.0.0')).newest?.tag, '1.1.0', 'push time, not version: the backport')
    t.same(await versions.newest(repo, 'hotfix'), {
      newest: { tag: 'hotfix', order: 'push-time', evidence: 'tag push_time 2026-04-01T00:00:00.000Z' },
      reason: 'the current tag has the newest push time (5 tags in 2 pages)',
      requests: 2,
    })
    const semver = resolver(harbor.host, { api: 'harbor', order: 'semver' }, creds)
    t.equal((await semver.newest(repo, '1.0.0')).newest?.tag, '2.0.0')

    // The cap: newest pushes first, then the current tag's own artifact.
    harbor.requests.length = 0
    const capped = resolver(harbor.host, { api: 'harbor', order: 'push-time', maxTagsPerRepository: 2 }, creds)
    t.same(await capped.newest(repo, '1.0.0'), {
      newest: { tag: 'hotfix', order: 'push-time', evidence: 'tag push_time 2026-04-01T00:00:00.000Z' },
      reason: 'the newest push time, not older than 1.0.0 (3 tags in 1 page (stopped at maxTagsPerRepository 2, newest pushes first))',
      requests: 2,
    })
    t.same(
      harbor.requests.map((q) => q.path.split('?')[0]),
      ['/api/v2.0/projects/proj/repositories/team%252Fsvc/artifacts', '/api/v2.0/projects/proj/repositories/team%252Fsvc/artifacts/1.0.0'],
    )
    t.same(await failure(resolver(harbor.host, { api: 'harbor', order: 'push-time' }).newest(repo, '1.0.0')), {
      name: 'RegistryError',
      message: `${harbor.host}: artifacts of ${repo}: HTTP 401 (credentials missing or refused): UNAUTHORIZED unauthorized`,
    })
    t.same(await push.newest('proj/none', '1.0.0'), { reason: `repository proj/none not found on ${harbor.host}`, requests: 1 })
  })

  t.test('a token realm on another host gets none of the registry credentials', async (t) => {
    const elsewhere = await startTokenIssuer({
      ca,
      dir: path.join(dir, 'elsewhere'),
      address: '127.0.0.2',
      users: { robot: 'pw' },
      anonymousPull: true,
    })
    t.teardown(() => elsewhere.stop())
    const reg = await startRegistry({
      ca,
      dir: path.join(dir, 'realm-elsewhere'),
      auth: { token: elsewhere.registryConfig },
      pushAuthorization: elsewhere.pushAuthorization,
    })
    t.teardown(() => reg.stop())
    await pushImage(reg, 'pub/app', '1.0.0')
    await pushImage(reg, 'pub/app', '1.2.0')
    elsewhere.requests.length = 0
    const r = resolver(
      reg.host,
      { api: 'oci', order: 'semver' },
      { dockerConfigJson: dockerConfig(reg.host, { username: 'robot', password: 'pw' }) },
    )
    t.equal((await r.newest('pub/app', '1.0.0')).newest?.tag, '1.2.0', 'an anonymous token still pulls a public repository')
    t.same(
      elsewhere.requests.map((q) => [q.who, q.scopes]),
      [['anonymous', ['repository:pub/app:pull']]],
      'no credentials went to 127.0.0.2',
    )
  })

  t.test('bounded: size caps, timeouts and links elsewhere give clear errors', async (t) => {
    const proxy = await startRegistryProxy({
      ca,
      upstream: open,
      intercept: (q) =>
        q.path.startsWith('/v2/huge/')
          ? { status: 200, body: JSON.stringify({ name: 'huge/app', tags: Array.from({ length: 600_000 }, (_, i) => `t${i}`) }) }
          : q.path.startsWith('/v2/elsewhere/')
            ? {
                status: 200,
                headers: { Link: '<https://127.0.0.2:1/v2/elsewhere/app/tags/list?n=1&last=a>; rel="next"' },
                body: '{"tags":["a"]}',
              }
            : q.path.startsWith('/v2/slow/')
              ? { hang: true, status: 0 }
              : undefined,
    })
    t.teardown(() => proxy.stop())
    // The default timeout for the large answer (several MB through the proxy on a loaded machine); 500 ms for the hang.
    const r = resolver(proxy.host, { api: 'oci', order: 'semver' })
    const huge = await failure(r.newest('huge/app', '1.0.0'))
    t.equal(huge?.name, 'RegistryError')
    // A pattern: the size is named only when the registry sent a Content-Length.
    t.match(huge?.message, /^127\.0\.0\.1:\d+\/v2\/huge\/app\/tags\/list: response (of \d+ bytes )?is more than the 4194304 bytes allowed$/)
    const impatient = resolver(proxy.host, { api: 'oci', order: 'semver' }, { timeoutMs: 500 })
    t.same(await failure(impatient.newest('slow/app', '1.0.0')), {
      name: 'RegistryError',
      message: `${proxy.host}/v2/slow/app/tags/list: no answer within 500 ms`,
    })
    t.same(await failure(r.newest('elsewhere/app', '1.0.0')), {
      name: 'RegistryError',
      message: `${proxy.host}: refusing to follow a link to https://127.0.0.2:1: only ${proxy.url} is queried`,
    })
  })
}
