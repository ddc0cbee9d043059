// parseReviewText: JSON.parse's result and errors, with the Pod's managedFields checked but not built.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseReviewText, SKIPPED_MANAGED_FIELDS } from '../../server/admission/review-text.js'

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'bench')
const managed = [
  {
    manager: 'kube-controller-manager',
    operation: 'Update',
    apiVersion: 'v1',
    time: '2026-11-30T08:00:00Z',
    fieldsType: 'FieldsV1',
    fieldsV1: { 'f:metadata': { 'f:labels': { '.': {}, 'f:app': {} } }, 'f:spec': { 'f:containers': { 'k:{"name":"web"}': { '.': {} } } } },
  },
]
const pod = (extra: Record<string, unknown> = {}) => ({
  metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web' }, managedFields: managed, ...extra },
  spec: { containers: [{ name: 'web', image: 'nginx:1.27' }] },
})
const review = (request: Record<string, unknown>) =>
  JSON.stringify({ kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1', request: { uid: 'u-1', ...request } })
// JSON.parse's result with the skipped lists in their places.
function skippedIn(text: string, places: ('object' | 'oldObject')[]): unknown {
  const expected = JSON.parse(text) as { request: Record<string, { metadata: Record<string, unknown> }> }
  for (const place of places) expected.request[place]!.metadata.managedFields = SKIPPED_MANAGED_FIELDS
  return expected
}

t.test('reviews as the API server sends them: everything but the managedFields lists, as JSON.parse gives it', async (t) => {
  for (const file of ['review-1-image.json', 'review-10-images.json', 'review-10-kept.json', 'review-40-images.json']) {
    const text = readFileSync(join(FIXTURES, file), 'utf8')
    t.strictSame(parseReviewText(text), skippedIn(text, ['object']), file)
  }
  const create = review({ operation: 'CREATE', object: pod() })
  t.strictSame(parseReviewText(create), skippedIn(create, ['object']))
  const update = review({ operation: 'UPDATE', object: pod(), oldObject: pod() })
  t.strictSame(parseReviewText(update), skippedIn(update, ['object', 'oldObject']), 'an UPDATE: both Pods')
  const oldOnly = review({ operation: 'DELETE', oldObject: pod() })
  t.strictSame(parseReviewText(oldOnly), skippedIn(oldOnly, ['oldObject']), 'a DELETE: the old Pod')
  t.equal(SKIPPED_MANAGED_FIELDS, '\u0000skipped')
})

t.test('not plain: undefined, for Fastify’s parser and its prototype-poisoning checks', async (t) => {
  t.equal(parseReviewText(''), undefined)
  t.equal(parseReviewText(review({ name: 'café' }).replace('é', '\\u00e9')), undefined, 'a \\u escape')
  t.equal(parseReviewText(review({ name: '__proto__' })), undefined)
  t.equal(parseReviewText(review({ object: { metadata: { labels: { constructor: 'x' } } } })), undefined)
  t.equal(parseReviewText('{"__proto__":{}}'), undefined)
})

t.test('a list that sits anywhere else, or not alone, is built: exactly JSON.parse', async (t) => {
  const cases: Record<string, string> = {
    // No Pod metadata holds it.
    'a key that ends in managedFields': review({ object: { metadata: { 'x"managedFields': managed }, spec: {} } }),
    'a container field': review({ object: { metadata: {}, spec: { containers: [{ name: 'a', managedFields: managed }] } } }),
    'only a list is skipped (null)': review({ object: pod({ managedFields: null }) }),
    'spaced as another writer might': review({ object: pod() }).replace('"managedFields":', '"managedFields": '),
    'no request': '{"managedFields":[{"a":1}],"kind":"AdmissionReview"}',
    'not an object': '[{"managedFields":[1]}]',
    'a request that is a list': '{"request":[{"object":{"metadata":{"managedFields":[1]}}}]}',
  }
  for (const [name, text] of Object.entries(cases)) t.strictSame(parseReviewText(text), JSON.parse(text), name)

  // The first list is elsewhere, so the second marker finds nothing in its place either.
  const elsewhereFirst = review({ managedFields: managed, object: pod() })
  t.strictSame(parseReviewText(elsewhereFirst), JSON.parse(elsewhereFirst), 'request.managedFields before the Pod’s')
  // A repeated key: the last one counts, as in JSON.parse.
  const repeated = review({ object: pod() }).replace('"managedFields":', '"managedFields":[1],"managedFields":')
  t.strictSame(parseReviewText(repeated), JSON.parse(repeated), 'metadata.managedFields twice')
  const repeatedNull = review({ object: pod() }).replace('"managedFields":', '"managedFields":null,"managedFields":')
  t.strictSame(parseReviewText(repeatedNull), skippedIn(repeatedNull, ['object']), 'a null before the list: the list counts')
  // At most two lists are skipped; a third is built where it is.
  const third = review({ object: pod(), oldObject: pod(), options: { managedFields: [1, 2] } })
  const expected = skippedIn(third, ['object', 'oldObject']) as { request: { options: unknown } }
  t.strictSame(expected.request.options, { managedFields: [1, 2] })
  t.strictSame(parseReviewText(third), expected, 'a third list after the two Pods')
})

t.test('not JSON: JSON.parse’s own error, wherever the fault is', async (t) => {
  const good = review({ object: pod() })
  const faults: Record<string, string> = {
    'in the list': good.replace('"f:app":{}', '"f:app":{},'),
    'an unclosed list': good.slice(0, good.indexOf('"managedFields":[') + 40),
    'after the list': good.replace('"spec":{', '"spec":{,'),
    'before the list': good.replace('"uid":"u-1"', '"uid":"u-1",,'),
    'a control character in the list': good.replace('kube-controller-manager', 'kube\tcontroller'),
  }
  for (const [name, text] of Object.entries(faults)) {
    let message = ''
    try {
      JSON.parse(text)
    } catch (error) {
      message = (error as Error).message
    }
    t.not(message, '', `${name}: JSON.parse refuses it`)
    t.throws(() => parseReviewText(text), { name: 'SyntaxError', message }, name)
  }
})

t.test('a list nested deeper than the scan goes is built by JSON.parse', async (t) => {
  const deep = review({ object: pod() }).replace('"managedFields":[', `"managedFields":[${'['.repeat(300)}${']'.repeat(300)},`)
  const parsed = parseReviewText(deep) as { request: { object: { metadata: { managedFields: unknown[] } } } }
  t.strictSame(parsed, JSON.parse(deep))
  t.equal(parsed.request.object.metadata.managedFields.length, 2)
})
