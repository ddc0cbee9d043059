// The per-container pull rules at their edges, called directly: which imagePullSecrets entries
// count, which Pods are kube-fledged's pull Jobs, the busybox substitute's tag and digest, the
// mirror a rewritten reference belongs to, the Pod context, and every reason text. Expected
// values are written out.
import t from 'tap'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import {
  decideContainer,
  isKubeFledgedPullPod,
  kubeFledgedBusyboxFor,
  mirrorPullSecretNames,
  podContext,
  type PodContext,
  pullSecretNames,
  type PullSecretView,
  sourcePullSecrets,
  targetOf,
} from '../../server/core/pullrules.js'

type Obj = Record<string, unknown>

const HARBOR: ConfigInput = { mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { 'harbor.corp.example': 'harbor-pull' } } }
const DIGEST = `sha256:${'c'.repeat(64)}`

function policyOf(input: ConfigInput = {}) {
  return compilePolicy(resolveConfig(input, {}))
}

function ctx(fields: Partial<PodContext> = {}): PodContext {
  return {
    namespace: 'shop',
    canAddPullSecrets: true,
    pullSecrets: [],
    pullSecretsListValid: true,
    sourcePullSecrets: [],
    kubeFledgedPullPod: false,
    ...fields,
  }
}

t.test('pullSecretNames keeps only {name: non-empty string} entries of a list', async (t) => {
  t.strictSame(pullSecretNames({}), [])
  t.strictSame(pullSecretNames({ imagePullSecrets: 'harbor-pull' }), [])
  t.strictSame(pullSecretNames({ imagePullSecrets: { name: 'harbor-pull' } }), [])
  t.strictSame(
    pullSecretNames({
      imagePullSecrets: [{ name: 'a' }, 'b', null, [{ name: 'c' }], { name: 3 }, { name: '' }, {}, { name: 'd', extra: 1 }],
    }),
    ['a', 'd'],
  )
})

t.test('sourcePullSecrets leaves out the mirrors’ own pull Secrets', async (t) => {
  const spec = { imagePullSecrets: [{ name: 'dockerhub-login' }, { name: 'harbor-pull' }, { name: 'quay-login' }] }
  t.strictSame(sourcePullSecrets(spec, policyOf(HARBOR)), ['dockerhub-login', 'quay-login'])
  t.strictSame(sourcePullSecrets(spec, policyOf()), ['dockerhub-login', 'harbor-pull', 'quay-login'], 'no mirror has a Secret')
})

t.test("isKubeFledgedPullPod: the configured namespace, an imagecache label and one of kube-fledged's labels", async (t) => {
  const p = policyOf()
  const labels = { imagecache: 'ic-web', kubefledged: 'kubefledged-image-manager' }
  const table: [string, Obj, string | undefined, boolean][] = [
    ['request namespace', { labels }, 'kube-fledged', true],
    ['namespace from the metadata', { namespace: 'kube-fledged', labels }, undefined, true],
    ['namespace from the metadata when the request has an empty one', { namespace: 'kube-fledged', labels }, '', true],
    ['the request namespace wins over the metadata', { namespace: 'kube-fledged', labels }, 'shop', false],
    ['another namespace', { namespace: 'shop', labels }, undefined, false],
    ['no namespace at all', { labels }, undefined, false],
    ['metadata namespace not a string', { namespace: 7, labels }, undefined, false],
    ['app=imagecache (before v0.8)', { labels: { imagecache: 'ic-web', app: 'imagecache' } }, 'kube-fledged', true],
    ['app=kubefledged', { labels: { imagecache: 'ic-web', app: 'kubefledged' } }, 'kube-fledged', true],
    ['no imagecache label', { labels: { kubefledged: 'kubefledged-image-manager', app: 'imagecache' } }, 'kube-fledged', false],
    ['imagecache label not a string', { labels: { imagecache: 1, kubefledged: 'kubefledged-image-manager' } }, 'kube-fledged', false],
    ['imagecache with another app', { labels: { imagecache: 'ic-web', app: 'web', kubefledged: 'other' } }, 'kube-fledged', false],
    ['labels not an object', { labels: 'imagecache=ic-web' }, 'kube-fledged', false],
    ['labels a list', { labels: [{ imagecache: 'ic-web', app: 'imagecache' }] }, 'kube-fledged', false],
  ]
  for (const [name, metadata, ns, expected] of table) t.equal(isKubeFledgedPullPod(metadata, ns, p), expected, name)
  const other = policyOf({ kubeFledged: { namespace: 'caching' } } as ConfigInput)
  t.equal(isKubeFledgedPullPod({ labels }, 'caching', other), true, 'a configured namespace')
  t.equal(isKubeFledgedPullPod({ labels }, 'kube-fledged', other), false, 'the default namespace is not it then')
})

t.test("kubeFledgedBusyboxFor keeps the original's tag and digest unless the configured image has its own", async (t) => {
  const p = policyOf()
  const table: [string, string | undefined][] = [
    ['senthilrch/busybox:1.35.0', 'docker.io/library/busybox:1.35.0'],
    ['docker.io/senthilrch/busybox', 'docker.io/library/busybox'],
    [`senthilrch/busybox@${DIGEST}`, `docker.io/library/busybox@${DIGEST}`],
    [`senthilrch/busybox:1.35.0@${DIGEST}`, `docker.io/library/busybox:1.35.0@${DIGEST}`],
    ['index.docker.io/senthilrch/busybox:1.35.0', 'docker.io/library/busybox:1.35.0'],
    ['quay.io/senthilrch/busybox:1.35.0', undefined],
    ['senthilrch/busybox-other:1', undefined],
    ['library/busybox:1.36', undefined],
    ['Not A Ref', undefined],
  ]
  for (const [image, expected] of table) t.equal(kubeFledgedBusyboxFor(image, p), expected, image)
  const pinned = policyOf({ pull: { kubeFledgedBusybox: `docker.io/library/busybox@${DIGEST}` } } as ConfigInput)
  t.equal(kubeFledgedBusyboxFor('senthilrch/busybox:1.35.0', pinned), `docker.io/library/busybox@${DIGEST}`, 'a configured digest')
  const tagged = policyOf({ pull: { kubeFledgedBusybox: 'busybox:1.36.1' } } as ConfigInput)
  t.equal(kubeFledgedBusyboxFor(`senthilrch/busybox:1.35.0@${DIGEST}`, tagged), 'busybox:1.36.1', 'a configured tag, written as configured')
  t.equal(kubeFledgedBusyboxFor('senthilrch/busybox:1.35.0', policyOf({ pull: { kubeFledgedBusybox: '' } } as ConfigInput)), undefined)
  // A configured image that does not parse (the configuration refuses one; a policy built otherwise) replaces nothing.
  const p2 = policyOf()
  const unparseable = { ...p2, config: { ...p2.config, pull: { ...p2.config.pull, kubeFledgedBusybox: 'Not A Ref' } } }
  t.equal(kubeFledgedBusyboxFor('senthilrch/busybox:1.35.0', unparseable), undefined)
})

t.test('targetOf: the longest mirror prefix followed by a slash', async (t) => {
  const p = policyOf({
    mirror: {
      prefix: 'harbor.corp.example/proxy',
      hosts: { 'quay.io': 'harbor.corp.example/proxy/quay' },
      pullSecrets: { 'harbor.corp.example': 'hp' },
    },
  } as ConfigInput)
  t.equal(targetOf('harbor.corp.example/proxy/quay/org/a:1', p)?.repoPrefix, 'harbor.corp.example/proxy/quay')
  t.equal(targetOf('harbor.corp.example/proxy/docker.io/library/nginx:1', p)?.repoPrefix, 'harbor.corp.example/proxy')
  t.equal(targetOf('harbor.corp.example/proxyx/docker.io/library/nginx:1', p), undefined, 'a longer path segment is another repository')
  t.equal(targetOf('harbor.corp.example/proxy', p), undefined, 'the prefix alone names no image')
  t.equal(targetOf('docker.io/library/nginx:1', p), undefined)
  // The same, whatever order the targets are listed in.
  const reversed = { ...p, mirrors: [...p.mirrors].reverse() }
  t.equal(targetOf('harbor.corp.example/proxy/quay/org/a:1', reversed)?.repoPrefix, 'harbor.corp.example/proxy/quay')
  t.equal(targetOf('harbor.corp.example/proxy/docker.io/library/nginx:1', reversed)?.repoPrefix, 'harbor.corp.example/proxy')
})

t.test('podContext: the namespace, the Pod’s secrets and whether the list can grow', async (t) => {
  const p = policyOf(HARBOR)
  const views: PullSecretView = { has: () => true }
  const spec = { imagePullSecrets: [{ name: 'dockerhub-login' }, { name: 'harbor-pull' }] }
  t.strictSame(podContext({ metadata: { namespace: 'blog' } }, spec, p, { namespace: 'shop', canAddPullSecrets: false, secrets: views }), {
    namespace: 'shop',
    canAddPullSecrets: false,
    pullSecrets: ['dockerhub-login', 'harbor-pull'],
    pullSecretsListValid: true,
    sourcePullSecrets: ['dockerhub-login'],
    kubeFledgedPullPod: false,
    secrets: views,
  })
  t.equal(podContext({ metadata: { namespace: 'blog' } }, {}, p, { namespace: '', canAddPullSecrets: true }).namespace, 'blog')
  t.equal(podContext({ metadata: { namespace: 'blog' } }, {}, p, { canAddPullSecrets: true }).namespace, 'blog')
  t.equal(podContext({ metadata: { namespace: 3 } }, {}, p, { canAddPullSecrets: true }).namespace, undefined)
  t.equal(podContext({ metadata: 'x' }, {}, p, { canAddPullSecrets: true }).namespace, undefined)
  t.equal(podContext({}, {}, p, { canAddPullSecrets: true }).pullSecretsListValid, true, 'no list: one can be added')
  t.equal(podContext({}, { imagePullSecrets: [] }, p, { canAddPullSecrets: true }).pullSecretsListValid, true)
  t.equal(podContext({}, { imagePullSecrets: null }, p, { canAddPullSecrets: true }).pullSecretsListValid, false)
  t.equal(podContext({}, { imagePullSecrets: { name: 'a' } }, p, { canAddPullSecrets: true }).pullSecretsListValid, false)
  const kf = podContext({ metadata: { namespace: 'kube-fledged', labels: { imagecache: 'ic', app: 'imagecache' } } }, {}, p, {
    canAddPullSecrets: true,
  })
  t.equal(kf.kubeFledgedPullPod, true, 'kube-fledged pull Job found through the metadata namespace')
})

t.test('decideContainer: reasons of a credentialed mirror, written out', async (t) => {
  const p = policyOf(HARBOR)
  const view = staticReachability(p)
  const c = (pod: PodContext, image = 'nginx:1.25') =>
    decideContainer({ field: 'containers', container: { name: 'web' }, image, pod }, p, view)
  t.strictSame(c(ctx()), {
    decision: {
      action: 'rewrite',
      original: 'nginx:1.25',
      rewritten: 'harbor.corp.example/proxy/docker.io/library/nginx:1.25',
      registry: 'docker.io',
      reason: 'mode always; pull Secret harbor-pull',
    },
    pullSecret: 'harbor-pull',
  })
  t.strictSame(c(ctx({ pullSecretsListValid: false })), {
    decision: {
      action: 'keep',
      original: 'nginx:1.25',
      code: 'mirror-credentials-missing',
      reason: 'spec.imagePullSecrets is not a list: pull Secret harbor-pull cannot be added',
      registry: 'docker.io',
    },
  })
  t.equal(c(ctx({ pullSecretsListValid: false, pullSecrets: ['harbor-pull'] })).decision.action, 'rewrite', 'already there: nothing to add')
  t.equal(c(ctx({ canAddPullSecrets: false, pullSecrets: ['harbor-pull'] })).decision.action, 'rewrite', 'an UPDATE with it already there')
  t.strictSame(c(ctx({ canAddPullSecrets: false })).decision, {
    action: 'keep',
    original: 'nginx:1.25',
    code: 'mirror-credentials-missing',
    reason: 'mirror harbor.corp.example needs pull Secret harbor-pull, which only a new Pod can be given',
    registry: 'docker.io',
  })
  const none: PullSecretView = { has: () => false }
  t.strictSame(c(ctx({ secrets: none })).decision, {
    action: 'keep',
    original: 'nginx:1.25',
    code: 'mirror-credentials-missing',
    reason: 'mirror harbor.corp.example needs pull Secret harbor-pull, which is not (yet) copied to namespace shop',
    registry: 'docker.io',
  })
  t.equal(c(ctx({ secrets: none, namespace: undefined })).decision.action, 'rewrite', 'no namespace known: assumed in place')
  const asked: string[] = []
  const recording: PullSecretView = { has: (ns, name) => (asked.push(`${ns}/${name}`), true) }
  t.equal(c(ctx({ secrets: recording, pullSecrets: ['harbor-pull'] })).decision.action, 'rewrite')
  t.strictSame(asked, ['shop/harbor-pull'], 'the copy is checked even when the Pod names it')
})

t.test('decideContainer: kube-fledged pull Jobs', async (t) => {
  const p = policyOf()
  const view = staticReachability(p)
  const pod = ctx({ namespace: 'kube-fledged', kubeFledgedPullPod: true })
  const c = (field: 'initContainers' | 'containers', name: string, image: string, policy = p) =>
    decideContainer({ field, container: { name }, image, pod }, policy, staticReachability(policy))
  t.strictSame(c('initContainers', 'busybox', 'senthilrch/busybox:1.35.0'), {
    decision: {
      action: 'rewrite',
      original: 'senthilrch/busybox:1.35.0',
      rewritten: 'm.daocloud.io/docker.io/library/busybox:1.35.0',
      registry: 'docker.io',
      reason: "kube-fledged's init image senthilrch/busybox:1.35.0 replaced by docker.io/library/busybox:1.35.0; mode always",
    },
  })
  const pulled = {
    decision: {
      action: 'keep',
      original: 'senthilrch/busybox:1.35.0',
      code: 'kube-fledged-pull',
      reason: "kube-fledged pulls the image its ImageCache names (mirrorhook's own ImageCaches name the mirror)",
      registry: undefined,
    },
  }
  t.strictSame(c('containers', 'busybox', 'senthilrch/busybox:1.35.0'), pulled, 'a container named busybox is not the init container')
  t.strictSame(c('initContainers', 'init', 'senthilrch/busybox:1.35.0'), pulled, 'another init container')
  // An init container named busybox with another image goes through decideImage unchanged.
  t.strictSame(c('initContainers', 'busybox', 'nginx:1.25').decision, {
    action: 'rewrite',
    original: 'nginx:1.25',
    rewritten: 'm.daocloud.io/docker.io/library/nginx:1.25',
    registry: 'docker.io',
    reason: 'mode always',
  })
  // Where the substitute is kept (mode auto, source reachable), the original is kept, and the reason says why.
  const auto = policyOf({ mode: 'auto', reachability: { unknown: 'direct' } } as ConfigInput)
  t.strictSame(c('initContainers', 'busybox', 'senthilrch/busybox:1.35.0', auto), {
    decision: {
      action: 'keep',
      original: 'senthilrch/busybox:1.35.0',
      code: 'reachable',
      reason:
        "kube-fledged's init image would be docker.io/library/busybox:1.35.0, but: registry docker.io is unknown (not listed in config unreachable); reachability.unknown is direct",
      registry: 'docker.io',
    },
  })
  void view
})

t.test('decideContainer: private images only when pull.privateImages is keep and the Pod has its own secrets', async (t) => {
  const c = (input: ConfigInput, pod: PodContext, image = 'acme/app:3') => {
    const p = policyOf(input)
    return decideContainer({ field: 'containers', container: { name: 'app' }, image, pod }, p, staticReachability(p)).decision
  }
  const priv = ctx({ sourcePullSecrets: ['dockerhub-login'], pullSecrets: ['dockerhub-login'] })
  t.equal(c({}, priv).action, 'keep')
  t.equal(c({}, ctx()).action, 'rewrite', 'no secrets of its own')
  t.equal(c({}, ctx({ pullSecrets: ['harbor-pull'] })).action, 'rewrite', 'only a mirror Secret (not a source secret)')
  t.equal(c({ pull: { privateImages: 'mirror' } } as ConfigInput, priv).action, 'rewrite')
  // kube-fledged's busybox is public whatever the Pod carries.
  const kfPriv = ctx({ ...priv, namespace: 'kube-fledged', kubeFledgedPullPod: true })
  const p = policyOf()
  t.equal(
    decideContainer(
      { field: 'initContainers', container: { name: 'busybox' }, image: 'senthilrch/busybox:1.35.0', pod: kfPriv },
      p,
      staticReachability(p),
    ).decision.action,
    'rewrite',
  )
  // With substitution turned off the original busybox counts as the Pod's own image.
  const off = policyOf({ pull: { kubeFledgedBusybox: '' } } as ConfigInput)
  t.equal(
    decideContainer(
      { field: 'initContainers', container: { name: 'busybox' }, image: 'senthilrch/busybox:1.35.0', pod: kfPriv },
      off,
      staticReachability(off),
    ).decision.action,
    'keep',
  )
})

t.test('decideContainer: mutable tags under keep, with the registry', async (t) => {
  const p = policyOf({ pull: { mutableTags: 'keep' } } as ConfigInput)
  const d = decideContainer(
    { field: 'containers', container: { name: 'web' }, image: 'quay.io/org/app', pod: ctx() },
    p,
    staticReachability(p),
  )
  t.strictSame(d, {
    decision: {
      action: 'keep',
      original: 'quay.io/org/app',
      code: 'mutable-tag',
      reason: 'the tag may move and pull.mutableTags is keep (a mirror may serve its old manifest for up to its cache time)',
      registry: 'quay.io',
    },
  })
  // The written pull policy Never wins over everything else.
  const never = decideContainer(
    { field: 'containers', container: { name: 'web', imagePullPolicy: 'Never' }, image: 'quay.io/org/app', pod: ctx() },
    p,
    staticReachability(p),
  )
  t.equal(never.decision.action === 'keep' && never.decision.code, 'pull-policy-never')
})

t.test('mirrorPullSecretNames: each Secret the mirrors name, once, sorted', async (t) => {
  const cases: [{ pullSecret?: string }[], string[]][] = [
    [[], []],
    [[{}, {}], []],
    [
      [{ pullSecret: 'b' }, {}, { pullSecret: 'a' }, { pullSecret: 'b' }],
      ['a', 'b'],
    ],
  ]
  t.strictSame(
    cases.map(([mirrors]) => mirrorPullSecretNames(mirrors)),
    cases.map(([, names]) => names),
  )
})
