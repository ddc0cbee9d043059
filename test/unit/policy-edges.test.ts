// Compiling the policy at its edges: each problem's exact message, trailing slashes, several
// mirrors on one host, allowlist sources by prefix and by host, pull Secret names at their
// length limit, registry names, Docker Hub's aliases and metric labels. Expected values are
// written out.
import t from 'tap'
import { type ConfigInput } from '../../server/config/config.js'
import { registryKey, registryMetricLabel } from '../../server/core/policy.js'
import { compileConfig as compile, policyProblems as problems } from '../support/policy.js'

t.test('each configuration problem, written out', async (t) => {
  const table: [unknown, string[]][] = [
    [
      { mirror: { prefix: 'Harbor.corp.example/proxy' } },
      ['mirror.prefix: "Harbor.corp.example/proxy" must be written in lowercase canonical form'],
    ],
    [
      { mirror: { prefix: 'mirror/docker.io' } },
      ['mirror.prefix: "mirror/docker.io" must start with a registry host (a name with a dot or a port, or localhost)'],
    ],
    [
      { mirror: { prefix: 'harbor.corp.example/Bad Path' } },
      [
        'mirror.prefix: "harbor.corp.example/Bad Path" is not a valid registry/repository prefix (invalid reference format: repository name (Bad Path/probe) must be lowercase)',
      ],
    ],
    [{ mirror: { prefix: ['m.daocloud.io', 'm.daocloud.io/'] } }, ['mirror.prefix[1]: "m.daocloud.io/" is listed twice']],
    [
      { mirror: { prefix: 'm.daocloud.io', hosts: { '*': 'quay.m.daocloud.io' } } },
      ['mirror.hosts.*: a host-mode mirror needs a source registry, not "*"'],
    ],
    [
      { mirror: { prefix: 'm.daocloud.io', hosts: { 'bad host!': 'quay.m.daocloud.io' } } },
      ['mirror.hosts.bad host!: "bad host!" is not a registry host'],
    ],
    [
      { mirror: { prefix: 'm.daocloud.io', pullSecrets: { 'm.daocloud.io': 'a'.repeat(254) } } },
      [`mirror.pullSecrets.m.daocloud.io: "${'a'.repeat(254)}" is not a Secret name`],
    ],
    [
      { mirror: { prefix: 'm.daocloud.io', allowlists: { 'other.example': '/x' } } },
      ["mirror.allowlists.other.example: not a configured mirror (a mirror's host or repository prefix)"],
    ],
    [
      { mirror: { prefix: 'm.daocloud.io', allowlists: { 'm.daocloud.io': 'http://lists.example/a' } } },
      ['mirror.allowlists.m.daocloud.io: "http://lists.example/a" is neither a file path nor an https:// URL'],
    ],
    [
      { mirror: { prefix: 'm.daocloud.io', allowlists: { 'm.daocloud.io': 'https://' } } },
      ['mirror.allowlists.m.daocloud.io: "https://" is neither a file path nor an https:// URL'],
    ],
    [
      { mirror: { prefix: 'm.daocloud.io', allowlists: { 'm.daocloud.io': 'https://lists.example/a b' } } },
      ['mirror.allowlists.m.daocloud.io: "https://lists.example/a b" is neither a file path nor an https:// URL'],
    ],
    [{ unreachable: ['*'] }, ['unreachable[0]: "*" is not allowed; use mode: always']],
    [{ unreachable: ['ok.example', 'no way'] }, ['unreachable[1]: "no way" is not a registry host']],
    [
      { registries: ['quay.io', 'Bad Host', '[::1]:5000', 'h:123456', '-x.example'] },
      [
        'registries[1]: "Bad Host" is not a registry host',
        'registries[3]: "h:123456" is not a registry host',
        'registries[4]: "-x.example" is not a registry host',
      ],
    ],
  ]
  for (const [input, expected] of table) t.strictSame(problems(input as ConfigInput), expected, JSON.stringify(input))
})

t.test('targets: trailing slashes dropped, one object per prefix, hosts in order', async (t) => {
  t.strictSame(compile({ mirror: { prefix: 'harbor.corp.example/proxy//' } }).prefix, [
    { repoPrefix: 'harbor.corp.example/proxy', domain: 'harbor.corp.example' },
  ])
  const p = compile({
    mirror: { prefix: 'm.daocloud.io', hosts: { 'Quay.IO': ['quay.m.daocloud.io', 'm.daocloud.io/quay', 'm.daocloud.io'] } },
  })
  t.strictSame(
    [...p.hosts].map(([src, list]) => [src, list.map((m) => m.repoPrefix)]),
    [['quay.io', ['quay.m.daocloud.io', 'm.daocloud.io/quay', 'm.daocloud.io']]],
  )
  t.equal(p.hosts.get('quay.io')![2], p.prefix[0], 'the same prefix in two lists is one target')
  t.strictSame(
    p.mirrors.map((m) => m.repoPrefix),
    ['m.daocloud.io', 'quay.m.daocloud.io', 'm.daocloud.io/quay'],
  )
})

t.test('allowlists: by repository prefix before host; https URLs in any case; other paths as files', async (t) => {
  const p = compile({
    mirror: {
      prefix: ['h.example/a', 'h.example/b', 'other.example'],
      allowlists: { 'h.example': '/lists/h.txt', 'h.example/b/': 'https://lists.example/b.txt' },
    },
  })
  t.strictSame(
    [...p.allowlists],
    [
      ['h.example/a', '/lists/h.txt'],
      ['h.example/b', 'https://lists.example/b.txt'],
    ],
  )
  const upper = compile({ mirror: { prefix: 'm.daocloud.io', allowlists: { 'm.daocloud.io': 'HTTPS://lists.example/a' } } })
  t.strictSame([...upper.allowlists], [['m.daocloud.io', 'HTTPS://lists.example/a']])
  const file = compile({ mirror: { prefix: 'm.daocloud.io', allowlists: { 'm.daocloud.io': 'lists/a.txt' } } })
  t.strictSame([...file.allowlists], [['m.daocloud.io', 'lists/a.txt']])
})

t.test('pull Secrets: by host whatever its case, 253 characters at most', async (t) => {
  const long = 'a'.repeat(253)
  t.strictSame(compile({ mirror: { prefix: 'm.daocloud.io', pullSecrets: { 'M.DaoCloud.io': long } } }).prefix, [
    { repoPrefix: 'm.daocloud.io', domain: 'm.daocloud.io', pullSecret: long },
  ])
  t.strictSame(compile({ mirror: { prefix: 'm.daocloud.io', pullSecrets: { 'm.daocloud.io': 'a.b-c' } } }).mirrors[0]?.pullSecret, 'a.b-c')
})

t.test('Docker Hub aliases and metric labels', async (t) => {
  t.strictSame(['Index.Docker.IO', 'registry-1.docker.io', 'docker.io', 'docker.com', 'Quay.IO'].map(registryKey), [
    'docker.io',
    'docker.io',
    'docker.io',
    'docker.com',
    'quay.io',
  ])
  const p = compile({
    registries: ['quay.io'],
    unreachable: ['ghcr.io'],
    mirror: { prefix: 'm.daocloud.io', hosts: { 'gcr.io': 'gcr.m.daocloud.io' } },
  })
  t.strictSame(
    ['quay.io', 'ghcr.io', 'gcr.io', 'm.daocloud.io', 'gcr.m.daocloud.io', 'evil.example', 'docker.io'].map((r) =>
      registryMetricLabel(p, r),
    ),
    ['quay.io', 'ghcr.io', 'gcr.io', 'm.daocloud.io', 'gcr.m.daocloud.io', 'other', 'other'],
  )
  t.equal(compile({ registries: ['*'] }).anyRegistry, true)
  t.equal(compile({ registries: ['quay.io'] }).anyRegistry, false)
})
