// The /mutate endpoint through fastify.inject: real plugins, real policy, no network.
import t from 'tap'
import jsonpatch from 'fast-json-patch'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import os from 'node:os'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { buildOpsApp, buildWebhookApp } from '../../server/http/app.js'
import type { AdmissionContext } from '../../server/http/context.js'
import { buildResponse, responseJson, type AdmissionReview, type AdmittedEvent } from '../../server/admission/review.js'
import type { JsonPatchOp } from '../../server/core/pod.js'
import { Readiness } from '../../server/observability/readiness.js'
import { Metrics } from '../../server/observability/metrics.js'
import { podCreateReview } from '../support/helpers.js'
import { staticWebhookApp } from '../support/webhook-app.js'

function harness(contextOverride?: () => AdmissionContext) {
  const lines: Record<string, unknown>[] = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line))
      cb()
    },
  })
  const logger = pino({ level: 'debug' }, sink)
  const policy = compilePolicy(resolveConfig(undefined, {}))
  const context: AdmissionContext = { policy, reachability: staticReachability(policy) }
  const metrics = new Metrics()
  const readiness = new Readiness()
  const admitted: AdmittedEvent[] = []
  return {
    lines,
    metrics,
    readiness,
    admitted,
    build: () =>
      buildWebhookApp({ logger, metrics, readiness, context: contextOverride ?? (() => context), onAdmitted: (e) => admitted.push(e) }),
    ops: () => buildOpsApp({ logger, metrics, readiness }),
  }
}

const pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web-1', namespace: 'shop' },
  spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] },
}

function review(overrides: Record<string, unknown> = {}, apiVersion = 'admission.k8s.io/v1') {
  return { ...podCreateReview('a1b2c3', pod, { name: 'web-1', ...overrides }), apiVersion }
}

function decodePatch(body: { response: { patch?: string } }) {
  return body.response.patch ? JSON.parse(Buffer.from(body.response.patch, 'base64').toString('utf8')) : []
}

t.test('a Pod review is answered with a JSON patch, warnings and the same uid and apiVersion', async (t) => {
  const h = harness()
  const app = await h.build()
  t.teardown(() => app.close())
  for (const apiVersion of ['admission.k8s.io/v1', 'admission.k8s.io/v1beta1']) {
    const res = await app.inject({ method: 'POST', url: '/mutate', payload: review({}, apiVersion) })
    t.equal(res.statusCode, 200)
    const body = res.json()
    t.equal(body.apiVersion, apiVersion)
    t.equal(body.kind, 'AdmissionReview')
    t.strictSame(
      { ...body.response, patch: decodePatch(body) },
      {
        uid: 'a1b2c3',
        allowed: true,
        patchType: 'JSONPatch',
        patch: [
          { op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' },
          { op: 'add', path: '/metadata/annotations', value: { 'mirrorhook.io/original-images': '{"web":"nginx:1.25"}' } },
        ],
        warnings: [
          'mirrorhook: web: nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (registry docker.io is unknown (not listed in config unreachable); reachability.unknown is mirror)',
        ],
      },
    )
    const patched = jsonpatch.applyPatch(structuredClone(pod), decodePatch(body), true, false).newDocument
    t.equal(patched.spec.containers[0]!.image, 'm.daocloud.io/docker.io/library/nginx:1.25')
  }
  t.equal(h.admitted.length, 2, 'non-dry-run reviews reach the post-admission hook')
  const logged = h.lines
    .filter((l) => l.msg === 'admission decided')
    .map(({ time, pid, hostname, ...rest }) => {
      t.type(time, 'number')
      t.equal(pid, process.pid)
      t.equal(hostname, os.hostname())
      return rest
    })
  const decided = {
    level: 30,
    uid: 'a1b2c3',
    namespace: 'shop',
    pod: 'web-1',
    operation: 'CREATE',
    dryRun: false,
    outcome: 'mutated',
    rewritten: { web: 'm.daocloud.io/docker.io/library/nginx:1.25' },
    msg: 'admission decided',
  }
  t.strictSame(logged, [decided, decided], 'logs carry uid, namespace and Pod name')
})

t.test('dry-run: the same patch, and the side-effect hook is not called', async (t) => {
  const h = harness()
  const app = await h.build()
  t.teardown(() => app.close())
  const wet = (await app.inject({ method: 'POST', url: '/mutate', payload: review() })).json()
  const dry = (await app.inject({ method: 'POST', url: '/mutate', payload: review({ dryRun: true }) })).json()
  t.strictSame(decodePatch(dry), decodePatch(wet))
  t.strictSame(decodePatch(wet), [
    { op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' },
    { op: 'add', path: '/metadata/annotations', value: { 'mirrorhook.io/original-images': '{"web":"nginx:1.25"}' } },
  ])
  t.equal(h.admitted.length, 1, 'only the non-dry-run review')
  t.strictSame(await h.metrics.reviews.get(), {
    help: 'Admission reviews answered, by outcome (mutated, unchanged, skipped, ignored, error, invalid) and dry-run.',
    name: 'mirrorhook_admission_reviews_total',
    type: 'counter',
    values: [
      { value: 1, labels: { outcome: 'mutated', dry_run: 'false' } },
      { value: 1, labels: { outcome: 'mutated', dry_run: 'true' } },
    ],
    aggregator: 'sum',
  })
})

t.test('malformed reviews get a 400 saying what is wrong', async (t) => {
  const h = harness()
  const app = await h.build()
  t.teardown(() => app.close())
  const cases: [unknown, string][] = [
    [{ kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1' }, 'malformed AdmissionReview: request is missing'],
    [{ apiVersion: 'admission.k8s.io/v1', kind: 'Pod', request: {} }, 'malformed AdmissionReview: kind must be AdmissionReview, got "Pod"'],
    [
      { apiVersion: 'v1', kind: 'AdmissionReview', request: { uid: 'x' } },
      'malformed AdmissionReview: apiVersion must be admission.k8s.io/v1, got "v1"',
    ],
    [
      { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: '' } },
      'malformed AdmissionReview: request.uid must be a non-empty string',
    ],
    [
      { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'x', dryRun: 'yes' } },
      'malformed AdmissionReview: request.dryRun must be a boolean',
    ],
    [[1, 2], 'malformed AdmissionReview: the body must be a JSON AdmissionReview object'],
    [{ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: 'r' }, 'malformed AdmissionReview: request must be an object'],
    [
      { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { namespace: 'shop' } },
      'malformed AdmissionReview: request.uid must be a non-empty string',
    ],
    [
      { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'x', namespace: 5 } },
      'malformed AdmissionReview: request.namespace must be a string',
    ],
    [
      { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'x', kind: 'Pod' } },
      'malformed AdmissionReview: request.kind must be an object',
    ],
    [
      { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'x', kind: { kind: 7 } } },
      'malformed AdmissionReview: request.kind.kind: Invalid input: expected string, received number',
    ],
  ]
  for (const [payload, message] of cases) {
    const res = await app.inject({ method: 'POST', url: '/mutate', payload: payload as object })
    t.equal(res.statusCode, 400)
    t.strictSame(res.json(), { error: message })
  }
  const badJson = await app.inject({ method: 'POST', url: '/mutate', headers: { 'content-type': 'application/json' }, payload: '{"kind":' })
  t.equal(badJson.statusCode, 400)
  t.strictSame(badJson.json(), { error: "Body is not valid JSON but content-type is set to 'application/json'" })
  const values = (await h.metrics.reviews.get()).values
  t.equal(
    values.find((v) => v.labels.outcome === 'invalid')?.value,
    12,
    'every malformed review is counted: the eleven cases and the cut body',
  )
})

t.test('an internal error allows the Pod unchanged, and is logged and counted', async (t) => {
  const h = harness(() => {
    throw new Error('state unavailable')
  })
  const app = await h.build()
  t.teardown(() => app.close())
  const res = await app.inject({ method: 'POST', url: '/mutate', payload: review() })
  t.equal(res.statusCode, 200)
  t.strictSame(res.json().response, { uid: 'a1b2c3', allowed: true })
  t.equal((await h.metrics.errors.get()).values.find((v) => v.labels.stage === 'admission')?.value, 1)
  t.strictSame(
    h.lines.map(({ time, pid, hostname, err, ...rest }) => {
      t.type(time, 'number')
      t.equal(pid, process.pid)
      t.equal(hostname, os.hostname())
      const { stack, ...error } = err as { stack: string }
      t.match(stack, /^Error: state unavailable\n {4}at /)
      return { ...rest, err: error }
    }),
    [
      {
        level: 50,
        uid: 'a1b2c3',
        namespace: 'shop',
        pod: 'web-1',
        operation: 'CREATE',
        dryRun: false,
        err: { type: 'Error', message: 'state unavailable' },
        msg: 'admission failed; allowing the Pod unchanged',
      },
    ],
  )
})

t.test('a failing post-admission hook does not change the answer', async (t) => {
  const lines: unknown[] = []
  const logger = pino({ level: 'silent' })
  const policy = compilePolicy(resolveConfig(undefined, {}))
  const metrics = new Metrics()
  const app = await staticWebhookApp(policy, {
    logger,
    metrics,
    onAdmitted: () => {
      lines.push(1)
      throw new Error('queue broken')
    },
  })
  t.teardown(() => app.close())
  const body = (await app.inject({ method: 'POST', url: '/mutate', payload: review() })).json()
  t.equal(body.response.patchType, 'JSONPatch', 'the patch is still returned')
  t.equal(lines.length, 1)
  t.equal((await metrics.errors.get()).values.find((v) => v.labels.stage === 'after-admission')?.value, 1)
})

t.test('probes and metrics', async (t) => {
  const h = harness()
  const app = await h.build()
  const ops = await h.ops()
  t.teardown(async () => {
    await app.close()
    await ops.close()
  })
  await app.inject({ method: 'POST', url: '/mutate', payload: review() })
  t.equal((await app.inject('/healthz')).statusCode, 200)
  t.equal((await app.inject('/readyz')).statusCode, 200)
  h.readiness.block('tls', 'no certificate yet')
  const notReady = await ops.inject('/readyz')
  t.equal(notReady.statusCode, 503)
  t.strictSame(notReady.json(), { status: 'not ready', reasons: ['tls: no certificate yet'] })
  const text = (await ops.inject('/metrics')).body
  t.match(text, /^mirrorhook_admission_reviews_total\{outcome="mutated",dry_run="false"\} 1$/m)
  t.notMatch(text, /^mirrorhook_admission_reviews_total\{(?!outcome="mutated",dry_run="false"\})/m, 'no other outcome')
  t.match(text, /^mirrorhook_image_rewrites_total\{registry="docker\.io"\} 1$/m)
  t.match(text, /^mirrorhook_admission_duration_seconds_count 1$/m)
  t.match(text, /^mirrorhook_admission_duration_seconds_bucket\{le="\+Inf"\} 1$/m)
  t.match(text, /^# TYPE mirrorhook_errors_total counter$/m)
  t.notMatch(text, /^mirrorhook_errors_total\{/m, 'no internal error counted')
})

t.test('the README example review gives the patch the README shows', async (t) => {
  const h = harness()
  const app = await h.build()
  t.teardown(() => app.close())
  const { readFile } = await import('node:fs/promises')
  const payload = JSON.parse(await readFile(new URL('../fixtures/admission-review.json', import.meta.url), 'utf8'))
  const body = (await app.inject({ method: 'POST', url: '/mutate', payload })).json()
  t.strictSame(decodePatch(body), [
    { op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' },
    { op: 'replace', path: '/spec/initContainers/0/image', value: 'm.daocloud.io/ghcr.io/example/migrate:v3' },
    {
      op: 'add',
      path: '/metadata/annotations',
      value: { 'mirrorhook.io/original-images': '{"migrate":"ghcr.io/example/migrate:v3","web":"nginx:1.25"}' },
    },
  ])
})

t.test('the response is written as JSON text: the same bytes JSON.stringify gives for its object', async (t) => {
  const review = (uid: string, apiVersion = 'admission.k8s.io/v1') =>
    ({ apiVersion, kind: 'AdmissionReview', request: { uid } }) as unknown as AdmissionReview
  const patch: JsonPatchOp[] = [
    { op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx:1.25' },
    { op: 'add', path: '/metadata/annotations/mirrorhook.io~1original-images', value: '{"web":"nginx:1.25","\\"q\\"":"a\\u2028b"}' },
  ]
  const cases: [AdmissionReview, JsonPatchOp[], string[]][] = [
    [review('u-1'), [], []],
    [
      review('u-"quoted"\\\n\u2028\ud800é', 'admission.k8s.io/v1beta1'),
      patch,
      ['mirrorhook: web: nginx:1.25 -> m.daocloud.io/… (mode always)', 'ü "x" \u0001'],
    ],
    [review('u-2'), [], ['only a warning']],
    [review('u-3'), patch, []],
  ]
  for (const [r, p, w] of cases) t.equal(responseJson(r, p, w), JSON.stringify(buildResponse(r, p, w)))

  const h = harness()
  const app = await h.build()
  t.teardown(() => app.close())
  const res = await app.inject({
    method: 'POST',
    url: '/mutate',
    payload: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u-9', object: pod } },
  })
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  t.equal(res.json().response.uid, 'u-9')
})

t.test('JSON bodies keep the prototype-poisoning checks of Fastify’s parser, plain or escaped', async (t) => {
  const h = harness()
  const app = await h.build()
  t.teardown(() => app.close())
  const send = (payload: string) => app.inject({ method: 'POST', url: '/mutate', headers: { 'content-type': 'application/json' }, payload })
  const request = (extra: string) =>
    `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"p-1",${extra}"object":${JSON.stringify(pod)}}}`
  for (const poisoned of [
    request('"__proto__":{"x":1},'),
    request('"\\u005f_proto__":{"x":1},'),
    request('"_\\u005Fpr\\u006fto__" :{"x":1},'),
    request('"constructor":{"prototype":{"x":1}},'),
    request('"c\\u006fnstructor":{"prototype":{"x":1}},'),
  ]) {
    const res = await send(poisoned)
    t.equal(res.statusCode, 400, poisoned.slice(60, 120))
    t.strictSame(res.json(), { error: "Body is not valid JSON but content-type is set to 'application/json'" })
  }
  for (const fine of [request(''), request('"name":"caf\\u00e9",'), request('"name":"constructor",'), `\ufeff${request('')}`]) {
    const res = await send(fine)
    t.equal(res.statusCode, 200, fine.slice(60, 120))
    t.equal(res.json().response.uid, 'p-1')
  }
  t.equal((await send('')).statusCode, 400, 'an empty body')
  t.equal((await send('{"kind":')).statusCode, 400, 'a cut body')
})

t.test('managedFields are checked, not read: the same answer with them, 400 when they are not JSON', async (t) => {
  const h = harness()
  const app = await h.build()
  t.teardown(() => app.close())
  const send = (payload: string) => app.inject({ method: 'POST', url: '/mutate', headers: { 'content-type': 'application/json' }, payload })
  const managedFields = [
    { manager: 'kubelet', operation: 'Update', fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': { 'f:labels': {} } } },
  ]
  const plain = JSON.stringify(review())
  const withManaged = JSON.stringify(review({ object: { ...pod, metadata: { ...pod.metadata, managedFields } } }))
  t.not(withManaged.indexOf('"managedFields":['), -1)
  const expected = (await send(plain)).json()
  t.equal(expected.response.patchType, 'JSONPatch', 'a review that mutates')
  const res = await send(withManaged)
  t.equal(res.statusCode, 200)
  t.strictSame(res.json(), expected)
  // A tab inside a string, and a comma before a closing brace.
  for (const broken of [withManaged.replace('"kubelet"', '"kube\tlet"'), withManaged.replace('"f:labels":{}', '"f:labels":{,}')]) {
    const refused = await send(broken)
    t.equal(refused.statusCode, 400)
    t.strictSame(refused.json(), { error: "Body is not valid JSON but content-type is set to 'application/json'" })
  }
})
