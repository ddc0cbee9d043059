// The remediation verdict for one failing Pod: which failures are acted on, what the Pod should
// pull instead, and every safety rule, by table.
import t from 'tap'
import type { V1Pod } from '@kubernetes/client-node'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import type { ReachabilityView, RegistryState } from '../../server/core/rewrite.js'
import { type DecideContext, decidePod, markedRemediated, remediatedMark } from '../../server/remediation/decide.js'

const NETWORK =
  'rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "docker.io/library/nginx:1.25": ' +
  'failed to resolve reference "docker.io/library/nginx:1.25": dial tcp 192.0.2.1:443: i/o timeout'
const NOT_FOUND = 'rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/nginx:9.9": not found'
const UNAUTHORIZED = 'failed to authorize: failed to fetch anonymous token: 401 Unauthorized'
const FORBIDDEN = 'unexpected status from HEAD request to https://mirror.example/v2/docker.io/library/nginx/manifests/1.25: 403 Forbidden'
const RATE = 'toomanyrequests: You have reached your pull rate limit'
const MIRROR_NGINX = 'mirror.example/docker.io/library/nginx:1.25'

function view(states: Record<string, RegistryState>): ReachabilityView {
  return { status: (registry) => ({ state: states[registry] ?? 'unknown', evidence: `evidence for ${registry}` }) }
}

interface PodShape {
  namespace?: string
  image?: string
  init?: boolean
  reason?: string
  error?: string
  owner?: { kind: string; name: string } | null
  annotations?: Record<string, string>
  labels?: Record<string, string>
  deleting?: boolean
}

function pod(p: PodShape = {}): V1Pod {
  const image = p.image ?? 'nginx:1.25'
  const reason = p.reason ?? 'ErrImagePull'
  const error = p.error ?? NETWORK
  const message = reason === 'ErrImagePull' ? error : `Back-off pulling image "${image}": ErrImagePull: ${error}`
  const status = [{ name: 'web', image, ready: false, restartCount: 0, imageID: '', state: { waiting: { reason, message } } }]
  const owner = p.owner === undefined ? { kind: 'ReplicaSet', name: 'web-1' } : p.owner
  return {
    metadata: {
      name: 'web-1-abc',
      namespace: p.namespace ?? 'shop',
      uid: 'pod-uid',
      labels: p.labels,
      annotations: p.annotations,
      deletionTimestamp: p.deleting ? new Date(0) : undefined,
      ownerReferences: owner
        ? [{ apiVersion: 'apps/v1', kind: owner.kind, name: owner.name, uid: 'owner-uid', controller: true }]
        : undefined,
    },
    spec: p.init
      ? { initContainers: [{ name: 'web', image }], containers: [{ name: 'app', image: 'registry.corp/app:1' }] }
      : { containers: [{ name: 'web', image }] },
    status: p.init ? { phase: 'Pending', initContainerStatuses: status } : { phase: 'Pending', containerStatuses: status },
  }
}

function ctx(o: Partial<DecideContext> & { config?: ConfigInput; states?: Record<string, RegistryState> } = {}): DecideContext {
  const config = resolveConfig({ mirror: { prefix: 'mirror.example' }, registries: ['docker.io'], mode: 'auto', ...o.config }, {})
  return {
    policy: compilePolicy(config),
    reachability: view(o.states ?? { 'docker.io': 'unreachable' }),
    ownerKinds: new Set(['ReplicaSet', 'StatefulSet']),
    method: 'evict',
    barePods: 'leave',
    ownNamespace: 'mirrorhook',
    optedIn: (ns) => ns !== 'elsewhere',
    minFailingMs: 30_000,
    perOwnerPerHour: 2,
    now: 100_000,
    failingSince: () => 0,
    remediated: () => false,
    ownerCount: () => 0,
    ...o,
  }
}

const evictNginx = {
  kind: 'act',
  method: 'evict',
  owner: { kind: 'ReplicaSet', name: 'web-1', uid: 'owner-uid' },
  changes: [
    {
      field: 'containers',
      index: 0,
      container: 'web',
      reason: 'ErrImagePull',
      failure: 'network',
      cause: 'i/o timeout',
      from: 'nginx:1.25',
      to: MIRROR_NGINX,
      original: 'nginx:1.25',
    },
  ],
  notes: [],
}

t.test('a network failure of the original: evict, so the controller recreates it with the mirror', async (t) => {
  t.strictSame(decidePod(pod(), ctx()), evictNginx)
  t.strictSame(decidePod(pod({ reason: 'ImagePullBackOff' }), ctx()), {
    ...evictNginx,
    changes: [{ ...evictNginx.changes[0], reason: 'ImagePullBackOff' }],
  })
  const init = decidePod(pod({ init: true }), ctx())
  t.strictSame(init.kind === 'act' && init.changes.map((c) => [c.field, c.index, c.to]), [['initContainers', 0, MIRROR_NGINX]])
  const rate = decidePod(pod({ error: RATE }), ctx())
  t.strictSame(rate.kind === 'act' && rate.changes.map((c) => [c.failure, c.to]), [['rate-limited', MIRROR_NGINX]])
  t.strictSame(decidePod(pod(), ctx({ method: 'patch' })), { ...evictNginx, method: 'patch' })
})

t.test('failures a mirror cannot fix: one verdict saying why', async (t) => {
  const cases: [string, string, string][] = [
    [NOT_FOUND, 'not-found', 'web: nginx:1.25 failed (not found): a mirror cannot serve an image that does not exist'],
    [UNAUTHORIZED, 'unauthorized', 'web: nginx:1.25 failed (unauthorized): a mirror cannot fix missing or wrong credentials'],
    ['unexpected status 403 Forbidden', 'forbidden', 'web: nginx:1.25 failed (HTTP 403 Forbidden): the registry refused it'],
    ['ErrImageNeverPull', 'other', 'web: nginx:1.25 failed (not a registry failure): not a registry failure a mirror can fix'],
  ]
  for (const [error, code, reason] of cases) t.strictSame(decidePod(pod({ error }), ctx()), { kind: 'cannot', code, reason }, code)
})

t.test('the current decision decides the reference: act only when it differs', async (t) => {
  t.strictSame(decidePod(pod(), ctx({ states: { 'docker.io': 'reachable' } })), {
    kind: 'cannot',
    code: 'decision-keeps',
    reason:
      'web: nginx:1.25 failed (i/o timeout): the current decision keeps it (registry docker.io is reachable (evidence for docker.io))',
  })
  t.strictSame(decidePod(pod({ image: 'quay.io/a/b:1' }), ctx()), {
    kind: 'cannot',
    code: 'decision-keeps',
    reason: 'web: quay.io/a/b:1 failed (i/o timeout): the current decision keeps it (registry quay.io is not in the configured registries)',
  })
  t.strictSame(decidePod(pod({ image: MIRROR_NGINX, annotations: { 'mirrorhook.io/original-images': '{"web":"nginx:1.25"}' } }), ctx()), {
    kind: 'cannot',
    code: 'mirror-failing',
    reason: `web: ${MIRROR_NGINX} failed (i/o timeout): the mirror itself fails to serve it`,
  })
})

t.test('a mirror refusal goes back to the original only while its registry is reachable', async (t) => {
  const refused = pod({ image: MIRROR_NGINX, error: FORBIDDEN, annotations: { 'mirrorhook.io/original-images': '{"web":"nginx:1.25"}' } })
  const back = decidePod(refused, ctx({ config: { mode: 'unreachable' }, states: { 'docker.io': 'reachable' } }))
  t.strictSame(back.kind === 'act' && back.changes.map((c) => [c.failure, c.from, c.to, c.original]), [
    ['forbidden', MIRROR_NGINX, 'nginx:1.25', 'nginx:1.25'],
  ])
  t.strictSame(decidePod(refused, ctx({ config: { mode: 'unreachable' } })), {
    kind: 'cannot',
    code: 'decision-keeps',
    reason: `web: ${MIRROR_NGINX} failed (HTTP 403 Forbidden): the current decision still pulls it from the mirror (registry docker.io is unreachable (evidence for docker.io))`,
  })
  t.strictSame(decidePod(refused, ctx({ config: { mode: 'always' } })).kind, 'cannot', 'mode always: the mirror it stays')
  t.strictSame(decidePod(pod({ image: MIRROR_NGINX, error: FORBIDDEN }), ctx()), {
    kind: 'cannot',
    code: 'no-original',
    reason: `web: ${MIRROR_NGINX} failed (HTTP 403 Forbidden): the mirror refused it and the original reference is not recorded`,
  })
})

t.test('safety: Pods and namespaces never touched, silently', async (t) => {
  const ignored = (p: V1Pod, c: DecideContext) => {
    const v = decidePod(p, c)
    return v.kind === 'ignore' ? v.code : v.kind
  }
  t.equal(ignored(pod({ namespace: 'kube-system' }), ctx()), 'excluded-namespace')
  t.equal(ignored(pod({ namespace: 'mirrorhook' }), ctx()), 'excluded-namespace')
  t.equal(ignored(pod({ namespace: 'elsewhere' }), ctx()), 'not-opted-in')
  t.equal(ignored(pod({ labels: { 'mirrorhook.io/skip': 'true' } }), ctx()), 'skip-label')
  t.equal(ignored(pod({ deleting: true }), ctx()), 'terminating')
  t.equal(ignored(pod({ owner: { kind: 'Job', name: 'j' } }), ctx()), 'owner-kind')
  t.equal(ignored(pod({ owner: { kind: 'Rollout', name: 'r' } }), ctx()), 'owner-kind', 'operators’ Pods')
  t.equal(ignored(pod(), ctx({ remediated: (uid) => uid === 'pod-uid' })), 'done', 'at most once per Pod UID')
  t.equal(ignored(pod({ error: 'x', reason: 'CrashLoopBackOff' }), ctx()), 'not-failing')
})

t.test('after a restart: a Pod carrying mirrorhook.io/remediated for its own UID is remediated already', async (t) => {
  const at = new Date('2026-11-29T21:00:00.000Z')
  t.equal(remediatedMark(at, 'pod-uid'), '2026-11-29T21:00:00.000Z pod-uid')
  const table: [string, Record<string, string> | undefined, boolean][] = [
    ['no annotations', undefined, false],
    ['another mirrorhook annotation only', { 'mirrorhook.io/original-images': '{"web":"nginx:1.25"}' }, false],
    ['the mark for this UID', { 'mirrorhook.io/remediated': '2026-11-29T21:00:00.000Z pod-uid' }, true],
    ['the mark for another UID (a copy of a patched Pod)', { 'mirrorhook.io/remediated': '2026-11-29T21:00:00.000Z other-uid' }, false],
    ['a time without a UID', { 'mirrorhook.io/remediated': '2026-11-29T21:00:00.000Z' }, false],
    ['empty', { 'mirrorhook.io/remediated': '' }, false],
    ['the UID followed by more', { 'mirrorhook.io/remediated': '2026-11-29T21:00:00.000Z pod-uid x' }, false],
  ]
  for (const [name, annotations, marked] of table) {
    t.equal(markedRemediated(pod({ annotations })), marked, name)
    const v = decidePod(pod({ annotations }), ctx({ remediated: () => false }))
    t.strictSame(
      v.kind === 'ignore' ? [v.kind, v.code, v.reason] : v.kind,
      marked ? ['ignore', 'done', 'this Pod carries mirrorhook.io/remediated: it was patched already'] : 'act',
      `${name}: the verdict`,
    )
  }
  // A bare Pod patched before the restart, still failing on the mirror: not patched back.
  const patched = pod({
    owner: null,
    image: MIRROR_NGINX,
    error: FORBIDDEN,
    annotations: { 'mirrorhook.io/original-images': '{"web":"nginx:1.25"}', 'mirrorhook.io/remediated': remediatedMark(at, 'pod-uid') },
  })
  const fresh = ctx({ barePods: 'patch', states: { 'docker.io': 'reachable' } })
  t.strictSame(decidePod(patched, fresh), {
    kind: 'ignore',
    code: 'done',
    reason: 'this Pod carries mirrorhook.io/remediated: it was patched already',
  })
  const unmarked = decidePod(
    { ...patched, metadata: { ...patched.metadata, annotations: { 'mirrorhook.io/original-images': '{"web":"nginx:1.25"}' } } },
    fresh,
  )
  t.strictSame(
    unmarked.kind === 'act' && [unmarked.method, unmarked.changes.map((c) => c.to)],
    ['patch', ['nginx:1.25']],
    'without the mark it would be patched back',
  )
})

t.test('safety: waits for the minimum failing time, the owner cap and a mirror known down', async (t) => {
  t.strictSame(decidePod(pod(), ctx({ failingSince: () => 80_000 })), {
    kind: 'wait',
    code: 'too-early',
    reason: 'web has been failing for less than 30 s',
  })
  t.strictSame(decidePod(pod(), ctx({ failingSince: () => 70_000 })).kind, 'act', 'exactly the minimum')
  t.strictSame(
    decidePod(pod({ error: NOT_FOUND }), ctx({ failingSince: () => 80_000 })),
    {
      kind: 'wait',
      code: 'too-early',
      reason: 'web has been failing for less than 30 s',
    },
    'nothing said before the minimum either',
  )
  t.strictSame(decidePod(pod(), ctx({ ownerCount: (uid) => (uid === 'owner-uid' ? 2 : 0) })), {
    kind: 'wait',
    code: 'owner-cap',
    reason: '2 Pods of ReplicaSet web-1 were remediated in the last hour',
  })
  t.strictSame(decidePod(pod(), ctx({ ownerCount: () => 1 })).kind, 'act', 'below the cap')
  t.strictSame(decidePod(pod(), ctx({ states: { 'docker.io': 'unreachable', 'mirror.example': 'unreachable' } })), {
    kind: 'wait',
    code: 'mirror-down',
    reason: 'mirror mirror.example is unreachable (evidence for mirror.example)',
  })
  t.strictSame(decidePod(pod(), ctx({ config: { mode: 'always' }, states: { 'mirror.example': 'unreachable' } })), {
    kind: 'wait',
    code: 'mirror-down',
    reason: 'mirror mirror.example is unreachable (evidence for mirror.example)',
  })
})

t.test('bare Pods follow remediation.barePods', async (t) => {
  t.strictSame(decidePod(pod({ owner: null }), ctx()), {
    kind: 'cannot',
    code: 'bare-pod',
    reason: `no controller would recreate this Pod (remediation.barePods is leave); it should pull ${MIRROR_NGINX}`,
  })
  t.strictSame(decidePod(pod({ owner: null }), ctx({ barePods: 'patch' })), { ...evictNginx, method: 'patch', owner: undefined })
})
