// The core's configuration keys at their edges: every default, trimming, empty values, bounds,
// unknown keys, problem texts, the DOCKER_PROXY_URL and NO_PROXY_DOCKER_DOMAIN forms, and mirror
// pull Secrets keyed by something other than a mirror's host. Expected values are written out.
import t from 'tap'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { ConfigError, describeIssue, normaliseMirrorPrefix, splitList } from '../../server/core/config.js'
import { compilePolicy } from '../../server/core/policy.js'

function problems(input: unknown): string[] {
  try {
    compilePolicy(resolveConfig(input, {}))
  } catch (e) {
    if (e instanceof ConfigError) return e.problems
    throw e
  }
  return []
}

t.test('an empty file gets every default of the core keys', async (t) => {
  const c = resolveConfig({}, {})
  t.strictSame(
    {
      mirror: c.mirror,
      registries: c.registries,
      noProxy: c.noProxy,
      mode: c.mode,
      unreachable: c.unreachable,
      podOwners: c.podOwners,
      excludedNamespaces: c.excludedNamespaces,
      imageCheckIntervalSeconds: c.imageCheckIntervalSeconds,
      pull: c.pull,
    },
    {
      mirror: { prefix: 'm.daocloud.io' },
      registries: [
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
      ],
      noProxy: [],
      mode: 'always',
      unreachable: [],
      podOwners: ['ReplicaSet', 'StatefulSet', 'DaemonSet', 'Job'],
      excludedNamespaces: ['kube-system', 'mirrorhook'],
      imageCheckIntervalSeconds: 10,
      pull: { mutableTags: 'mirror', privateImages: 'keep', kubeFledgedBusybox: 'docker.io/library/busybox', secretResyncSeconds: 60 },
    },
  )
})

t.test('every string value and record key is trimmed', async (t) => {
  const c = resolveConfig(
    {
      mirror: {
        prefix: ' a.example ',
        hosts: { ' quay.io ': ' q.a.example ' },
        pullSecrets: { ' a.example ': ' s ' },
        allowlists: { ' a.example ': ' /x ' },
      },
      registries: [' quay.io '],
      noProxy: [' x.example '],
      unreachable: [' u.example '],
      podOwners: [' Job '],
      excludedNamespaces: [' ns '],
      pull: { kubeFledgedBusybox: ' bb ' },
    },
    {},
  )
  t.strictSame(c.mirror, {
    prefix: 'a.example',
    hosts: { 'quay.io': 'q.a.example' },
    allowlists: { 'a.example': '/x' },
    pullSecrets: { 'a.example': 's' },
  })
  t.strictSame(
    [c.registries, c.noProxy, c.unreachable, c.podOwners, c.excludedNamespaces, c.pull.kubeFledgedBusybox],
    [['quay.io'], ['x.example'], ['u.example'], ['Job'], ['ns'], 'bb'],
  )
  t.strictSame(resolveConfig({ mirror: { prefix: [' a.example ', 'b.example '] } }, {}).mirror, { prefix: ['a.example', 'b.example'] })
  t.strictSame(resolveConfig({ mirror: { prefix: 'a.example', hosts: { 'quay.io': [' q.a.example', 'q.b.example '] } } }, {}).mirror, {
    prefix: 'a.example',
    hosts: { 'quay.io': ['q.a.example', 'q.b.example'] },
  })
  t.equal(resolveConfig({ pull: { kubeFledgedBusybox: '' } }, {}).pull.kubeFledgedBusybox, '', 'empty leaves the busybox image as it is')
})

t.test('empty values, bounds and unknown keys, each problem written out', async (t) => {
  const table: [unknown, string[]][] = [
    [{ mirror: { prefix: '' } }, ['mirror.prefix: Too small: expected string to have >=1 characters']],
    [{ mirror: { prefix: ' ' } }, ['mirror.prefix: Too small: expected string to have >=1 characters']],
    [{ mirror: { prefix: [''] } }, ['mirror.prefix[0]: must not be empty']],
    [{ mirror: { prefix: ['a.example', ' '] } }, ['mirror.prefix[1]: must not be empty']],
    [{ mirror: { prefix: [] } }, ['mirror.prefix: must not be empty']],
    [{ mirror: { prefix: 'a.example', hosts: { 'quay.io': [] } } }, ['mirror.hosts.quay.io: must not be empty']],
    [{ mirror: { prefix: 'a.example', hosts: { 'quay.io': [' '] } } }, ['mirror.hosts.quay.io[0]: must not be empty']],
    [
      { mirror: { prefix: 'a.example', hosts: { 'quay.io': ' ' } } },
      ['mirror.hosts.quay.io: Too small: expected string to have >=1 characters'],
    ],
    [{ mirror: { prefix: 'a.example', hosts: { ' ': 'q.a.example' } } }, ['mirror.hosts. : Invalid key in record']],
    [{ mirror: { prefix: 'a.example', allowlists: { ' ': '/x' } } }, ['mirror.allowlists. : Invalid key in record']],
    [
      { mirror: { prefix: 'a.example', allowlists: { 'a.example': ' ' } } },
      ['mirror.allowlists.a.example: Too small: expected string to have >=1 characters'],
    ],
    [{ mirror: { prefix: 'a.example', pullSecrets: { ' ': 's' } } }, ['mirror.pullSecrets. : Invalid key in record']],
    [
      { mirror: { prefix: 'a.example', pullSecrets: { 'a.example': '' } } },
      ['mirror.pullSecrets.a.example: Too small: expected string to have >=1 characters'],
    ],
    [{ mirror: { prefix: 'a.example', extra: 1 } }, ['mirror.extra: unknown key']],
    [{ registries: [' '] }, ['registries[0]: must not be empty']],
    [{ noProxy: ['x.example', ''] }, ['noProxy[1]: must not be empty']],
    [{ unreachable: [''] }, ['unreachable[0]: must not be empty']],
    [{ podOwners: [' '] }, ['podOwners[0]: Too small: expected string to have >=1 characters']],
    [{ excludedNamespaces: ['ns', ''] }, ['excludedNamespaces[1]: Too small: expected string to have >=1 characters']],
    [{ mode: 'sometimes' }, ['mode: Invalid option: expected one of "always"|"unreachable"|"auto"']],
    [{ imageCheckIntervalSeconds: 0 }, ['imageCheckIntervalSeconds: Too small: expected number to be >0']],
    [{ imageCheckIntervalSeconds: 86401 }, ['imageCheckIntervalSeconds: Too big: expected number to be <=86400']],
    [{ imageCheckIntervalSeconds: 1.5 }, ['imageCheckIntervalSeconds: Invalid input: expected int, received number']],
    [{ pull: { secretResyncSeconds: 0 } }, ['pull.secretResyncSeconds: Too small: expected number to be >0']],
    [{ pull: { secretResyncSeconds: 86401 } }, ['pull.secretResyncSeconds: Too big: expected number to be <=86400']],
    [{ pull: { secretResyncSeconds: 2.5 } }, ['pull.secretResyncSeconds: Invalid input: expected int, received number']],
    [{ pull: { mutableTags: 'pin' } }, ['pull.mutableTags: Invalid option: expected one of "mirror"|"keep"']],
    [{ pull: { privateImages: 'drop' } }, ['pull.privateImages: Invalid option: expected one of "keep"|"mirror"']],
    [{ pull: { kubeFledgedBusybox: 1 } }, ['pull.kubeFledgedBusybox: Invalid input: expected string, received number']],
    [{ pull: { other: true } }, ['pull.other: unknown key']],
  ]
  for (const [input, expected] of table) t.strictSame(problems(input), expected, JSON.stringify(input))
  // The upper bounds themselves are accepted.
  const c = resolveConfig({ imageCheckIntervalSeconds: 86400, pull: { secretResyncSeconds: 86400 } }, {})
  t.strictSame([c.imageCheckIntervalSeconds, c.pull.secretResyncSeconds], [86400, 86400])
  const d = resolveConfig(
    { imageCheckIntervalSeconds: 1, pull: { secretResyncSeconds: 1, mutableTags: 'keep', privateImages: 'mirror' } },
    {},
  )
  t.strictSame(
    [d.imageCheckIntervalSeconds, d.pull],
    [1, { mutableTags: 'keep', privateImages: 'mirror', kubeFledgedBusybox: 'docker.io/library/busybox', secretResyncSeconds: 1 }],
  )
})

t.test('a pull Secret keyed by anything but a configured mirror host is a configuration error naming the key', async (t) => {
  const table: [ConfigInput, string[]][] = [
    [
      { mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { '*': 'harbor-pull' } } },
      ['mirror.pullSecrets.*: a pull Secret is for one mirror host, not "*"'],
    ],
    [
      { mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { 'docker.io': 'hub-pull' } } },
      ['mirror.pullSecrets.docker.io: no mirror is on this host'],
    ],
    [
      { mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { 'other.corp.example': 'p' } } },
      ['mirror.pullSecrets.other.corp.example: no mirror is on this host'],
    ],
    [
      { mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { 'harbor.corp.example/proxy': 'p' } } },
      ['mirror.pullSecrets.harbor.corp.example/proxy: "harbor.corp.example/proxy" is not a registry host'],
    ],
    [
      { mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { '*': 'Bad_Name' } } },
      ['mirror.pullSecrets.*: a pull Secret is for one mirror host, not "*"', 'mirror.pullSecrets.*: "Bad_Name" is not a Secret name'],
    ],
    [{ mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { 'harbor.corp.example': 'harbor-pull' } } }, []],
    [{ mirror: { prefix: 'harbor.corp.example:8443/proxy', pullSecrets: { 'harbor.corp.example:8443': 'harbor-pull' } } }, []],
    [
      { mirror: { prefix: 'harbor.corp.example:8443/proxy', pullSecrets: { 'harbor.corp.example': 'harbor-pull' } } },
      ['mirror.pullSecrets.harbor.corp.example: no mirror is on this host'],
    ],
  ]
  for (const [input, expected] of table) t.strictSame(problems(input), expected, JSON.stringify(input))
  t.equal(compilePolicy(resolveConfig(table[5]![0], {})).mirrors[0]?.pullSecret, 'harbor-pull')
})

t.test('ConfigError lists every problem on its own line, naming the source when known', async (t) => {
  const named = new ConfigError(['a: x', 'b: y'], '/etc/mirrorhook/config.yaml')
  t.equal(named.message, 'invalid configuration in /etc/mirrorhook/config.yaml:\n  - a: x\n  - b: y')
  t.equal(named.name, 'ConfigError')
  t.strictSame(named.problems, ['a: x', 'b: y'])
  t.equal(new ConfigError(['only']).message, 'invalid configuration:\n  - only')
  t.equal(new ConfigError(['only'], '').message, 'invalid configuration:\n  - only')
  t.test('resolveConfig names the source', async (t) => {
    let thrown: unknown
    try {
      resolveConfig({ mode: 'x' }, {}, 'cfg.yaml')
    } catch (error) {
      thrown = error
    }
    t.type(thrown, ConfigError)
    t.equal(
      (thrown as Error).message,
      'invalid configuration in cfg.yaml:\n  - mode: Invalid option: expected one of "always"|"unreachable"|"auto"',
    )
  })
})

t.test('describeIssue names the key path, array indexes in brackets, and the top level', async (t) => {
  t.strictSame(describeIssue({ code: 'custom', path: [], message: 'bad', input: 1 }), ['(top level): bad'])
  t.strictSame(describeIssue({ code: 'custom', path: ['a', 0, 'b', 12], message: 'bad', input: 1 }), ['a[0].b[12]: bad'])
  t.strictSame(describeIssue({ code: 'custom', path: [3, 'x'], message: 'm', input: 1 }), ['[3].x: m'])
  t.strictSame(describeIssue({ code: 'unrecognized_keys', path: ['pull'], keys: ['x', 'y'], message: 'm', input: {} }), [
    'pull.x: unknown key',
    'pull.y: unknown key',
  ])
  t.strictSame(describeIssue({ code: 'unrecognized_keys', path: [], keys: ['z'], message: 'm', input: {} }), ['z: unknown key'])
})

t.test('normaliseMirrorPrefix strips a leading scheme and trailing slashes only', async (t) => {
  const table: [string, string][] = [
    ['https://mirror.corp.example/', 'mirror.corp.example'],
    ['HTTP://mirror.corp.example//', 'mirror.corp.example'],
    [' oci+https://harbor.corp.example/proxy/ ', 'harbor.corp.example/proxy'],
    ['harbor.corp.example/proxy', 'harbor.corp.example/proxy'],
    ['harbor.corp.example/a/b/', 'harbor.corp.example/a/b'],
    ['a.example/b://c', 'a.example/b://c'],
    ['1http://a.example', '1http://a.example'],
    ['  m.daocloud.io  ', 'm.daocloud.io'],
  ]
  for (const [input, expected] of table) t.equal(normaliseMirrorPrefix(input), expected, JSON.stringify(input))
})

t.test('splitList splits on commas and whitespace and drops empty pieces', async (t) => {
  const table: [string, string[]][] = [
    ['a.example,b.example', ['a.example', 'b.example']],
    [' a.example , b.example\tc.example\n', ['a.example', 'b.example', 'c.example']],
    [',,a.example,,', ['a.example']],
    ['', []],
    [' , ', []],
  ]
  for (const [input, expected] of table) t.strictSame(splitList(input), expected, JSON.stringify(input))
})

t.test('the seed tool variables go through the same normalisation', async (t) => {
  const c = resolveConfig(undefined, {
    DOCKER_PROXY_URL: ' https://Mirror.Corp.Example// ',
    NO_PROXY_DOCKER_DOMAIN: ' a.example ,,b.example ',
  })
  t.strictSame(
    [c.mirror, c.noProxy, c.registries, c.mode],
    [{ prefix: 'Mirror.Corp.Example' }, ['a.example', 'b.example'], ['*'], 'always'],
  )
})
