// Passive learning without a cluster: Pod statuses and Events as the kubelet
// writes them, turned into findings; repeats are not counted twice.
import t from 'tap'
import { KubeConfig, type CoreV1Event, type V1Pod } from '@kubernetes/client-node'
import { pino } from 'pino'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { OptedInNamespaces } from '../../server/kube/namespaces.js'
import { PodCache } from '../../server/kube/pods.js'
import { ClusterLearner, type Finding, findingForFailure, findingForPulled, pullFailures } from '../../server/reachability/learner.js'

const policy = (input: ConfigInput = {}) => compilePolicy(resolveConfig({ mirror: { prefix: 'm.daocloud.io' }, ...input }, {}))
const AT = Date.parse('2026-03-01T10:00:00Z')

const TIMEOUT =
  'rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "quay.io/acme/app:1": failed to resolve reference "quay.io/acme/app:1": failed to do request: Head "https://quay.io/v2/acme/app/manifests/1": dial tcp 54.1.2.3:443: i/o timeout'
const NOT_FOUND =
  'rpc error: code = NotFound desc = failed to pull and unpack image "ghcr.io/acme/typo:1": failed to resolve reference "ghcr.io/acme/typo:1": ghcr.io/acme/typo:1: not found'
const ALLOWLIST =
  'initializing source docker://m.daocloud.io/quay.io/acme/app:1: reading manifest 1 in m.daocloud.io/quay.io/acme/app: denied: 🚫 这镜像不在白名单. this image is not in the allowlist.'

function pod(name: string, containers: { name: string; image: string; waiting?: { reason: string; message?: string } }[], rv = '1'): V1Pod {
  return {
    metadata: { name, namespace: 'shop', uid: `uid-${name}`, resourceVersion: rv },
    spec: { containers: containers.map(({ name, image }) => ({ name, image })) },
    status: {
      phase: 'Pending',
      containerStatuses: containers.map((c) => ({
        name: c.name,
        image: c.image,
        imageID: '',
        ready: false,
        restartCount: 0,
        state: c.waiting ? { waiting: c.waiting } : { running: {} },
      })),
    },
  }
}

t.test('waiting containers with a pull error, in both waiting reasons', async (t) => {
  const p = pod('web', [
    { name: 'a', image: 'quay.io/acme/app:1', waiting: { reason: 'ErrImagePull', message: TIMEOUT } },
    {
      name: 'b',
      image: 'quay.io/acme/app:1',
      waiting: { reason: 'ImagePullBackOff', message: `Back-off pulling image "quay.io/acme/app:1": ErrImagePull: ${TIMEOUT}` },
    },
    // Before 1.30 the back-off message did not carry the cause.
    {
      name: 'c',
      image: 'quay.io/acme/app:1',
      waiting: { reason: 'ImagePullBackOff', message: 'Back-off pulling image "quay.io/acme/app:1"' },
    },
    { name: 'd', image: 'nginx', waiting: { reason: 'ContainerCreating' } },
    { name: 'e', image: 'nginx' },
  ])
  t.strictSame(
    pullFailures(p).map((f) => [f.container, f.reason, f.error === TIMEOUT]),
    [
      ['a', 'ErrImagePull', true],
      ['b', 'ImagePullBackOff', true],
    ],
  )
})

t.test("a network failure marks the image's registry; not-found marks nothing", async (t) => {
  const pol = policy()
  t.strictSame(findingForFailure({ image: 'quay.io/acme/app:1', error: TIMEOUT, where: 'pod shop/web' }, 'pod', pol, AT), {
    kind: 'registry',
    registry: 'quay.io',
    observation: { at: AT, source: 'pod', outcome: 'fail', detail: 'i/o timeout pulling quay.io/acme/app:1 (pod shop/web)' },
  })
  t.strictSame(
    findingForFailure({ image: 'nginx:1.25', error: TIMEOUT, where: 'x' }, 'pod', pol, AT),
    {
      kind: 'registry',
      registry: 'docker.io',
      observation: { at: AT, source: 'pod', outcome: 'fail', detail: 'i/o timeout pulling nginx:1.25 (x)' },
    },
    'short names are Docker Hub',
  )
  t.equal(findingForFailure({ image: 'ghcr.io/acme/typo:1', error: NOT_FOUND, where: 'x' }, 'pod', pol, AT), undefined)
  t.equal(findingForFailure({ image: 'Not A Ref', error: TIMEOUT, where: 'x' }, 'pod', pol, AT), undefined)
})

t.test('a refusal by the mirror marks that one repository; by a source registry, nothing', async (t) => {
  const pol = policy()
  t.strictSame(findingForFailure({ image: 'm.daocloud.io/quay.io/acme/app:1', error: ALLOWLIST, where: 'pod shop/web' }, 'pod', pol, AT), {
    kind: 'refusal',
    repository: 'm.daocloud.io/quay.io/acme/app',
    detail: 'not in the mirror allowlist (pod shop/web)',
    at: AT,
  })
  t.equal(
    findingForFailure(
      {
        image: 'quay.io/acme/app:1',
        error: 'unexpected status from HEAD request to https://quay.io/v2/acme/app/manifests/1: 403 Forbidden',
        where: 'x',
      },
      'pod',
      pol,
      AT,
    ),
    undefined,
  )
  t.strictSame(
    findingForFailure({ image: 'm.daocloud.io/quay.io/acme/app:1', error: TIMEOUT, where: 'x' }, 'pod', pol, AT),
    {
      kind: 'registry',
      registry: 'm.daocloud.io',
      observation: { at: AT, source: 'pod', outcome: 'fail', detail: 'i/o timeout pulling m.daocloud.io/quay.io/acme/app:1 (x)' },
    },
    'a network failure of a mirror reference is evidence about the mirror',
  )
})

t.test('Pulled events: over the threshold is slow, under it is proof of reachability', async (t) => {
  const pol = policy()
  t.strictSame(
    findingForPulled(
      'Successfully pulled image "ghcr.io/acme/big:1" in 3m0.5s (3m0.5s including waiting). Image size: 912345678 bytes.',
      'pod shop/big',
      pol,
      120_000,
      AT,
    ),
    {
      kind: 'registry',
      registry: 'ghcr.io',
      observation: {
        at: AT,
        source: 'event',
        outcome: 'slow',
        durationMs: 180_500,
        detail: 'pull of ghcr.io/acme/big:1 took 180.5 s (over 120 s) (pod shop/big)',
      },
    },
  )
  t.strictSame(
    findingForPulled(
      'Successfully pulled image "ghcr.io/acme/small:1" in 1.2s (1.2s including waiting). Image size: 1234 bytes.',
      'pod shop/s',
      pol,
      120_000,
      AT,
    ),
    {
      kind: 'registry',
      registry: 'ghcr.io',
      observation: {
        at: AT,
        source: 'event',
        outcome: 'ok',
        durationMs: 1200,
        detail: 'pull of ghcr.io/acme/small:1 took 1.2 s (pod shop/s)',
      },
    },
  )
  t.equal(findingForPulled('Container image "ghcr.io/acme/small:1" already present on machine', 'x', pol, 120_000, AT), undefined)
})

t.test('the learner counts each failed pull once, whatever the relists and back-offs', async (t) => {
  const kc = new KubeConfig()
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: 'https://127.0.0.1:1' }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  })
  const findings: Finding[] = []
  let now = AT
  const options: ConstructorParameters<typeof ClusterLearner>[0] = {
    kubeConfig: kc,
    // Never started: the test hands Pods and Events to the learner itself.
    pods: new PodCache({ kubeConfig: kc, logger: pino({ level: 'silent' }) }),
    namespaces: new OptedInNamespaces({ kubeConfig: kc, selector: 'mirrorhook.io/enabled=true', logger: pino({ level: 'silent' }) }),
    excludedNamespaces: new Set(),
    policy: () => policy(),
    slowPullMs: 120_000,
    maxAgeMs: 30 * 60_000,
    onFinding: (f) => findings.push(f),
    logger: pino({ level: 'silent' }),
    now: () => now,
  }
  const learner = new ClusterLearner(options)
  const failing = (rv: string, reason = 'ErrImagePull') =>
    pod(
      'web',
      [
        {
          name: 'app',
          image: 'quay.io/acme/app:1',
          waiting: {
            reason,
            message: reason === 'ErrImagePull' ? TIMEOUT : `Back-off pulling image "quay.io/acme/app:1": ErrImagePull: ${TIMEOUT}`,
          },
        },
      ],
      rv,
    )

  learner.handlePod(failing('1'))
  learner.handlePod(failing('1'))
  t.equal(findings.length, 1, 'a relist of the same Pod is not a new failure')
  learner.handlePod(failing('2', 'ImagePullBackOff'))
  t.equal(findings.length, 1, 'the back-off after a counted failure repeats it')
  learner.handlePod(failing('3'))
  t.equal(findings.length, 2, 'the next pull attempt failing again counts')
  const fresh = new ClusterLearner(options)
  fresh.handlePod(failing('4', 'ImagePullBackOff'))
  t.equal(findings.length, 3, 'a back-off seen first (after a restart) counts once')

  const event = (uid: string, message: string, count: number, at: number): CoreV1Event => ({
    metadata: { name: `web.${uid}`, namespace: 'shop', uid },
    involvedObject: { kind: 'Pod', name: 'web', namespace: 'shop' },
    reason: 'Pulled',
    message,
    count,
    lastTimestamp: new Date(at) as unknown as Date,
  })
  const slow = 'Successfully pulled image "ghcr.io/acme/big:1" in 3m0s (3m0s including waiting). Image size: 1 bytes.'
  learner.handleEvent(event('e1', slow, 1, AT))
  learner.handleEvent(event('e1', slow, 1, AT))
  t.equal(findings.length, 4, 'one Pulled event, once')
  t.strictSame(findings.at(-1), {
    kind: 'registry',
    registry: 'ghcr.io',
    observation: {
      at: AT,
      source: 'event',
      outcome: 'slow',
      durationMs: 180_000,
      detail: 'pull of ghcr.io/acme/big:1 took 180 s (over 120 s) (pod shop/web)',
    },
  })
  learner.handleEvent(event('e1', slow, 2, AT + 1000))
  t.equal(findings.length, 5, 'the same event counted again by the kubelet is a new pull')
  now = AT + 3_600_000
  learner.handleEvent(event('e2', slow, 1, AT))
  t.equal(findings.length, 5, 'events older than the state TTL say nothing about now')
  learner.handleEvent({ ...event('e3', slow, 1, now), reason: 'Pulling' })
  t.equal(findings.length, 5, 'only Pulled events')
})

// containerd's words for a registry that wants credentials, and for a repository it does not have.
const UNAUTHORIZED =
  'rpc error: code = Unknown desc = failed to pull and unpack image "harbor.corp.example/proxy/docker.io/acme/private:1": failed to resolve reference "harbor.corp.example/proxy/docker.io/acme/private:1": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed'
const MIRROR_401 =
  'rpc error: code = Unknown desc = failed to pull and unpack image "m.daocloud.io/docker.io/acme/private:1": failed to resolve reference "m.daocloud.io/docker.io/acme/private:1": unexpected status from HEAD request to https://m.daocloud.io/v2/docker.io/acme/private/manifests/1: 401 Unauthorized'
const MIRROR_404 =
  'rpc error: code = NotFound desc = failed to pull and unpack image "m.daocloud.io/docker.io/acme/private:1": failed to resolve reference "m.daocloud.io/docker.io/acme/private:1": m.daocloud.io/docker.io/acme/private:1: not found'

t.test("a mirror's 401 or 404 for a repository is a refusal of that repository; a source's is nothing", async (t) => {
  const pol = policy({ mirror: { prefix: 'm.daocloud.io', hosts: { 'docker.io': 'harbor.corp.example/proxy' } } })
  const table: [string, string, string | undefined][] = [
    ['m.daocloud.io/docker.io/acme/private:1', MIRROR_401, 'unauthorized (pod shop/web)'],
    ['m.daocloud.io/docker.io/acme/private:1', MIRROR_404, 'not found (pod shop/web)'],
    ['harbor.corp.example/proxy/acme/private:1', UNAUTHORIZED, 'repository does not exist or requires login (pod shop/web)'],
    ['docker.io/acme/private:1', MIRROR_401, undefined],
    ['ghcr.io/acme/typo:1', NOT_FOUND, undefined],
  ]
  for (const [image, error, detail] of table) {
    const f = findingForFailure({ image, error, where: 'pod shop/web' }, 'pod', pol, AT)
    t.strictSame(f, detail === undefined ? undefined : { kind: 'refusal', repository: image.replace(/:1$/, ''), detail, at: AT }, image)
  }
})

t.test("kube-fledged's pull Jobs are learned from in its namespace, opted in or not, and a failing init image is named", async (t) => {
  const kc = new KubeConfig()
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: 'https://127.0.0.1:1' }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  })
  const findings: Finding[] = []
  const lines: Record<string, unknown>[] = []
  const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) })
  const learner = new ClusterLearner({
    kubeConfig: kc,
    pods: new PodCache({ kubeConfig: kc, logger: pino({ level: 'silent' }) }),
    namespaces: new OptedInNamespaces({ kubeConfig: kc, selector: 'mirrorhook.io/enabled=true', logger: pino({ level: 'silent' }) }),
    excludedNamespaces: new Set(),
    policy: () => policy(),
    slowPullMs: 120_000,
    maxAgeMs: 30 * 60_000,
    onFinding: (f) => findings.push(f),
    logger,
    now: () => AT,
  })
  const init = 'm.daocloud.io/docker.io/senthilrch/busybox:1.35.0'
  const job: V1Pod = {
    metadata: {
      name: 'ic-web-x7k2p-abcde',
      namespace: 'kube-fledged',
      uid: 'uid-kf',
      labels: { app: 'kubefledged', kubefledged: 'kubefledged-image-manager', imagecache: 'ic-web', controller: 'kubefledged-controller' },
    },
    spec: {
      initContainers: [{ name: 'busybox', image: init }],
      containers: [{ name: 'imagepuller', image: 'm.daocloud.io/docker.io/library/nginx:1.25' }],
    },
    status: {
      phase: 'Pending',
      initContainerStatuses: [
        {
          name: 'busybox',
          image: init,
          imageID: '',
          ready: false,
          restartCount: 0,
          state: { waiting: { reason: 'ErrImagePull', message: ALLOWLIST.replace('quay.io/acme/app', 'docker.io/senthilrch/busybox') } },
        },
      ],
    },
  }
  // Not started: the learner's Pod handler as the shared watch calls it.
  ;(learner as unknown as { podChanged(p: V1Pod): void }).podChanged(job)
  t.strictSame(findings, [
    {
      kind: 'refusal',
      repository: 'm.daocloud.io/docker.io/senthilrch/busybox',
      detail: 'not in the mirror allowlist (kube-fledged pull Job pod kube-fledged/ic-web-x7k2p-abcde, init image)',
      at: AT,
    },
  ])
  t.equal(lines.length, 1)
  t.strictSame(
    { pod: lines[0]?.pod, image: lines[0]?.image, level: lines[0]?.level, msg: lines[0]?.msg },
    {
      pod: 'kube-fledged/ic-web-x7k2p-abcde',
      image: init,
      level: 40,
      msg: "kube-fledged's pull Job cannot pull its own init image: every pre-pull on this node fails until it can (kube-fledged BUSYBOX_IMAGE, or pull.kubeFledgedBusybox with kube-fledged Pods admitted by mirrorhook)",
    },
  )
  // Any other Pod in a namespace that did not opt in is not looked at.
  ;(learner as unknown as { podChanged(p: V1Pod): void }).podChanged({
    ...job,
    metadata: { ...job.metadata, namespace: 'other', uid: 'u2' },
  })
  t.equal(findings.length, 1)
})
