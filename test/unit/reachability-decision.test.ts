// Mode auto and the other modes over a learned view: which state rewrites,
// which evidence the decision names, the mirror's own state and its refusals.
import t from 'tap'
import { ConfigError } from '../../server/core/config.js'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { decideImage, type ReachabilityView, type RegistryState } from '../../server/core/rewrite.js'

function view(states: Record<string, RegistryState>, refused: Record<string, string> = {}): ReachabilityView {
  return {
    status: (registry) => ({ state: states[registry] ?? 'unknown', evidence: `evidence for ${registry}` }),
    mirrorRefusal: (repository) => refused[repository],
  }
}

const decide = (image: string, input: ConfigInput, v: ReachabilityView) => decideImage(image, compilePolicy(resolveConfig(input, {})), v)
const AUTO: ConfigInput = { mode: 'auto' }

t.test('auto: unreachable and slow registries get the mirror, reachable ones do not', async (t) => {
  const v = view({ 'docker.io': 'unreachable', 'ghcr.io': 'slow', 'quay.io': 'reachable' })
  t.strictSame(decide('nginx:1.25', AUTO, v), {
    action: 'rewrite',
    original: 'nginx:1.25',
    rewritten: 'm.daocloud.io/docker.io/library/nginx:1.25',
    registry: 'docker.io',
    reason: 'registry docker.io is unreachable (evidence for docker.io)',
  })
  t.strictSame(decide('ghcr.io/a/b:1', AUTO, v), {
    action: 'rewrite',
    original: 'ghcr.io/a/b:1',
    rewritten: 'm.daocloud.io/ghcr.io/a/b:1',
    registry: 'ghcr.io',
    reason: 'registry ghcr.io is slow (evidence for ghcr.io)',
  })
  t.strictSame(decide('quay.io/a/b:1', AUTO, v), {
    action: 'keep',
    original: 'quay.io/a/b:1',
    code: 'reachable',
    reason: 'registry quay.io is reachable (evidence for quay.io)',
    registry: 'quay.io',
  })
})

t.test('auto: unknown follows reachability.unknown, and says so', async (t) => {
  const v = view({})
  t.strictSame(decide('gcr.io/a/b:1', AUTO, v), {
    action: 'rewrite',
    original: 'gcr.io/a/b:1',
    rewritten: 'm.daocloud.io/gcr.io/a/b:1',
    registry: 'gcr.io',
    reason: 'registry gcr.io is unknown (evidence for gcr.io); reachability.unknown is mirror',
  })
  t.strictSame(decide('gcr.io/a/b:1', { ...AUTO, reachability: { unknown: 'direct' } }, v), {
    action: 'keep',
    original: 'gcr.io/a/b:1',
    code: 'reachable',
    reason: 'registry gcr.io is unknown (evidence for gcr.io); reachability.unknown is direct',
    registry: 'gcr.io',
  })
})

t.test('unreachable mode: only unreachable rewrites, slow and unknown do not', async (t) => {
  const v = view({ 'docker.io': 'unreachable', 'ghcr.io': 'slow' })
  const input: ConfigInput = { mode: 'unreachable' }
  t.strictSame(decide('nginx', input, v), {
    action: 'rewrite',
    original: 'nginx',
    rewritten: 'm.daocloud.io/docker.io/library/nginx',
    registry: 'docker.io',
    reason: 'registry docker.io is unreachable (evidence for docker.io)',
  })
  t.strictSame(decide('ghcr.io/a/b', input, v), {
    action: 'keep',
    original: 'ghcr.io/a/b',
    code: 'reachable',
    reason: 'registry ghcr.io is slow (evidence for ghcr.io)',
    registry: 'ghcr.io',
  })
  t.strictSame(decide('quay.io/a/b', input, v), {
    action: 'keep',
    original: 'quay.io/a/b',
    code: 'reachable',
    reason: 'registry quay.io is unknown (evidence for quay.io)',
    registry: 'quay.io',
  })
})

t.test('a mirror that is down gets nothing, except in mode always', async (t) => {
  const v = view({ 'docker.io': 'unreachable', 'm.daocloud.io': 'unreachable' })
  const mirrorDown = {
    action: 'keep',
    original: 'nginx',
    code: 'mirror-unreachable',
    reason: 'mirror m.daocloud.io is unreachable (evidence for m.daocloud.io)',
    registry: 'docker.io',
  }
  t.strictSame(decide('nginx', AUTO, v), mirrorDown)
  t.strictSame(decide('nginx', { mode: 'unreachable' }, v), mirrorDown)
  t.strictSame(
    decide('nginx', { mode: 'always' }, v),
    {
      action: 'rewrite',
      original: 'nginx',
      rewritten: 'm.daocloud.io/docker.io/library/nginx',
      registry: 'docker.io',
      reason: 'mode always',
    },
    'always means always',
  )
  const hostMode: ConfigInput = { ...AUTO, mirror: { hosts: { 'docker.io': 'docker.m.daocloud.io' } } }
  t.strictSame(decide('nginx', hostMode, view({ 'docker.io': 'unreachable', 'docker.m.daocloud.io': 'unreachable' })), {
    action: 'keep',
    original: 'nginx',
    code: 'mirror-unreachable',
    reason: 'mirror docker.m.daocloud.io is unreachable (evidence for docker.m.daocloud.io)',
    registry: 'docker.io',
  })
  t.strictSame(
    decide('nginx', hostMode, view({ 'docker.io': 'unreachable', 'm.daocloud.io': 'unreachable' })),
    {
      action: 'rewrite',
      original: 'nginx',
      rewritten: 'docker.m.daocloud.io/library/nginx',
      registry: 'docker.io',
      reason: 'registry docker.io is unreachable (evidence for docker.io)',
    },
    'the mirror that matters is the target',
  )
})

t.test('an image the mirror refused is kept, by repository, in every mode', async (t) => {
  const v = view({ 'docker.io': 'unreachable' }, { 'm.daocloud.io/docker.io/acme/app': 'not in the mirror allowlist (pod shop/web)' })
  for (const mode of ['auto', 'unreachable', 'always'] as const) {
    t.strictSame(
      decide('acme/app:2', { mode }, v),
      {
        action: 'keep',
        original: 'acme/app:2',
        registry: 'docker.io',
        code: 'mirror-refused',
        reason: 'mirror refused m.daocloud.io/docker.io/acme/app (not in the mirror allowlist (pod shop/web))',
      },
      mode,
    )
  }
  t.strictSame(
    decide(`docker.io/acme/app@sha256:${'a'.repeat(64)}`, AUTO, v),
    {
      action: 'keep',
      original: `docker.io/acme/app@sha256:${'a'.repeat(64)}`,
      code: 'mirror-refused',
      reason: 'mirror refused m.daocloud.io/docker.io/acme/app (not in the mirror allowlist (pod shop/web))',
      registry: 'docker.io',
    },
    'whatever the tag or digest',
  )
  t.strictSame(
    decide('acme/other:2', AUTO, v),
    {
      action: 'rewrite',
      original: 'acme/other:2',
      rewritten: 'm.daocloud.io/docker.io/acme/other:2',
      registry: 'docker.io',
      reason: 'registry docker.io is unreachable (evidence for docker.io)',
    },
    'other repositories still go to the mirror',
  )
  const hosts = view({ 'docker.io': 'unreachable' }, { 'docker.m.daocloud.io/acme/app': 'HTTP 403 Forbidden' })
  t.strictSame(
    decide('acme/app:1', { ...AUTO, mirror: { hosts: { 'docker.io': 'docker.m.daocloud.io' } } }, hosts),
    {
      action: 'keep',
      original: 'acme/app:1',
      code: 'mirror-refused',
      reason: 'mirror refused docker.m.daocloud.io/acme/app (HTTP 403 Forbidden)',
      registry: 'docker.io',
    },
    'host mode',
  )
})

t.test('defaults: auto for the embedded config; DOCKER_PROXY_URL alone stays always for every registry', async (t) => {
  const embedded = resolveConfig(undefined, {})
  t.equal(embedded.mode, 'auto')
  t.strictSame(embedded.reachability, {
    enabled: true,
    unknown: 'mirror',
    ttlSeconds: 1800,
    refusalTtlSeconds: 21600,
    probes: {
      enabled: true,
      intervalSeconds: 60,
      timeoutSeconds: 5,
      jitter: 0.2,
      concurrency: 4,
      maxBackoffSeconds: 600,
      recheckSeconds: 5,
      failureThreshold: 2,
      successThreshold: 2,
    },
    learning: { enabled: true, namespaceSelector: 'mirrorhook.io/enabled=true', slowPullSeconds: 120, holdSeconds: 600 },
    persistence: { enabled: true, configMap: 'mirrorhook-reachability', syncSeconds: 15 },
  })
  const seed = resolveConfig(undefined, { DOCKER_PROXY_URL: 'm.daocloud.io' })
  t.equal(seed.mode, 'always')
  t.strictSame(seed.registries, ['*'])
  t.equal(resolveConfig({ mirror: { prefix: 'm.daocloud.io' } }, {}).mode, 'always', 'a file without mode keeps the schema default')
  t.equal(resolveConfig({ mode: 'auto' }, {}).mode, 'auto')
})

t.test('reachability settings are validated', async (t) => {
  const problems = (input: ConfigInput) => {
    try {
      resolveConfig(input, {})
      return []
    } catch (error) {
      return (error as ConfigError).problems
    }
  }
  t.strictSame(problems({ reachability: { unknown: 'maybe' as never } }), [
    'reachability.unknown: Invalid option: expected one of "mirror"|"direct"',
  ])
  t.strictSame(problems({ reachability: { ttlSeconds: 300, probes: { maxBackoffSeconds: 600 } } }), [
    'reachability.probes.maxBackoffSeconds: probes.maxBackoffSeconds must be below ttlSeconds, or a down registry would lapse to unknown between probes',
  ])
  t.strictSame(problems({ reachability: { probes: { concurrency: 0 } } }), [
    'reachability.probes.concurrency: Too small: expected number to be >=1',
  ])
  t.strictSame(problems({ reachability: { persistence: { configMap: 'Not_A_Name' } } }), [
    'reachability.persistence.configMap: must be a Kubernetes object name',
  ])
  t.strictSame(problems({ reachability: { probes: { interval: 5 } as never } }), ['reachability.probes.interval: unknown key'])
})
