// Pure parts of the registry client: headers, dockerconfigjson, build time, Harbor paths, the rate limiter, the entry schema.
import t from 'tap'
import { buildTime, choosePlatform, readManifest } from '../../server/prewarm/registry/buildtime.js'
import { credentialsFor, normaliseRegistryKey, parseDockerConfigJson } from '../../server/prewarm/registry/dockerconfig.js'
import { harborArtifactsPath, tagsOfArtifacts } from '../../server/prewarm/registry/harbor.js'
import { nextLink, parseChallenges, retryAfterMs } from '../../server/prewarm/registry/headers.js'
import { isRepositoryName, isTag } from '../../server/prewarm/registry/names.js'
import { TokenBucket } from '../../server/prewarm/registry/ratelimit.js'
import { registryEntrySchema } from '../../server/prewarm/registry/schema.js'

t.test('nextLink', async (t) => {
  const rows: [string | undefined, string | undefined][] = [
    ['</v2/a/tags/list?last=b&n=2>; rel="next"', '/v2/a/tags/list?last=b&n=2'],
    ['<https://r.example/v2/a/tags/list?n=2&last=x>;rel=next', 'https://r.example/v2/a/tags/list?n=2&last=x'],
    ['</p?page=1>; rel="prev" , </p?page=3>; rel="next"', '/p?page=3'],
    ['</p?page=1>; rel="prev"', undefined],
    ['</p?a=1,2>; rel="first next"', '/p?a=1,2'],
    ['', undefined],
    [undefined, undefined],
    ['garbage', undefined],
  ]
  for (const [h, want] of rows) t.equal(nextLink(h), want, String(h))
})

t.test('retryAfterMs', async (t) => {
  const now = Date.parse('2026-11-29T12:00:00Z')
  t.equal(retryAfterMs('3', now), 3000)
  t.equal(retryAfterMs(' 0 ', now), 0)
  t.equal(retryAfterMs('Sun, 29 Nov 2026 12:00:10 GMT', now), 10_000)
  t.equal(retryAfterMs('Sun, 29 Nov 2026 11:00:00 GMT', now), 0, 'a date in the past: now')
  t.equal(retryAfterMs('-1', now), undefined)
  t.equal(retryAfterMs('soon', now), undefined)
  t.equal(retryAfterMs(undefined, now), undefined)
})

t.test('parseChallenges', async (t) => {
  t.strictSame(parseChallenges('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"'), [
    { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull' } },
  ])
  t.strictSame(parseChallenges('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }])
  t.strictSame(parseChallenges('Basic realm="x", Bearer realm="https://t/token", error="insufficient_scope"'), [
    { scheme: 'basic', params: { realm: 'x' } },
    { scheme: 'bearer', params: { realm: 'https://t/token', error: 'insufficient_scope' } },
  ])
  t.strictSame(parseChallenges('BEARER Realm=https://t/token , Service=svc'), [
    { scheme: 'bearer', params: { realm: 'https://t/token', service: 'svc' } },
  ])
  t.strictSame(parseChallenges('Bearer realm="a\\"b"'), [{ scheme: 'bearer', params: { realm: 'a"b' } }])
  t.strictSame(parseChallenges(''), [])
  t.strictSame(parseChallenges(undefined), [])
})

t.test('dockerconfigjson', async (t) => {
  const b64 = (s: string) => Buffer.from(s).toString('base64')
  const keys: [string, string | undefined][] = [
    ['harbor.corp.example', 'harbor.corp.example'],
    ['https://harbor.corp.example', 'harbor.corp.example'],
    ['https://Harbor.Corp.Example/v1/', 'harbor.corp.example'],
    ['http://harbor.corp.example:8443/v2/', 'harbor.corp.example:8443'],
    ['127.0.0.1:5000', '127.0.0.1:5000'],
    ['https://index.docker.io/v1/', 'docker.io'],
    ['registry-1.docker.io', 'docker.io'],
    ['', undefined],
    ['https://', undefined],
    ['bad host name', undefined],
  ]
  for (const [k, want] of keys) t.equal(normaliseRegistryKey(k), want, k)

  const config = parseDockerConfigJson(
    JSON.stringify({
      auths: {
        'https://harbor.corp.example/v1/': { auth: b64('robot$shop:s3cr:et') },
        '127.0.0.1:5000': { username: 'u', password: 'p' },
        'sso.corp.example': { identitytoken: 'refresh-abc' },
        'broken.example': { auth: b64('nocolon') },
        'empty.example': {},
        'https://index.docker.io/v1/': { auth: b64('hub:pw') },
      },
    }),
  )
  t.strictSame(credentialsFor(config, 'harbor.corp.example'), { username: 'robot$shop', password: 's3cr:et' })
  t.equal(credentialsFor(config, 'harbor.corp.example:443'), undefined, 'a key matches its own port only')
  t.strictSame(credentialsFor(config, '127.0.0.1:5000'), { username: 'u', password: 'p' })
  t.equal(credentialsFor(config, '127.0.0.1:5001'), undefined)
  t.equal(credentialsFor(config, '127.0.0.1'), undefined)
  t.strictSame(credentialsFor(config, 'sso.corp.example'), { identityToken: 'refresh-abc' })
  t.strictSame(credentialsFor(config, 'docker.io'), { username: 'hub', password: 'pw' })
  t.equal(credentialsFor(config, 'corp.example'), undefined, 'no suffix matching')
  t.strictSame(config.problems, [
    'broken.example: "auth" is not base64 of user:password',
    'empty.example: no username/password, auth or identitytoken',
  ])
  // the older .dockercfg shape: the map at the top level
  t.strictSame(credentialsFor(parseDockerConfigJson(JSON.stringify({ 'r.example': { auth: b64('a:b') } })), 'r.example'), {
    username: 'a',
    password: 'b',
  })
  t.strictSame(parseDockerConfigJson('{').problems, ['not JSON'])
  t.strictSame(parseDockerConfigJson('[]').problems, ['not a JSON object'])
  t.strictSame(parseDockerConfigJson('{"auths": 3}').problems, ['"auths" is not an object'])
  t.strictSame(parseDockerConfigJson('x'.repeat(1024 * 1024 + 1)).problems, ['larger than 1048576 bytes'])
})

t.test('readManifest, choosePlatform and buildTime', async (t) => {
  const index = readManifest(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { digest: 'sha256:aaa', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        { digest: 'sha256:bbb', platform: { os: 'linux', architecture: 'amd64' } },
        { digest: 'sha256:ccc', platform: { os: 'unknown', architecture: 'unknown' } },
        { digest: 'not a digest' },
      ],
      annotations: { 'org.opencontainers.image.created': '2026-05-01T00:00:00Z' },
    }),
    undefined,
  )
  t.strictSame(
    index,
    {
      kind: 'index',
      manifests: [
        { mediaType: undefined, digest: 'sha256:aaa', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        { mediaType: undefined, digest: 'sha256:bbb', platform: { os: 'linux', architecture: 'amd64', variant: undefined } },
        { mediaType: undefined, digest: 'sha256:ccc', platform: { os: 'unknown', architecture: 'unknown', variant: undefined } },
      ],
      annotations: { 'org.opencontainers.image.created': '2026-05-01T00:00:00Z' },
    },
    'an entry without a valid digest is left out',
  )
  const manifests = (index as Extract<typeof index, { kind: 'index' }>).manifests
  t.equal(choosePlatform(manifests, 'linux/amd64')?.digest, 'sha256:bbb')
  t.equal(choosePlatform(manifests, 'linux/arm64')?.digest, 'sha256:aaa')
  t.equal(choosePlatform(manifests, 'linux/arm64/v8')?.digest, 'sha256:aaa')
  t.equal(choosePlatform(manifests, 'linux/arm64/v7'), undefined)
  t.equal(choosePlatform(manifests, 'windows/amd64'), undefined)
  // a Docker manifest list is recognised by its Content-Type too
  t.equal(readManifest('{"schemaVersion":2,"manifests":[]}', 'application/vnd.docker.distribution.manifest.list.v2+json').kind, 'index')
  t.strictSame(
    readManifest('{"schemaVersion":2,"config":{"digest":"sha256:c0"},"layers":[]}', 'application/vnd.docker.distribution.manifest.v2+json'),
    {
      kind: 'image',
      configDigest: 'sha256:c0',
      annotations: {},
    },
  )
  t.strictSame(readManifest('{"schemaVersion":1,"fsLayers":[]}', 'application/vnd.docker.distribution.manifest.v1+prettyjws'), {
    kind: 'unknown',
    why: 'manifest of type application/vnd.docker.distribution.manifest.v1+prettyjws has no config',
  })
  t.strictSame(readManifest('nope', undefined), { kind: 'unknown', why: 'manifest is not JSON' })

  const ann = { 'org.opencontainers.image.created': '2026-05-01T00:00:00Z' }
  const rows: [string | undefined, Record<string, string>[], { time?: number; source: string }][] = [
    ['{"created":"2026-03-04T05:06:07.123456789Z"}', [], { time: Date.parse('2026-03-04T05:06:07.123Z'), source: 'config created' }],
    ['{"created":"2026-03-04T05:06:07Z"}', [ann], { time: Date.parse('2026-03-04T05:06:07Z'), source: 'config created' }],
    ['{}', [ann], { time: Date.parse('2026-05-01T00:00:00Z'), source: 'annotation org.opencontainers.image.created' }],
    [
      '{"created":"1970-01-01T00:00:00Z"}',
      [ann],
      { time: Date.parse('2026-05-01T00:00:00Z'), source: 'annotation org.opencontainers.image.created' },
    ],
    ['{"created":"1970-01-01T00:00:00Z"}', [], { source: "config created 1970-01-01T00:00:00.000Z is a reproducible build's fixed time" }],
    ['{"created":"1980-01-01T00:00:00Z"}', [], { source: "config created 1980-01-01T00:00:00.000Z is a reproducible build's fixed time" }],
    ['{"created":"yesterday"}', [], { source: 'no created time in config or annotations' }],
    ['not json', [{}, ann], { time: Date.parse('2026-05-01T00:00:00Z'), source: 'annotation org.opencontainers.image.created' }],
    [undefined, [], { source: 'no created time in config or annotations' }],
  ]
  for (const [config, annotations, want] of rows) t.strictSame(buildTime(config, annotations), want, String(config))
})

t.test('Harbor artifacts path and tags', async (t) => {
  t.equal(harborArtifactsPath('shop/api'), '/api/v2.0/projects/shop/repositories/api/artifacts')
  t.equal(harborArtifactsPath('shop/team/api'), '/api/v2.0/projects/shop/repositories/team%252Fapi/artifacts')
  t.equal(harborArtifactsPath('shop/a/b/c', '1.0'), '/api/v2.0/projects/shop/repositories/a%252Fb%252Fc/artifacts/1.0')
  t.equal(harborArtifactsPath('api'), undefined)
  t.strictSame(
    tagsOfArtifacts([
      {
        push_time: '2026-01-01T00:00:00.000Z',
        tags: [
          { name: '1.0', push_time: '2026-02-01T00:00:00.000Z' },
          { name: '1.0.0', push_time: null as unknown as string },
          { name: '-bad-' },
        ],
      },
      { push_time: '2026-03-01T00:00:00.000Z', tags: null },
    ]),
    [
      { tag: '1.0', time: Date.parse('2026-02-01T00:00:00Z'), source: 'tag push_time' },
      { tag: '1.0.0', time: Date.parse('2026-01-01T00:00:00Z'), source: 'artifact push_time' },
    ],
  )
})

t.test('names', async (t) => {
  for (const n of ['a', 'shop/api', 'a.b/c-d/e__f', 'library/nginx']) t.equal(isRepositoryName(n), true, n)
  for (const n of ['', 'A', '/a', 'a/', 'a//b', '../x', 'a/b?c', 'a b', 'a/-b']) t.equal(isRepositoryName(n), false, n)
  for (const tag of ['1.0', 'v1.2.3-rc.1', 'latest', '_x', 'a'.repeat(128)]) t.equal(isTag(tag), true, tag)
  for (const tag of ['', '.x', '-x', 'a/b', 'a:b', 'a'.repeat(129), '1.0+build']) t.equal(isTag(tag), false, tag)
})

t.test('TokenBucket: rate, burst and pause', async (t) => {
  let now = 1_000_000
  const b = new TokenBucket(2, 2, () => now)
  t.strictSame([b.reserve(), b.reserve(), b.reserve(), b.reserve()], [0, 0, 500, 1000], 'burst of 2, then one per 500 ms')
  now += 1000
  t.equal(b.reserve(), 500, 'reservations already made are kept')
  now += 10_000
  b.pause(now + 3000)
  t.equal(b.reserve(), 3000, 'a 429 pauses everything until Retry-After')
  now += 3000
  t.equal(b.reserve(), 0)
})

t.test('registryEntrySchema', async (t) => {
  t.strictSame(registryEntrySchema.parse({ api: 'oci', order: 'semver' }), { api: 'oci', order: 'semver', exclude: ['^latest$'] })
  const bad: [unknown, string][] = [
    [{ api: 'oci', order: 'push-time' }, 'push-time needs api: harbor (the OCI API keeps no push time)'],
    [{ api: 'oci', order: 'semver', include: ['('] }, 'must be a valid regular expression'],
    [{ api: 'oci', order: 'semver', platform: 'amd64' }, 'must be os/architecture or os/architecture/variant, e.g. linux/amd64'],
    [{ api: 'oci', order: 'semver', credentialsSecret: 'Not_A_Name' }, 'must be a Secret name'],
    [{ api: 'quay', order: 'semver' }, 'Invalid option: expected one of "oci"|"harbor"'],
    [{ api: 'oci', order: 'semver', maxTagsPerRepository: 0 }, 'Too small: expected number to be >=1'],
  ]
  for (const [input, message] of bad) {
    const r = registryEntrySchema.safeParse(input)
    t.equal(r.success ? 'accepted' : r.error.issues[0]?.message, message, JSON.stringify(input))
  }
  t.equal(registryEntrySchema.safeParse({ api: 'oci', order: 'semver', extra: 1 }).success, false, 'unknown keys are refused')
})
