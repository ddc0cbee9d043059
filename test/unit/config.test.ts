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
  t.strictSame(c.mirror, { prefix: 'm.daocloud.io' })
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
  t.strictSame(c.excludedNamespaces, ['kube-system', 'mirrorhook'])
  t.strictSame(c.podOwners, ['ReplicaSet', 'StatefulSet', 'DaemonSet', 'Job'])
  t.equal(c.kubeFledged.namespace, 'kube-fledged')
  t.equal(c.imageCheckIntervalSeconds, 10)
})

t.test('the seed tool environment variables mean what they meant there', async (t) => {
  const alone = resolveConfig(undefined, { DOCKER_PROXY_URL: 'https://mirror.corp.example/' })
  t.equal(alone.mirror.prefix, 'mirror.corp.example', 'scheme and trailing slash stripped')
  t.strictSame(alone.registries, ['*'], 'every registry not excluded')
  t.equal(alone.mode, 'always')

  const all = resolveConfig(undefined, {
    DOCKER_PROXY_URL: 'm.daocloud.io',
    NO_PROXY_DOCKER_DOMAIN: 'harbor.corp, .internal ,10.0.0.0/8',
    KUBE_FLEDGED_NAMESPACE: 'fledged',
    IMAGE_CHECK_INTERVAL: '30',
    POD_NAMESPACE: 'infra',
  })
  t.strictSame(all.noProxy, ['harbor.corp', '.internal', '10.0.0.0/8'])
  t.equal(all.kubeFledged.namespace, 'fledged')
  t.equal(all.imageCheckIntervalSeconds, 30)
  t.strictSame(all.excludedNamespaces, ['kube-system', 'infra'], 'its own namespace is excluded')

  const withFile = resolveConfig(
    { mode: 'unreachable', registries: ['gcr.io'], noProxy: ['a.example'] },
    {
      DOCKER_PROXY_URL: 'mirror.example',
      NO_PROXY_DOCKER_DOMAIN: 'b.example',
    },
  )
  t.equal(withFile.mirror.prefix, 'mirror.example', 'the variable sets the prefix over a file')
  t.equal(withFile.mode, 'unreachable', 'but the file keeps its mode')
  t.strictSame(withFile.registries, ['gcr.io'], 'and its registries')
  t.strictSame(withFile.noProxy, ['a.example', 'b.example'], 'NO_PROXY_DOCKER_DOMAIN adds to noProxy')
})

t.test('an unknown key or a bad value names the key', async (t) => {
  t.strictSame(
    problemsOf(() => resolveConfig({ mirorr: {} })),
    ['mirorr: unknown key'],
  )
  t.strictSame(
    problemsOf(() => resolveConfig({ mirror: { prefix: 'm.daocloud.io', host: {} } })),
    ['mirror.host: unknown key'],
  )
  t.strictSame(
    problemsOf(() => resolveConfig({ mode: 'sometimes' })),
    ['mode: Invalid option: expected one of "always"|"unreachable"|"auto"'],
  )
  t.strictSame(
    problemsOf(() => resolveConfig({ registries: 'docker.io' })),
    ['registries: Invalid input: expected array, received string'],
  )
  t.strictSame(
    problemsOf(() => resolveConfig({ noProxy: ['ok', ''] })),
    ['noProxy[1]: must not be empty'],
  )
  t.strictSame(
    problemsOf(() => resolveConfig({ imageCheckIntervalSeconds: -1 })),
    ['imageCheckIntervalSeconds: Too small: expected number to be >0'],
  )
  t.strictSame(
    problemsOf(() => resolveConfig({ mirror: {} })),
    ['mirror: set mirror.prefix or mirror.hosts (or DOCKER_PROXY_URL)'],
  )
  t.strictSame(
    problemsOf(() => resolveConfig(undefined, { IMAGE_CHECK_INTERVAL: 'soon' })),
    ['IMAGE_CHECK_INTERVAL: expected a positive whole number of seconds, got "soon"'],
  )
  t.strictSame(
    problemsOf(() => resolveConfig(['a'])),
    ['the configuration must be a YAML mapping'],
  )
  const err = (() => {
    try {
      resolveConfig({ mode: 'x', extra: 1 }, {}, 'config.yaml')
    } catch (e) {
      return e as Error
    }
  })()
  t.type(err, ConfigError)
  t.equal(
    err?.message,
    'invalid configuration in config.yaml:\n  - mode: Invalid option: expected one of "always"|"unreachable"|"auto"\n  - extra: unknown key',
  )
})

t.test('semantic checks name the key', async (t) => {
  const compile = (input: object) => () => compilePolicy(resolveConfig(input, {}))
  t.strictSame(problemsOf(compile({ mirror: { prefix: 'mirror' } })), [
    'mirror.prefix: "mirror" must start with a registry host (a name with a dot or a port, or localhost)',
  ])
  t.strictSame(problemsOf(compile({ mirror: { prefix: 'Mirror.Example' } })), [
    'mirror.prefix: "Mirror.Example" must be written in lowercase canonical form',
  ])
  t.strictSame(problemsOf(compile({ mirror: { prefix: 'mirror.example/UP' } })), [
    'mirror.prefix: "mirror.example/UP" is not a valid registry/repository prefix (invalid reference format: repository name (UP/probe) must be lowercase)',
  ])
  t.strictSame(problemsOf(compile({ mirror: { hosts: { 'docker.io': 'not a host' } } })), [
    'mirror.hosts.docker.io: "not a host" is not a valid registry/repository prefix (invalid reference format)',
  ])
  t.strictSame(problemsOf(compile({ registries: ['docker.io', 'bad host'] })), ['registries[1]: "bad host" is not a registry host'])
  t.strictSame(problemsOf(compile({ unreachable: ['*'] })), ['unreachable[0]: "*" is not allowed; use mode: always'])
  t.strictSame(problemsOf(compile({ noProxy: ['10.0.0.0/99'] })), [
    'noProxy: invalid NO_PROXY entry "10.0.0.0/99": invalid CIDR prefix length',
  ])
  t.strictSame(problemsOf(compile({ mirror: { prefix: 'harbor.corp.example:8443/proxy' } })), [], 'a port and a path are fine in a prefix')
})

t.test('registry aliases fold into docker.io', async (t) => {
  const p = compilePolicy(resolveConfig({ registries: ['registry-1.docker.io', 'Index.Docker.io', 'GHCR.io'] }, {}))
  t.strictSame([...p.registries].sort(), ['docker.io', 'ghcr.io'])
})

t.test('remediation: on by default, evicting, with its caps; validated by key', async (t) => {
  const c = resolveConfig(undefined, {})
  t.strictSame(c.remediation, {
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
  t.strictSame(set.remediation.ownerKinds, ['ReplicaSet'])
  t.equal(set.remediation.perOwnerPerHour, 1)
  t.strictSame(
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
