// The allowlist parser, matcher and view at their edges: the caps on reported lines, line
// numbers and trimming, globs with characters a regular expression would read, shared trie
// nodes, empty segments in the repository asked about, and what withAllowlists passes through
// and when its generation changes. Expected values are written out.
import t from 'tap'
import { type AllowlistLookup, type LoadedAllowlist, parseAllowlist, withAllowlists } from '../../server/core/allowlist.js'
import type { MirrorTarget } from '../../server/core/policy.js'
import type { ReachabilityView } from '../../server/core/rewrite.js'

t.test('ignored lines: numbered from 1, text trimmed and cut at 200 characters, at most 100 reported', async (t) => {
  const long = `docker.io/${'x'.repeat(300)} y`
  const { list, ignored } = parseAllowlist(['docker.io/ok', `   ${long}   `, 'nohost'].join('\n'))
  t.equal(list.patterns, 1)
  t.strictSame(ignored, [
    { line: 2, text: long.slice(0, 200), reason: 'empty segment or a character a repository name cannot hold' },
    { line: 3, text: 'nohost', reason: 'not a registry/path pattern' },
  ])
  t.equal(ignored[0]!.text.length, 200)
  const many = parseAllowlist(Array.from({ length: 150 }, (_, i) => `bad${i}`).join('\n'))
  t.equal(many.ignored.length, 100)
  t.strictSame(many.ignored[99], { line: 100, text: 'bad99', reason: 'not a registry/path pattern' })
  t.equal(many.list.patterns, 0)
})

t.test('comments and blank lines, also with spaces around; CRLF line ends', async (t) => {
  const { list, ignored } = parseAllowlist('  # docker.io/commented\n   \n\tdocker.io/a\r\ndocker.io/b\r\n')
  t.equal(list.patterns, 2)
  t.strictSame(ignored, [])
  t.equal(list.allows('docker.io/a'), true)
  t.equal(list.allows('docker.io/b'), true)
  t.equal(list.allows('docker.io/commented'), false)
  t.equal(parseAllowlist('docker.io/#x').list.allows('docker.io/#x'), false, '# inside a line is no comment, and no repository character')
})

t.test('a glob segment matches literally apart from its stars', async (t) => {
  const { list, ignored } = parseAllowlist(['ghcr.io/a.b-*', 'ghcr.io/x*y', 'ghcr.io/[*]', 'quay.io/*-exporter/**'].join('\n'))
  t.strictSame(ignored, [])
  t.equal(list.patterns, 4)
  const cases: [string, boolean][] = [
    ['ghcr.io/a.b-c', true],
    ['ghcr.io/a.b-', true],
    ['ghcr.io/aXb-c', false],
    ['ghcr.io/a.bb-c', false],
    ['ghcr.io/xy', true],
    ['ghcr.io/x-middle-y', true],
    ['ghcr.io/xyz', false],
    ['ghcr.io/zxy', false],
    ['ghcr.io/[anything]', true],
    ['ghcr.io/a', false],
    ['quay.io/node-exporter/x', true],
    ['quay.io/node-exporter/x/y', true],
    ['quay.io/node-exporter', false],
    ['quay.io/node/x', false],
  ]
  for (const [repository, allowed] of cases) t.equal(list.allows(repository), allowed, repository)
})

t.test('the same glob on two lines is one node: both continuations match', async (t) => {
  const { list } = parseAllowlist(['docker.io/app-*/api', 'docker.io/app-*/web'].join('\n'))
  t.equal(list.patterns, 2)
  t.equal(list.allows('docker.io/app-1/api'), true)
  t.equal(list.allows('docker.io/app-1/web'), true)
  t.equal(list.allows('docker.io/app-1/db'), false)
})

t.test('literal, star, glob and deep branches are all tried', async (t) => {
  const { list } = parseAllowlist(['docker.io/team/api', 'docker.io/*/web', 'docker.io/te*/db', 'docker.io/team/**'].join('\n'))
  const cases: [string, boolean][] = [
    ['docker.io/team/api', true],
    ['docker.io/team/web', true],
    ['docker.io/team/db', true],
    ['docker.io/team/other', true],
    ['docker.io/tea/db', true],
    ['docker.io/tea/api', false],
    ['docker.io/other/web', true],
    ['docker.io/other/db', false],
    ['docker.io/team', false],
  ]
  for (const [repository, allowed] of cases) t.equal(list.allows(repository), allowed, repository)
  const prefixOnly = parseAllowlist('docker.io/team/api').list
  t.equal(prefixOnly.allows('docker.io/team'), false, 'a prefix of a pattern is not a match')
  t.equal(prefixOnly.allows('docker.io/team/api/x'), false, 'a pattern does not match below itself')
})

t.test('repositories with empty segments are not allowed, even under **', async (t) => {
  const { list } = parseAllowlist(['docker.io/*/x', 'gcr.io/a/**'].join('\n'))
  t.equal(list.allows('docker.io//x'), false)
  t.equal(list.allows('docker.io/a/x'), true)
  t.equal(list.allows('gcr.io/a//b'), true, '** takes whatever follows')
  t.equal(list.allows('/docker.io/a/x'), false)
  t.equal(list.allows(''), false)
})

const MIRROR = { repoPrefix: 'm.daocloud.io' } as MirrorTarget
const OTHER = { repoPrefix: 'harbor.corp.example/proxy' } as MirrorTarget

function loaded(text: string, source: string): LoadedAllowlist {
  return { list: parseAllowlist(text).list, source }
}

t.test('withAllowlists: notAllowed names the list, status and refusals pass through', async (t) => {
  const lists = new Map([['m.daocloud.io', loaded('docker.io/library/*\ngcr.io/**\n', '/etc/mirrorhook/allows.txt')]])
  const lookup: AllowlistLookup = { get: (m) => lists.get(m), version: 1 }
  const refusals: string[] = []
  const base: ReachabilityView = {
    status: (registry) => ({ state: 'reachable', evidence: `up: ${registry}` }),
    mirrorRefusal: (repository) => (refusals.push(repository), `refused ${repository}`),
  }
  const v = withAllowlists(base, lookup)
  t.equal(v.notAllowed!(MIRROR, 'docker.io/library/nginx'), undefined)
  t.equal(
    v.notAllowed!(MIRROR, 'docker.io/acme/app'),
    'docker.io/acme/app is not on the allowlist of mirror m.daocloud.io (/etc/mirrorhook/allows.txt, 2 patterns)',
  )
  t.equal(v.notAllowed!(OTHER, 'docker.io/acme/app'), undefined, 'a mirror without a list serves everything')
  t.strictSame(v.status('quay.io'), { state: 'reachable', evidence: 'up: quay.io' })
  t.equal(v.mirrorRefusal!('m.daocloud.io/docker.io/x'), 'refused m.daocloud.io/docker.io/x')
  t.strictSame(refusals, ['m.daocloud.io/docker.io/x'])
  t.equal(v.generation, undefined, 'a base without a generation: never cached')

  const bare = withAllowlists({ status: () => ({ state: 'unknown', evidence: '' }) }, lookup)
  t.equal(bare.mirrorRefusal, undefined, 'no refusals where the base has none')
})

t.test('withAllowlists: the generation changes exactly when the base or the lists change', async (t) => {
  let g = 10
  let version = 1
  const lookup: AllowlistLookup = {
    get: () => undefined,
    get version() {
      return version
    },
  }
  const base = {
    n: 0,
    generation() {
      return g + this.n
    },
    status: () => ({ state: 'unknown' as const, evidence: '' }),
  }
  const v = withAllowlists(base, lookup)
  const first = v.generation!()
  t.equal(first, 1)
  t.equal(v.generation!(), 1, 'nothing changed')
  g = 11
  t.equal(v.generation!(), 2, 'the base changed')
  t.equal(v.generation!(), 2)
  version = 2
  t.equal(v.generation!(), 3, 'a list changed')
  g = 12
  version = 3
  t.equal(v.generation!(), 4, 'both changed: one step')
  base.n = 1
  t.equal(v.generation!(), 5, 'the base generation is read with the base as `this`')
  g = 12
  base.n = 0
  version = 0
  t.equal(v.generation!(), 6, 'a lower list version is a change too')
})

t.test('withAllowlists: a list version of -1 at the start still counts as seen once read', async (t) => {
  const v = withAllowlists(
    { generation: () => 0, status: () => ({ state: 'unknown', evidence: '' }) },
    { get: () => undefined, version: -1 },
  )
  t.equal(v.generation!(), 1, 'the first read is a new epoch (the base generation was never seen)')
  t.equal(v.generation!(), 1)
})
