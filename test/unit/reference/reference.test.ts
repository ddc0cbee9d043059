// Parsing, building and formatting without normalisation (distribution/reference reference_test.go).
import t from 'tap'
import {
  type ImageReferenceErrorCode,
  NAME_TOTAL_LENGTH_MAX,
  parse,
  withName,
  withTag,
  withDigest,
  referenceName,
  formatReference,
} from '../../../server/core/reference/reference.js'
import {
  DEFAULT_TAG,
  parseNormalizedNamed,
  parseNamed,
  parseAnyReference,
  parseDockerRef,
  tagNameOnly,
  familiarName,
  familiarString,
} from '../../../server/core/reference/normalize.js'
import { errorOf, isNamed } from './helpers.js'

// Cases marked with a Go test name are transcribed from the test tables of the reference
// grammar's Go implementation (distribution/reference v0.6.0, digests per go-digest v1.0.0).
// Go error values map to codes: ErrReferenceInvalidFormat → invalid-format, ErrNameEmpty →
// name-empty, ErrNameTooLong → name-too-long, ErrNameContainsUppercase → name-contains-uppercase,
// ErrNameNotCanonical → name-not-canonical, digest.ErrDigestInvalidLength → invalid-digest-length,
// digest.ErrDigestUnsupported → unsupported-digest.

const SHA256 = 'sha256:' + 'e'.repeat(64)

t.test('TestReferenceParse', async (t) => {
  interface Case {
    input: string
    err?: ImageReferenceErrorCode
    repository?: string
    domain?: string
    tag?: string
    digest?: string
  }
  const cases: Case[] = [
    { input: 'test_com', repository: 'test_com' },
    { input: 'test.com:tag', repository: 'test.com', tag: 'tag' },
    { input: 'test.com:5000', repository: 'test.com', tag: '5000' },
    { input: 'test.com/repo:tag', domain: 'test.com', repository: 'test.com/repo', tag: 'tag' },
    { input: 'test:5000/repo', domain: 'test:5000', repository: 'test:5000/repo' },
    { input: 'test:5000/repo:tag', domain: 'test:5000', repository: 'test:5000/repo', tag: 'tag' },
    {
      input: 'test:5000/repo@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
      domain: 'test:5000',
      repository: 'test:5000/repo',
      digest: 'sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
    },
    {
      input: 'test:5000/repo:tag@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
      domain: 'test:5000',
      repository: 'test:5000/repo',
      tag: 'tag',
      digest: 'sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
    },
    { input: 'test:5000/repo', domain: 'test:5000', repository: 'test:5000/repo' },
    { input: '', err: 'name-empty' },
    { input: ':justtag', err: 'invalid-format' },
    { input: '@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', err: 'invalid-format' },
    { input: 'repo@sha256:ffffffffffffffffffffffffffffffffff', err: 'invalid-digest-length' },
    {
      input: 'validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
      err: 'unsupported-digest',
    },
    { input: 'Uppercase:tag', err: 'name-contains-uppercase' },
    // (Go leaves "Uppercase/lowercase:tag" commented out: "Uppercase" is taken as a domain. See own cases.)
    { input: 'test:5000/Uppercase/lowercase:tag', err: 'name-contains-uppercase' },
    { input: 'lowercase:Uppercase', repository: 'lowercase', tag: 'Uppercase' },
    { input: 'domain/' + 'a'.repeat(256) + ':tag', err: 'name-too-long' },
    {
      input: 'a/'.repeat(127) + 'a:tag-puts-this-over-max',
      domain: 'a',
      repository: 'a/'.repeat(127) + 'a',
      tag: 'tag-puts-this-over-max',
    },
    { input: 'aa/asdf$$^/aa', err: 'invalid-format' },
    { input: 'sub-dom1.foo.com/bar/baz/quux', domain: 'sub-dom1.foo.com', repository: 'sub-dom1.foo.com/bar/baz/quux' },
    {
      input: 'sub-dom1.foo.com/bar/baz/quux:some-long-tag',
      domain: 'sub-dom1.foo.com',
      repository: 'sub-dom1.foo.com/bar/baz/quux',
      tag: 'some-long-tag',
    },
    {
      input: 'b.gcr.io/test.example.com/my-app:test.example.com',
      domain: 'b.gcr.io',
      repository: 'b.gcr.io/test.example.com/my-app',
      tag: 'test.example.com',
    },
    {
      input: 'xn--n3h.com/myimage:xn--n3h.com', // ☃.com in punycode
      domain: 'xn--n3h.com',
      repository: 'xn--n3h.com/myimage',
      tag: 'xn--n3h.com',
    },
    {
      input:
        'xn--7o8h.com/myimage:xn--7o8h.com@sha512:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', // 🐳.com in punycode
      domain: 'xn--7o8h.com',
      repository: 'xn--7o8h.com/myimage',
      tag: 'xn--7o8h.com',
      digest:
        'sha512:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
    },
    { input: 'foo_bar.com:8080', repository: 'foo_bar.com', tag: '8080' },
    { input: 'foo/foo_bar.com:8080', domain: 'foo', repository: 'foo/foo_bar.com', tag: '8080' },
    { input: '192.168.1.1', repository: '192.168.1.1' },
    { input: '192.168.1.1:tag', repository: '192.168.1.1', tag: 'tag' },
    { input: '192.168.1.1:5000', repository: '192.168.1.1', tag: '5000' },
    { input: '192.168.1.1/repo', domain: '192.168.1.1', repository: '192.168.1.1/repo' },
    { input: '192.168.1.1:5000/repo', domain: '192.168.1.1:5000', repository: '192.168.1.1:5000/repo' },
    { input: '192.168.1.1:5000/repo:5050', domain: '192.168.1.1:5000', repository: '192.168.1.1:5000/repo', tag: '5050' },
    { input: '[2001:db8::1]', err: 'invalid-format' },
    { input: '[2001:db8::1]:5000', err: 'invalid-format' },
    { input: '[2001:db8::1]:tag', err: 'invalid-format' },
    { input: '[2001:db8::1]/repo', domain: '[2001:db8::1]', repository: '[2001:db8::1]/repo' },
    {
      input: '[2001:db8:1:2:3:4:5:6]/repo:tag',
      domain: '[2001:db8:1:2:3:4:5:6]',
      repository: '[2001:db8:1:2:3:4:5:6]/repo',
      tag: 'tag',
    },
    { input: '[2001:db8::1]:5000/repo', domain: '[2001:db8::1]:5000', repository: '[2001:db8::1]:5000/repo' },
    {
      input: '[2001:db8::1]:5000/repo:tag',
      domain: '[2001:db8::1]:5000',
      repository: '[2001:db8::1]:5000/repo',
      tag: 'tag',
    },
    {
      input: '[2001:db8::1]:5000/repo@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
      domain: '[2001:db8::1]:5000',
      repository: '[2001:db8::1]:5000/repo',
      digest: 'sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
    },
    {
      input: '[2001:db8::1]:5000/repo:tag@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
      domain: '[2001:db8::1]:5000',
      repository: '[2001:db8::1]:5000/repo',
      tag: 'tag',
      digest: 'sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
    },
    { input: '[2001:db8::]:5000/repo', domain: '[2001:db8::]:5000', repository: '[2001:db8::]:5000/repo' },
    { input: '[::1]:5000/repo', domain: '[::1]:5000', repository: '[::1]:5000/repo' },
    { input: '[fe80::1%eth0]:5000/repo', err: 'invalid-format' },
    { input: '[fe80::1%@invalidzone]:5000/repo', err: 'invalid-format' },
    {
      input: 'example.com/' + 'a'.repeat(255) + ':tag',
      domain: 'example.com',
      repository: 'example.com/' + 'a'.repeat(255),
      tag: 'tag',
    },
  ]
  t.equal(cases.length, 47)
  for (const c of cases) {
    const label = JSON.stringify(c.input.length > 80 ? c.input.slice(0, 77) + '...' : c.input)
    if (c.err !== undefined) {
      t.equal(errorOf(() => parse(c.input))?.code, c.err, label)
      continue
    }
    const ref = parse(c.input)
    t.equal(formatReference(ref), c.input, `${label} round-trips`)
    t.equal(referenceName(ref), c.repository, `${label} name`)
    t.equal(ref.domain, c.domain ?? '', `${label} domain`)
    t.equal(ref.tag, c.tag, `${label} tag`)
    t.equal(ref.digest, c.digest, `${label} digest`)
  }
})

t.test('TestWithNameFailure', async (t) => {
  const cases: [string, ImageReferenceErrorCode][] = [
    ['', 'invalid-format'],
    [':justtag', 'invalid-format'],
    ['@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', 'invalid-format'],
    ['validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', 'invalid-format'],
    ['example.com/repo:tag', 'invalid-format'],
    ['example.com/' + 'a'.repeat(256), 'name-too-long'],
    ['aa/asdf$$^/aa', 'invalid-format'],
  ]
  for (const [input, code] of cases) {
    t.equal(errorOf(() => withName(input))?.code, code, JSON.stringify(input.slice(0, 60)))
  }
})

t.test('TestDomainAndPath', async (t) => {
  const cases: [input: string, domain: string, path: string][] = [
    ['test.com/foo', 'test.com', 'foo'],
    ['test_com/foo', '', 'test_com/foo'],
    ['test:8080/foo', 'test:8080', 'foo'],
    ['test.com:8080/foo', 'test.com:8080', 'foo'],
    ['test-com:8080/foo', 'test-com:8080', 'foo'],
    ['xn--n3h.com:18080/foo', 'xn--n3h.com:18080', 'foo'],
  ]
  for (const [input, domain, path] of cases) {
    t.strictSame(withName(input), { domain, path }, input)
  }
})

t.test('TestSerialization (Field.UnmarshalText is Parse)', async (t) => {
  const cases: { description: string; input: string; err?: ImageReferenceErrorCode; name?: string; tag?: string; digest?: string }[] = [
    { description: 'empty value', input: '', err: 'name-empty' },
    { description: 'just a name', input: 'example.com:8000/named', name: 'example.com:8000/named' },
    { description: 'name with a tag', input: 'example.com:8000/named:tagged', name: 'example.com:8000/named', tag: 'tagged' },
    {
      description: 'name with digest',
      input: 'other.com/named@sha256:1234567890098765432112345667890098765432112345667890098765432112',
      name: 'other.com/named',
      digest: 'sha256:1234567890098765432112345667890098765432112345667890098765432112',
    },
  ]
  for (const c of cases) {
    if (c.err !== undefined) {
      t.equal(errorOf(() => parse(c.input))?.code, c.err, c.description)
      continue
    }
    const ref = parse(c.input)
    t.equal(referenceName(ref), c.name, c.description)
    t.equal(ref.tag, c.tag, `${c.description}: tag`)
    t.equal(ref.digest, c.digest, `${c.description}: digest`)
    t.equal(formatReference(ref), c.input, `${c.description}: round-trips`)
  }
})

t.test('TestWithTag', async (t) => {
  const cases: { name: string; digest?: string; tag: string; combined: string }[] = [
    { name: 'test.com/foo', tag: 'tag', combined: 'test.com/foo:tag' },
    { name: 'foo', tag: 'tag2', combined: 'foo:tag2' },
    { name: 'test.com:8000/foo', tag: 'tag4', combined: 'test.com:8000/foo:tag4' },
    { name: 'test.com:8000/foo', tag: 'TAG5', combined: 'test.com:8000/foo:TAG5' },
    {
      name: 'test.com:8000/foo',
      digest: 'sha256:1234567890098765432112345667890098765',
      tag: 'TAG5',
      combined: 'test.com:8000/foo:TAG5@sha256:1234567890098765432112345667890098765',
    },
  ]
  for (const c of cases) {
    let named = withName(c.name)
    if (c.digest !== undefined) named = withDigest(named, c.digest)
    t.equal(formatReference(withTag(named, c.tag)), c.combined)
  }
})

t.test('TestWithDigest', async (t) => {
  const cases: { name: string; digest: string; tag?: string; combined: string }[] = [
    {
      name: 'test.com/foo',
      digest: 'sha256:1234567890098765432112345667890098765',
      combined: 'test.com/foo@sha256:1234567890098765432112345667890098765',
    },
    {
      name: 'foo',
      digest: 'sha256:1234567890098765432112345667890098765',
      combined: 'foo@sha256:1234567890098765432112345667890098765',
    },
    {
      name: 'test.com:8000/foo',
      digest: 'sha256:1234567890098765432112345667890098765',
      combined: 'test.com:8000/foo@sha256:1234567890098765432112345667890098765',
    },
    {
      name: 'test.com:8000/foo',
      digest: 'sha256:1234567890098765432112345667890098765',
      tag: 'latest',
      combined: 'test.com:8000/foo:latest@sha256:1234567890098765432112345667890098765',
    },
  ]
  for (const c of cases) {
    let named = withName(c.name)
    if (c.tag !== undefined) named = withTag(named, c.tag)
    t.equal(formatReference(withDigest(named, c.digest)), c.combined)
  }
})

t.test('name/domain split quirks kept from the grammar', async (t) => {
  // "Uppercase" is taken as a host (Go's TestReferenceParse leaves this case commented out)
  t.strictSame(parse('Uppercase/lowercase:tag'), { domain: 'Uppercase', path: 'lowercase', tag: 'tag' })
  // a first component with "." that is not a valid host stays part of the path, without a domain
  t.strictSame(parseNormalizedNamed('foo_bar.com/baz'), { domain: '', path: 'foo_bar.com/baz' })
  t.equal(formatReference(parseNormalizedNamed('foo_bar.com/baz')), 'foo_bar.com/baz')
  // parse() does not normalise: the first of several components is a domain if it looks like one
  t.strictSame(parse('nginx'), { domain: '', path: 'nginx' })
  t.strictSame(parse('library/nginx'), { domain: 'library', path: 'nginx' })
  t.strictSame(parse('index.docker.io/foo'), { domain: 'index.docker.io', path: 'foo' })
})

t.test('digests of each algorithm', async (t) => {
  const hex = (n: number, c = 'f') => c.repeat(n)
  const cases: [digest: string, code: ImageReferenceErrorCode | undefined][] = [
    ['sha256:' + hex(64), undefined],
    ['sha256:' + hex(63), 'invalid-digest-length'],
    ['sha256:' + hex(65), 'invalid-digest-length'],
    ['sha256:' + hex(128), 'invalid-digest-length'],
    ['sha384:' + hex(96), undefined],
    ['sha384:' + hex(95), 'invalid-digest-length'],
    ['sha384:' + hex(97), 'invalid-digest-length'],
    ['sha384:' + hex(64), 'invalid-digest-length'],
    ['sha512:' + hex(128), undefined],
    ['sha512:' + hex(127), 'invalid-digest-length'],
    ['sha512:' + hex(129), 'invalid-digest-length'],
    ['sha512:' + hex(64), 'invalid-digest-length'],
    // registered algorithms take lowercase hex only (length is checked first)
    ['sha256:' + hex(64, 'F'), 'invalid-digest'],
    ['sha512:' + hex(128, 'A'), 'invalid-digest'],
    ['sha256:' + hex(63, 'F'), 'invalid-digest-length'],
    // unregistered algorithms: unsupported if lowercase, else invalid
    ['md5:' + hex(32), 'unsupported-digest'],
    ['blake3:' + hex(64), 'unsupported-digest'],
    ['sha256+b64:' + hex(64), 'unsupported-digest'],
    ['multi.part-alg_x:' + hex(40, 'F'), 'unsupported-digest'],
    // names of Object.prototype members are not registered algorithms
    ['constructor:' + hex(64), 'unsupported-digest'],
    ['toString:' + hex(64), 'invalid-digest'],
    ['SHA256:' + hex(64), 'invalid-digest'],
    ['Md5:' + hex(32), 'invalid-digest'],
    // fewer than 32 hex digits, or a malformed algorithm, is not a digest at all
    ['sha256:' + hex(31), 'invalid-format'],
    ['sha256:' + hex(64, 'g'), 'invalid-format'],
    ['1sha:' + hex(64), 'invalid-format'],
    ['sha256:', 'invalid-format'],
  ]
  for (const [digest, code] of cases) {
    const input = `example.com/app:1@${digest}`
    const label = `${digest.slice(0, 20)}… (${digest.length - digest.indexOf(':') - 1} chars)`
    t.equal(errorOf(() => parse(input))?.code, code, `parse ${label}`)
    t.equal(errorOf(() => parseNormalizedNamed(input))?.code, code, `normalized ${label}`)
  }
  t.equal(errorOf(() => parse('a@sha256:' + hex(63)))?.message, 'invalid checksum digest length')
  t.equal(errorOf(() => parse('a@sha256:' + hex(64, 'F')))?.message, 'invalid checksum digest format')
  t.equal(errorOf(() => parse('a@md5:' + hex(32)))?.message, 'unsupported digest algorithm')
  // a bare digest is a digest reference only if it is valid
  t.strictSame(parseAnyReference('sha512:' + hex(128)), { digest: 'sha512:' + hex(128) })
  t.strictSame(parseAnyReference('sha256:abc'), { domain: 'docker.io', path: 'library/sha256', tag: 'abc' })
})

t.test('length limits', async (t) => {
  t.equal(NAME_TOTAL_LENGTH_MAX, 255)
  const ok = (s: string) => errorOf(() => parseNormalizedNamed(s))?.code
  t.equal(ok('docker.io/library/' + 'a'.repeat(247)), undefined, 'path of exactly 255')
  t.equal(ok('docker.io/library/' + 'a'.repeat(248)), 'name-too-long', 'path of 256')
  t.equal(ok('a'.repeat(247)), undefined, 'familiar name whose path is 255')
  t.equal(ok('a'.repeat(248)), 'name-too-long', 'familiar name whose path is 256')
  t.equal(ok('example.com/' + 'a'.repeat(255)), undefined, 'the domain does not count')
  t.equal(ok('x'.repeat(300) + '.example.com/foo'), undefined, 'nor does a long host')
  t.equal(ok('example.com/' + 'a'.repeat(255) + ':' + 'T'.repeat(128)), undefined, 'nor the tag')
  t.equal(ok('example.com/a:' + 'T'.repeat(129)), 'invalid-format', 'tag of 129')
  // the first component counts as a domain for parse(), but not after normalisation
  const deep = 'a/'.repeat(128) + 'a:tag'
  t.equal(
    errorOf(() => parse(deep)),
    undefined,
    'parse: domain "a" + 255-char path',
  )
  t.equal(ok(deep), 'name-too-long', 'normalized: 257-char path on docker.io')
  t.equal(errorOf(() => parse('domain/' + 'a'.repeat(256)))?.message, 'repository name must not be more than 255 characters')
})

t.test('error codes and messages', async (t) => {
  const cases: [() => unknown, ImageReferenceErrorCode, string][] = [
    [() => parse(''), 'name-empty', 'repository name must have at least one component'],
    [() => parse('a b'), 'invalid-format', 'invalid reference format'],
    [() => parseNormalizedNamed(''), 'invalid-format', 'invalid reference format'],
    [() => parseNamed('nginx'), 'name-not-canonical', 'repository name must be canonical'],
    [() => withTag(withName('foo'), '.x'), 'invalid-tag', 'invalid tag format'],
    [() => withDigest(withName('foo'), 'sha256:abc'), 'invalid-digest', 'invalid digest format'],
  ]
  for (const [fn, code, message] of cases) {
    const err = errorOf(fn)
    t.equal(err?.code, code, code)
    t.equal(err?.message, message, `${code} message`)
  }
  const err = errorOf(() => parse(''))
  t.type(err, Error)
  t.equal(err?.name, 'ImageReferenceError')
})

t.test('building and formatting', async (t) => {
  const ref = withName('example.com/app')
  t.strictSame(ref, { domain: 'example.com', path: 'app' })
  t.equal(DEFAULT_TAG, 'latest')
  t.strictSame(tagNameOnly(ref), { domain: 'example.com', path: 'app', tag: 'latest' })
  const digested = withDigest(ref, SHA256)
  t.strictSame(tagNameOnly(digested), digested, 'a digest is enough')
  t.equal(formatReference(withTag(digested, 'v1')), `example.com/app:v1@${SHA256}`, 'withTag keeps the digest')
  t.equal(formatReference(withDigest(withTag(ref, 'v1'), SHA256)), `example.com/app:v1@${SHA256}`)
  t.equal(formatReference({ domain: '', path: 'nginx', tag: '1' }), 'nginx:1')
  t.equal(formatReference({ digest: SHA256 }), SHA256)
  t.equal(familiarString({ digest: SHA256 }), SHA256)
  t.equal(familiarName(parseNormalizedNamed('docker.io/library/foo/bar')), 'library/foo/bar')
  t.equal(familiarName(parseNormalizedNamed('docker.io/user/app:1')), 'user/app')
  t.equal(referenceName(parseNormalizedNamed('nginx:1')), 'docker.io/library/nginx')
  t.strictSame(parseDockerRef('localhost:5000/foo'), { domain: 'localhost:5000', path: 'foo', tag: 'latest' })
  const any = parseAnyReference('nginx')
  t.equal(isNamed(any), true, 'a named reference')
  t.strictSame(any, { domain: 'docker.io', path: 'library/nginx' })
})

t.test('adversarial long inputs finish with the right answer', async (t) => {
  // The grammar is matched by a backtracking engine: these inputs would take exponential or
  // polynomial time with ambiguous patterns. Only outcomes are asserted, not timings.
  const n = 10_000
  const cases: [string, ImageReferenceErrorCode | undefined][] = [
    ['a'.repeat(n) + '!', 'invalid-format'],
    ['a.'.repeat(n / 2) + '/', 'invalid-format'],
    ['a-'.repeat(n / 2), 'invalid-format'],
    ['a-'.repeat(n / 2) + 'a', 'name-too-long'],
    ['a_'.repeat(n / 2) + '_a', 'name-too-long'],
    ['a/'.repeat(n / 2), 'invalid-format'],
    ['a/'.repeat(n / 2) + 'a', 'name-too-long'],
    ['a.a:1/'.repeat(n / 6), 'invalid-format'],
    ['a:'.repeat(n / 2), 'invalid-format'],
    ['[' + ':'.repeat(n), 'invalid-format'],
    ['[' + 'a'.repeat(n) + ']:' + '1'.repeat(n), 'invalid-format'],
    ['A'.repeat(n), 'name-contains-uppercase'],
    ['A-'.repeat(n / 2) + 'a/b', undefined],
    ['A-'.repeat(n / 2) + 'A:1/b:' + 'T'.repeat(200), 'invalid-format'],
    ['x'.repeat(n) + '.com/app', undefined],
    ['foo:' + 'a'.repeat(n), 'invalid-format'],
    ['foo@' + 'a'.repeat(n), 'invalid-format'],
    ['foo@a' + '.a'.repeat(n / 2) + ':', 'invalid-format'],
    ['foo@sha256:' + 'f'.repeat(n), 'invalid-digest-length'],
    ['foo@md5:' + 'f'.repeat(n), 'unsupported-digest'],
    ['foo@sha256:' + 'f'.repeat(n) + '!', 'invalid-format'],
  ]
  for (const [input, code] of cases) {
    const label = `${JSON.stringify(input.slice(0, 12))}… (${input.length} chars)`
    t.equal(errorOf(() => parse(input))?.code, code, `parse ${label}`)
    // these return or throw a ImageReferenceError (errorOf rethrows anything else)
    errorOf(() => parseNormalizedNamed(input))
    errorOf(() => parseAnyReference(input))
  }
})
