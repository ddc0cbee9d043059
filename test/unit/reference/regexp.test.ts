// The grammar's regular expressions (distribution/reference regexp_test.go).
import t from 'tap'
import { referenceGrammar } from '../../../server/core/reference/regexp.js'
import { groupCount } from './helpers.js'

// Cases marked with a Go test name are transcribed from the test tables of the reference
// grammar's Go implementation (distribution/reference v0.6.0, digests per go-digest v1.0.0).
// Go error values map to codes: ErrReferenceInvalidFormat → invalid-format, ErrNameEmpty →
// name-empty, ErrNameTooLong → name-too-long, ErrNameContainsUppercase → name-contains-uppercase,
// ErrNameNotCanonical → name-not-canonical, digest.ErrDigestInvalidLength → invalid-digest-length,
// digest.ErrDigestUnsupported → unsupported-digest.

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
  const cases: ({ input: string; match: false } | { input: string; match: true; subs: [string, string] })[] = [
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
    { input: 'Asdf.com/foo/bar', match: true, subs: ['Asdf.com', 'foo/bar'] }, // uppercase character in hostname
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
    t.strictSame([m?.[1] ?? '', m?.[2] ?? ''], c.subs, `submatches: ${c.input}`)
  }
})

t.test('TestReferenceRegexp', async (t) => {
  t.equal(groupCount(referenceGrammar.reference), 3, 'three submatches')
  const d = 'sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912'
  const cases: ({ input: string; match: false } | { input: string; match: true; subs: [string, string, string] })[] = [
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
    t.strictSame([m?.[1] ?? '', m?.[2] ?? '', m?.[3] ?? ''], c.subs, `submatches: ${c.input}`)
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
