// AdmissionReview validation and admit() at their edges: the exact message for each malformed
// field, the fields kept, why a request is ignored (written out), and that only an UPDATE
// compares with oldObject. Expected values are written out.
import t from 'tap'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { admit, type AdmissionRequest, parseAdmissionReview, reviewSchema } from '../../server/admission/review.js'

const base = { kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1' }

t.test('each malformed field has its own message', async (t) => {
  const table: [unknown, string][] = [
    ['x', 'the body must be a JSON AdmissionReview object'],
    [null, 'the body must be a JSON AdmissionReview object'],
    [[], 'the body must be a JSON AdmissionReview object'],
    [{ ...base }, 'request is missing'],
    [{ ...base, request: 5 }, 'request must be an object'],
    [{ ...base, request: { uid: '' } }, 'request.uid must be a non-empty string'],
    [{ ...base, request: { uid: 1 } }, 'request.uid must be a non-empty string'],
    [{ ...base, request: { uid: 'u', kind: 'Pod' } }, 'request.kind must be an object'],
    [{ ...base, request: { uid: 'u', resource: 'pods' } }, 'request.resource must be an object'],
    [{ ...base, request: { uid: 'u', kind: { kind: 3 } } }, 'request.kind.kind: Invalid input: expected string, received number'],
    [{ ...base, request: { uid: 'u', kind: { group: 3 } } }, 'request.kind.group: Invalid input: expected string, received number'],
    [{ ...base, request: { uid: 'u', kind: { version: 3 } } }, 'request.kind.version: Invalid input: expected string, received number'],
    [
      { ...base, request: { uid: 'u', resource: { resource: 3 } } },
      'request.resource.resource: Invalid input: expected string, received number',
    ],
    [{ ...base, request: { uid: 'u', resource: { group: 3 } } }, 'request.resource.group: Invalid input: expected string, received number'],
    [
      { ...base, request: { uid: 'u', resource: { version: 3 } } },
      'request.resource.version: Invalid input: expected string, received number',
    ],
    [{ ...base, request: { uid: 'u', subResource: 1 } }, 'request.subResource must be a string'],
    [{ ...base, request: { uid: 'u', name: 1 } }, 'request.name must be a string'],
    [{ ...base, request: { uid: 'u', namespace: 1 } }, 'request.namespace must be a string'],
    [{ ...base, request: { uid: 'u', operation: 1 } }, 'request.operation must be a string'],
    [{ ...base, request: { uid: 'u', dryRun: 'yes' } }, 'request.dryRun must be a boolean'],
    [{ kind: 'X', apiVersion: 'v1', request: 1 }, 'kind must be AdmissionReview, got "X"'],
  ]
  for (const [body, message] of table) t.strictSame(parseAdmissionReview(body), { ok: false, message }, message)
})

t.test('a valid review keeps the fields mirrorhook reads and drops the rest', async (t) => {
  const request = {
    uid: 'u',
    kind: { group: '', version: 'v1', kind: 'Pod', x: 1 },
    resource: { group: '', version: 'v1', resource: 'pods' },
    subResource: 'ephemeralcontainers',
    name: 'p',
    namespace: 'shop',
    operation: 'UPDATE',
    dryRun: true,
    object: { spec: {} },
    oldObject: { spec: {} },
    userInfo: { username: 'someone' },
  }
  t.strictSame(parseAdmissionReview({ ...base, apiVersion: 'admission.k8s.io/v1beta1', request }), {
    ok: true,
    review: {
      kind: 'AdmissionReview',
      apiVersion: 'admission.k8s.io/v1beta1',
      request: {
        uid: 'u',
        kind: { group: '', version: 'v1', kind: 'Pod' },
        resource: { group: '', version: 'v1', resource: 'pods' },
        subResource: 'ephemeralcontainers',
        name: 'p',
        namespace: 'shop',
        operation: 'UPDATE',
        dryRun: true,
        object: { spec: {} },
        oldObject: { spec: {} },
      },
    },
  })
})

const policy = compilePolicy(resolveConfig({}, {}))
const view = staticReachability(policy)
const pod = { metadata: { name: 'p' }, spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] } }

t.test('why a request is ignored, written out', async (t) => {
  const ignored = (req: Partial<AdmissionRequest>) => admit({ uid: 'u', object: pod, ...req }, policy, view)
  const none = { patch: [], warnings: [], plans: [] }
  t.strictSame(ignored({ kind: { kind: 'Deployment' } }), { outcome: 'ignored', ...none, ignoredBecause: 'not a Pod (Deployment)' })
  t.strictSame(ignored({ resource: { resource: 'deployments' } }), { outcome: 'ignored', ...none, ignoredBecause: 'not a Pod (?)' })
  t.strictSame(ignored({ operation: 'DELETE' }), { outcome: 'ignored', ...none, ignoredBecause: 'operation DELETE' })
  t.strictSame(ignored({ operation: 'CONNECT' }), { outcome: 'ignored', ...none, ignoredBecause: 'operation CONNECT' })
  t.strictSame(ignored({ subResource: 'status' }), { outcome: 'ignored', ...none, ignoredBecause: 'subresource status' })
  for (const object of [null, 'pod', [pod], { spec: null }, { spec: 'x' }, { spec: [] }, {}]) {
    t.strictSame(
      ignored({ object }),
      { outcome: 'ignored', ...none, ignoredBecause: 'the request carries no Pod spec' },
      JSON.stringify(object),
    )
  }
  t.equal(ignored({ subResource: '' }).outcome, 'mutated', 'an empty subresource is the Pod itself')
  t.equal(ignored({ operation: undefined }).outcome, 'mutated', 'no operation reads as CREATE')
})

t.test('only an UPDATE compares with oldObject', async (t) => {
  const unchanged = { spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] } }
  const create = admit({ uid: 'u', operation: 'CREATE', object: pod, oldObject: unchanged }, policy, view)
  t.equal(create.outcome, 'mutated', 'a CREATE ignores an oldObject')
  t.strictSame(
    create.plans.map((p) => p.decision.action),
    ['rewrite'],
  )
  const update = admit({ uid: 'u', operation: 'UPDATE', object: pod, oldObject: unchanged }, policy, view)
  t.equal(update.outcome, 'unchanged', 'an UPDATE leaves an image the Pod already had')
  const noSpec = admit({ uid: 'u', operation: 'UPDATE', object: pod, oldObject: { spec: 'x' } }, policy, view)
  t.equal(noSpec.outcome, 'mutated', 'an oldObject without a spec is no comparison')
  const notObj = admit({ uid: 'u', operation: 'UPDATE', object: pod, oldObject: 'x' }, policy, view)
  t.equal(notObj.outcome, 'mutated')
})

t.test('parseAdmissionReview accepts exactly what the schema accepts, and gives the same review', async (t) => {
  const pod = { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'nginx' }] } }
  const base = {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'u-1',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      subResource: '',
      name: 'p',
      namespace: 'shop',
      operation: 'CREATE',
      dryRun: false,
      object: pod,
      oldObject: null,
      userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
    },
  }
  type Obj = Record<string, unknown>
  const withRequest = (change: (r: Obj) => void) => {
    const body = structuredClone(base) as Obj
    change(body.request as Obj)
    return body
  }
  const values: unknown[] = ['', 'x', 0, 1, true, false, null, [], ['a'], {}, { kind: 'Pod' }, { group: 1 }, { extra: 'x' }]
  const bodies: unknown[] = [base, null, 'text', 7, [], {}, { ...base, kind: 'Pod' }, { ...base, apiVersion: 'admission.k8s.io/v1beta1' }]
  bodies.push({ ...base, apiVersion: 'v1' }, { ...base, request: null }, { ...base, request: [] }, { ...base, extra: 1 })
  const keys = ['uid', 'kind', 'resource', 'subResource', 'name', 'namespace', 'operation', 'dryRun', 'object', 'oldObject']
  for (const key of keys) {
    bodies.push(withRequest((r) => delete r[key]))
    for (const value of values) bodies.push(withRequest((r) => (r[key] = value)))
  }
  for (const key of ['group', 'version', 'kind']) {
    for (const value of values) bodies.push(withRequest((r) => ((r.kind as Obj)[key] = value)))
    bodies.push(withRequest((r) => delete (r.resource as Obj)[key]))
  }
  let accepted = 0
  for (const body of bodies) {
    const bySchema = reviewSchema.safeParse(body)
    const parsed = parseAdmissionReview(body)
    if (bySchema.success) accepted += 1
    t.equal(parsed.ok, bySchema.success, JSON.stringify(body).slice(0, 150))
    // The same values, keys in the same order.
    t.equal(JSON.stringify(parsed.ok ? parsed.review : undefined), JSON.stringify(bySchema.data), JSON.stringify(body).slice(0, 150))
  }
  // 3 of the envelopes, 9 requests without one optional key, 43 with a key set to an accepted value, 9 kinds/resources.
  t.equal(accepted, 64, 'accepted and refused bodies both covered')
})
