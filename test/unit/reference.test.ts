import t from 'tap'
import {
  DEFAULT_TAG,
  type DigestReference,
  familiarName,
  familiarString,
  formatReference,
  type ImageReference,
  NAME_TOTAL_LENGTH_MAX,
  parse,
  parseAnyReference,
  parseDockerRef,
  parseNamed,
  parseNormalizedNamed,
  referenceGrammar,
  ReferenceError,
  type ReferenceErrorCode,
  referenceName,
  tagNameOnly,
  tryParseNormalizedNamed,
  withDigest,
  withName,
  withTag,
} from '../../server/core/reference.js'

// Cases marked with a Go test name are transcribed from the test tables of the reference
// grammar's Go implementation (distribution/reference v0.6.0, digests per go-digest v1.0.0).
// Go error values map to codes: ErrReferenceInvalidFormat → invalid-format, ErrNameEmpty →
// name-empty, ErrNameTooLong → name-too-long, ErrNameContainsUppercase → name-contains-uppercase,
// ErrNameNotCanonical → name-not-canonical, digest.ErrDigestInvalidLength → invalid-digest-length,
// digest.ErrDigestUnsupported → unsupported-digest.

/** The thrown ReferenceError, or undefined if `fn` returned. Other errors propagate. */
function errorOf(fn: () => unknown): ReferenceError | undefined {
  try {
    fn()
    return undefined
  } catch (error) {
    if (error instanceof ReferenceError) return error
    throw error
  }
}

/** Number of capture groups in a regexp. */
function groupCount(re: RegExp): number {
  return (new RegExp(`${re.source}|`).exec('') ?? []).length - 1
}

const isNamed = (r: ImageReference | DigestReference): r is ImageReference => 'path' in r

// ---- reference_test.go ------------------------------------------------------------------------

t.test('TestReferenceParse', async (t) => {
  interface Case {
    input: string
    err?: ReferenceErrorCode
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
  const cases: [string, ReferenceErrorCode][] = [
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
  const cases: { description: string; input: string; err?: ReferenceErrorCode; name?: string; tag?: string; digest?: string }[] = [
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

t.test('TestParseNamed', async (t) => {
  const cases: { input: string; domain?: string; path?: string; err?: ReferenceErrorCode }[] = [
    { input: 'test.com/foo', domain: 'test.com', path: 'foo' },
    { input: 'test:8080/foo', domain: 'test:8080', path: 'foo' },
    { input: 'test_com/foo', err: 'name-not-canonical' },
    { input: 'test.com', err: 'name-not-canonical' },
    { input: 'foo', err: 'name-not-canonical' },
    { input: 'library/foo', err: 'name-not-canonical' },
    { input: 'docker.io/library/foo', domain: 'docker.io', path: 'library/foo' },
    // Ambiguous case, parser will add "library/" to foo
    { input: 'docker.io/foo', err: 'name-not-canonical' },
  ]
  for (const c of cases) {
    if (c.err !== undefined) {
      t.equal(errorOf(() => parseNamed(c.input))?.code, c.err, c.input)
      continue
    }
    t.strictSame(parseNamed(c.input), { domain: c.domain, path: c.path }, c.input)
  }
})

// ---- normalize_test.go ------------------------------------------------------------------------

t.test('TestValidateReferenceName', async (t) => {
  const valid = [
    'docker/docker',
    'library/debian',
    'debian',
    'localhost/library/debian',
    'localhost/debian',
    'LOCALDOMAIN/library/debian',
    'LOCALDOMAIN/debian',
    'docker.io/docker/docker',
    'docker.io/library/debian',
    'docker.io/debian',
    'index.docker.io/docker/docker',
    'index.docker.io/library/debian',
    'index.docker.io/debian',
    '127.0.0.1:5000/docker/docker',
    '127.0.0.1:5000/library/debian',
    '127.0.0.1:5000/debian',
    '192.168.0.1',
    '192.168.0.1:80',
    '192.168.0.1:8/debian',
    '192.168.0.2:25000/debian',
    'thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev',
    '[fc00::1]:5000/docker',
    '[fc00::1]:5000/docker/docker',
    '[fc00:1:2:3:4:5:6:7]:5000/library/debian',
    // Valid with a hostname: no ambiguity with an identifier.
    'docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a',
    'Docker/docker',
    'DOCKER/docker',
  ]
  const invalid = [
    'https://github.com/docker/docker',
    'docker/Docker',
    '-docker',
    '-docker/docker',
    '-docker.io/docker/docker',
    'docker///docker',
    'docker.io/docker/Docker',
    'docker.io/docker///docker',
    '[fc00::1]',
    '[fc00::1]:5000',
    'fc00::1:5000/debian',
    '[fe80::1%eth0]:5000/debian',
    '[2001:db8:3:4::192.0.2.33]:5000/debian',
    '1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a',
  ]
  for (const s of invalid)
    t.ok(
      errorOf(() => parseNormalizedNamed(s)),
      `invalid: ${s}`,
    )
  for (const s of valid)
    t.equal(
      errorOf(() => parseNormalizedNamed(s)),
      undefined,
      `valid: ${s}`,
    )
})

t.test('TestValidateRemoteName', async (t) => {
  const valid = [
    // Sanity check.
    'docker/docker',
    // Allow 64-character non-hexadecimal names (hexadecimal names are forbidden).
    'thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev',
    // Allow embedded hyphens.
    'docker-rules/docker',
    // Allow multiple hyphens as well.
    'docker---rules/docker',
    // Username doc and image name docker being tested.
    'doc/docker',
    // single character names are now allowed.
    'd/docker',
    'jess/t',
    // Consecutive underscores.
    'dock__er/docker',
  ]
  const invalid = [
    // Disallow capital letters.
    'docker/Docker',
    // Only allow one slash.
    'docker///docker',
    // Disallow 64-character hexadecimal.
    '1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a',
    // Disallow leading and trailing hyphens in namespace.
    '-docker/docker',
    'docker-/docker',
    '-docker-/docker',
    // Don't allow underscores everywhere (as opposed to hyphens).
    '____/____',
    '_docker/_docker',
    // Disallow consecutive periods.
    'dock..er/docker',
    'dock_.er/docker',
    'dock-.er/docker',
    // No repository.
    'docker/',
    // namespace too long
    'this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker',
  ]
  for (const s of valid)
    t.equal(
      errorOf(() => parseNormalizedNamed(s)),
      undefined,
      `valid: ${s}`,
    )
  for (const s of invalid)
    t.ok(
      errorOf(() => parseNormalizedNamed(s)),
      `invalid: ${s.slice(0, 60)}`,
    )
})

t.test('TestParseRepositoryInfo', async (t) => {
  interface Case {
    remoteName: string
    familiarName: string
    fullName: string
    ambiguousName: string
    domain: string
  }
  const cases: Case[] = [
    {
      remoteName: 'fooo',
      familiarName: 'localhost/fooo',
      fullName: 'localhost/fooo',
      ambiguousName: 'localhost/fooo',
      domain: 'localhost',
    },
    {
      remoteName: 'fooo/bar',
      familiarName: 'localhost/fooo/bar',
      fullName: 'localhost/fooo/bar',
      ambiguousName: 'localhost/fooo/bar',
      domain: 'localhost',
    },
    {
      remoteName: 'fooo',
      familiarName: 'LOCALDOMAIN/fooo',
      fullName: 'LOCALDOMAIN/fooo',
      ambiguousName: 'LOCALDOMAIN/fooo',
      domain: 'LOCALDOMAIN',
    },
    {
      remoteName: 'fooo/bar',
      familiarName: 'LOCALDOMAIN/fooo/bar',
      fullName: 'LOCALDOMAIN/fooo/bar',
      ambiguousName: 'LOCALDOMAIN/fooo/bar',
      domain: 'LOCALDOMAIN',
    },
    {
      remoteName: 'fooo/bar',
      familiarName: 'fooo/bar',
      fullName: 'docker.io/fooo/bar',
      ambiguousName: 'index.docker.io/fooo/bar',
      domain: 'docker.io',
    },
    {
      remoteName: 'library/ubuntu',
      familiarName: 'ubuntu',
      fullName: 'docker.io/library/ubuntu',
      ambiguousName: 'library/ubuntu',
      domain: 'docker.io',
    },
    {
      remoteName: 'nonlibrary/ubuntu',
      familiarName: 'nonlibrary/ubuntu',
      fullName: 'docker.io/nonlibrary/ubuntu',
      ambiguousName: '',
      domain: 'docker.io',
    },
    {
      remoteName: 'other/library',
      familiarName: 'other/library',
      fullName: 'docker.io/other/library',
      ambiguousName: '',
      domain: 'docker.io',
    },
    {
      remoteName: 'private/moonbase',
      familiarName: '127.0.0.1:8000/private/moonbase',
      fullName: '127.0.0.1:8000/private/moonbase',
      ambiguousName: '',
      domain: '127.0.0.1:8000',
    },
    {
      remoteName: 'privatebase',
      familiarName: '127.0.0.1:8000/privatebase',
      fullName: '127.0.0.1:8000/privatebase',
      ambiguousName: '',
      domain: '127.0.0.1:8000',
    },
    {
      remoteName: 'private/moonbase',
      familiarName: 'example.com/private/moonbase',
      fullName: 'example.com/private/moonbase',
      ambiguousName: '',
      domain: 'example.com',
    },
    {
      remoteName: 'privatebase',
      familiarName: 'example.com/privatebase',
      fullName: 'example.com/privatebase',
      ambiguousName: '',
      domain: 'example.com',
    },
    {
      remoteName: 'private/moonbase',
      familiarName: 'example.com:8000/private/moonbase',
      fullName: 'example.com:8000/private/moonbase',
      ambiguousName: '',
      domain: 'example.com:8000',
    },
    {
      remoteName: 'privatebasee',
      familiarName: 'example.com:8000/privatebasee',
      fullName: 'example.com:8000/privatebasee',
      ambiguousName: '',
      domain: 'example.com:8000',
    },
    {
      remoteName: 'library/ubuntu-12.04-base',
      familiarName: 'ubuntu-12.04-base',
      fullName: 'docker.io/library/ubuntu-12.04-base',
      ambiguousName: 'index.docker.io/library/ubuntu-12.04-base',
      domain: 'docker.io',
    },
    {
      remoteName: 'library/foo',
      familiarName: 'foo',
      fullName: 'docker.io/library/foo',
      ambiguousName: 'docker.io/foo',
      domain: 'docker.io',
    },
    {
      remoteName: 'library/foo/bar',
      familiarName: 'library/foo/bar',
      fullName: 'docker.io/library/foo/bar',
      ambiguousName: '',
      domain: 'docker.io',
    },
    {
      remoteName: 'store/foo/bar',
      familiarName: 'store/foo/bar',
      fullName: 'docker.io/store/foo/bar',
      ambiguousName: '',
      domain: 'docker.io',
    },
    { remoteName: 'bar', familiarName: 'Foo/bar', fullName: 'Foo/bar', ambiguousName: '', domain: 'Foo' },
    { remoteName: 'bar', familiarName: 'FOO/bar', fullName: 'FOO/bar', ambiguousName: '', domain: 'FOO' },
  ]
  for (const c of cases) {
    const inputs = [c.familiarName, c.fullName]
    if (c.ambiguousName !== '') inputs.push(c.ambiguousName)
    for (const input of inputs) {
      const ref = parseNormalizedNamed(input)
      t.equal(familiarName(ref), c.familiarName, `${input}: FamiliarName`)
      t.equal(formatReference(ref), c.fullName, `${input}: FullName`)
      t.equal(ref.domain, c.domain, `${input}: Domain`)
      t.equal(ref.path, c.remoteName, `${input}: RemoteName`)
    }
  }
})

t.test('TestParseReferenceWithTagAndDigest', async (t) => {
  const shortRef = 'busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa'
  const ref = parseNormalizedNamed(shortRef)
  t.equal(formatReference(ref), 'docker.io/library/' + shortRef)
  t.equal(ref.tag, 'latest', 'is tagged')
  t.equal(ref.digest, 'sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa', 'is canonical')
  t.equal(familiarString(ref), shortRef)
})

t.test('TestInvalidReferenceComponents', async (t) => {
  t.ok(
    errorOf(() => parseNormalizedNamed('-foo')),
    'invalid name',
  )
  const ref = parseNormalizedNamed('busybox')
  t.equal(errorOf(() => withTag(ref, '-foo'))?.code, 'invalid-tag', 'invalid tag')
  t.equal(errorOf(() => withDigest(ref, 'foo'))?.code, 'invalid-digest', 'invalid digest')
})

t.test('TestParseAnyReference', async (t) => {
  const cases: { reference: string; equivalent: string; expected?: DigestReference }[] = [
    { reference: 'redis', equivalent: 'docker.io/library/redis' },
    { reference: 'redis:latest', equivalent: 'docker.io/library/redis:latest' },
    { reference: 'docker.io/library/redis:latest', equivalent: 'docker.io/library/redis:latest' },
    {
      reference: 'redis@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
      equivalent: 'docker.io/library/redis@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
    },
    {
      reference: 'docker.io/library/redis@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
      equivalent: 'docker.io/library/redis@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
    },
    { reference: 'dmcgowan/myapp', equivalent: 'docker.io/dmcgowan/myapp' },
    { reference: 'dmcgowan/myapp:latest', equivalent: 'docker.io/dmcgowan/myapp:latest' },
    { reference: 'docker.io/mcgowan/myapp:latest', equivalent: 'docker.io/mcgowan/myapp:latest' },
    {
      reference: 'dmcgowan/myapp@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
      equivalent: 'docker.io/dmcgowan/myapp@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
    },
    {
      reference: 'docker.io/dmcgowan/myapp@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
      equivalent: 'docker.io/dmcgowan/myapp@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
    },
    {
      reference: 'dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
      expected: { digest: 'sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c' },
      equivalent: 'sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
    },
    {
      reference: 'sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
      expected: { digest: 'sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c' },
      equivalent: 'sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c',
    },
    {
      reference: 'dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9',
      equivalent: 'docker.io/library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9',
    },
    { reference: 'dbcc1', equivalent: 'docker.io/library/dbcc1' },
  ]
  for (const c of cases) {
    const ref = parseAnyReference(c.reference)
    t.equal(formatReference(ref), c.equivalent, c.reference)
    t.strictSame(ref, c.expected ?? parse(c.equivalent), `${c.reference}: same reference`)
  }
})

t.test('TestNormalizedSplitHostname', async (t) => {
  const cases: [input: string, domain: string, path: string][] = [
    ['test.com/foo', 'test.com', 'foo'],
    ['test_com/foo', 'docker.io', 'test_com/foo'],
    ['docker/migrator', 'docker.io', 'docker/migrator'],
    ['test.com:8080/foo', 'test.com:8080', 'foo'],
    ['test-com:8080/foo', 'test-com:8080', 'foo'],
    ['foo', 'docker.io', 'library/foo'],
    ['xn--n3h.com/foo', 'xn--n3h.com', 'foo'],
    ['xn--n3h.com:18080/foo', 'xn--n3h.com:18080', 'foo'],
    ['docker.io/foo', 'docker.io', 'library/foo'],
    ['docker.io/library/foo', 'docker.io', 'library/foo'],
    ['docker.io/library/foo/bar', 'docker.io', 'library/foo/bar'],
  ]
  for (const [input, domain, path] of cases) {
    t.strictSame(parseNormalizedNamed(input), { domain, path }, input)
  }
})

t.test('TestParseDockerRef', async (t) => {
  const cases: [name: string, input: string, expected: string][] = [
    ['nothing', 'busybox', 'docker.io/library/busybox:latest'],
    ['tag only', 'busybox:latest', 'docker.io/library/busybox:latest'],
    [
      'digest only',
      'busybox@sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582',
      'docker.io/library/busybox@sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582',
    ],
    ['path only', 'library/busybox', 'docker.io/library/busybox:latest'],
    ['hostname only', 'docker.io/busybox', 'docker.io/library/busybox:latest'],
    ['no tag', 'docker.io/library/busybox', 'docker.io/library/busybox:latest'],
    ['no path', 'docker.io/busybox:latest', 'docker.io/library/busybox:latest'],
    ['no hostname', 'library/busybox:latest', 'docker.io/library/busybox:latest'],
    ['full reference with tag', 'docker.io/library/busybox:latest', 'docker.io/library/busybox:latest'],
    ['gcr reference without tag', 'gcr.io/library/busybox', 'gcr.io/library/busybox:latest'],
    [
      'both tag and digest',
      'gcr.io/library/busybox:latest@sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582',
      'gcr.io/library/busybox@sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582',
    ],
  ]
  for (const [name, input, expected] of cases) {
    const output = formatReference(parseDockerRef(input))
    t.equal(output, expected, name)
    t.equal(
      errorOf(() => parse(output)),
      undefined,
      `${name}: output parses`,
    )
  }
})

// ---- regexp_test.go ---------------------------------------------------------------------------

t.test('TestDomainRegexp', async (t) => {
  const cases: [input: string, match: boolean][] = [
    ['test.com', true],
    ['test.com:10304', true],
    ['test.com:http', false],
    ['localhost', true],
    ['localhost:8080', true],
    ['a', true],
    ['a.b', true],
    ['ab.cd.com', true],
    ['a-b.com', true],
    ['-ab.com', false],
    ['ab-.com', false],
    ['ab.c-om', true],
    ['ab.-com', false],
    ['ab.com-', false],
    ['0101.com', true],
    ['001a.com', true],
    ['b.gbc.io:443', true],
    ['b.gbc.io', true],
    ['xn--n3h.com', true], // ☃.com in punycode
    ['Asdf.com', true], // uppercase character
    ['192.168.1.1:75050', true], // ipv4
    ['192.168.1.1:750050', true], // port with more than 5 digits, it will fail on validation
    ['[fd00:1:2::3]:75050', true], // ipv6 compressed
    ['[fd00:1:2::3]75050', false], // ipv6 wrong port separator
    ['[fd00:1:2::3]::75050', false], // ipv6 wrong port separator
    ['[fd00:1:2::3%eth0]:75050', false], // ipv6 with zone
    ['[fd00123123123]:75050', true], // ipv6 wrong format, will fail in validation
    ['[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:75050', true], // ipv6 long format
    ['[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:750505', true], // ipv6 long format and invalid port
    ['fd00:1:2::3:75050', false], // bad ipv6 without square brackets
  ]
  for (const [input, match] of cases) {
    t.equal(referenceGrammar.domainAndPort.test(input), match, input)
  }
})

t.test('TestFullNameRegexp', async (t) => {
  t.equal(groupCount(referenceGrammar.name), 2, 'two submatches')
  const cases: { input: string; match: boolean; subs?: [string, string] }[] = [
    { input: '', match: false },
    { input: 'short', match: true, subs: ['', 'short'] },
    { input: 'simple/name', match: true, subs: ['simple', 'name'] },
    { input: 'library/ubuntu', match: true, subs: ['library', 'ubuntu'] },
    { input: 'docker/stevvooe/app', match: true, subs: ['docker', 'stevvooe/app'] },
    { input: 'aa/aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb', match: true, subs: ['aa', 'aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb'] },
    { input: 'aa/aa/bb/bb/bb', match: true, subs: ['aa', 'aa/bb/bb/bb'] },
    { input: 'a/a/a/a', match: true, subs: ['a', 'a/a/a'] },
    { input: 'a/a/a/a/', match: false },
    { input: 'a//a/a', match: false },
    { input: 'a', match: true, subs: ['', 'a'] },
    { input: 'a/aa', match: true, subs: ['a', 'aa'] },
    { input: 'a/aa/a', match: true, subs: ['a', 'aa/a'] },
    { input: 'foo.com', match: true, subs: ['', 'foo.com'] },
    { input: 'foo.com/', match: false },
    { input: 'foo.com:8080/bar', match: true, subs: ['foo.com:8080', 'bar'] },
    { input: 'foo.com:http/bar', match: false },
    { input: 'foo.com/bar', match: true, subs: ['foo.com', 'bar'] },
    { input: 'foo.com/bar/baz', match: true, subs: ['foo.com', 'bar/baz'] },
    { input: 'localhost:8080/bar', match: true, subs: ['localhost:8080', 'bar'] },
    { input: 'sub-dom1.foo.com/bar/baz/quux', match: true, subs: ['sub-dom1.foo.com', 'bar/baz/quux'] },
    { input: 'blog.foo.com/bar/baz', match: true, subs: ['blog.foo.com', 'bar/baz'] },
    { input: 'a^a', match: false },
    { input: 'aa/asdf$$^/aa', match: false },
    { input: 'asdf$$^/aa', match: false },
    { input: 'aa-a/a', match: true, subs: ['aa-a', 'a'] },
    { input: 'a/'.repeat(128) + 'a', match: true, subs: ['a', 'a/'.repeat(127) + 'a'] },
    { input: 'a-/a/a/a', match: false },
    { input: 'foo.com/a-/a/a', match: false },
    { input: '-foo/bar', match: false },
    { input: 'foo/bar-', match: false },
    { input: 'foo-/bar', match: false },
    { input: 'foo/-bar', match: false },
    { input: '_foo/bar', match: false },
    { input: 'foo_bar', match: true, subs: ['', 'foo_bar'] },
    { input: 'foo_bar.com', match: true, subs: ['', 'foo_bar.com'] },
    { input: 'foo_bar.com:8080', match: false },
    { input: 'foo_bar.com:8080/app', match: false },
    { input: 'foo.com/foo_bar', match: true, subs: ['foo.com', 'foo_bar'] },
    { input: '____/____', match: false },
    { input: '_docker/_docker', match: false },
    { input: 'docker_/docker_', match: false },
    { input: 'b.gcr.io/test.example.com/my-app', match: true, subs: ['b.gcr.io', 'test.example.com/my-app'] },
    { input: 'xn--n3h.com/myimage', match: true, subs: ['xn--n3h.com', 'myimage'] }, // ☃.com in punycode
    { input: 'xn--7o8h.com/myimage', match: true, subs: ['xn--7o8h.com', 'myimage'] }, // 🐳.com in punycode
    { input: 'example.com/xn--7o8h.com/myimage', match: true, subs: ['example.com', 'xn--7o8h.com/myimage'] }, // 🐳.com in punycode
    { input: 'example.com/some_separator__underscore/myimage', match: true, subs: ['example.com', 'some_separator__underscore/myimage'] },
    { input: 'example.com/__underscore/myimage', match: false },
    { input: 'example.com/..dots/myimage', match: false },
    { input: 'example.com/.dots/myimage', match: false },
    { input: 'example.com/nodouble..dots/myimage', match: false },
    { input: 'example.com/nodouble..dots/myimage', match: false },
    { input: 'docker./docker', match: false },
    { input: '.docker/docker', match: false },
    { input: 'docker-/docker', match: false },
    { input: '-docker/docker', match: false },
    { input: 'do..cker/docker', match: false },
    { input: 'do__cker:8080/docker', match: false },
    { input: 'do__cker/docker', match: true, subs: ['', 'do__cker/docker'] },
    { input: 'b.gcr.io/test.example.com/my-app', match: true, subs: ['b.gcr.io', 'test.example.com/my-app'] },
    {
      input: 'registry.io/foo/project--id.module--name.ver---sion--name',
      match: true,
      subs: ['registry.io', 'foo/project--id.module--name.ver---sion--name'],
    },
    { input: 'Asdf.com/foo/bar', match: true }, // uppercase character in hostname
    { input: 'Foo/FarB', match: false }, // uppercase characters in remote name
  ]
  t.equal(cases.length, 63)
  for (const c of cases) {
    const m = referenceGrammar.name.exec(c.input)
    if (!c.match) {
      t.equal(m, null, `no match: ${c.input}`)
      continue
    }
    t.equal(m?.[0], c.input, `match: ${c.input}`)
    if (c.subs) t.strictSame([m?.[1] ?? '', m?.[2] ?? ''], c.subs, `submatches: ${c.input}`)
  }
})

t.test('TestReferenceRegexp', async (t) => {
  t.equal(groupCount(referenceGrammar.reference), 3, 'three submatches')
  const d = 'sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912'
  const cases: { input: string; match: boolean; subs?: [string, string, string] }[] = [
    { input: 'registry.com:8080/myapp:tag', match: true, subs: ['registry.com:8080/myapp', 'tag', ''] },
    {
      input: 'registry.com:8080/myapp@sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912',
      match: true,
      subs: ['registry.com:8080/myapp', '', d],
    },
    {
      input: 'registry.com:8080/myapp:tag2@sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912',
      match: true,
      subs: ['registry.com:8080/myapp', 'tag2', d],
    },
    { input: 'registry.com:8080/myapp@sha256:badbadbadbad', match: false },
    { input: 'registry.com:8080/myapp:invalid~tag', match: false },
    { input: 'bad_hostname.com:8080/myapp:tag', match: false },
    {
      // localhost treated as name, missing tag with 8080 as tag
      input: 'localhost:8080@sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912',
      match: true,
      subs: ['localhost', '8080', d],
    },
    {
      input: 'localhost:8080/name@sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912',
      match: true,
      subs: ['localhost:8080/name', '', d],
    },
    { input: 'localhost:http/name@sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912', match: false },
    {
      // localhost will be treated as an image name without a host
      input: 'localhost@sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912',
      match: true,
      subs: ['localhost', '', d],
    },
    { input: 'registry.com:8080/myapp@bad', match: false },
    { input: 'registry.com:8080/myapp@2bad', match: false },
  ]
  for (const c of cases) {
    const m = referenceGrammar.reference.exec(c.input)
    if (!c.match) {
      t.equal(m, null, `no match: ${c.input}`)
      continue
    }
    t.equal(m?.[0], c.input, `match: ${c.input}`)
    if (c.subs) t.strictSame([m?.[1] ?? '', m?.[2] ?? '', m?.[3] ?? ''], c.subs, `submatches: ${c.input}`)
  }
})

t.test('TestIdentifierRegexp', async (t) => {
  const cases: [input: string, match: boolean][] = [
    ['da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf9821', true],
    ['7EC43B381E5AEFE6E04EFB0B3F0693FF2A4A50652D64AEC573905F2DB5889A1C', false],
    ['da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf', false],
    ['sha256:da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf9821', false],
    ['da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf98218482', false],
  ]
  for (const [input, match] of cases) {
    t.equal(referenceGrammar.identifier.test(input), match, input)
  }
})

// ---- own cases --------------------------------------------------------------------------------

const SHA256 = 'sha256:' + 'e'.repeat(64)

t.test('normalisation as the kubelet does it', async (t) => {
  // [input, full form, familiar form]
  const cases: [string, string, string][] = [
    ['nginx', 'docker.io/library/nginx', 'nginx'],
    ['nginx:1.25', 'docker.io/library/nginx:1.25', 'nginx:1.25'],
    ['library/nginx', 'docker.io/library/nginx', 'nginx'],
    ['docker.io/nginx', 'docker.io/library/nginx', 'nginx'],
    ['index.docker.io/foo', 'docker.io/library/foo', 'foo'],
    ['index.docker.io/library/foo/bar:1', 'docker.io/library/foo/bar:1', 'library/foo/bar:1'],
    // a bare "index.docker.io" is a repository on Docker Hub, not a host
    ['index.docker.io', 'docker.io/library/index.docker.io', 'index.docker.io'],
    ['user/app@' + SHA256, 'docker.io/user/app@' + SHA256, 'user/app@' + SHA256],
    // other hosts are kept as written, including Docker Hub's real registry host
    ['registry-1.docker.io/library/nginx', 'registry-1.docker.io/library/nginx', 'registry-1.docker.io/library/nginx'],
    ['Registry.Example.com/foo', 'Registry.Example.com/foo', 'Registry.Example.com/foo'],
    ['REGISTRY/foo', 'REGISTRY/foo', 'REGISTRY/foo'],
    ['localhost/foo', 'localhost/foo', 'localhost/foo'],
    ['localhost:5000/foo', 'localhost:5000/foo', 'localhost:5000/foo'],
    ['[::1]:5000/foo:bar', '[::1]:5000/foo:bar', '[::1]:5000/foo:bar'],
    ['[::1]/foo', '[::1]/foo', '[::1]/foo'],
    ['[FC00::1]:5000/a/b', '[FC00::1]:5000/a/b', '[FC00::1]:5000/a/b'],
    ['gcr.io/proj/app:v1', 'gcr.io/proj/app:v1', 'gcr.io/proj/app:v1'],
    // a bare "localhost" or "localhost:5000" is an image name (and tag), not a host
    ['localhost', 'docker.io/library/localhost', 'localhost'],
    ['localhost:5000', 'docker.io/library/localhost:5000', 'localhost:5000'],
    // tag and digest together are both kept, exactly as written
    ['busybox:1.36@' + SHA256, 'docker.io/library/busybox:1.36@' + SHA256, 'busybox:1.36@' + SHA256],
    ['nginx:Latest_1.x', 'docker.io/library/nginx:Latest_1.x', 'nginx:Latest_1.x'],
    // 64 hex chars with a tag or host are names, not image IDs
    ['a'.repeat(64) + ':tag', 'docker.io/library/' + 'a'.repeat(64) + ':tag', 'a'.repeat(64) + ':tag'],
    // "sha384:<hex>" alone is a name and a tag
    ['sha384:' + 'f'.repeat(96), 'docker.io/library/sha384:' + 'f'.repeat(96), 'sha384:' + 'f'.repeat(96)],
  ]
  for (const [input, full, familiar] of cases) {
    const ref = parseNormalizedNamed(input)
    t.equal(formatReference(ref), full, `${input} → ${full}`)
    t.equal(familiarString(ref), familiar, `${input} familiar`)
    t.strictSame(parseNamed(full), ref, `${full} is canonical`)
  }
  t.strictSame(parseNormalizedNamed('[::1]:5000/foo:bar'), { domain: '[::1]:5000', path: 'foo', tag: 'bar' })
  t.strictSame(parseNormalizedNamed('Registry.Example.com/foo'), { domain: 'Registry.Example.com', path: 'foo' })
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

t.test('uppercase in the repository path', async (t) => {
  const cases: [string, string][] = [
    ['Foo:latest', 'invalid reference format: repository name (library/Foo) must be lowercase'],
    ['Registry.Example.com/Foo', 'invalid reference format: repository name (Foo) must be lowercase'],
    ['docker.io/library/Nginx', 'invalid reference format: repository name (library/Nginx) must be lowercase'],
    // the check looks at everything before the first ":", so an uppercase algorithm is reported here
    ['foo@SHA256:' + 'a'.repeat(64), 'invalid reference format: repository name (library/foo@SHA256) must be lowercase'],
    // U+0130 lower-cases to a plain "i"
    ['İmage', 'invalid reference format: repository name (library/İmage) must be lowercase'],
  ]
  for (const [input, message] of cases) {
    const err = errorOf(() => parseNormalizedNamed(input))
    t.equal(err?.code, 'name-contains-uppercase', input)
    t.equal(err?.message, message, `${input} message`)
  }
  t.equal(errorOf(() => parse('Foo:latest'))?.message, 'repository name must be lowercase')
  t.equal(errorOf(() => parse('İmage'))?.code, 'name-contains-uppercase', 'parse: İ lower-cases to i')
  t.equal(errorOf(() => parse('FOO!'))?.code, 'invalid-format', 'still invalid once lower-cased')
})

t.test('64-hex image IDs are not names', async (t) => {
  const id = '1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a'
  const err = errorOf(() => parseNormalizedNamed(id))
  t.equal(err?.code, 'name-is-identifier')
  t.equal(err?.message, `invalid repository name (${id}), cannot specify 64-byte hexadecimal strings`)
  t.strictSame(parse(id), { domain: '', path: id }, 'parse() does not apply the rule')
  t.strictSame(parseAnyReference(id), { digest: `sha256:${id}` })
  // only lowercase hex is an ID; uppercase falls through to the lowercase rule
  t.equal(errorOf(() => parseNormalizedNamed(id.toUpperCase()))?.code, 'name-contains-uppercase')
})

t.test('digests of each algorithm', async (t) => {
  const hex = (n: number, c = 'f') => c.repeat(n)
  const cases: [digest: string, code: ReferenceErrorCode | undefined][] = [
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
  const max = NAME_TOTAL_LENGTH_MAX
  t.equal(max, 255)
  const ok = (s: string) => errorOf(() => parseNormalizedNamed(s))?.code
  t.equal(ok('docker.io/library/' + 'a'.repeat(max - 8)), undefined, 'path of exactly 255')
  t.equal(ok('docker.io/library/' + 'a'.repeat(max - 7)), 'name-too-long', 'path of 256')
  t.equal(ok('a'.repeat(max - 8)), undefined, 'familiar name whose path is 255')
  t.equal(ok('a'.repeat(max - 7)), 'name-too-long', 'familiar name whose path is 256')
  t.equal(ok('example.com/' + 'a'.repeat(max)), undefined, 'the domain does not count')
  t.equal(ok('x'.repeat(300) + '.example.com/foo'), undefined, 'nor does a long host')
  t.equal(ok('example.com/' + 'a'.repeat(max) + ':' + 'T'.repeat(128)), undefined, 'nor the tag')
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
  const cases: [() => unknown, ReferenceErrorCode, string][] = [
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
  t.ok(err instanceof Error)
  t.equal(err?.name, 'ReferenceError')
})

t.test('tryParseNormalizedNamed', async (t) => {
  t.strictSame(tryParseNormalizedNamed('nginx:1'), {
    ok: true,
    ref: { domain: 'docker.io', path: 'library/nginx', tag: '1' },
  })
  const r = tryParseNormalizedNamed('Nginx')
  t.equal(r.ok, false)
  if (!r.ok) {
    t.ok(r.error instanceof ReferenceError)
    t.equal(r.error.code, 'name-contains-uppercase')
  }
})

t.test('building and formatting', async (t) => {
  const ref = withName('example.com/app')
  t.strictSame(ref, { domain: 'example.com', path: 'app' })
  t.strictSame(tagNameOnly(ref), { domain: 'example.com', path: 'app', tag: DEFAULT_TAG })
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
  t.ok(isNamed(any) && any.path === 'library/nginx')
})

t.test('adversarial long inputs finish with the right answer', async (t) => {
  // The grammar is matched by a backtracking engine: these inputs would take exponential or
  // polynomial time with ambiguous patterns. Only outcomes are asserted, not timings.
  const n = 10_000
  const cases: [string, ReferenceErrorCode | undefined][] = [
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
    // these return or throw a ReferenceError (errorOf rethrows anything else)
    errorOf(() => parseNormalizedNamed(input))
    errorOf(() => parseAnyReference(input))
  }
})
