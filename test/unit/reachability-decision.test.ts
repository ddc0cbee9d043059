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
  t.hasStrict(decide('nginx:1.25', AUTO, v), {
    action: 'rewrite',
    rewritten: 'm.daocloud.io/docker.io/library/nginx:1.25',
    reason: 'registry docker.io is unreachable (evidence for docker.io)',
  })
  t.hasStrict(decide('ghcr.io/a/b:1', AUTO, v), { action: 'rewrite', reason: 'registry ghcr.io is slow (evidence for ghcr.io)' })
  t.hasStrict(decide('quay.io/a/b:1', AUTO, v), {
    action: 'keep',
    code: 'reachable',
    reason: 'registry quay.io is reachable (evidence for quay.io)',
  })
})

t.test('auto: unknown follows reachability.unknown, and says so', async (t) => {
  const v = view({})
  t.match(decide('gcr.io/a/b:1', AUTO, v), {
    action: 'rewrite',
    reason: /is unknown \(evidence for gcr\.io\); reachability\.unknown is mirror$/,
  })
  t.match(decide('gcr.io/a/b:1', { ...AUTO, reachability: { unknown: 'direct' } }, v), {
    action: 'keep',
    code: 'reachable',
    reason: /is unknown \(evidence for gcr\.io\); reachability\.unknown is direct$/,
  })
})

t.test('unreachable mode: only unreachable rewrites, slow and unknown do not', async (t) => {
  const v = view({ 'docker.io': 'unreachable', 'ghcr.io': 'slow' })
  const input: ConfigInput = { mode: 'unreachable' }
  t.hasStrict(decide('nginx', input, v), { action: 'rewrite' })
  t.match(decide('ghcr.io/a/b', input, v), { action: 'keep', reason: /is slow/ })
  t.match(decide('quay.io/a/b', input, v), { action: 'keep', reason: /is unknown/ })
})

t.test('a mirror that is down gets nothing, except in mode always', async (t) => {
  const v = view({ 'docker.io': 'unreachable', 'm.daocloud.io': 'unreachable' })
  t.hasStrict(decide('nginx', AUTO, v), {
    action: 'keep',
    code: 'mirror-unreachable',
    reason: 'mirror m.daocloud.io is unreachable (evidence for m.daocloud.io)',
  })
  t.hasStrict(decide('nginx', { mode: 'unreachable' }, v), { action: 'keep', code: 'mirror-unreachable' })
  t.hasStrict(decide('nginx', { mode: 'always' }, v), { action: 'rewrite', reason: 'mode always' }, 'always means always')
  const hostMode: ConfigInput = { ...AUTO, mirror: { hosts: { 'docker.io': 'docker.m.daocloud.io' } } }
  t.hasStrict(decide('nginx', hostMode, view({ 'docker.io': 'unreachable', 'docker.m.daocloud.io': 'unreachable' })), {
    code: 'mirror-unreachable',
  })
  t.hasStrict(
    decide('nginx', hostMode, view({ 'docker.io': 'unreachable', 'm.daocloud.io': 'unreachable' })),
    { action: 'rewrite' },
    'the mirror that matters is the target',
  )
})

t.test('an image the mirror refused is kept, by repository, in every mode', async (t) => {
  const v = view({ 'docker.io': 'unreachable' }, { 'm.daocloud.io/docker.io/acme/app': 'not in the mirror allowlist (pod shop/web)' })
  for (const mode of ['auto', 'unreachable', 'always'] as const) {
    t.hasStrict(
      decide('acme/app:2', { mode }, v),
      {
        action: 'keep',
        code: 'mirror-refused',
        reason: 'mirror refused m.daocloud.io/docker.io/acme/app (not in the mirror allowlist (pod shop/web))',
      },
      mode,
    )
  }
  t.hasStrict(decide(`docker.io/acme/app@sha256:${'a'.repeat(64)}`, AUTO, v), { code: 'mirror-refused' }, 'whatever the tag or digest')
  t.hasStrict(decide('acme/other:2', AUTO, v), { action: 'rewrite' }, 'other repositories still go to the mirror')
  const hosts = view({ 'docker.io': 'unreachable' }, { 'docker.m.daocloud.io/acme/app': 'HTTP 403 Forbidden' })
  t.hasStrict(
    decide('acme/app:1', { ...AUTO, mirror: { hosts: { 'docker.io': 'docker.m.daocloud.io' } } }, hosts),
    { code: 'mirror-refused' },
    'host mode',
  )
})

t.test('defaults: auto for the embedded config; DOCKER_PROXY_URL alone stays always for every registry', async (t) => {
  const embedded = resolveConfig(undefined, {})
  t.equal(embedded.mode, 'auto')
  t.hasStrict(embedded.reachability, {
    enabled: true,
    unknown: 'mirror',
    ttlSeconds: 1800,
    probes: { enabled: true, intervalSeconds: 60, timeoutSeconds: 5, concurrency: 4, failureThreshold: 2, successThreshold: 2 },
    learning: { enabled: true, namespaceSelector: 'mirrorhook.io/enabled=true', slowPullSeconds: 120, holdSeconds: 600 },
    persistence: { enabled: true, configMap: 'mirrorhook-reachability', syncSeconds: 15 },
  })
  const seed = resolveConfig(undefined, { DOCKER_PROXY_URL: 'm.daocloud.io' })
  t.equal(seed.mode, 'always')
  t.same(seed.registries, ['*'])
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
  t.match(problems({ reachability: { unknown: 'maybe' as never } }), [/^reachability\.unknown: /])
  t.match(problems({ reachability: { ttlSeconds: 300, probes: { maxBackoffSeconds: 600 } } }), [
    /^reachability\.probes\.maxBackoffSeconds: .*below ttlSeconds/,
  ])
  t.match(problems({ reachability: { probes: { concurrency: 0 } } }), [/^reachability\.probes\.concurrency: /])
  t.match(problems({ reachability: { persistence: { configMap: 'Not_A_Name' } } }), [
    /^reachability\.persistence\.configMap: must be a Kubernetes object name/,
  ])
  t.match(problems({ reachability: { probes: { interval: 5 } as never } }), [/^reachability\.probes\.interval: unknown key/])
})
