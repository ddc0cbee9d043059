// Familiar names and the kubelet's normalisation (distribution/reference normalize_test.go).
import t from 'tap'
import {
  type DigestReference,
  type ImageReferenceErrorCode,
  ImageReferenceError,
  parse,
  withTag,
  withDigest,
  formatReference,
} from '../../../server/core/reference/reference.js'
import {
  parseNormalizedNamed,
  parseNamed,
  parseAnyReference,
  parseDockerRef,
  tryParseNormalizedNamed,
  familiarName,
  familiarString,
} from '../../../server/core/reference/normalize.js'
import { errorOf } from './helpers.js'

// Cases marked with a Go test name are transcribed from the test tables of the reference
// grammar's Go implementation (distribution/reference v0.6.0, digests per go-digest v1.0.0).
// Go error values map to codes: ErrReferenceInvalidFormat → invalid-format, ErrNameEmpty →
// name-empty, ErrNameTooLong → name-too-long, ErrNameContainsUppercase → name-contains-uppercase,
// ErrNameNotCanonical → name-not-canonical, digest.ErrDigestInvalidLength → invalid-digest-length,
// digest.ErrDigestUnsupported → unsupported-digest.

const SHA256 = 'sha256:' + 'e'.repeat(64)

t.test('TestParseNamed', async (t) => {
  const cases: { input: string; domain?: string; path?: string; err?: ImageReferenceErrorCode }[] = [
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
  const invalid: [string, ImageReferenceErrorCode][] = [
    ['https://github.com/docker/docker', 'invalid-format'],
    ['docker/Docker', 'name-contains-uppercase'],
    ['-docker', 'invalid-format'],
    ['-docker/docker', 'invalid-format'],
    ['-docker.io/docker/docker', 'invalid-format'],
    ['docker///docker', 'invalid-format'],
    ['docker.io/docker/Docker', 'name-contains-uppercase'],
    ['docker.io/docker///docker', 'invalid-format'],
    ['[fc00::1]', 'invalid-format'],
    ['[fc00::1]:5000', 'invalid-format'],
    ['fc00::1:5000/debian', 'invalid-format'],
    ['[fe80::1%eth0]:5000/debian', 'invalid-format'],
    ['[2001:db8:3:4::192.0.2.33]:5000/debian', 'invalid-format'],
    ['1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a', 'name-is-identifier'],
  ]
  for (const [s, code] of invalid) t.equal(errorOf(() => parseNormalizedNamed(s))?.code, code, `invalid: ${s}`)
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
  const invalid: [string, ImageReferenceErrorCode][] = [
    // Disallow capital letters.
    ['docker/Docker', 'name-contains-uppercase'],
    // Only allow one slash.
    ['docker///docker', 'invalid-format'],
    // Disallow 64-character hexadecimal.
    ['1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a', 'name-is-identifier'],
    // Disallow leading and trailing hyphens in namespace.
    ['-docker/docker', 'invalid-format'],
    ['docker-/docker', 'invalid-format'],
    ['-docker-/docker', 'invalid-format'],
    // Don't allow underscores everywhere (as opposed to hyphens).
    ['____/____', 'invalid-format'],
    ['_docker/_docker', 'invalid-format'],
    // Disallow consecutive periods.
    ['dock..er/docker', 'invalid-format'],
    ['dock_.er/docker', 'invalid-format'],
    ['dock-.er/docker', 'invalid-format'],
    // No repository.
    ['docker/', 'invalid-format'],
    // namespace too long
    [
      'this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker',
      'name-too-long',
    ],
  ]
  for (const s of valid)
    t.equal(
      errorOf(() => parseNormalizedNamed(s)),
      undefined,
      `valid: ${s}`,
    )
  for (const [s, code] of invalid) t.equal(errorOf(() => parseNormalizedNamed(s))?.code, code, `invalid: ${s.slice(0, 60)}`)
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
  t.equal(errorOf(() => parseNormalizedNamed('-foo'))?.code, 'invalid-format', 'invalid name')
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

t.test('tryParseNormalizedNamed', async (t) => {
  t.strictSame(tryParseNormalizedNamed('nginx:1'), {
    ok: true,
    ref: { domain: 'docker.io', path: 'library/nginx', tag: '1' },
  })
  const r = tryParseNormalizedNamed('Nginx')
  t.equal(r.ok, false)
  const error = 'error' in r ? r.error : undefined
  t.type(error, ImageReferenceError)
  t.equal(error?.code, 'name-contains-uppercase')
  t.equal(error?.message, 'invalid reference format: repository name (library/Nginx) must be lowercase')
})
