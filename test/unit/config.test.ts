import t from 'tap'
import { ConfigError } from '../../server/core/config.js'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'

function problemsOf(fn: () => unknown): string[] {
  try {
    fn()
  } catch (error) {
    if (error instanceof ConfigError) return error.problems
    throw error
  }
  return []
}

t.test('embedded defaults: DaoCloud prefix, its registries, mode auto', async (t) => {
  const c = resolveConfig(undefined, {})
  t.same(c.mirror, { prefix: 'm.daocloud.io' })
  t.strictSame(c.registries, [
    'docker.elastic.co',
    'docker.io',
    'dhi.io',
    'gcr.io',
    'ghcr.io',
    'k8s.gcr.io',
    'registry.k8s.io',
    'mcr.microsoft.com',
    'nvcr.io',
    'quay.io',
    'registry.ollama.ai',
  ])
  t.equal(c.mode, 'auto')
  t.same(c.excludedNamespaces, ['kube-system', 'mirrorhook'])
  t.same(c.podOwners, ['ReplicaSet', 'StatefulSet', 'DaemonSet', 'Job'])
  t.equal(c.kubeFledged.namespace, 'kube-fledged')
  t.equal(c.imageCheckIntervalSeconds, 10)
})

t.test('the seed tool environment variables mean what they meant there', async (t) => {
  const alone = resolveConfig(undefined, { DOCKER_PROXY_URL: 'https://mirror.corp.example/' })
  t.equal(alone.mirror.prefix, 'mirror.corp.example', 'scheme and trailing slash stripped')
  t.same(alone.registries, ['*'], 'every registry not excluded')
  t.equal(alone.mode, 'always')

  const all = resolveConfig(undefined, {
    DOCKER_PROXY_URL: 'm.daocloud.io',
    NO_PROXY_DOCKER_DOMAIN: 'harbor.corp, .internal ,10.0.0.0/8',
    KUBE_FLEDGED_NAMESPACE: 'fledged',
    IMAGE_CHECK_INTERVAL: '30',
    POD_NAMESPACE: 'infra',
  })
  t.same(all.noProxy, ['harbor.corp', '.internal', '10.0.0.0/8'])
  t.equal(all.kubeFledged.namespace, 'fledged')
  t.equal(all.imageCheckIntervalSeconds, 30)
  t.same(all.excludedNamespaces, ['kube-system', 'infra'], 'its own namespace is excluded')

  const withFile = resolveConfig(
    { mode: 'unreachable', registries: ['gcr.io'], noProxy: ['a.example'] },
    {
      DOCKER_PROXY_URL: 'mirror.example',
      NO_PROXY_DOCKER_DOMAIN: 'b.example',
    },
  )
  t.equal(withFile.mirror.prefix, 'mirror.example', 'the variable sets the prefix over a file')
  t.equal(withFile.mode, 'unreachable', 'but the file keeps its mode')
  t.same(withFile.registries, ['gcr.io'], 'and its registries')
  t.same(withFile.noProxy, ['a.example', 'b.example'], 'NO_PROXY_DOCKER_DOMAIN adds to noProxy')
})

t.test('an unknown key or a bad value names the key', async (t) => {
  t.match(
    problemsOf(() => resolveConfig({ mirorr: {} })),
    [/^mirorr: unknown key/],
  )
  t.match(
    problemsOf(() => resolveConfig({ mirror: { prefix: 'm.daocloud.io', host: {} } })),
    [/^mirror\.host: unknown key/],
  )
  t.match(
    problemsOf(() => resolveConfig({ mode: 'sometimes' })),
    [/^mode: /],
  )
  t.match(
    problemsOf(() => resolveConfig({ registries: 'docker.io' })),
    [/^registries: /],
  )
  t.match(
    problemsOf(() => resolveConfig({ noProxy: ['ok', ''] })),
    [/^noProxy\[1\]: /],
  )
  t.match(
    problemsOf(() => resolveConfig({ imageCheckIntervalSeconds: -1 })),
    [/^imageCheckIntervalSeconds: /],
  )
  t.match(
    problemsOf(() => resolveConfig({ mirror: {} })),
    [/^mirror: set mirror\.prefix or mirror\.hosts/],
  )
  t.match(
    problemsOf(() => resolveConfig(undefined, { IMAGE_CHECK_INTERVAL: 'soon' })),
    [/^IMAGE_CHECK_INTERVAL: /],
  )
  t.match(
    problemsOf(() => resolveConfig(['a'])),
    [/YAML mapping/],
  )
  const err = (() => {
    try {
      resolveConfig({ mode: 'x', extra: 1 }, {}, 'config.yaml')
    } catch (e) {
      return e as Error
    }
  })()
  t.match(err?.message, /invalid configuration in config\.yaml/)
  t.match(err?.message, /extra: unknown key/)
  t.match(err?.message, /mode: /)
})

t.test('semantic checks name the key', async (t) => {
  const compile = (input: object) => () => compilePolicy(resolveConfig(input, {}))
  t.match(problemsOf(compile({ mirror: { prefix: 'mirror' } })), [/^mirror\.prefix: .*registry host/])
  t.match(problemsOf(compile({ mirror: { prefix: 'Mirror.Example' } })), [/^mirror\.prefix: /])
  t.match(problemsOf(compile({ mirror: { prefix: 'mirror.example/UP' } })), [/^mirror\.prefix: /])
  t.match(problemsOf(compile({ mirror: { hosts: { 'docker.io': 'not a host' } } })), [/^mirror\.hosts\.docker\.io: /])
  t.match(problemsOf(compile({ registries: ['docker.io', 'bad host'] })), [/^registries\[1\]: /])
  t.match(problemsOf(compile({ unreachable: ['*'] })), [/^unreachable\[0\]: /])
  t.match(problemsOf(compile({ noProxy: ['10.0.0.0/99'] })), [/^noProxy: .*10\.0\.0\.0\/99/])
  t.same(problemsOf(compile({ mirror: { prefix: 'harbor.corp.example:8443/proxy' } })), [], 'a port and a path are fine in a prefix')
})

t.test('registry aliases fold into docker.io', async (t) => {
  const p = compilePolicy(resolveConfig({ registries: ['registry-1.docker.io', 'Index.Docker.io', 'GHCR.io'] }, {}))
  t.same([...p.registries].sort(), ['docker.io', 'ghcr.io'])
})

t.test('remediation: on by default, evicting, with its caps; validated by key', async (t) => {
  const c = resolveConfig(undefined, {})
  t.same(c.remediation, {
    enabled: true,
    method: 'evict',
    barePods: 'leave',
    minFailingSeconds: 30,
    perOwnerPerHour: 5,
    writesPerSecond: 2,
    writeBurst: 5,
    lease: 'mirrorhook-remediation',
    leaseDurationSeconds: 15,
    recent: 100,
  })
  const set = resolveConfig({ remediation: { method: 'patch', barePods: 'patch', ownerKinds: ['ReplicaSet'], perOwnerPerHour: 1 } })
  t.equal(set.remediation.method, 'patch')
  t.equal(set.remediation.barePods, 'patch')
  t.same(set.remediation.ownerKinds, ['ReplicaSet'])
  t.equal(set.remediation.perOwnerPerHour, 1)
  t.same(
    problemsOf(() => resolveConfig({ remediation: { method: 'delete', perOwnerPerHour: 0, lease: 'Not_A_Name', extra: 1 } })),
    [
      'remediation.method: Invalid option: expected one of "evict"|"patch"',
      'remediation.perOwnerPerHour: Too small: expected number to be >0',
      'remediation.lease: must be a Lease name',
      'remediation.extra: unknown key',
    ],
  )
  t.equal(resolveConfig(undefined, { IMAGE_CHECK_INTERVAL: '2' }).imageCheckIntervalSeconds, 2, 'the re-check period')
})
