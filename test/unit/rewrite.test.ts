import t from 'tap'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy, type MirrorTarget, registryKey } from '../../server/core/policy.js'
import { pino } from 'pino'
import {
  certainlyValidRewrite,
  type ImageDecision,
  DECISION_CACHE_SIZE,
  decideImage,
  type ReachabilityView,
  type RegistryState,
  staticReachability,
  verify,
} from '../../server/core/rewrite.js'
import { ReachabilityService } from '../../server/reachability/service.js'
import { parseNormalizedNamed, tryParseNormalizedNamed } from '../../server/core/reference/normalize.js'

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
  t.strictSame(parseNormalizedNamed(path), { domain: 'docker.io', path: `${'a'.repeat(125)}/${'b'.repeat(124)}` }, 'the original is valid')
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
  t.strictSame(decide('a.corp.example/x:1', input), {
    action: 'keep',
    original: 'a.corp.example/x:1',
    code: 'no-proxy',
    reason: 'registry a.corp.example matches noProxy entry ".corp.example"',
    registry: 'a.corp.example',
  })
  t.strictSame(decide('corp.example/x:1', input), {
    action: 'keep',
    original: 'corp.example/x:1',
    code: 'no-proxy',
    reason: 'registry corp.example matches noProxy entry ".corp.example"',
    registry: 'corp.example',
  })
  t.strictSame(decide('ghcr.io/x/y:1', input), {
    action: 'keep',
    original: 'ghcr.io/x/y:1',
    code: 'no-proxy',
    reason: 'registry ghcr.io matches noProxy entry "ghcr.io"',
    registry: 'ghcr.io',
  })
  t.equal(outcome(decide('notcorp.example/x:1', input)), 'm.daocloud.io/notcorp.example/x:1')
  t.strictSame(decide('nginx', { noProxy: ['*'] }), {
    action: 'keep',
    original: 'nginx',
    code: 'no-proxy',
    reason: 'registry docker.io matches noProxy entry "*"',
    registry: 'docker.io',
  })
  // The mirror itself is never a source.
  t.equal(outcome(decide('m.daocloud.io/other:1', input)), 'keep:already-mirrored')
})

t.test('mode unreachable rewrites only the listed registries', async (t) => {
  const input: ConfigInput = { mode: 'unreachable', unreachable: ['docker.io', 'gcr.io'] }
  t.strictSame(decide('nginx', input), {
    action: 'rewrite',
    original: 'nginx',
    rewritten: 'm.daocloud.io/docker.io/library/nginx',
    registry: 'docker.io',
    reason: 'registry docker.io is unreachable (listed in config unreachable)',
  })
  t.equal(outcome(decide('registry-1.docker.io/library/nginx', input)), 'm.daocloud.io/docker.io/library/nginx')
  t.equal(outcome(decide('gcr.io/a/b', input)), 'm.daocloud.io/gcr.io/a/b')
  t.strictSame(decide('quay.io/a/b', input), {
    action: 'keep',
    original: 'quay.io/a/b',
    code: 'reachable',
    reason: 'registry quay.io is unknown (not listed in config unreachable)',
    registry: 'quay.io',
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

t.test('decisions are reused while the policy and the view generation stay the same; the memo is bounded', async (t) => {
  const policy = policyOf({ mode: 'auto' })
  let generation = 1
  let state: RegistryState = 'unreachable'
  let asked = 0
  const view: ReachabilityView = {
    generation: () => generation,
    status: (registry) => {
      asked += 1
      return { state: registry === 'm.daocloud.io' ? 'reachable' : state, evidence: 'test' }
    },
  }
  const first = decideImage('nginx:1.25', policy, view)
  t.strictSame(first, {
    action: 'rewrite',
    original: 'nginx:1.25',
    rewritten: 'm.daocloud.io/docker.io/library/nginx:1.25',
    registry: 'docker.io',
    reason: 'registry docker.io is unreachable (test)',
  })
  t.equal(asked, 2, 'the source registry and the mirror')
  t.equal(decideImage('nginx:1.25', policy, view), first, 'the same decision, not asked again')
  t.equal(asked, 2)

  state = 'reachable'
  generation = 2
  const reachable = {
    action: 'keep',
    original: 'nginx:1.25',
    code: 'reachable',
    reason: 'registry docker.io is reachable (test)',
    registry: 'docker.io',
  }
  t.strictSame(decideImage('nginx:1.25', policy, view), reachable, 'a new generation decides again')
  t.equal(asked, 3)
  const other = policyOf({ mode: 'always' })
  t.strictSame(
    decideImage('nginx:1.25', other, view),
    {
      action: 'rewrite',
      original: 'nginx:1.25',
      rewritten: 'm.daocloud.io/docker.io/library/nginx:1.25',
      registry: 'docker.io',
      reason: 'mode always',
    },
    'another policy decides again',
  )
  t.strictSame(decideImage('nginx:1.25', policy, view), reachable)
  t.equal(asked, 4)

  t.equal(DECISION_CACHE_SIZE, 4096)
  for (let i = 0; i < 4096; i++) decideImage(`nginx:2.${i}`, policy, view)
  t.equal(asked, 4100)
  decideImage('nginx:1.25', policy, view)
  t.equal(asked, 4101, 'the oldest decision was forgotten: at most 4096 are kept')

  let plainAsked = 0
  const plain: ReachabilityView = {
    status: (registry) => {
      plainAsked += 1
      return { state: registry === 'm.daocloud.io' ? 'reachable' : 'unreachable', evidence: 'test' }
    },
  }
  decideImage('nginx:1.25', policy, plain)
  decideImage('nginx:1.25', policy, plain)
  t.equal(plainAsked, 4, 'a view without a generation is asked every time')
})

t.test('the learned view changes generation on new evidence and when a state expires', async (t) => {
  let now = 1_000_000
  const policy = policyOf({ mode: 'auto', reachability: { ttlSeconds: 60, probes: { maxBackoffSeconds: 30 } } })
  const service = new ReachabilityService({ policy, logger: pino({ level: 'silent' }), namespace: 'mirrorhook', now: () => now })
  const view = service.view()
  t.equal(view.generation!(), 1)
  t.equal(view.generation!(), 1, 'nothing changed')
  service.observe('quay.io', { at: now, source: 'pod', outcome: 'fail', detail: 'i/o timeout' })
  t.equal(view.generation!(), 2, 'new evidence')
  t.strictSame(decideImage('quay.io/a/b:1', policy, view), {
    action: 'rewrite',
    original: 'quay.io/a/b:1',
    rewritten: 'm.daocloud.io/quay.io/a/b:1',
    registry: 'quay.io',
    reason: 'registry quay.io is unreachable (pod status: i/o timeout, since 1970-01-01T00:16:40Z)',
  })
  now += 59_999
  t.equal(view.generation!(), 2, 'before the state expires')
  now += 1
  t.equal(view.generation!(), 3, 'the state expired')
  t.strictSame(decideImage('quay.io/a/b:1', policy, view), {
    action: 'rewrite',
    original: 'quay.io/a/b:1',
    rewritten: 'm.daocloud.io/quay.io/a/b:1',
    registry: 'quay.io',
    reason:
      'registry quay.io is unknown (unreachable evidence expired at 1970-01-01T00:17:40Z; last: pod status: i/o timeout, since 1970-01-01T00:16:40Z); reachability.unknown is mirror',
  })
})

t.test('the short validity check never vouches for a rewrite the full parse would refuse', async (t) => {
  // Seeded: a failure reproduces.
  let seed = 20261129
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed % n
  }
  const pick = (chars: string, n: number) => Array.from({ length: n }, () => chars[rand(chars.length)]).join('')
  const label = () => pick('abcdefghijklmnopqrstuvwxyzABC0123456789', 1 + rand(8)) + (rand(4) === 0 ? `-${pick('ab-9', rand(4))}z` : '')
  const targets: MirrorTarget[] = [
    { repoPrefix: 'm.daocloud.io', domain: 'm.daocloud.io' },
    { repoPrefix: 'harbor.corp.example:8443/proxy/sub', domain: 'harbor.corp.example:8443' },
    { repoPrefix: 'localhost:5000', domain: 'localhost:5000' },
  ]
  let vouched = 0
  let refused = 0
  const wrong: string[] = []
  for (let i = 0; i < 5000; i++) {
    const domain = Array.from({ length: 2 + rand(3) }, label).join('.')
    const path = Array.from({ length: 1 + rand(3) }, () => pick('abcdefghij0123456789', 1 + rand(rand(3) === 0 ? 120 : 12))).join('/')
    const image = `${domain}/${path}${rand(2) ? `:${pick('abcXYZ019._-', 1 + rand(20)).replace(/^[.-]/, 'v')}` : ''}${rand(3) === 0 ? `@sha256:${'c'.repeat(64)}` : ''}`
    const parsed = tryParseNormalizedNamed(image)
    if (!parsed.ok) continue
    const ref = parsed.ref
    for (const target of targets) {
      for (const source of [registryKey(ref.domain).toLowerCase(), undefined]) {
        const name = source === undefined ? `${target.repoPrefix}/${ref.path}` : `${target.repoPrefix}/${source}/${ref.path}`
        const candidate = `${name}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`
        if (certainlyValidRewrite(ref, target, source)) {
          vouched += 1
          if (verify(candidate, ref, target) !== undefined) wrong.push(candidate)
        } else {
          refused += 1
        }
      }
    }
  }
  t.strictSame(wrong, [], 'every rewrite vouched for parses as the full check requires')
  // The seed fixes both counts.
  t.equal(vouched, 29876, 'rewrites vouched for')
  t.equal(refused, 124, 'long paths are left to the full parse')
  const long = parseNormalizedNamed(`ghcr.io/${'a'.repeat(250)}:1`)
  t.equal(certainlyValidRewrite(long, targets[0]!, 'ghcr.io'), false)
  t.equal(
    verify(`m.daocloud.io/ghcr.io/${'a'.repeat(250)}:1`, long, targets[0]!),
    'the mirrored reference would be invalid (repository name must not be more than 255 characters)',
  )
})
