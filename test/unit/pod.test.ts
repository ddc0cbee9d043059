import t from 'tap'
import jsonpatch from 'fast-json-patch'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { admit, type AdmissionRequest } from '../../server/admission/review.js'
import { planManifest } from '../../server/core/manifests.js'

const ORIGINAL_IMAGES_ANNOTATION = 'mirrorhook.io/original-images'

type Pod = {
  metadata?: Record<string, unknown>
  spec: Record<string, unknown>
}

function policyOf(input: ConfigInput = {}) {
  return compilePolicy(resolveConfig(input, {}))
}

function run(pod: Pod, extra: Partial<AdmissionRequest> = {}, input: ConfigInput = {}) {
  const policy = policyOf(input)
  const request: AdmissionRequest = { uid: 'u1', namespace: 'shop', operation: 'CREATE', object: pod, ...extra }
  const result = admit(request, policy, staticReachability(policy))
  const patched = jsonpatch.applyPatch(structuredClone(pod), jsonpatch.deepClone(result.patch), true, false).newDocument
  return { result, patched: patched as Pod }
}

const podWith = (metadata: Record<string, unknown> | undefined): Pod => ({
  ...(metadata ? { metadata } : {}),
  spec: {
    initContainers: [
      { name: 'init-a', image: 'busybox:1.36' },
      { name: 'init-b', image: 'registry.corp.example/tools/init:1' },
      { name: 'init-c', image: 'quay.io/org/init:2' },
    ],
    containers: [
      { name: 'web', image: 'nginx:1.25', ports: [{ containerPort: 80 }] },
      { name: 'side', image: `ghcr.io/org/side@sha256:${'c'.repeat(64)}` },
    ],
  },
})

const expectedImages = {
  initContainers: [
    'm.daocloud.io/docker.io/library/busybox:1.36',
    'registry.corp.example/tools/init:1',
    'm.daocloud.io/quay.io/org/init:2',
  ],
  containers: ['m.daocloud.io/docker.io/library/nginx:1.25', `m.daocloud.io/ghcr.io/org/side@sha256:${'c'.repeat(64)}`],
}
const expectedOriginals = {
  'init-a': 'busybox:1.36',
  'init-c': 'quay.io/org/init:2',
  web: 'nginx:1.25',
  side: `ghcr.io/org/side@sha256:${'c'.repeat(64)}`,
}

t.test('the patch gives exactly the intended Pod, with or without annotations', async (t) => {
  const variants: [string, Record<string, unknown> | undefined][] = [
    ['no metadata', undefined],
    ['no annotations', { name: 'p', labels: { app: 'web' } }],
    ['empty annotations', { name: 'p', annotations: {} }],
    ['other annotations', { name: 'p', annotations: { 'team/owner': 'payments', 'a~b': 'c' } }],
  ]
  for (const [label, metadata] of variants) {
    const pod = podWith(metadata)
    const { result, patched } = run(pod)
    t.equal(result.outcome, 'mutated', label)
    const expected = structuredClone(pod)
    ;(expected.spec.initContainers as { image: string }[]).forEach((c, i) => (c.image = expectedImages.initContainers[i]!))
    ;(expected.spec.containers as { image: string }[]).forEach((c, i) => (c.image = expectedImages.containers[i]!))
    expected.metadata = {
      ...(metadata ?? {}),
      annotations: { ...((metadata?.annotations as object) ?? {}), [ORIGINAL_IMAGES_ANNOTATION]: JSON.stringify(expectedOriginals) },
    }
    t.strictSame(patched, expected, `${label}: the patched Pod is exactly as intended`)
    t.equal(result.patch.filter((op) => op.op === 'replace').length, 4, `${label}: one replace per rewritten image`)
    t.equal(result.warnings.length, 4, `${label}: one warning per rewrite`)
  }
})

t.test('the annotation path escapes the slash', async (t) => {
  const { result } = run(podWith({ annotations: { x: 'y' } }))
  t.strictSame(result.patch, [
    {
      op: 'replace',
      path: '/spec/containers/1/image',
      value: 'm.daocloud.io/ghcr.io/org/side@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc',
    },
    { op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' },
    { op: 'replace', path: '/spec/initContainers/2/image', value: 'm.daocloud.io/quay.io/org/init:2' },
    { op: 'replace', path: '/spec/initContainers/0/image', value: 'm.daocloud.io/docker.io/library/busybox:1.36' },
    {
      op: 'add',
      path: '/metadata/annotations/mirrorhook.io~1original-images',
      value:
        '{"init-a":"busybox:1.36","init-c":"quay.io/org/init:2","web":"nginx:1.25","side":"ghcr.io/org/side@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}',
    },
  ])
})

t.test('an existing original-images annotation is merged, not lost', async (t) => {
  const pod: Pod = {
    metadata: { annotations: { [ORIGINAL_IMAGES_ANNOTATION]: JSON.stringify({ old: 'redis:7' }) } },
    spec: {
      containers: [
        { name: 'old', image: 'm.daocloud.io/docker.io/library/redis:7' },
        { name: 'new', image: 'nginx' },
      ],
    },
  }
  const { patched } = run(pod)
  t.strictSame(
    JSON.parse(
      String(patched.metadata?.annotations && (patched.metadata.annotations as Record<string, string>)[ORIGINAL_IMAGES_ANNOTATION]),
    ),
    {
      old: 'redis:7',
      new: 'nginx',
    },
  )
  t.equal((patched.spec.containers as { image: string }[])[0]!.image, 'm.daocloud.io/docker.io/library/redis:7', 'the mirrored image stays')
})

t.test('a stale original in the annotation gives way to the image this admission rewrote', async (t) => {
  // A template copied with an old annotation: the record must name what this Pod asked for.
  const pod: Pod = {
    metadata: { annotations: { [ORIGINAL_IMAGES_ANNOTATION]: '{"web":"nginx:1.24","gone":"redis:6"}' } },
    spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] },
  }
  const { patched } = run(pod)
  t.strictSame(JSON.parse((patched.metadata!.annotations as Record<string, string>)[ORIGINAL_IMAGES_ANNOTATION]!), {
    web: 'nginx:1.25',
    gone: 'redis:6',
  })
  t.equal((patched.spec.containers as { image: string }[])[0]!.image, 'm.daocloud.io/docker.io/library/nginx:1.25')
})

t.test('the skip label value is case-insensitive', async (t) => {
  const labelled = (value: string): Pod => ({
    metadata: { labels: { 'mirrorhook.io/skip': value } },
    spec: { containers: [{ name: 'c', image: 'nginx' }] },
  })
  for (const value of ['true', 'True', 'TRUE']) {
    const { result, patched } = run(labelled(value))
    t.equal(result.outcome, 'skipped', `skip=${value}`)
    t.strictSame(result.skip, { code: 'skip-label', reason: 'the Pod is labelled mirrorhook.io/skip=true' }, `skip=${value}: why`)
    t.equal((patched.spec.containers as { image: string }[])[0]!.image, 'nginx', `skip=${value}: image kept`)
  }
  for (const value of ['false', 'yes', '']) t.equal(run(labelled(value)).result.outcome, 'mutated', `skip=${value} does not skip`)
})

t.test('a second call on the mutated Pod changes nothing (reinvocation)', async (t) => {
  const { patched } = run(podWith({ name: 'p' }))
  const again = run(patched)
  t.equal(again.result.outcome, 'unchanged')
  t.strictSame(again.result.patch, [])
})

t.test('pod-level rules', async (t) => {
  const owned = (kind: string): Pod => ({
    metadata: { ownerReferences: [{ apiVersion: 'x/v1', kind, name: 'o', uid: '1', controller: true }] },
    spec: { containers: [{ name: 'c', image: 'nginx' }] },
  })
  for (const kind of ['ReplicaSet', 'StatefulSet', 'DaemonSet', 'Job'])
    t.equal(run(owned(kind)).result.outcome, 'mutated', `owned by ${kind}`)
  t.strictSame(
    run(owned('Cluster')).result,
    {
      outcome: 'skipped',
      patch: [],
      warnings: [],
      plans: [],
      skip: { code: 'owner-kind', reason: 'the Pod is controlled by Cluster o, which is not in podOwners' },
    },
    'an operator-owned Pod is left alone',
  )
  t.equal(run(owned('Cluster'), {}, { podOwners: ['Cluster'] }).result.outcome, 'mutated', 'the owner list is configurable')
  const nonController: Pod = {
    metadata: { ownerReferences: [{ kind: 'Cluster', name: 'o', uid: '1' }] },
    spec: { containers: [{ name: 'c', image: 'nginx' }] },
  }
  t.equal(run(nonController).result.outcome, 'mutated', 'only the controlling owner counts')

  const labelled: Pod = { metadata: { labels: { 'mirrorhook.io/skip': 'true' } }, spec: { containers: [{ name: 'c', image: 'nginx' }] } }
  t.strictSame(run(labelled).result, {
    outcome: 'skipped',
    patch: [],
    warnings: [],
    plans: [],
    skip: { code: 'skip-label', reason: 'the Pod is labelled mirrorhook.io/skip=true' },
  })
  const plain: Pod = { spec: { containers: [{ name: 'c', image: 'nginx' }] } }
  t.strictSame(run(plain, { namespace: 'kube-system' }).result, {
    outcome: 'skipped',
    patch: [],
    warnings: [],
    plans: [],
    skip: { code: 'excluded-namespace', reason: 'namespace kube-system is excluded' },
  })
  t.strictSame(
    run(plain, { namespace: 'mirrorhook' }).result,
    {
      outcome: 'skipped',
      patch: [],
      warnings: [],
      plans: [],
      skip: { code: 'excluded-namespace', reason: 'namespace mirrorhook is excluded' },
    },
    'its own namespace',
  )
})

t.test('UPDATE only considers images that changed', async (t) => {
  const old: Pod = {
    spec: {
      containers: [
        { name: 'a', image: 'nginx:1' },
        { name: 'b', image: 'redis:7' },
      ],
    },
  }
  const updated: Pod = {
    metadata: { labels: { x: 'y' } },
    spec: {
      containers: [
        { name: 'a', image: 'nginx:1' },
        { name: 'b', image: 'redis:8' },
      ],
    },
  }
  const { result, patched } = run(updated, { operation: 'UPDATE', oldObject: old })
  t.strictSame(
    (patched.spec.containers as { image: string }[]).map((c) => c.image),
    ['nginx:1', 'm.daocloud.io/docker.io/library/redis:8'],
    'an unchanged image is not rewritten by an unrelated update',
  )
  t.equal(result.plans.length, 1)
})

t.test('ephemeral containers, through the subresource and in a Pod', async (t) => {
  const existing = { name: 'debug-1', image: 'busybox:1.36', targetContainerName: 'web' }
  const old: Pod = { spec: { containers: [{ name: 'web', image: 'nginx' }], ephemeralContainers: [existing] } }
  const added: Pod = {
    spec: { containers: [{ name: 'web', image: 'nginx' }], ephemeralContainers: [existing, { name: 'debug-2', image: 'busybox:1.36' }] },
  }
  const { result, patched } = run(added, { operation: 'UPDATE', subResource: 'ephemeralcontainers', oldObject: old })
  t.strictSame(
    result.patch.map((op) => op.path),
    ['/spec/ephemeralContainers/1/image'],
    'only the image: the subresource drops metadata',
  )
  t.equal(
    (patched.spec.ephemeralContainers as { image: string }[])[0]!.image,
    'busybox:1.36',
    'an existing ephemeral container is never changed',
  )
  t.equal((patched.spec.containers as { image: string }[])[0]!.image, 'nginx', 'containers are not touched through the subresource')

  const created: Pod = { spec: { containers: [{ name: 'c', image: 'nginx' }], ephemeralContainers: [{ name: 'e', image: 'busybox' }] } }
  t.strictSame(
    run(created)
      .result.patch.filter((op) => op.op === 'replace')
      .map((op) => op.path)
      .sort(),
    ['/spec/containers/0/image', '/spec/ephemeralContainers/0/image'],
    'the ops are independent: their order carries no meaning',
  )
})

t.test('invalid images are left untouched with a warning', async (t) => {
  const pod: Pod = { spec: { containers: [{ name: 'bad', image: 'Nginx:Latest' }, { name: 'ok', image: 'nginx' }, { name: 'none' }] } }
  const { result, patched } = run(pod)
  t.equal((patched.spec.containers as { image: string }[])[0]!.image, 'Nginx:Latest')
  t.strictSame(result.warnings, [
    'mirrorhook: bad: Nginx:Latest left unchanged: invalid image reference: invalid reference format: repository name (library/Nginx) must be lowercase',
    'mirrorhook: ok: nginx -> m.daocloud.io/docker.io/library/nginx (mode always)',
  ])
})

t.test('requests that are not Pod CREATE/UPDATE are ignored', async (t) => {
  const pod = podWith(undefined)
  t.equal(run(pod, { operation: 'DELETE' }).result.outcome, 'ignored')
  t.equal(run(pod, { kind: { kind: 'Deployment' }, resource: { resource: 'deployments' } }).result.outcome, 'ignored')
  // Kind and resource must both say Pod (or be absent): one of them is not enough.
  t.equal(run(pod, { resource: { resource: 'deployments' } }).result.outcome, 'ignored', 'resource deployments, no kind')
  t.equal(run(pod, { kind: { kind: 'Deployment' } }).result.outcome, 'ignored', 'kind Deployment, no resource')
  t.equal(
    run(pod, { kind: { kind: 'Pod' }, resource: { resource: 'deployments' } }).result.outcome,
    'ignored',
    'kind Pod, resource deployments',
  )
  t.equal(
    run(pod, { kind: { kind: 'Deployment' }, resource: { resource: 'pods' } }).result.outcome,
    'ignored',
    'kind Deployment, resource pods',
  )
  t.equal(run(pod, { kind: { kind: 'Pod' }, resource: { resource: 'pods' } }).result.outcome, 'mutated', 'a Pod')
  t.equal(run(pod).result.outcome, 'mutated', 'neither given: a Pod')
  t.equal(run(pod, { subResource: 'status' }).result.outcome, 'ignored')
  t.equal(run({ spec: undefined as unknown as Record<string, unknown> }).result.outcome, 'ignored')
})

t.test('images kept because the mirror is down or refused them are explained in a warning', async (t) => {
  const policy = policyOf({ mode: 'auto' } as ConfigInput)
  const view = {
    status: (registry: string) =>
      registry === 'm.daocloud.io'
        ? { state: 'unreachable' as const, evidence: 'probe refused' }
        : { state: 'unreachable' as const, evidence: 'pod status: i/o timeout' },
    mirrorRefusal: (repository: string) => (repository.endsWith('/private') ? 'HTTP 403 not in the allowlist' : undefined),
  }
  const request: AdmissionRequest = {
    uid: 'u',
    namespace: 'shop',
    operation: 'CREATE',
    object: { spec: { containers: [{ name: 'a', image: 'ghcr.io/org/private:1' }] } },
  }
  const down = admit(request, policy, view)
  t.equal(down.outcome, 'unchanged')
  t.strictSame(down.warnings, ['mirrorhook: a: ghcr.io/org/private:1 left unchanged: mirror m.daocloud.io is unreachable (probe refused)'])
  const up = {
    ...view,
    status: (r: string) => (r === 'm.daocloud.io' ? { state: 'reachable' as const, evidence: 'probe 401' } : view.status(r)),
  }
  const refused = admit(request, policy, up)
  t.strictSame(refused.warnings, [
    'mirrorhook: a: ghcr.io/org/private:1 left unchanged: mirror refused m.daocloud.io/ghcr.io/org/private (HTTP 403 not in the allowlist)',
  ])
})

const images = (list: unknown) =>
  (list as unknown[]).map((c) => (c && typeof c === 'object' && !Array.isArray(c) ? (c as { image?: unknown }).image : c))
const originalsOf = (pod: Pod) => (pod.metadata?.annotations as Record<string, string> | undefined)?.[ORIGINAL_IMAGES_ANNOTATION]

t.test('entries that are not containers keep their place: each container keeps its own image', async (t) => {
  const pod: Pod = {
    metadata: { name: 'p' },
    spec: {
      containers: [null, { name: 'keep-me', image: 'localhost:5000/internal/app:1' }, { name: 'rewrite-me', image: 'nginx:1.25' }],
    },
  }
  const { result, patched } = run(pod)
  t.strictSame(result.patch, [
    { op: 'replace', path: '/spec/containers/2/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' },
    { op: 'add', path: '/metadata/annotations', value: { [ORIGINAL_IMAGES_ANNOTATION]: '{"rewrite-me":"nginx:1.25"}' } },
  ])
  t.strictSame(images(patched.spec.containers), [null, 'localhost:5000/internal/app:1', 'm.daocloud.io/docker.io/library/nginx:1.25'])
  t.equal(originalsOf(patched), '{"rewrite-me":"nginx:1.25"}')
})

t.test('the patch applies when container lists hold strings, numbers and arrays', async (t) => {
  const pod: Pod = {
    spec: {
      containers: ['x', { name: 'rewrite-me', image: 'nginx:1.25' }],
      initContainers: [1, [], { name: 'init', image: 'busybox:1.36' }],
      ephemeralContainers: [true, 'y'],
    },
  }
  // run() applies the patch with validation: an op on a string or a number throws.
  const { patched } = run(pod)
  t.strictSame(images(patched.spec.containers), ['x', 'm.daocloud.io/docker.io/library/nginx:1.25'])
  t.strictSame(images(patched.spec.initContainers), [1, [], 'm.daocloud.io/docker.io/library/busybox:1.36'])
  t.strictSame(patched.spec.ephemeralContainers, [true, 'y'])
  t.equal(originalsOf(patched), '{"init":"busybox:1.36","rewrite-me":"nginx:1.25"}')
})

t.test('container names are data: __proto__ and constructor are recorded like any other', async (t) => {
  const pod: Pod = {
    metadata: { annotations: { [ORIGINAL_IMAGES_ANNOTATION]: '{"__proto__":"redis:6","toString":"redis:5"}' } },
    spec: {
      containers: [
        { name: '__proto__', image: 'nginx:1.25' },
        { name: 'constructor', image: 'redis:7' },
        { name: 'hasOwnProperty', image: 'quay.io/org/app:1' },
      ],
    },
  }
  const { patched } = run(pod)
  t.equal(
    originalsOf(patched),
    '{"__proto__":"nginx:1.25","toString":"redis:5","constructor":"redis:7","hasOwnProperty":"quay.io/org/app:1"}',
    'merged in order, the new original of __proto__ replacing the old one',
  )
})

// k8s.io/apimachinery/pkg/api/validation ValidateAnnotationsSize: the sum of len(key) + len(value)
// in bytes over all annotations must not exceed TotalAnnotationSizeLimitB = 256 * 1024.
const ANNOTATION_LIMIT = 256 * 1024
const annotationBytes = (annotations: Record<string, string>) =>
  Object.entries(annotations).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v), 0)

t.test('the annotation never pushes the Pod over the API server annotation size limit', async (t) => {
  const value = '{"web":"nginx:1.25"}'
  const own = Buffer.byteLength(ORIGINAL_IMAGES_ANNOTATION) + value.length
  const filler = (bytes: number, char = 'x') => ({
    'team.example/notes': char.repeat((bytes - 'team.example/notes'.length) / Buffer.byteLength(char)),
  })
  const podFor = (annotations: Record<string, string>): Pod => ({
    metadata: { annotations },
    spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] },
  })

  const exact = run(podFor(filler(ANNOTATION_LIMIT - own)))
  t.equal(originalsOf(exact.patched), value, 'exactly at the limit: written')
  t.equal(annotationBytes(exact.patched.metadata!.annotations as Record<string, string>), ANNOTATION_LIMIT)

  for (const [label, annotations] of [
    ['one byte over', filler(ANNOTATION_LIMIT - own + 1)],
    ['over in bytes, not in characters', filler(ANNOTATION_LIMIT - own + 1, 'é')],
  ] as const) {
    const { result, patched } = run(podFor(annotations))
    t.strictSame(
      result.patch,
      [{ op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' }],
      `${label}: the image is rewritten, the annotation left out`,
    )
    t.strictSame(patched.metadata!.annotations, annotations, `${label}: annotations unchanged`)
    t.strictSame(
      result.warnings,
      [
        "mirrorhook: annotation mirrorhook.io/original-images not written: the Pod's annotations would take 262145 bytes, over the API server's 256 KiB limit; the originals are in the rewrite warnings and the webhook log",
        'mirrorhook: web: nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (mode always)',
      ],
      `${label}: the annotation warning comes first`,
    )
  }

  const many: Pod = {
    metadata: { name: 'big' },
    spec: {
      containers: Array.from({ length: 2000 }, (_, i) => ({
        name: `container-with-a-rather-long-name-${String(i).padStart(4, '0')}`,
        image: `ghcr.io/example-organisation/a-fairly-long-repository-name/component-${i}:v1.2.3-build.456789`,
      })),
    },
  }
  const big = run(many)
  t.equal(big.result.patch.length, 2000, 'a valid 2,000-container Pod: every image rewritten, no annotation')
  t.equal(big.patched.metadata!.annotations, undefined)
  t.equal(
    big.result.warnings[0],
    "mirrorhook: annotation mirrorhook.io/original-images not written: the Pod's annotations would take 272920 bytes, over the API server's 256 KiB limit; the originals are in the rewrite warnings and the webhook log",
    'first, so that it survives when the API server drops warnings',
  )
})

t.test('a subdomain of a mirror host is never a source, like the mirror host itself', async (t) => {
  const input: ConfigInput = { mode: 'always', registries: ['*'], mirror: { prefix: 'mirror.test' } } as ConfigInput
  const pod: Pod = {
    spec: {
      containers: [
        { name: 'sub', image: 'sub.mirror.test/x:1' },
        { name: 'deep', image: 'a.b.mirror.test:5000/x:1' },
        { name: 'upper', image: 'SUB.Mirror.Test/x:1' },
        { name: 'mirror', image: 'mirror.test/ghcr.io/org/app:1' },
        { name: 'lookalike', image: 'notmirror.test/x:1' },
      ],
    },
  }
  const { result, patched } = run(pod, {}, input)
  t.strictSame(images(patched.spec.containers), [
    'sub.mirror.test/x:1',
    'a.b.mirror.test:5000/x:1',
    'SUB.Mirror.Test/x:1',
    'mirror.test/ghcr.io/org/app:1',
    'mirror.test/notmirror.test/x:1',
  ])
  t.strictSame(
    result.plans.map((p) => p.decision),
    [
      {
        action: 'keep',
        original: 'sub.mirror.test/x:1',
        code: 'no-proxy',
        reason: 'registry sub.mirror.test is a subdomain of mirror mirror.test',
        registry: 'sub.mirror.test',
      },
      {
        action: 'keep',
        original: 'a.b.mirror.test:5000/x:1',
        code: 'no-proxy',
        reason: 'registry a.b.mirror.test:5000 is a subdomain of mirror mirror.test',
        registry: 'a.b.mirror.test:5000',
      },
      {
        action: 'keep',
        original: 'SUB.Mirror.Test/x:1',
        code: 'no-proxy',
        reason: 'registry SUB.Mirror.Test is a subdomain of mirror mirror.test',
        registry: 'sub.mirror.test',
      },
      {
        action: 'keep',
        original: 'mirror.test/ghcr.io/org/app:1',
        code: 'already-mirrored',
        reason: 'already on mirror mirror.test',
        registry: 'mirror.test',
      },
      {
        action: 'rewrite',
        original: 'notmirror.test/x:1',
        rewritten: 'mirror.test/notmirror.test/x:1',
        registry: 'notmirror.test',
        reason: 'mode always',
      },
    ],
  )
})

t.test('manifest kinds are data: __proto__ and constructor are kinds without a Pod template', async (t) => {
  const policy = policyOf()
  for (const kind of ['__proto__', 'constructor', 'toString']) {
    const result = planManifest(
      { kind, metadata: { name: 'x' }, spec: { template: { spec: { containers: [{ name: 'c', image: 'nginx' }] } } } },
      policy,
      staticReachability(policy),
    )
    t.strictSame(result, { kind, name: 'x', plans: [], patch: [], unsupported: true }, kind)
  }
})
