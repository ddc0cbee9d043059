// The reference grammar at its edges: digests with their colon at either end or missing, hex
// with a bad character at either end, the `İ` lower-casing, empty tag and digest, the length
// limit of a bare name, and the normalised forms with tag and digest. Expected values are written out.
import t from 'tap'
import {
  build,
  digestError,
  toLower,
  withName,
  parse,
  formatReference,
  ImageReferenceError,
} from '../../server/core/reference/reference.js'
import { parseDockerRef, tagNameOnly, tryParseNormalizedNamed, parseAnyReference } from '../../server/core/reference/normalize.js'

const hex64 = 'a'.repeat(64)

// The ImageReferenceError `fn` throws, as a plain object, or undefined if it returns.
function refusal(fn: () => unknown): { name: string; code: string; message: string } | undefined {
  try {
    fn()
  } catch (error) {
    if (error instanceof ImageReferenceError) return { name: error.name, code: error.code, message: error.message }
    throw error
  }
  return undefined
}

t.test('digestError: the code for each malformed digest', async (t) => {
  const table: [string, string | undefined][] = [
    [`sha256:${hex64}`, undefined],
    [`sha384:${'b'.repeat(96)}`, undefined],
    [`sha512:${'c'.repeat(128)}`, undefined],
    ['sha256:', 'invalid-digest'],
    [':abc', 'invalid-digest'],
    ['sha2560', 'invalid-digest'],
    [`sha256${'a'.repeat(63)}`, 'invalid-digest'],
    ['', 'invalid-digest'],
    [`sha256:G${'a'.repeat(63)}`, 'invalid-digest'],
    [`sha256:${'a'.repeat(63)}G`, 'invalid-digest'],
    [`sha256:${'A'.repeat(64)}`, 'invalid-digest'],
    [`sha256:${'a'.repeat(63)}`, 'invalid-digest-length'],
    [`sha256:${'a'.repeat(65)}`, 'invalid-digest-length'],
    ['foo:abc', 'unsupported-digest'],
    ['foo.bar+baz_x-y:A=b_c-d', 'unsupported-digest'],
    ['foo:abc!', 'invalid-digest'],
    ['!foo:abc', 'invalid-digest'],
    ['Foo:abc', 'invalid-digest'],
    ['foo..bar:abc', 'invalid-digest'],
  ]
  for (const [d, code] of table) t.equal(digestError(d)?.code, code, JSON.stringify(d))
  t.strictSame(
    ['sha256:', `sha256:${'a'.repeat(63)}`, 'foo:abc'].map((d) => digestError(d)?.message),
    ['invalid checksum digest format', 'invalid checksum digest length', 'unsupported digest algorithm'],
  )
})

t.test('toLower maps İ to a plain i, as the kubelet does', async (t) => {
  t.equal(toLower('AİB'), 'aib')
  t.equal(toLower('İİ'), 'ii')
  t.equal(toLower('Quay.IO'), 'quay.io')
})

t.test('build leaves out an empty or absent tag and digest', async (t) => {
  t.strictSame(build('', 'p', '', ''), { domain: '', path: 'p' })
  t.strictSame(build('d.io', 'p'), { domain: 'd.io', path: 'p' })
  t.strictSame(build('d.io', 'p', 't'), { domain: 'd.io', path: 'p', tag: 't' })
  t.strictSame(build('d.io', 'p', undefined, `sha256:${hex64}`), { domain: 'd.io', path: 'p', digest: `sha256:${hex64}` })
  t.strictSame(build('d.io', 'p', 't', `sha256:${hex64}`), { domain: 'd.io', path: 'p', tag: 't', digest: `sha256:${hex64}` })
})

t.test('withName: the path may be 255 characters, not 256', async (t) => {
  t.strictSame(withName(`quay.io/${'a'.repeat(255)}`), { domain: 'quay.io', path: 'a'.repeat(255) })
  t.strictSame(withName('a'.repeat(255)), { domain: '', path: 'a'.repeat(255) })
  t.strictSame(
    refusal(() => withName('a'.repeat(256))),
    {
      name: 'ImageReferenceError',
      code: 'name-too-long',
      message: 'repository name must not be more than 255 characters',
    },
  )
  t.strictSame(
    refusal(() => withName('Bad')),
    { name: 'ImageReferenceError', code: 'invalid-format', message: 'invalid reference format' },
  )
  t.strictSame(
    refusal(() => withName('quay.io/app:1')),
    { name: 'ImageReferenceError', code: 'invalid-format', message: 'invalid reference format' },
  )
  t.strictSame(withName('localhost:5000/a/b'), { domain: 'localhost:5000', path: 'a/b' })
})

t.test('parse: messages of each refusal', async (t) => {
  t.strictSame(
    refusal(() => parse('')),
    { name: 'ImageReferenceError', code: 'name-empty', message: 'repository name must have at least one component' },
  )
  t.strictSame(
    refusal(() => parse('Quay.io/App')),
    { name: 'ImageReferenceError', code: 'name-contains-uppercase', message: 'repository name must be lowercase' },
  )
  t.strictSame(
    refusal(() => parse('quay.io/a b')),
    { name: 'ImageReferenceError', code: 'invalid-format', message: 'invalid reference format' },
  )
  t.strictSame(
    refusal(() => parse(`quay.io/${'a'.repeat(256)}`)),
    {
      name: 'ImageReferenceError',
      code: 'name-too-long',
      message: 'repository name must not be more than 255 characters',
    },
  )
  t.strictSame(parse(`quay.io/${'a'.repeat(255)}:1`), { domain: 'quay.io', path: 'a'.repeat(255), tag: '1' })
  t.strictSame(
    refusal(() => parse(`quay.io/a@sha256:${'a'.repeat(63)}`)),
    {
      name: 'ImageReferenceError',
      code: 'invalid-digest-length',
      message: 'invalid checksum digest length',
    },
  )
})

t.test('parseDockerRef keeps the tag when there is no digest and drops it beside one', async (t) => {
  const table: [string, object][] = [
    ['nginx:1', { domain: 'docker.io', path: 'library/nginx', tag: '1' }],
    ['nginx', { domain: 'docker.io', path: 'library/nginx', tag: 'latest' }],
    [`nginx@sha256:${hex64}`, { domain: 'docker.io', path: 'library/nginx', digest: `sha256:${hex64}` }],
    [`quay.io/a/b:2@sha256:${hex64}`, { domain: 'quay.io', path: 'a/b', digest: `sha256:${hex64}` }],
  ]
  for (const [input, expected] of table) t.strictSame(parseDockerRef(input), expected, input)
})

t.test('tagNameOnly adds latest only when there is neither tag nor digest', async (t) => {
  const table: [object, object][] = [
    [
      { domain: 'docker.io', path: 'x' },
      { domain: 'docker.io', path: 'x', tag: 'latest' },
    ],
    [
      { domain: 'docker.io', path: 'x', tag: '1' },
      { domain: 'docker.io', path: 'x', tag: '1' },
    ],
    [
      { domain: 'docker.io', path: 'x', digest: `sha256:${hex64}` },
      { domain: 'docker.io', path: 'x', digest: `sha256:${hex64}` },
    ],
    [
      { domain: 'docker.io', path: 'x', tag: '1', digest: `sha256:${hex64}` },
      { domain: 'docker.io', path: 'x', tag: '1', digest: `sha256:${hex64}` },
    ],
  ]
  for (const [input, expected] of table) t.strictSame(tagNameOnly(input as never), expected, JSON.stringify(input))
})

t.test('tryParseNormalizedNamed returns the grammar error instead of throwing', async (t) => {
  const bad = tryParseNormalizedNamed('Quay.io/App')
  t.strictSame([bad.ok, bad.ok ? undefined : bad.error.code], [false, 'name-contains-uppercase'])
  const good = tryParseNormalizedNamed('nginx')
  t.strictSame(good, { ok: true, ref: { domain: 'docker.io', path: 'library/nginx' } })
  t.equal(formatReference(parseAnyReference(hex64)), `sha256:${hex64}`)
})
