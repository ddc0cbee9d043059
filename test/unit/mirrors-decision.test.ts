// Several mirrors per registry: the decision takes the first mirror that is up, serves the
// repository (its allowlist, its learned refusals) and has the credentials the image needs;
// the reason says which mirror was chosen and why the others were not.
import t from 'tap'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { type AllowlistLookup, type LoadedAllowlist, parseAllowlist, withAllowlists } from '../../server/core/allowlist.js'
import { ConfigError } from '../../server/core/config.js'
import { compilePolicy, type Policy } from '../../server/core/policy.js'
import { decideImage, type ImageDecision, type ReachabilityView, type RegistryState } from '../../server/core/rewrite.js'

const A = 'm.daocloud.io'
const B = 'harbor.corp.example/proxy'
const TWO: ConfigInput = { mode: 'auto', mirror: { prefix: [A, B] } }

function view(states: Record<string, RegistryState>, refused: Record<string, string> = {}): ReachabilityView {
  return {
    status: (registry) => ({ state: states[registry] ?? 'unknown', evidence: `evidence for ${registry}` }),
    mirrorRefusal: (repository) => refused[repository],
  }
}

function lookup(lists: Record<string, string>, version = 1): AllowlistLookup {
  const compiled = new Map<string, LoadedAllowlist>(
    Object.entries(lists).map(([mirror, text]) => [
      mirror,
      { list: parseAllowlist(text).list, source: `/lists/${mirror.replace(/\//g, '_')}` },
    ]),
  )
  return { get: (m) => compiled.get(m), version }
}

const policyOf = (input: ConfigInput) => compilePolicy(resolveConfig(input, {}))
const decide = (image: string, input: ConfigInput, v: ReachabilityView) => decideImage(image, policyOf(input), v)
const outcome = (d: ImageDecision) => (d.action === 'rewrite' ? d.rewritten : `keep:${d.code}`)

t.test('two prefix mirrors: the first usable one, and why the others were not', async (t) => {
  const source = { 'docker.io': 'unreachable' as const }
  // [case, view, expected outcome, expected reason]
  const cases: [string, ReachabilityView, string, string][] = [
    ['both up', view(source), `${A}/docker.io/acme/app:1`, 'registry docker.io is unreachable (evidence for docker.io)'],
    [
      'first down',
      view({ ...source, [A]: 'unreachable', 'harbor.corp.example': 'reachable' }),
      `${B}/docker.io/acme/app:1`,
      `mirror ${B} chosen (mirror ${A} is unreachable (evidence for ${A})); registry docker.io is unreachable (evidence for docker.io)`,
    ],
    [
      'first refusing the repository',
      view(source, { [`${A}/docker.io/acme/app`]: 'HTTP 403 this image is not in the allowlist' }),
      `${B}/docker.io/acme/app:1`,
      `mirror ${B} chosen (mirror refused ${A}/docker.io/acme/app (HTTP 403 this image is not in the allowlist)); registry docker.io is unreachable (evidence for docker.io)`,
    ],
    [
      'first without the repository on its allowlist',
      withAllowlists(view(source), lookup({ [A]: 'docker.io/library/*\ngcr.io/**\n' })),
      `${B}/docker.io/acme/app:1`,
      `mirror ${B} chosen (docker.io/acme/app is not on the allowlist of mirror ${A} (/lists/${A}, 2 patterns)); registry docker.io is unreachable (evidence for docker.io)`,
    ],
    [
      'both down',
      view({ ...source, [A]: 'unreachable', 'harbor.corp.example': 'unreachable' }),
      'keep:mirror-unreachable',
      `no mirror can serve it: mirror ${A} is unreachable (evidence for ${A}); mirror harbor.corp.example is unreachable (evidence for harbor.corp.example)`,
    ],
    [
      'first down, second without the repository on its allowlist',
      withAllowlists(view({ ...source, [A]: 'unreachable' }), lookup({ [B]: 'docker.io/library/nginx\n' })),
      'keep:mirror-unreachable',
      `no mirror can serve it: mirror ${A} is unreachable (evidence for ${A}); docker.io/acme/app is not on the allowlist of mirror ${B} (/lists/harbor.corp.example_proxy, 1 patterns)`,
    ],
    [
      'off both allowlists',
      withAllowlists(view(source), lookup({ [A]: 'gcr.io/**\n', [B]: 'quay.io/**\n' })),
      'keep:mirror-refused',
      `no mirror can serve it: docker.io/acme/app is not on the allowlist of mirror ${A} (/lists/${A}, 1 patterns); docker.io/acme/app is not on the allowlist of mirror ${B} (/lists/harbor.corp.example_proxy, 1 patterns)`,
    ],
  ]
  for (const [name, v, expected, reason] of cases) {
    const d = decide('acme/app:1', TWO, v)
    t.equal(outcome(d), expected, name)
    t.equal(d.reason, reason, `${name}: reason`)
  }
})

t.test('one mirror with an allowlist: an image off the list is kept, one on it rewritten', async (t) => {
  const v = withAllowlists(view({ 'docker.io': 'unreachable' }), lookup({ [A]: 'docker.io/library/nginx\n' }))
  t.strictSame(decide('nginx:1.25', { mode: 'auto' }, v), {
    action: 'rewrite',
    original: 'nginx:1.25',
    rewritten: `${A}/docker.io/library/nginx:1.25`,
    registry: 'docker.io',
    reason: 'registry docker.io is unreachable (evidence for docker.io)',
  })
  t.strictSame(decide('acme/app:1', { mode: 'auto' }, v), {
    action: 'keep',
    original: 'acme/app:1',
    code: 'mirror-refused',
    reason: `docker.io/acme/app is not on the allowlist of mirror ${A} (/lists/${A}, 1 patterns)`,
    registry: 'docker.io',
  })
  t.strictSame(
    decide('acme/app:1', { mode: 'auto' }, withAllowlists(view({ 'docker.io': 'unreachable' }), lookup({}))),
    {
      action: 'rewrite',
      original: 'acme/app:1',
      rewritten: `${A}/docker.io/acme/app:1`,
      registry: 'docker.io',
      reason: 'registry docker.io is unreachable (evidence for docker.io)',
    },
    'no list loaded: the learned refusals are all there is',
  )
})

t.test('mode always: a mirror known down is passed over, but used when every mirror is down', async (t) => {
  const always: ConfigInput = { mode: 'always', mirror: { prefix: [A, B] } }
  t.strictSame(decide('nginx', always, view({ [A]: 'unreachable' })), {
    action: 'rewrite',
    original: 'nginx',
    registry: 'docker.io',
    rewritten: `${B}/docker.io/library/nginx`,
    reason: `mirror ${B} chosen (mirror ${A} is unreachable (evidence for ${A})); mode always`,
  })
  t.strictSame(decide('nginx', always, view({ [A]: 'unreachable', 'harbor.corp.example': 'unreachable' })), {
    action: 'rewrite',
    original: 'nginx',
    registry: 'docker.io',
    rewritten: `${A}/docker.io/library/nginx`,
    reason: `mirror ${A} chosen though every usable mirror is unreachable (mirror ${A} is unreachable (evidence for ${A}); mirror harbor.corp.example is unreachable (evidence for harbor.corp.example)); mode always`,
  })
  t.strictSame(
    decide('acme/app', always, view({ 'harbor.corp.example': 'unreachable' }, { [`${A}/docker.io/acme/app`]: 'HTTP 403' })),
    {
      action: 'rewrite',
      original: 'acme/app',
      rewritten: `${B}/docker.io/acme/app`,
      registry: 'docker.io',
      reason: `mirror ${B} chosen though every usable mirror is unreachable (mirror refused ${A}/docker.io/acme/app (HTTP 403); mirror harbor.corp.example is unreachable (evidence for harbor.corp.example)); mode always`,
    },
    'the first refuses, the second is down: the second, as always means always',
  )
})

t.test('host-mode mirrors in order, then the prefix mirrors', async (t) => {
  const input: ConfigInput = {
    mode: 'unreachable',
    unreachable: ['docker.io'],
    mirror: { prefix: A, hosts: { 'docker.io': ['docker.m.daocloud.io', 'harbor.corp.example/dockerhub'] } },
  }
  const cases: [Record<string, RegistryState>, string][] = [
    [{}, 'docker.m.daocloud.io/library/nginx:1'],
    [{ 'docker.m.daocloud.io': 'unreachable' }, 'harbor.corp.example/dockerhub/library/nginx:1'],
    [{ 'docker.m.daocloud.io': 'unreachable', 'harbor.corp.example': 'unreachable' }, `${A}/docker.io/library/nginx:1`],
    [{ 'docker.m.daocloud.io': 'unreachable', 'harbor.corp.example': 'unreachable', [A]: 'unreachable' }, 'keep:mirror-unreachable'],
  ]
  for (const [states, expected] of cases) {
    t.equal(outcome(decide('nginx:1', input, view({ ...states, 'docker.io': 'unreachable' }))), expected, JSON.stringify(states))
  }
  t.equal(outcome(decide('quay.io/a/b:1', input, view({ 'quay.io': 'unreachable' }))), `${A}/quay.io/a/b:1`, 'other registries: prefix')
})

t.test('an image already on any configured mirror is not rewritten again', async (t) => {
  const input: ConfigInput = {
    registries: ['*'],
    mirror: { prefix: [A, B], hosts: { 'docker.io': ['docker.m.daocloud.io', 'harbor.corp.example/dockerhub'] } },
  }
  for (const image of [
    `${A}/docker.io/library/nginx:1`,
    `${B}/docker.io/library/nginx:1`,
    'docker.m.daocloud.io/library/nginx:1',
    'harbor.corp.example/dockerhub/library/nginx:1',
  ]) {
    t.equal(outcome(decide(image, input, view({}))), 'keep:already-mirrored', image)
  }
  // Every rewrite of the tables above is idempotent too.
  const digest = `sha256:${'c'.repeat(64)}`
  const cases: [Record<string, RegistryState>, string, string][] = [
    [{}, 'nginx:1', 'docker.m.daocloud.io/library/nginx:1'],
    [{}, 'quay.io/a/b:2', `${A}/quay.io/a/b:2`],
    [{}, `ghcr.io/o/r@${digest}`, `${A}/ghcr.io/o/r@${digest}`],
    [{ [A]: 'unreachable' }, 'nginx:1', 'docker.m.daocloud.io/library/nginx:1'],
    [{ [A]: 'unreachable' }, 'quay.io/a/b:2', `${B}/quay.io/a/b:2`],
    [{ [A]: 'unreachable' }, `ghcr.io/o/r@${digest}`, `${B}/ghcr.io/o/r@${digest}`],
    [{ 'docker.m.daocloud.io': 'unreachable' }, 'nginx:1', 'harbor.corp.example/dockerhub/library/nginx:1'],
    [{ 'docker.m.daocloud.io': 'unreachable' }, 'quay.io/a/b:2', `${A}/quay.io/a/b:2`],
    [{ 'docker.m.daocloud.io': 'unreachable' }, `ghcr.io/o/r@${digest}`, `${A}/ghcr.io/o/r@${digest}`],
  ]
  for (const [s, image, rewritten] of cases) {
    t.equal(outcome(decide(image, { ...input, mode: 'always' }, view(s))), rewritten, `${image} ${JSON.stringify(s)}`)
    t.equal(outcome(decide(rewritten, input, view(s))), 'keep:already-mirrored', rewritten)
  }
})

t.test('an image that needs credentials goes only to a mirror with a pull secret', async (t) => {
  const base = policyOf(TWO)
  const [a, b] = base.prefix
  const withSecret = (secretOn: 'a' | 'b' | 'none'): Policy => {
    const prefix = [secretOn === 'a' ? { ...a!, pullSecret: 'corp-pull' } : a!, secretOn === 'b' ? { ...b!, pullSecret: 'corp-pull' } : b!]
    return { ...base, prefix, mirrors: prefix }
  }
  const v = view({ 'docker.io': 'unreachable' })
  const cred = { needsCredentials: true }
  t.equal(outcome(decideImage('acme/private:1', withSecret('b'), v, cred)), `${B}/docker.io/acme/private:1`)
  t.strictSame(decideImage('acme/private:1', withSecret('b'), v, cred), {
    action: 'rewrite',
    original: 'acme/private:1',
    rewritten: `${B}/docker.io/acme/private:1`,
    registry: 'docker.io',
    reason: `mirror ${B} chosen (mirror ${A} has no pull secret and the image needs credentials); registry docker.io is unreachable (evidence for docker.io)`,
  })
  t.equal(outcome(decideImage('acme/private:1', withSecret('a'), v, cred)), `${A}/docker.io/acme/private:1`)
  t.strictSame(decideImage('acme/private:1', withSecret('none'), v, cred), {
    action: 'keep',
    original: 'acme/private:1',
    registry: 'docker.io',
    code: 'needs-credentials',
    reason: `no mirror can serve it: mirror ${A} has no pull secret and the image needs credentials; mirror ${B} has no pull secret and the image needs credentials`,
  })
  t.equal(outcome(decideImage('acme/public:1', withSecret('none'), v)), `${A}/docker.io/acme/public:1`, 'without the option: any mirror')
})

t.test('the memo: one answer per credentials need, and a new one when an allowlist changes', async (t) => {
  const base = policyOf(TWO)
  const policy: Policy = { ...base, prefix: [base.prefix[0]!, { ...base.prefix[1]!, pullSecret: 's' }] }
  let version = 1
  let text = 'docker.io/acme/*\n'
  const lists: AllowlistLookup = {
    get: (m) => (m === A ? { list: parseAllowlist(text).list, source: 'file' } : undefined),
    get version() {
      return version
    },
  }
  let asked = 0
  const v = withAllowlists(
    {
      generation: () => 7,
      status: (r) => {
        asked += 1
        return { state: r === 'docker.io' ? 'unreachable' : 'reachable', evidence: 'e' }
      },
    },
    lists,
  )
  const first = decideImage('acme/app:1', policy, v)
  t.equal(outcome(first), `${A}/docker.io/acme/app:1`)
  t.equal(decideImage('acme/app:1', policy, v), first, 'remembered')
  const needing = decideImage('acme/app:1', policy, v, { needsCredentials: true })
  t.equal(outcome(needing), `${B}/docker.io/acme/app:1`, 'needing credentials is another answer')
  t.equal(decideImage('acme/app:1', policy, v, { needsCredentials: true }), needing, 'remembered too')
  t.equal(decideImage('acme/app:1', policy, v), first)
  const before = asked
  text = 'docker.io/library/*\n'
  t.equal(decideImage('acme/app:1', policy, v), first, 'the same version: the same answer')
  version = 2
  t.equal(outcome(decideImage('acme/app:1', policy, v)), `${B}/docker.io/acme/app:1`, 'a new list: decided again')
  t.equal(before, 4, 'the source and the mirrors, once per credentials need')
  t.equal(asked, 7, 'a new list: the source and both mirrors asked again')
})

t.test('the mirror keys: lists in order, single strings as before, problems named', async (t) => {
  const policy = policyOf({
    mirror: {
      prefix: [A, B],
      hosts: { 'docker.io': 'docker.m.daocloud.io', 'ghcr.io': ['ghcr.m.daocloud.io', B] },
      allowlists: { [A]: '/etc/mirrorhook/allows.txt', 'harbor.corp.example': 'https://lists.corp.example/allows.txt', [B]: '/etc/b.txt' },
    },
  })
  t.strictSame(
    policy.prefix.map((m) => m.repoPrefix),
    [A, B],
  )
  t.strictSame(
    policy.hosts.get('ghcr.io')!.map((m) => m.repoPrefix),
    ['ghcr.m.daocloud.io', B],
  )
  t.equal(policy.hosts.get('ghcr.io')![1], policy.prefix[1], 'one object per mirror')
  t.strictSame(
    policy.mirrors.map((m) => m.repoPrefix),
    [A, B, 'docker.m.daocloud.io', 'ghcr.m.daocloud.io'],
  )
  t.strictSame(
    [...policy.allowlists],
    [
      [A, '/etc/mirrorhook/allows.txt'],
      [B, '/etc/b.txt'],
    ],
    'the entry for the repository prefix wins over the one for its host',
  )
  const byHost = policyOf({ mirror: { prefix: [B, 'harbor.corp.example/other'], allowlists: { 'harbor.corp.example': '/l.txt' } } })
  t.strictSame(
    [...byHost.allowlists],
    [
      [B, '/l.txt'],
      ['harbor.corp.example/other', '/l.txt'],
    ],
  )
  t.strictSame(
    policyOf({ mirror: { prefix: A } }).prefix.map((m) => m.repoPrefix),
    [A],
    'a single string as before',
  )

  const problems = (input: ConfigInput) => {
    try {
      policyOf(input)
      return []
    } catch (error) {
      return (error as ConfigError).problems
    }
  }
  t.strictSame(problems({ mirror: { prefix: [A, A] } }), [`mirror.prefix[1]: "${A}" is listed twice`])
  t.strictSame(problems({ mirror: { prefix: [A, 'mirror'] } }), [
    `mirror.prefix[1]: "mirror" must start with a registry host (a name with a dot or a port, or localhost)`,
  ])
  t.strictSame(problems({ mirror: { prefix: [] } }), ['mirror.prefix: must not be empty'])
  t.strictSame(problems({ mirror: { hosts: { 'docker.io': [''] } } }), ['mirror.hosts.docker.io[0]: must not be empty'])
  t.strictSame(problems({ mirror: { prefix: A, allowlists: { 'other.example': '/x' } } }), [
    "mirror.allowlists.other.example: not a configured mirror (a mirror's host or repository prefix)",
  ])
  t.strictSame(problems({ mirror: { prefix: A, allowlists: { [A]: 'http://lists.example/allows.txt' } } }), [
    `mirror.allowlists.${A}: "http://lists.example/allows.txt" is neither a file path nor an https:// URL`,
  ])
})
