import t from 'tap'
import {
  compareVersions,
  inspectionOrder,
  parseVersion,
  pickByTime,
  pickSemver,
  type TimedTag,
} from '../../server/prewarm/registry/order.js'

t.test('parseVersion', async (t) => {
  // [tag, numbers, pre, family] or undefined
  const rows: [string, [number, number, number], (string | number)[], 'dotted' | 'number' | undefined][] = [
    ['1.2.3', [1, 2, 3], [], 'dotted'],
    ['v1.2.3', [1, 2, 3], [], 'dotted'],
    ['V10.0.1', [10, 0, 1], [], 'dotted'],
    ['1.25', [1, 25, 0], [], 'dotted'],
    ['v2', [2, 0, 0], [], 'dotted'],
    ['42', [42, 0, 0], [], 'number'],
    ['20240101', [20240101, 0, 0], [], 'number'],
    ['1.2.3-rc.1', [1, 2, 3], ['rc', 1], 'dotted'],
    ['1.25-alpine', [1, 25, 0], ['alpine'], 'dotted'],
    ['1.2.3-alpha.beta.10', [1, 2, 3], ['alpha', 'beta', 10], 'dotted'],
  ]
  for (const [tag, numbers, pre, family] of rows) {
    const v = parseVersion(tag)
    t.strictSame(v && { numbers: v.numbers, pre: v.pre, family: v.family }, { numbers, pre, family }, tag)
  }
  for (const tag of [
    'latest',
    'main',
    '1.2.3.4',
    'v',
    '1..2',
    'release-1.2',
    '1.2.3_build',
    'sha-abc123',
    '99999999999999999999',
    '1.2.3-',
  ]) {
    t.equal(parseVersion(tag), undefined, `${tag} is not a version`)
  }
})

t.test('compareVersions: semver precedence', async (t) => {
  // each row ascending: a < b
  const ascending: [string, string][] = [
    ['1.2.3', '1.2.4'],
    ['1.9.0', '1.10.0'],
    ['1.2.3', '1.3.0'],
    ['1.99.99', '2.0.0'],
    ['1.0.0-alpha', '1.0.0-alpha.1'],
    ['1.0.0-alpha.1', '1.0.0-alpha.beta'],
    ['1.0.0-alpha.beta', '1.0.0-beta'],
    ['1.0.0-beta', '1.0.0-beta.2'],
    ['1.0.0-beta.2', '1.0.0-beta.11'],
    ['1.0.0-beta.11', '1.0.0-rc.1'],
    ['1.0.0-rc.1', '1.0.0'],
    ['1.0.0-RC', '1.0.0-rc'],
    ['9', '10'],
    ['v1.2', 'v1.2.1'],
  ]
  for (const [a, b] of ascending) {
    t.equal(Math.sign(compareVersions(parseVersion(a)!, parseVersion(b)!)), -1, `${a} < ${b}`)
    t.equal(Math.sign(compareVersions(parseVersion(b)!, parseVersion(a)!)), 1, `${b} > ${a}`)
  }
  for (const [a, b] of [
    ['1.2', '1.2.0'],
    ['v1.2.0', '1.2.0'],
    ['1', '1.0.0'],
  ] as const) {
    t.equal(compareVersions(parseVersion(a)!, parseVersion(b)!), 0, `${a} = ${b}`)
  }
})

t.test('pickSemver', async (t) => {
  const exclude = ['^latest$']
  // [tags, current, options, expected tag or undefined, expected reason]
  const rows: [
    string[],
    string | undefined,
    { prerelease?: boolean; include?: string[]; exclude?: string[] },
    string | undefined,
    string,
  ][] = [
    [['1.0.0', '1.2.0', '1.10.0', '1.9.9', 'latest'], '1.2.0', {}, '1.10.0', 'the highest version, above 1.2.0'],
    [['v1.0.0', 'v1.2.0', 'v1.10.0'], 'v1.0.0', {}, 'v1.10.0', 'the highest version, above v1.0.0'],
    // mixed spellings: the same version, the spelling of the current tag
    [['1.3.0', 'v1.3.0', '1.2.0'], 'v1.2.0', {}, 'v1.3.0', 'the highest version, above v1.2.0'],
    [['1.3', '1.3.0', '1.2'], '1.2', {}, '1.3.0', 'the highest version, above 1.2'],
    // pre-releases are left out unless asked for
    [['1.2.0', '1.3.0-rc.1', '1.3.0-rc.2'], '1.2.0', {}, '1.2.0', 'the current tag is the newest version'],
    [['1.2.0', '1.3.0-rc.1', '1.3.0-rc.2'], '1.2.0', { prerelease: true }, '1.3.0-rc.2', 'the highest version, above 1.2.0'],
    [['1.2.0', '1.3.0-rc.2', '1.3.0'], '1.2.0', { prerelease: true }, '1.3.0', 'the highest version, above 1.2.0'],
    [['1.3.0-rc.1', '1.3.0-rc.10', '1.3.0-rc.9'], undefined, { prerelease: true }, '1.3.0-rc.10', 'the highest version'],
    // a variant current tag is not followed into another variant
    [
      ['1.25-alpine', '1.26', '1.26-alpine'],
      '1.25-alpine',
      {},
      undefined,
      'the current tag "1.25-alpine" is a pre-release or a variant; set prerelease: true (with an include regex for its variant) to follow it',
    ],
    [
      ['1.25-alpine', '1.26', '1.26-alpine'],
      '1.25-alpine',
      { prerelease: true, include: ['-alpine$'] },
      '1.26-alpine',
      'the highest version, above 1.25-alpine',
    ],
    // never older than the current tag
    [['1.0.0', '1.1.0'], '2.0.0', {}, '2.0.0', 'the current tag is the newest version'],
    // digit-only tags are their own family
    [['41', '42', '100', '2.0.0'], '42', {}, '100', 'the highest version, above 42'],
    [['41', '42', '100', '2.0.0'], '2.0.0', {}, '2.0.0', 'the current tag is the newest version'],
    [['41', '42', '100', '2.0.0'], undefined, {}, '2.0.0', 'the highest version'],
    [['20240101', '20231231', '20240215'], undefined, {}, '20240215', 'the highest version'],
    // alphabetical tags carry no order
    [['alpha', 'beta', 'stable'], undefined, {}, undefined, 'none of 3 tags is a release version that passes include/exclude'],
    [['1.0.0', '2.0.0'], 'latest', {}, undefined, 'the current tag "latest" is not a version, so no tag can be shown to be newer'],
    // include / exclude
    [['1.0.0', '2.0.0', '3.0.0'], '1.0.0', { include: ['^[12]\\.'] }, '2.0.0', 'the highest version, above 1.0.0'],
    [['1.0.0', '2.0.0', '3.0.0'], '1.0.0', { exclude: ['^3\\.'] }, '2.0.0', 'the highest version, above 1.0.0'],
    [['1.0.0', '2.0.0', 'latest'], undefined, { exclude: [] }, '2.0.0', 'the highest version'],
  ]
  for (const [tags, current, o, tag, reason] of rows) {
    const pick = pickSemver(tags, current, { exclude, ...o })
    t.strictSame({ tag: pick.tag, reason: pick.reason }, { tag, reason }, `${tags.join(',')} from ${current}`)
  }
  t.equal(pickSemver(['1.0.0', '1.2.0', 'x'], undefined, { exclude }).evidence, 'version 1.2.0 (2 of 3 tags compared)')
})

t.test('pickByTime', async (t) => {
  const at = (s: string) => Date.parse(s)
  const items: TimedTag[] = [
    { tag: '1.0.0', time: at('2026-01-01T00:00:00Z'), source: 'config created' },
    { tag: '1.1.0', time: at('2026-02-01T00:00:00Z'), source: 'config created' },
    { tag: 'nightly', time: at('2026-03-01T00:00:00Z'), source: 'config created' },
    { tag: 'latest', time: at('2026-04-01T00:00:00Z'), source: 'config created' },
    { tag: 'repro', source: 'config created 1970-01-01T00:00:00.000Z is a reproducible build fixed time' },
    { tag: 'same-a', time: at('2026-02-01T00:00:00Z') },
  ]
  const opts = { exclude: ['^latest$'], what: 'build time' }
  const rows: [string | undefined, { include?: string[]; exclude?: string[] }, string | undefined, string, string][] = [
    [
      '1.0.0',
      {},
      'nightly',
      'the newest build time, not older than 1.0.0; 1 without build time',
      'config created 2026-03-01T00:00:00.000Z',
    ],
    ['1.0.0', { include: ['^1\\.'] }, '1.1.0', 'the newest build time, not older than 1.0.0', 'config created 2026-02-01T00:00:00.000Z'],
    ['latest', {}, 'latest', 'the current tag has the newest build time; 1 without build time', 'config created 2026-04-01T00:00:00.000Z'],
    ['nightly', { include: ['^1\\.'] }, 'nightly', 'the current tag has the newest build time', 'config created 2026-03-01T00:00:00.000Z'],
    ['repro', {}, undefined, 'the current tag "repro" has no build time, so no tag can be shown to be newer', ''],
    ['gone', {}, undefined, 'the current tag "gone" was not found, so no tag can be shown to be newer', ''],
    [
      undefined,
      { exclude: ['^latest$', '^nightly$'] },
      '1.1.0',
      'the newest build time; 1 without build time',
      'config created 2026-02-01T00:00:00.000Z',
    ],
  ]
  for (const [current, o, tag, reason, evidence] of rows) {
    const pick = pickByTime(items, current, { ...opts, ...o })
    t.strictSame(
      { tag: pick.tag, reason: pick.reason, evidence: pick.evidence },
      { tag, reason, evidence },
      `from ${current} ${JSON.stringify(o)}`,
    )
  }
  // equal times: the current tag, then the higher version
  t.equal(pickByTime(items, '1.1.0', { exclude: ['^latest$', '^nightly$'], what: 'build time' }).tag, '1.1.0')
  t.equal(pickByTime(items, undefined, { exclude: ['^latest$', '^nightly$', '^1\\.0'], what: 'build time' }).tag, '1.1.0')
  t.equal(
    pickByTime(
      [
        { tag: 'a', time: 5 },
        { tag: 'b', time: 5 },
      ],
      undefined,
      { exclude: [], what: 'x' },
    ).tag,
    'b',
  )
})

t.test('inspectionOrder: highest versions first, then reverse ASCII, capped', async (t) => {
  t.strictSame(inspectionOrder(['1.2.0', 'abc', '1.10.0', 'zeta', '1.9.0', '2.0.0-rc.1'], 4), ['2.0.0-rc.1', '1.10.0', '1.9.0', '1.2.0'])
  t.strictSame(inspectionOrder(['b', 'a', 'c'], 10), ['c', 'b', 'a'])
  t.strictSame(inspectionOrder(['1.0.0'], 0), [])
})
