// Compiling the policy: Docker Hub's aliases, Secret and registry names at the edges of their
// grammar, allowlist keys with trailing slashes and sources that only look like URLs, and the
// mirror hosts noProxy always excludes. Expected values are written out.
import t from 'tap'
import { type ConfigInput } from '../../server/config/config.js'
import { registryKey } from '../../server/core/policy.js'
import { compileConfig as compile, policyProblems as problems } from '../support/policy.js'

t.test("Docker Hub's three names are one registry", async (t) => {
  t.strictSame(
    ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'Registry-1.Docker.IO', 'INDEX.docker.io', 'hub.docker.io', 'Quay.io'].map(
      registryKey,
    ),
    ['docker.io', 'docker.io', 'docker.io', 'docker.io', 'docker.io', 'hub.docker.io', 'quay.io'],
  )
  t.strictSame([...compile({ registries: ['index.docker.io', 'registry-1.docker.io', 'quay.io'] }).registries], ['docker.io', 'quay.io'])
})

t.test('pull Secret names at the edges of the Kubernetes name grammar', async (t) => {
  const table: [string, boolean][] = [
    ['a', true],
    ['a.b', true],
    ['a.bcde', true],
    ['a-b.c-d.e', true],
    ['0.9', true],
    ['_abc', false],
    ['abc_', false],
    ['-abc', false],
    ['abc-', false],
    ['a..b', false],
    ['a.-b', false],
    ['A', false],
  ]
  for (const [name, ok] of table) {
    const input: ConfigInput = { mirror: { prefix: 'm.daocloud.io', pullSecrets: { 'm.daocloud.io': name } } }
    t.strictSame(problems(input), ok ? [] : [`mirror.pullSecrets.m.daocloud.io: "${name}" is not a Secret name`], name)
  }
})

t.test('registry names of one character, with ports and in brackets', async (t) => {
  t.strictSame(
    [...compile({ registries: ['q', 'q:5000', '[fd00::1]:5000', 'a-b.c'] }).registries],
    ['q', 'q:5000', '[fd00::1]:5000', 'a-b.c'],
  )
  t.strictSame(problems({ registries: ['q-', 'q:', '[fd00::1', 'q:123456'] }), [
    'registries[0]: "q-" is not a registry host',
    'registries[1]: "q:" is not a registry host',
    'registries[2]: "[fd00::1" is not a registry host',
    'registries[3]: "q:123456" is not a registry host',
  ])
})

t.test('allowlist keys lose trailing slashes; only a scheme at the start makes a URL', async (t) => {
  const policy = compile({
    mirror: {
      prefix: ['m.daocloud.io', 'harbor.corp.example/proxy'],
      allowlists: { 'm.daocloud.io//': '/etc/lists/http://x', 'harbor.corp.example/proxy/': 'https://lists.example' },
    },
  })
  t.strictSame(
    [...policy.allowlists],
    [
      ['m.daocloud.io', '/etc/lists/http://x'],
      ['harbor.corp.example/proxy', 'https://lists.example'],
    ],
  )
  t.strictSame(problems({ mirror: { prefix: 'm.daocloud.io', allowlists: { 'm.daocloud.io': 'xhttps://lists.example/a' } } }), [
    'mirror.allowlists.m.daocloud.io: "xhttps://lists.example/a" is neither a file path nor an https:// URL',
  ])
  t.strictSame(problems({ mirror: { prefix: 'm.daocloud.io', allowlists: { 'm.daocloud.io': 'HTTPS://lists.example/a' } } }), [])
})

t.test('noProxy always excludes every mirror host, named "mirror"', async (t) => {
  const policy = compile({
    registries: ['*'],
    noProxy: ['corp.example'],
    mirror: { prefix: 'harbor.corp2.example/proxy', hosts: { 'quay.io': 'q.mirror.example:5000' } },
  })
  t.strictSame(
    ['harbor.corp2.example', 'q.mirror.example:5000', 'q.mirror.example:5001', 'a.corp.example', 'quay.io'].map((h) =>
      policy.noProxy.match(h),
    ),
    [
      { excluded: true, entry: 'mirror' },
      { excluded: true, entry: 'mirror' },
      { excluded: false },
      { excluded: true, entry: 'corp.example' },
      { excluded: false },
    ],
  )
  t.strictSame(policy.noProxy.entries, ['corp.example'])
})

t.test("a prefix the kubelet would normalise (Docker Hub's library/) is not canonical", async (t) => {
  t.strictSame(problems({ mirror: { prefix: 'docker.io' } }), ['mirror.prefix: "docker.io" must be written in lowercase canonical form'])
  t.strictSame(problems({ mirror: { prefix: 'docker.io/mirror' } }), [])
})
