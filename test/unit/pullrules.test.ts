// The rules that need the container or the Pod: pull policy, mutable tags, private images,
// the mirror's pull Secret in the patch, kube-fledged's init image. Tables, then patches applied.
import t from 'tap'
import jsonpatch from 'fast-json-patch'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { ConfigError } from '../../server/core/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { decideImage, staticReachability, type ReachabilityView } from '../../server/core/rewrite.js'
import { effectivePullPolicy, isMutableTag, kubeFledgedBusyboxFor, type PullSecretView } from '../../server/core/pullrules.js'
import { admit, type AdmissionRequest } from '../../server/admission/review.js'
import { planManifest } from '../../server/core/manifests.js'

type Obj = Record<string, unknown>

const HARBOR = { mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { 'harbor.corp.example': 'harbor-pull' } } }

function policyOf(input: ConfigInput = {}) {
  return compilePolicy(resolveConfig(input, {}))
}

function run(pod: Obj, input: ConfigInput = {}, extra: Partial<AdmissionRequest> = {}, secrets?: PullSecretView, view?: ReachabilityView) {
  const policy = policyOf(input)
  const request: AdmissionRequest = { uid: 'u1', namespace: 'shop', operation: 'CREATE', object: pod, ...extra }
  const result = admit(request, policy, view ?? staticReachability(policy), secrets)
  const patched = jsonpatch.applyPatch(structuredClone(pod), jsonpatch.deepClone(result.patch), true, false).newDocument as Obj
  return { result, patched, spec: patched.spec as Obj }
}

const images = (spec: Obj, field = 'containers') => (spec[field] as { image: string }[]).map((c) => c.image)

t.test('the pull policy the API server defaults to', async (t) => {
  const table: [string, unknown, string][] = [
    ['nginx', undefined, 'Always'],
    ['nginx:latest', undefined, 'Always'],
    ['nginx:1.25', undefined, 'IfNotPresent'],
    [`nginx@sha256:${'a'.repeat(64)}`, undefined, 'IfNotPresent'],
    [`nginx:latest@sha256:${'a'.repeat(64)}`, undefined, 'Always'],
    ['nginx:1.25', 'Never', 'Never'],
    ['nginx', 'IfNotPresent', 'IfNotPresent'],
    ['nginx:1.25', 'Always', 'Always'],
    ['Not A Ref', undefined, 'IfNotPresent'],
  ]
  for (const [image, written, expected] of table) t.equal(effectivePullPolicy(image, written), expected, `${image} ${String(written)}`)
})

t.test('mutable tags', async (t) => {
  const table: [string, boolean][] = [
    ['nginx', true],
    ['nginx:latest', true],
    ['docker.io/library/nginx:latest', true],
    ['nginx:1.25', false],
    ['nginx:Latest', false],
    [`nginx:latest@sha256:${'a'.repeat(64)}`, false],
    [`nginx@sha256:${'a'.repeat(64)}`, false],
    ['Not A Ref', false],
  ]
  for (const [image, expected] of table) t.equal(isMutableTag(image), expected, image)
})

t.test('imagePullPolicy Never is kept, with its reason and a warning', async (t) => {
  const pod = {
    spec: {
      containers: [
        { name: 'local', image: 'nginx:1.25', imagePullPolicy: 'Never' },
        { name: 'web', image: 'nginx:1.25', imagePullPolicy: 'IfNotPresent' },
      ],
    },
  }
  const { result, spec } = run(pod)
  t.strictSame(images(spec), ['nginx:1.25', 'm.daocloud.io/docker.io/library/nginx:1.25'])
  t.equal(result.plans[0]?.decision.action, 'keep')
  t.strictSame(result.plans[0]?.decision, {
    action: 'keep',
    original: 'nginx:1.25',
    code: 'pull-policy-never',
    reason: 'imagePullPolicy is Never: the node must already have the image under this name',
    registry: undefined,
  })
  t.strictSame(result.warnings, [
    'mirrorhook: local: nginx:1.25 left unchanged: imagePullPolicy is Never: the node must already have the image under this name',
    'mirrorhook: web: nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (mode always)',
  ])
})

t.test('mutable tags: mirror (default) or keep', async (t) => {
  const pod = {
    spec: {
      containers: [
        { name: 'a', image: 'nginx', imagePullPolicy: 'Always' },
        { name: 'b', image: 'nginx:latest', imagePullPolicy: 'Always' },
        { name: 'c', image: 'nginx:1.25', imagePullPolicy: 'Always' },
        { name: 'd', image: `nginx:latest@sha256:${'b'.repeat(64)}`, imagePullPolicy: 'Always' },
      ],
    },
  }
  const mirrored = run(pod)
  t.strictSame(images(mirrored.spec), [
    'm.daocloud.io/docker.io/library/nginx',
    'm.daocloud.io/docker.io/library/nginx:latest',
    'm.daocloud.io/docker.io/library/nginx:1.25',
    `m.daocloud.io/docker.io/library/nginx:latest@sha256:${'b'.repeat(64)}`,
  ])
  const kept = run(pod, { pull: { mutableTags: 'keep' } })
  t.strictSame(images(kept.spec), [
    'nginx',
    'nginx:latest',
    'm.daocloud.io/docker.io/library/nginx:1.25',
    `m.daocloud.io/docker.io/library/nginx:latest@sha256:${'b'.repeat(64)}`,
  ])
  t.strictSame(
    kept.result.plans.map((p) => (p.decision.action === 'keep' ? p.decision.code : 'rewrite')),
    ['mutable-tag', 'mutable-tag', 'rewrite', 'rewrite'],
  )
  t.equal(
    kept.result.warnings[0],
    'mirrorhook: a: nginx left unchanged: the tag may move and pull.mutableTags is keep (a mirror may serve its old manifest for up to its cache time)',
  )
})

t.test('private images: a Pod with imagePullSecrets goes only to a mirror with credentials of its own', async (t) => {
  const pod = () => ({
    spec: {
      imagePullSecrets: [{ name: 'dockerhub-login' }],
      containers: [{ name: 'app', image: 'acme/private-app:3' }],
    },
  })
  const kept = run(pod())
  t.strictSame(images(kept.spec), ['acme/private-app:3'])
  t.strictSame(kept.result.patch, [])
  t.equal(kept.result.plans[0]?.decision.action === 'keep' && kept.result.plans[0].decision.code, 'needs-credentials')
  t.strictSame(kept.result.warnings, [
    'mirrorhook: app: acme/private-app:3 left unchanged: the Pod has imagePullSecrets and mirror m.daocloud.io has no pull Secret of its own (pull.privateImages is keep)',
  ])
  // The Pod's own secret is never given to the mirror: the patch only adds the mirror's.
  const credentialed = run(pod(), HARBOR)
  t.strictSame(images(credentialed.spec), ['harbor.corp.example/proxy/docker.io/acme/private-app:3'])
  t.strictSame(credentialed.spec.imagePullSecrets, [{ name: 'dockerhub-login' }, { name: 'harbor-pull' }])
  t.strictSame(
    credentialed.result.patch.filter((op) => op.path.includes('imagePullSecrets')),
    [{ op: 'add', path: '/spec/imagePullSecrets/1', value: { name: 'harbor-pull' } }],
  )
  // Configurable: sent to any mirror.
  const anyMirror = run(pod(), { pull: { privateImages: 'mirror' } })
  t.strictSame(images(anyMirror.spec), ['m.daocloud.io/docker.io/acme/private-app:3'])
  t.strictSame(anyMirror.spec.imagePullSecrets, [{ name: 'dockerhub-login' }])
  // A Pod without secrets is public.
  const { spec } = run({ spec: { containers: [{ name: 'app', image: 'acme/app:3' }] } })
  t.strictSame(images(spec), ['m.daocloud.io/docker.io/acme/app:3'])
})

t.test('a credentialed mirror: its pull Secret is added once, as an add of the list when absent', async (t) => {
  const pod = {
    spec: {
      initContainers: [{ name: 'init', image: 'busybox:1.36' }],
      containers: [
        { name: 'web', image: 'nginx:1.25' },
        { name: 'side', image: 'quay.io/org/side:2' },
      ],
    },
  }
  const { result, spec } = run(pod, HARBOR)
  t.strictSame(images(spec), ['harbor.corp.example/proxy/docker.io/library/nginx:1.25', 'harbor.corp.example/proxy/quay.io/org/side:2'])
  t.strictSame(spec.imagePullSecrets, [{ name: 'harbor-pull' }])
  t.strictSame(
    result.patch.filter((op) => op.path.startsWith('/spec/imagePullSecrets')),
    [{ op: 'add', path: '/spec/imagePullSecrets', value: [{ name: 'harbor-pull' }] }],
  )
  t.strictSame(
    result.plans.map((p) => p.pullSecret),
    ['harbor-pull', 'harbor-pull', 'harbor-pull'],
  )
  t.strictSame(result.warnings, [
    'mirrorhook: init: busybox:1.36 -> harbor.corp.example/proxy/docker.io/library/busybox:1.36 (mode always; pull Secret harbor-pull)',
    'mirrorhook: web: nginx:1.25 -> harbor.corp.example/proxy/docker.io/library/nginx:1.25 (mode always; pull Secret harbor-pull)',
    'mirrorhook: side: quay.io/org/side:2 -> harbor.corp.example/proxy/quay.io/org/side:2 (mode always; pull Secret harbor-pull)',
  ])

  // Already there (a reinvocation, or the author added it): nothing added, and it does not make the Pod private.
  const again = run({ spec: { ...structuredClone(pod.spec), imagePullSecrets: [{ name: 'harbor-pull' }] } }, HARBOR)
  t.strictSame(again.spec.imagePullSecrets, [{ name: 'harbor-pull' }])
  t.strictSame(
    again.result.patch.filter((op) => op.path.startsWith('/spec/imagePullSecrets')),
    [],
  )
  t.equal(images(again.spec)[0], 'harbor.corp.example/proxy/docker.io/library/nginx:1.25')

  // Mirrors by host: only the one with a Secret adds it.
  const hosts = {
    mirror: {
      hosts: { 'docker.io': 'harbor.corp.example/dockerhub', 'quay.io': 'quay.m.daocloud.io' },
      pullSecrets: { 'harbor.corp.example': 'harbor-pull' },
    },
  }
  const byHost = run({ spec: { containers: [{ name: 'q', image: 'quay.io/org/side:2' }] } }, hosts)
  t.strictSame(images(byHost.spec), ['quay.m.daocloud.io/org/side:2'])
  t.equal(byHost.spec.imagePullSecrets, undefined)
  const both = run(pod, hosts)
  t.strictSame(images(both.spec), ['harbor.corp.example/dockerhub/library/nginx:1.25', 'quay.m.daocloud.io/org/side:2'])
  t.strictSame(both.spec.imagePullSecrets, [{ name: 'harbor-pull' }])
})

t.test('the Secret must be in the namespace, and only a CREATE can add it', async (t) => {
  const pod = () => ({ metadata: { name: 'p' }, spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] } })
  const copies = new Set(['shop/harbor-pull'])
  const secrets: PullSecretView = { has: (ns, name) => copies.has(`${ns}/${name}`) }
  t.strictSame(images(run(pod(), HARBOR, {}, secrets).spec), ['harbor.corp.example/proxy/docker.io/library/nginx:1.25'])
  const elsewhere = run(pod(), HARBOR, { namespace: 'blog' }, secrets)
  t.strictSame(images(elsewhere.spec), ['nginx:1.25'])
  t.strictSame(elsewhere.result.warnings, [
    'mirrorhook: web: nginx:1.25 left unchanged: mirror harbor.corp.example needs pull Secret harbor-pull, which is not (yet) copied to namespace blog',
  ])

  // An UPDATE that changes an image: the Secret cannot be added any more.
  const old = pod()
  const changed = { ...pod(), spec: { containers: [{ name: 'web', image: 'nginx:1.26' }] } }
  const update = run(changed, HARBOR, { operation: 'UPDATE', oldObject: old }, secrets)
  t.strictSame(images(update.spec), ['nginx:1.26'])
  t.strictSame(update.result.warnings, [
    'mirrorhook: web: nginx:1.26 left unchanged: mirror harbor.corp.example needs pull Secret harbor-pull, which only a new Pod can be given',
  ])
  // ... unless the Pod already has it.
  const withSecret = { ...changed, spec: { ...changed.spec, imagePullSecrets: [{ name: 'harbor-pull' }] } }
  const update2 = run(withSecret, HARBOR, { operation: 'UPDATE', oldObject: old }, secrets)
  t.strictSame(images(update2.spec), ['harbor.corp.example/proxy/docker.io/library/nginx:1.26'])

  // spec.imagePullSecrets that is not a list: nothing can be appended; the image is kept.
  const bad = run({ spec: { imagePullSecrets: 'harbor-pull', containers: [{ name: 'web', image: 'nginx:1.25' }] } }, HARBOR)
  t.strictSame(images(bad.spec), ['nginx:1.25'])
  t.strictSame(bad.result.patch, [])
})

t.test('mirror.pullSecrets: compiled onto every target of its host, checked', async (t) => {
  const p = policyOf({
    mirror: {
      prefix: 'harbor.corp.example/proxy',
      hosts: { 'quay.io': 'harbor.corp.example/quay', 'ghcr.io': 'ghcr.m.daocloud.io' },
      pullSecrets: { 'Harbor.Corp.Example': 'harbor-pull' },
    },
  })
  t.strictSame(
    p.mirrors.map((m) => [m.repoPrefix, m.pullSecret]),
    [
      ['harbor.corp.example/proxy', 'harbor-pull'],
      ['harbor.corp.example/quay', 'harbor-pull'],
      ['ghcr.m.daocloud.io', undefined],
    ],
  )
  t.strictSame(
    policyOf({ mirror: { prefix: '127.0.0.1:5000/cache', pullSecrets: { '127.0.0.1:5000': 'local' } } }).mirrors[0]?.pullSecret,
    'local',
  )
  t.throws(() => policyOf({ mirror: { prefix: 'm.daocloud.io', pullSecrets: { 'harbor.corp.example': 'x' } } }), {
    message: /mirror\.pullSecrets\.harbor\.corp\.example: no mirror is on this host/,
  })
  t.throws(() => policyOf({ mirror: { prefix: 'm.daocloud.io', pullSecrets: { 'm.daocloud.io': 'Not_A_Name' } } }), ConfigError)
  t.throws(() => resolveConfig({ pull: { mutableTags: 'sometimes' } }, {}), { message: /pull\.mutableTags/ })
})

t.test('decideImage: needsCredentials skips a mirror without a pull Secret, and is part of the memo key', async (t) => {
  const p = policyOf({})
  const view = { ...staticReachability(p) }
  t.equal(decideImage('nginx:1.25', p, view).action, 'rewrite')
  t.equal(decideImage('nginx:1.25', p, view, { needsCredentials: true }).action, 'keep')
  t.equal(decideImage('nginx:1.25', p, view).action, 'rewrite')
  const h = policyOf(HARBOR)
  t.equal(decideImage('nginx:1.25', h, view, { needsCredentials: true }).action, 'rewrite')
})

const KF_LABELS = {
  app: 'kubefledged',
  kubefledged: 'kubefledged-image-manager',
  imagecache: 'ic-web',
  controller: 'kubefledged-controller',
}

// kube-fledged's image-pull Job Pod (pkg/images/helpers.go newImagePullJob, BUSYBOX_IMAGE default).
function pullJobPod(image: string, busybox = 'senthilrch/busybox:1.35.0', labels: Obj = KF_LABELS): Obj {
  const mount = [{ name: 'tmp-bin', mountPath: '/tmp/bin' }]
  return {
    metadata: {
      generateName: 'ic-web-x7k2p-',
      namespace: 'kube-fledged',
      labels: { ...labels, 'job-name': 'ic-web-x7k2p' },
      ownerReferences: [
        { apiVersion: 'batch/v1', kind: 'Job', name: 'ic-web-x7k2p', uid: 'u', controller: true, blockOwnerDeletion: true },
      ],
    },
    spec: {
      nodeSelector: { 'kubernetes.io/hostname': 'node-1' },
      initContainers: [
        { name: 'busybox', image: busybox, command: ['cp', '/bin/echo', '/tmp/bin'], volumeMounts: mount, imagePullPolicy: 'IfNotPresent' },
      ],
      containers: [
        {
          name: 'imagepuller',
          image,
          command: ['/tmp/bin/echo', 'Image pulled successfully!'],
          volumeMounts: mount,
          imagePullPolicy: 'IfNotPresent',
        },
      ],
      volumes: [{ name: 'tmp-bin', emptyDir: {} }],
      restartPolicy: 'Never',
      tolerations: [{ operator: 'Exists' }],
    },
  }
}

t.test("kube-fledged's pull-Job Pods get an allowlisted busybox through the mirror", async (t) => {
  const kf = { namespace: 'kube-fledged' }
  const { result, spec } = run(pullJobPod('m.daocloud.io/docker.io/library/nginx:1.25'), { kubeFledged: kf }, { namespace: 'kube-fledged' })
  t.strictSame(images(spec, 'initContainers'), ['m.daocloud.io/docker.io/library/busybox:1.35.0'])
  t.strictSame(images(spec), ['m.daocloud.io/docker.io/library/nginx:1.25'])
  t.strictSame(result.warnings, [
    "mirrorhook: busybox: senthilrch/busybox:1.35.0 -> m.daocloud.io/docker.io/library/busybox:1.35.0 (kube-fledged's init image senthilrch/busybox:1.35.0 replaced by docker.io/library/busybox:1.35.0; mode always)",
  ])
  // The image kube-fledged caches is pulled under the name its ImageCache gives.
  const user = run(pullJobPod('nginx:1.25'), {}, { namespace: 'kube-fledged' })
  t.strictSame(images(user.spec), ['nginx:1.25'])
  t.equal(user.result.plans[1]?.decision.action === 'keep' && user.result.plans[1].decision.code, 'kube-fledged-pull')
  // The ImageCache's pull secrets do not make kube-fledged's helper image private.
  const withSecrets = pullJobPod('m.daocloud.io/docker.io/library/nginx:1.25')
  ;(withSecrets.spec as Obj).imagePullSecrets = [{ name: 'corp-login' }]
  t.strictSame(images(run(withSecrets, {}, { namespace: 'kube-fledged' }).spec, 'initContainers'), [
    'm.daocloud.io/docker.io/library/busybox:1.35.0',
  ])

  // Configured image with its own tag; turned off; another namespace; not a pull Job; a BUSYBOX_IMAGE already set.
  const pinned = run(pullJobPod('x'), { pull: { kubeFledgedBusybox: 'docker.io/library/busybox:1.36.1' } }, { namespace: 'kube-fledged' })
  t.strictSame(images(pinned.spec, 'initContainers'), ['m.daocloud.io/docker.io/library/busybox:1.36.1'])
  const off = run(pullJobPod('x'), { pull: { kubeFledgedBusybox: '' } }, { namespace: 'kube-fledged' })
  t.strictSame(images(off.spec, 'initContainers'), ['m.daocloud.io/docker.io/senthilrch/busybox:1.35.0'])
  const elsewhere = run(pullJobPod('x'), {}, { namespace: 'shop' })
  t.strictSame(images(elsewhere.spec, 'initContainers'), ['m.daocloud.io/docker.io/senthilrch/busybox:1.35.0'])
  const notKf = run(pullJobPod('x', 'senthilrch/busybox:1.35.0', { app: 'web' }), {}, { namespace: 'kube-fledged' })
  t.strictSame(images(notKf.spec, 'initContainers'), ['m.daocloud.io/docker.io/senthilrch/busybox:1.35.0'])
  const recipe = run(pullJobPod('x', 'm.daocloud.io/docker.io/library/busybox:1.36'), {}, { namespace: 'kube-fledged' })
  t.strictSame(images(recipe.spec, 'initContainers'), ['m.daocloud.io/docker.io/library/busybox:1.36'])
  // Where the source is reachable (mode auto), nothing is replaced.
  const auto = run(pullJobPod('x'), { mode: 'auto', reachability: { unknown: 'direct' } }, { namespace: 'kube-fledged' })
  t.strictSame(images(auto.spec, 'initContainers'), ['senthilrch/busybox:1.35.0'])
  t.equal(kubeFledgedBusyboxFor('docker.io/senthilrch/busybox', policyOf()), 'docker.io/library/busybox')
  t.equal(kubeFledgedBusyboxFor('senthilrch/busybox-other:1', policyOf()), undefined)
})

t.test('dry-run of manifests applies the same rules (a template has no pull policy yet: the default is used)', async (t) => {
  const policy = policyOf({ ...HARBOR, pull: { mutableTags: 'keep' } })
  const deployment = {
    kind: 'Deployment',
    metadata: { name: 'web', namespace: 'shop' },
    spec: {
      template: {
        spec: {
          containers: [
            { name: 'web', image: 'nginx:1.25' },
            { name: 'latest', image: 'nginx' },
            { name: 'never', image: 'nginx:1.25', imagePullPolicy: 'Never' },
          ],
        },
      },
    },
  }
  const r = planManifest(deployment, policy, staticReachability(policy))
  t.strictSame(
    r.plans.map((p) => (p.decision.action === 'keep' ? p.decision.code : p.decision.rewritten)),
    ['harbor.corp.example/proxy/docker.io/library/nginx:1.25', 'mutable-tag', 'pull-policy-never'],
  )
  t.strictSame(
    r.patch.filter((op) => op.path.includes('imagePullSecrets')),
    [{ op: 'add', path: '/spec/template/spec/imagePullSecrets', value: [{ name: 'harbor-pull' }] }],
  )
})
