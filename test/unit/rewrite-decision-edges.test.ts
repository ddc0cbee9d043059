// The rewrite decision's remaining edges: multi-digit addresses and ports next to a mirror host,
// a dotless source registry, the short validity check against its 255-character limit, the
// decision memo's bounds, each keep reason, host-style mirrors of a registry with a port, the
// repository a mirror refusal is looked up by, and the reason naming every mirror passed over.
// Expected values are written out.
import t from 'tap'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { type ImageReference } from '../../server/core/reference.js'
import {
  certainlyValidRewrite,
  DECISION_CACHE_SIZE,
  decideImage,
  type ReachabilityView,
  staticReachability,
} from '../../server/core/rewrite.js'

const compile = (input: ConfigInput) => compilePolicy(resolveConfig(input, {}))
const DIGEST = `sha256:${'a'.repeat(64)}`

t.test('the static view has generation 0', async (t) => {
  const policy = compile({ unreachable: ['quay.io'] })
  const view = staticReachability(policy)
  t.equal(view.generation?.(), 0)
  t.strictSame(
    [view.status('quay.io'), view.status('gcr.io')],
    [
      { state: 'unreachable', evidence: 'listed in config unreachable' },
      { state: 'unknown', evidence: 'not listed in config unreachable' },
    ],
  )
})

t.test('addresses with multi-digit parts, ports and dotless names next to mirror hosts', async (t) => {
  const any = compile({ registries: ['*'] })
  const table: [ConfigInput, string, object][] = [
    [
      { registries: ['*'] },
      '10.11.222.3/app:1',
      {
        action: 'keep',
        original: '10.11.222.3/app:1',
        code: 'inexpressible',
        reason: 'an IP-address registry cannot be expressed in prefix mode',
        registry: '10.11.222.3',
      },
    ],
    [
      { registries: ['*'] },
      'MYREG/app:1',
      {
        action: 'keep',
        original: 'MYREG/app:1',
        code: 'inexpressible',
        reason: 'the mirror expects a dotted domain name as the source registry',
        registry: 'myreg',
      },
    ],
    [
      { registries: ['*'], mirror: { prefix: 'm.corp.example:5000' } },
      'a.m.corp.example/app:1',
      {
        action: 'keep',
        original: 'a.m.corp.example/app:1',
        code: 'no-proxy',
        reason: 'registry a.m.corp.example is a subdomain of mirror m.corp.example:5000',
        registry: 'a.m.corp.example',
      },
    ],
    [
      { registries: ['*'], mirror: { prefix: 'm.corp.example' } },
      'a.m.corp.example:5000/app:1',
      {
        action: 'keep',
        original: 'a.m.corp.example:5000/app:1',
        code: 'no-proxy',
        reason: 'registry a.m.corp.example:5000 is a subdomain of mirror m.corp.example',
        registry: 'a.m.corp.example:5000',
      },
    ],
    [
      { registries: ['*'], mirror: { prefix: '10.20.30.40:5000' } },
      'x.10.20.30.40/app:1',
      {
        action: 'rewrite',
        original: 'x.10.20.30.40/app:1',
        rewritten: '10.20.30.40:5000/x.10.20.30.40/app:1',
        registry: 'x.10.20.30.40',
        reason: 'mode always',
      },
    ],
  ]
  for (const [input, image, expected] of table) {
    const policy = input.mirror === undefined ? any : compile(input)
    t.strictSame(decideImage(image, policy, staticReachability(policy)), expected, image)
  }
})

t.test('certainlyValidRewrite: plain sources, Docker Hub as the mirror, the 255-character path', async (t) => {
  const ref = (path: string): ImageReference => ({ domain: 'quay.io', path })
  const harbor = { repoPrefix: 'harbor.corp.example/proxy', domain: 'harbor.corp.example' }
  const bare = { repoPrefix: 'harbor.corp.example', domain: 'harbor.corp.example' }
  const table: [string | undefined, boolean][] = [
    [undefined, true],
    ['quay.io', true],
    ['a--b.example', true],
    ['a-b.c', true],
    ['ab', true],
    ['a.bc.de', true],
    ['a', true],
    ['-a', false],
    ['a-', false],
    ['a.', false],
    ['a_b', false],
    ['a..b', false],
    ['A.b', false],
    ['', false],
  ]
  for (const [source, expected] of table) t.equal(certainlyValidRewrite(ref('x'), harbor, source), expected, String(source))
  t.equal(certainlyValidRewrite(ref('x'), { repoPrefix: 'docker.io/mirror', domain: 'docker.io' }, undefined), false)
  t.equal(certainlyValidRewrite(ref('x'), { repoPrefix: 'docker.io', domain: 'docker.io' }, 'quay.io'), false)
  // `/proxy` (6) + `/quay.io` as a component (8) + the path: 255 is the limit.
  t.equal(certainlyValidRewrite(ref('p'.repeat(241)), harbor, 'quay.io'), true)
  t.equal(certainlyValidRewrite(ref('p'.repeat(242)), harbor, 'quay.io'), false)
  t.equal(certainlyValidRewrite(ref('p'.repeat(249)), harbor, undefined), true)
  t.equal(certainlyValidRewrite(ref('p'.repeat(250)), harbor, undefined), false)
  t.equal(certainlyValidRewrite(ref('p'.repeat(255)), bare, undefined), true)
  t.equal(certainlyValidRewrite(ref('p'.repeat(256)), bare, undefined), false)
  t.equal(certainlyValidRewrite(ref('p'.repeat(247)), bare, 'quay.io'), true)
  t.equal(certainlyValidRewrite(ref('p'.repeat(248)), bare, 'quay.io'), false)
})

t.test('the decision memo: images up to 512 characters, at most DECISION_CACHE_SIZE of them, least recently used first', async (t) => {
  const policy = compile({ registries: ['*'] })
  const view = staticReachability(policy)
  const at512 = decideImage('Q'.repeat(512), policy, view)
  const at513 = decideImage('Q'.repeat(513), policy, view)
  t.strictSame([Object.isFrozen(at512), Object.isFrozen(at513)], [true, false])
  t.equal(decideImage('Q'.repeat(512), policy, view), at512, 'reused')
  t.not(decideImage('Q'.repeat(513), policy, view), at513, 'decided again')

  const own: ReachabilityView = { generation: () => 7, status: () => ({ state: 'unknown', evidence: 'none' }) }
  const first = decideImage('quay.io/app:0', policy, own)
  const second = decideImage('quay.io/app:1', policy, own)
  t.equal(decideImage('quay.io/app:0', policy, own), first, 'a second image does not evict the first')
  t.equal(decideImage('quay.io/app:1', policy, own), second)
  for (let i = 2; i < 4096; i++) decideImage(`quay.io/app:${i}`, policy, own)
  // Read just now: app:1 is the least recently used.
  t.equal(decideImage('quay.io/app:0', policy, own), first, '4096 images fit')
  decideImage('quay.io/app:4096', policy, own)
  t.equal(decideImage('quay.io/app:0', policy, own), first, 'the image used last stays')
  const again = decideImage('quay.io/app:1', policy, own)
  t.not(again, second, 'one more forgets the least recently used')
  t.strictSame(again, second)
  t.equal(DECISION_CACHE_SIZE, 4096)
})

t.test('each keep reason before the mirrors are tried', async (t) => {
  const daocloud = compile({ registries: ['quay.io'] })
  const hostsOnly = compile({ registries: ['quay.io', 'gcr.io'], mirror: { hosts: { 'quay.io': 'quay.m.daocloud.io' } } })
  const table: [ReturnType<typeof compile>, string, object][] = [
    [
      daocloud,
      'm.daocloud.io/quay.io/app:1',
      {
        action: 'keep',
        original: 'm.daocloud.io/quay.io/app:1',
        code: 'already-mirrored',
        reason: 'already on mirror m.daocloud.io',
        registry: 'm.daocloud.io',
      },
    ],
    [
      daocloud,
      'gcr.io/app:1',
      {
        action: 'keep',
        original: 'gcr.io/app:1',
        code: 'not-eligible',
        reason: 'registry gcr.io is not in the configured registries',
        registry: 'gcr.io',
      },
    ],
    [
      hostsOnly,
      'gcr.io/app:1',
      {
        action: 'keep',
        original: 'gcr.io/app:1',
        code: 'no-mirror',
        reason: 'no mirror is configured for registry gcr.io',
        registry: 'gcr.io',
      },
    ],
    [
      hostsOnly,
      'quay.io/app:1',
      { action: 'rewrite', original: 'quay.io/app:1', rewritten: 'quay.m.daocloud.io/app:1', registry: 'quay.io', reason: 'mode always' },
    ],
  ]
  for (const [policy, image, expected] of table) t.strictSame(decideImage(image, policy, staticReachability(policy)), expected, image)
})

t.test('reasons naming the mirrors passed over', async (t) => {
  const one = compile({ registries: ['*'] })
  t.strictSame(decideImage('quay.io/app:1', one, staticReachability(one), { needsCredentials: true }), {
    action: 'keep',
    original: 'quay.io/app:1',
    code: 'needs-credentials',
    reason: 'the Pod has imagePullSecrets and mirror m.daocloud.io has no pull Secret of its own (pull.privateImages is keep)',
    registry: 'quay.io',
  })
  const two = compile({ registries: ['*'], mirror: { prefix: ['m.daocloud.io', 'harbor.corp.example/proxy'] } })
  t.strictSame(decideImage('10.0.0.1/app:1', two, staticReachability(two)), {
    action: 'keep',
    original: '10.0.0.1/app:1',
    code: 'inexpressible',
    reason:
      'no mirror can serve it: mirror m.daocloud.io: an IP-address registry cannot be expressed in prefix mode; mirror harbor.corp.example/proxy: an IP-address registry cannot be expressed in prefix mode',
    registry: '10.0.0.1',
  })
  const three = compile({
    registries: ['*'],
    mirror: { prefix: ['a.example', 'b.example', 'c.example'], pullSecrets: { 'c.example': 'c-pull' } },
  })
  t.strictSame(decideImage('quay.io/app:1', three, staticReachability(three), { needsCredentials: true }), {
    action: 'rewrite',
    original: 'quay.io/app:1',
    rewritten: 'c.example/quay.io/app:1',
    registry: 'quay.io',
    reason:
      'mirror c.example chosen (mirror a.example has no pull secret and the image needs credentials; mirror b.example has no pull secret and the image needs credentials); mode always',
  })
})

t.test('a host-style mirror serves a registry with a port', async (t) => {
  const policy = compile({ registries: ['*'], mirror: { hosts: { 'reg.corp.example:5000': 'mirror.corp.example/reg' } } })
  t.strictSame(decideImage('reg.corp.example:5000/app:1', policy, staticReachability(policy)), {
    action: 'rewrite',
    original: 'reg.corp.example:5000/app:1',
    rewritten: 'mirror.corp.example/reg/app:1',
    registry: 'reg.corp.example:5000',
    reason: 'mode always',
  })
})

t.test('a mirror refusal is looked up by the mirrored repository, without tag, digest or the port mangled', async (t) => {
  const policy = compile({ registries: ['*'], mirror: { prefix: 'mirror.corp.example:5000/proxy' } })
  const asked: string[] = []
  const view: ReachabilityView = {
    status: () => ({ state: 'unknown', evidence: 'none' }),
    mirrorRefusal: (repository) => {
      asked.push(repository)
      return repository.endsWith('/refused') ? 'HTTP 404' : undefined
    },
  }
  const images = ['quay.io/a/b:v1.2', `quay.io/a/b:v1.2@${DIGEST}`, `quay.io/a/b@${DIGEST}`, 'quay.io/a/b']
  t.strictSame(
    images.map((image) => decideImage(image, policy, view).action),
    ['rewrite', 'rewrite', 'rewrite', 'rewrite'],
  )
  t.strictSame(asked, [
    'mirror.corp.example:5000/proxy/quay.io/a/b',
    'mirror.corp.example:5000/proxy/quay.io/a/b',
    'mirror.corp.example:5000/proxy/quay.io/a/b',
    'mirror.corp.example:5000/proxy/quay.io/a/b',
  ])
  t.strictSame(decideImage('quay.io/refused:v10', policy, view), {
    action: 'keep',
    original: 'quay.io/refused:v10',
    code: 'mirror-refused',
    reason: 'mirror refused mirror.corp.example:5000/proxy/quay.io/refused (HTTP 404)',
    registry: 'quay.io',
  })
})
