// The Kubernetes access layer's pure parts: backoff, error reading, the Pod transform.
import t from 'tap'
import { ApiException, type V1Pod } from '@kubernetes/client-node'
import { Backoff, backoffMs } from '../../server/kube/backoff.js'
import { ApiError, apiErrorOf, statusOf } from '../../server/kube/errors.js'
import { managedLabels, MANAGED_SELECTOR } from '../../server/kube/labels.js'
import { slimPod } from '../../server/kube/pods.js'

t.test('backoff: doubles from the start value up to the cap', async (t) => {
  const o = { initialMs: 500, maxMs: 8_000 }
  t.strictSame(
    [1, 2, 3, 4, 5, 6, 7].map((n) => backoffMs(o, n)),
    [500, 1000, 2000, 4000, 8000, 8000, 8000],
  )
  t.equal(backoffMs(o, 0), 500, 'attempt 0 counts as the first')
  t.equal(backoffMs({ initialMs: 1000, maxMs: 60_000 }, 10_000), 60_000, 'no overflow past the cap')
  const b = new Backoff({ initialMs: 1000, maxMs: 30_000 })
  t.strictSame([b.next(), b.next(), b.next()], [1000, 2000, 4000])
  t.equal(b.attempts, 3)
  b.reset()
  t.equal(b.next(), 1000, 'starts over after a success')
})

t.test('errors: client-node exceptions, watch errors and network failures read the same way', async (t) => {
  const conflict = new ApiException(
    409,
    'Unknown API Status Code!',
    JSON.stringify({
      kind: 'Status',
      reason: 'AlreadyExists',
      message: 'imagecaches "x" already exists',
      details: { name: 'x', kind: 'imagecaches' },
    }),
    { 'content-type': 'application/json' },
  )
  t.equal(statusOf(conflict), 409)
  const e = apiErrorOf(conflict, 'POST /apis/kubefledged.io/v1alpha2/namespaces/kf/imagecaches')
  t.strictSame(
    { status: e.status, reason: e.reason, details: e.details, transient: e.transient, message: e.message },
    {
      status: 409,
      reason: 'AlreadyExists',
      details: { name: 'x', kind: 'imagecaches' },
      transient: false,
      message: 'POST /apis/kubefledged.io/v1alpha2/namespaces/kf/imagecaches: 409 imagecaches "x" already exists',
    },
  )
  const throttled = apiErrorOf(
    new ApiException(429, 'Too Many Requests', '{"reason":"TooManyRequests"}', { 'retry-after': '3' }),
    'PATCH x',
  )
  t.strictSame(
    { status: throttled.status, retryAfterMs: throttled.retryAfterMs, transient: throttled.transient },
    { status: 429, retryAfterMs: 3000, transient: true },
  )
  const watchError = Object.assign(new Error('Not Found'), { statusCode: 404 })
  t.equal(statusOf(watchError), 404)
  const refused = apiErrorOf(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }), 'GET x')
  t.strictSame(
    { status: refused.status, transient: refused.transient, message: refused.message },
    { status: 0, transient: true, message: 'GET x: connect ECONNREFUSED 127.0.0.1:1' },
  )
  const own = new ApiError(503, 'unavailable')
  t.equal(apiErrorOf(own, 'x'), own, 'an ApiError passes through')
})

t.test('labels: one shape, with the component when there is one', async (t) => {
  t.strictSame(managedLabels(), { 'app.kubernetes.io/managed-by': 'mirrorhook' })
  t.strictSame(managedLabels('reachability'), {
    'app.kubernetes.io/managed-by': 'mirrorhook',
    'app.kubernetes.io/component': 'reachability',
  })
  t.equal(MANAGED_SELECTOR, 'app.kubernetes.io/managed-by=mirrorhook')
})

t.test('the Pod transform keeps what mirrorhook reads and nothing else', async (t) => {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'web-1',
      namespace: 'shop',
      uid: 'u1',
      resourceVersion: '42',
      generateName: 'web-',
      labels: { app: 'web' },
      annotations: {
        'mirrorhook.io/original-images': '{"web":"nginx:1.25"}',
        'kubectl.kubernetes.io/last-applied-configuration': '{"big":true}',
      },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web', uid: 'rs1', controller: true, blockOwnerDeletion: true }],
      managedFields: [{ manager: 'kubectl', operation: 'Update' }],
    },
    spec: {
      nodeName: 'node-1',
      serviceAccountName: 'default',
      volumes: [{ name: 'v', emptyDir: {} }],
      containers: [
        {
          name: 'web',
          image: 'm.daocloud.io/docker.io/library/nginx:1.25',
          env: [{ name: 'A', value: 'b' }],
          ports: [{ containerPort: 80 }],
        },
      ],
    },
    status: {
      phase: 'Pending',
      podIP: '10.0.0.1',
      conditions: [{ type: 'Ready', status: 'False' }],
      containerStatuses: [
        {
          name: 'web',
          image: 'm.daocloud.io/docker.io/library/nginx:1.25',
          imageID: '',
          ready: false,
          restartCount: 0,
          started: false,
          state: { waiting: { reason: 'ErrImagePull', message: 'i/o timeout' } },
        },
      ],
    },
  } as unknown as V1Pod
  t.strictSame(slimPod(pod), {
    metadata: {
      name: 'web-1',
      namespace: 'shop',
      uid: 'u1',
      resourceVersion: '42',
      creationTimestamp: undefined,
      deletionTimestamp: undefined,
      labels: { app: 'web' },
      annotations: { 'mirrorhook.io/original-images': '{"web":"nginx:1.25"}' },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web', uid: 'rs1', controller: true }],
    },
    spec: {
      nodeName: 'node-1',
      initContainers: undefined,
      containers: [{ name: 'web', image: 'm.daocloud.io/docker.io/library/nginx:1.25' }],
      ephemeralContainers: undefined,
    },
    status: {
      phase: 'Pending',
      initContainerStatuses: undefined,
      containerStatuses: [
        {
          name: 'web',
          image: 'm.daocloud.io/docker.io/library/nginx:1.25',
          imageID: '',
          ready: false,
          restartCount: 0,
          state: { waiting: { reason: 'ErrImagePull', message: 'i/o timeout' } },
        },
      ],
      ephemeralContainerStatuses: undefined,
    },
  })
})
