import t from 'tap'
import { resolveConfig, type ConfigInput } from '../../server/core/config.js'
import { compilePolicy, registryKey } from '../../server/core/policy.js'
import { decideImage, staticReachability, type ImageDecision } from '../../server/core/rewrite.js'
import { parseNormalizedNamed } from '../../server/core/reference.js'

const SHA256 = `sha256:${'a'.repeat(64)}`
const SHA512 = `sha512:${'b'.repeat(128)}`

function policyOf(input: ConfigInput = {}) {
  return compilePolicy(resolveConfig(input, {}))
}

function decide(image: string, input: ConfigInput = {}) {
  const policy = policyOf(input)
  return decideImage(image, policy, staticReachability(policy))
}

// The outcome as the tables write it: the rewritten reference, or `keep:<code>`.
function outcome(d: ImageDecision): string {
  return d.action === 'rewrite' ? d.rewritten : `keep:${d.code}`
}

// [image, expected rewrite or `keep:<code>`]
const prefixMode: [string, string][] = [
  ['nginx', 'm.daocloud.io/docker.io/library/nginx'],
  ['nginx:1.25', 'm.daocloud.io/docker.io/library/nginx:1.25'],
  ['library/nginx:1.25', 'm.daocloud.io/docker.io/library/nginx:1.25'],
  ['docker.io/nginx:1.25', 'm.daocloud.io/docker.io/library/nginx:1.25'],
  ['index.docker.io/library/nginx:1.25', 'm.daocloud.io/docker.io/library/nginx:1.25'],
  ['registry-1.docker.io/library/nginx:1.25', 'm.daocloud.io/docker.io/library/nginx:1.25'],
  ['apache/apisix-dashboard:2.13-alpine', 'm.daocloud.io/docker.io/apache/apisix-dashboard:2.13-alpine'],
  [`busybox@${SHA256}`, `m.daocloud.io/docker.io/library/busybox@${SHA256}`],
  [`busybox:1.36@${SHA256}`, `m.daocloud.io/docker.io/library/busybox:1.36@${SHA256}`],
  [`ghcr.io/org/app@${SHA512}`, `m.daocloud.io/ghcr.io/org/app@${SHA512}`],
  ['registry.k8s.io/pause:3.10', 'm.daocloud.io/registry.k8s.io/pause:3.10'],
  ['gcr.io/distroless/static:nonroot', 'm.daocloud.io/gcr.io/distroless/static:nonroot'],
  ['quay.io/prometheus/node-exporter:v1.8.0', 'm.daocloud.io/quay.io/prometheus/node-exporter:v1.8.0'],
  ['k8s.gcr.io/a/b/c/d:e', 'm.daocloud.io/k8s.gcr.io/a/b/c/d:e'],
  // Already on the mirror: the API server may call twice (reinvocationPolicy IfNeeded).
  ['m.daocloud.io/docker.io/library/nginx:1.25', 'keep:already-mirrored'],
  // Not in the default registries.
  ['registry.corp.example/team/app:1', 'keep:not-eligible'],
  ['localhost:5000/app:1', 'keep:no-proxy'],
  ['127.0.0.1:5000/app:1', 'keep:no-proxy'],
  ['[::1]:5000/app:1', 'keep:no-proxy'],
  // Invalid references are left alone.
  ['Nginx:1.25', 'keep:unparseable'],
  ['nginx:', 'keep:unparseable'],
  [`nginx@sha256:${'a'.repeat(63)}`, 'keep:unparseable'],
  ['a'.repeat(64), 'keep:unparseable'],
  ['', 'keep:unparseable'],
]

const rewrites = prefixMode.filter(([, expected]) => !expected.startsWith('keep:'))

t.test('prefix mode with the embedded defaults', async (t) => {
  for (const [image, expected] of prefixMode) t.equal(outcome(decide(image)), expected, `${image} → ${expected}`)
})

t.test('any registry (*): what cannot be expressed under a prefix is kept, with the reason', async (t) => {
  const any = { registries: ['*'] }
  const cases: [string, string][] = [
    ['registry.corp.example/team/app:1', 'm.daocloud.io/registry.corp.example/team/app:1'],
    // DNS is case-insensitive; the path component must be lowercase.
    ['Registry.Corp.Example/team/app:1', 'm.daocloud.io/registry.corp.example/team/app:1'],
    ['registry.corp.example:5000/team/app:1', 'keep:inexpressible'],
    ['10.1.2.3/team/app:1', 'keep:inexpressible'],
    ['10.1.2.3:5000/team/app:1', 'keep:inexpressible'],
    ['[fd00::1]:5000/team/app:1', 'keep:inexpressible'],
    ['Foo/app:1', 'keep:inexpressible'],
  ]
  for (const [image, expected] of cases) t.equal(outcome(decide(image, any)), expected, `${image} → ${expected}`)
  t.equal(
    decide('registry.corp.example:5000/team/app:1', any).reason,
    'a registry with a port cannot be expressed in prefix mode',
    'the reason names the port',
  )
})

t.test('a rewrite near the 255-character limit is kept rather than made invalid', async (t) => {
  // The grammar limits the repository path to 255 characters; the prefix adds `docker.io/`.
  const path = `docker.io/${'a'.repeat(125)}/${'b'.repeat(124)}`
  t.ok(parseNormalizedNamed(path), 'the original is valid')
  t.strictSame(decide(`${path}:1`), {
    action: 'keep',
    original: `${path}:1`,
    code: 'inexpressible',
    reason: 'the mirrored reference would be invalid (repository name must not be more than 255 characters)',
    registry: 'docker.io',
  })
})

t.test('host mode keeps the path and uses the host per source registry', async (t) => {
  const input: ConfigInput = {
    mirror: { hosts: { 'docker.io': 'docker.m.daocloud.io', 'ghcr.io': 'harbor.corp.example/ghcr-proxy' } },
  }
  t.equal(outcome(decide('nginx:1.25', input)), 'docker.m.daocloud.io/library/nginx:1.25')
  t.equal(outcome(decide('registry-1.docker.io/library/nginx', input)), 'docker.m.daocloud.io/library/nginx')
  t.equal(outcome(decide(`ghcr.io/org/app:1@${SHA256}`, input)), `harbor.corp.example/ghcr-proxy/org/app:1@${SHA256}`)
  t.equal(outcome(decide('docker.m.daocloud.io/library/nginx:1.25', input)), 'keep:already-mirrored')
  t.equal(outcome(decide('harbor.corp.example/ghcr-proxy/org/app:1', input)), 'keep:already-mirrored')
  // No prefix and no host for quay.io: nothing to rewrite to.
  t.equal(outcome(decide('quay.io/a/b:1', input)), 'keep:no-mirror')
  // Both: host mode wins for its registries, prefix for the rest.
  const both: ConfigInput = { mirror: { prefix: 'm.daocloud.io', hosts: { 'docker.io': 'docker.m.daocloud.io' } } }
  t.equal(outcome(decide('nginx', both)), 'docker.m.daocloud.io/library/nginx')
  t.equal(outcome(decide('quay.io/a/b:1', both)), 'm.daocloud.io/quay.io/a/b:1')
})

t.test('rewriting is idempotent for every rewrite in the tables', async (t) => {
  for (const [, rewritten] of rewrites) t.equal(outcome(decide(rewritten)), 'keep:already-mirrored', `${rewritten} is not rewritten again`)
  // Host mirrors for Docker Hub and ghcr.io only: the other registries have no mirror there.
  const hosts: ConfigInput = { mirror: { hosts: { 'docker.io': 'docker.m.daocloud.io', 'ghcr.io': 'ghcr.m.daocloud.io' } } }
  const hostRewrites: [string, string][] = [
    ['nginx', 'docker.m.daocloud.io/library/nginx'],
    ['library/nginx:1.25', 'docker.m.daocloud.io/library/nginx:1.25'],
    ['index.docker.io/library/nginx:1.25', 'docker.m.daocloud.io/library/nginx:1.25'],
    ['apache/apisix-dashboard:2.13-alpine', 'docker.m.daocloud.io/apache/apisix-dashboard:2.13-alpine'],
    [`busybox:1.36@${SHA256}`, `docker.m.daocloud.io/library/busybox:1.36@${SHA256}`],
    [`ghcr.io/org/app@${SHA512}`, `ghcr.m.daocloud.io/org/app@${SHA512}`],
  ]
  for (const [image, rewritten] of hostRewrites) {
    t.equal(outcome(decide(image, hosts)), rewritten, `${image} → ${rewritten}`)
    t.equal(outcome(decide(rewritten, hosts)), 'keep:already-mirrored', `${rewritten} is not rewritten again`)
  }
  t.equal(outcome(decide('quay.io/prometheus/node-exporter:v1.8.0', hosts)), 'keep:no-mirror')
})

t.test('every rewrite parses, points at the mirror and keeps tag and digest', async (t) => {
  for (const [image, expected] of rewrites) {
    t.equal(outcome(decide(image)), expected)
    const before = parseNormalizedNamed(image)
    const after = parseNormalizedNamed(expected)
    t.equal(after.domain, 'm.daocloud.io', `${expected} is on the mirror`)
    t.equal(after.tag, before.tag, 'tag kept')
    t.equal(after.digest, before.digest, 'digest kept')
    t.equal(after.path, `${registryKey(before.domain)}/${before.path}`, 'source registry and path kept')
  }
})

t.test('noProxy excludes registries and says which entry matched', async (t) => {
  const input: ConfigInput = { registries: ['*'], noProxy: ['.corp.example', 'ghcr.io', '10.0.0.0/8'] }
  t.hasStrict(decide('a.corp.example/x:1', input), {
    code: 'no-proxy',
    reason: 'registry a.corp.example matches noProxy entry ".corp.example"',
  })
  t.hasStrict(decide('corp.example/x:1', input), {
    code: 'no-proxy',
    reason: 'registry corp.example matches noProxy entry ".corp.example"',
  })
  t.hasStrict(decide('ghcr.io/x/y:1', input), { code: 'no-proxy', reason: 'registry ghcr.io matches noProxy entry "ghcr.io"' })
  t.equal(outcome(decide('notcorp.example/x:1', input)), 'm.daocloud.io/notcorp.example/x:1')
  t.hasStrict(decide('nginx', { noProxy: ['*'] }), { code: 'no-proxy', reason: 'registry docker.io matches noProxy entry "*"' })
  // The mirror itself is never a source.
  t.equal(outcome(decide('m.daocloud.io/other:1', input)), 'keep:already-mirrored')
})

t.test('mode unreachable rewrites only the listed registries', async (t) => {
  const input: ConfigInput = { mode: 'unreachable', unreachable: ['docker.io', 'gcr.io'] }
  t.hasStrict(decide('nginx', input), {
    action: 'rewrite',
    rewritten: 'm.daocloud.io/docker.io/library/nginx',
    reason: 'registry docker.io is unreachable (listed in config unreachable)',
  })
  t.equal(outcome(decide('registry-1.docker.io/library/nginx', input)), 'm.daocloud.io/docker.io/library/nginx')
  t.equal(outcome(decide('gcr.io/a/b', input)), 'm.daocloud.io/gcr.io/a/b')
  t.hasStrict(decide('quay.io/a/b', input), {
    code: 'reachable',
    reason: 'registry quay.io is unknown (not listed in config unreachable)',
  })
})

t.test('a rewrite never points at a registry the config did not name', async (t) => {
  const policy = policyOf({ registries: ['*'] })
  const cases: [string, string][] = [
    // A mirror name inside the path or as part of another host is an ordinary source.
    ['evil.example/m.daocloud.io/x', 'm.daocloud.io/evil.example/m.daocloud.io/x'],
    ['m.daocloud.io.evil.example/x', 'm.daocloud.io/m.daocloud.io.evil.example/x'],
    ['docker.io/m.daocloud.io/x', 'm.daocloud.io/docker.io/m.daocloud.io/x'],
    ['nginx', 'm.daocloud.io/docker.io/library/nginx'],
    [`ghcr.io/a/b@${SHA256}`, `m.daocloud.io/ghcr.io/a/b@${SHA256}`],
  ]
  for (const [image, expected] of cases) {
    t.equal(outcome(decideImage(image, policy, staticReachability(policy))), expected, `${image} → ${expected}`)
    t.equal(parseNormalizedNamed(expected).domain, 'm.daocloud.io', `${expected} is on the mirror`)
  }
})
