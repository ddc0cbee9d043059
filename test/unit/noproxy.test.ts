import t from 'tap'
import { compileNoProxy, compileNoProxyOrThrow, isLoopbackHost, splitHostPort, splitNoProxyList } from '../../server/core/noproxy.js'

// [entries, registry host, expected matching entry or false]
type Row = [readonly string[], string, string | false]

const rows: Row[] = [
  // exact host, any port, case-insensitive
  [['registry.corp.example'], 'registry.corp.example', 'registry.corp.example'],
  [['registry.corp.example'], 'registry.corp.example:5000', 'registry.corp.example'],
  [['registry.corp.example'], 'Registry.CORP.example', 'registry.corp.example'],
  [['Registry.Corp.Example'], 'registry.corp.example', 'Registry.Corp.Example'],
  [['registry.corp.example'], 'registry.corp.example.', 'registry.corp.example'],
  [['registry.corp.example'], 'other.example', false],
  [['registry.corp.example'], 'docker.io', false],
  // plain domain: domain and subdomains (like Go), only on label boundaries
  [['corp.example'], 'corp.example', 'corp.example'],
  [['corp.example'], 'a.corp.example', 'corp.example'],
  [['corp.example'], 'a.b.corp.example:443', 'corp.example'],
  [['corp.example'], 'notcorp.example', false],
  [['corp.example'], 'corp.example.org', false],
  [['corp.example'], 'example', false],
  // leading dot and *. : domain and subdomains (brief / curl, not Go's subdomains-only)
  [['.corp.example'], 'corp.example', '.corp.example'],
  [['.corp.example'], 'a.b.corp.example', '.corp.example'],
  [['.corp.example'], 'notcorp.example', false],
  [['*.corp.example'], 'corp.example', '*.corp.example'],
  [['*.corp.example'], 'x.corp.example:5000', '*.corp.example'],
  [['*.corp.example'], 'xcorp.example', false],
  [['*.CORP.example'], 'A.Corp.Example', '*.CORP.example'],
  // host:port only matches that port; no default port is implied
  [['registry.corp:5000'], 'registry.corp:5000', 'registry.corp:5000'],
  [['registry.corp:5000'], 'registry.corp:5001', false],
  [['registry.corp:5000'], 'registry.corp', false],
  [['registry.corp:443'], 'registry.corp', false],
  [['.corp:5000'], 'a.corp:5000', '.corp:5000'],
  [['.corp:5000'], 'a.corp:80', false],
  [['registry.corp:5000', 'registry.corp'], 'registry.corp:80', 'registry.corp'],
  // IPv4 exact, with and without port
  [['10.1.2.3'], '10.1.2.3', '10.1.2.3'],
  [['10.1.2.3'], '10.1.2.3:5000', '10.1.2.3'],
  [['10.1.2.3'], '10.1.2.4', false],
  [['10.1.2.3:5000'], '10.1.2.3:5000', '10.1.2.3:5000'],
  [['10.1.2.3:5000'], '10.1.2.3:5001', false],
  [['10.1.2.3:5000'], '10.1.2.3', false],
  // IP entries never match names and name entries never match IPs
  [['10.1.2.3'], '10.1.2.3.nip.io', false],
  [['fd00::/8'], 'fd00.example', false],
  // IPv6 exact, brackets optional in the list, required-with-port in references
  [['fd00::1'], '[fd00::1]:5000', 'fd00::1'],
  [['fd00::1'], '[fd00::1]', 'fd00::1'],
  [['fd00::1'], 'fd00::1', 'fd00::1'],
  [['[fd00::1]'], '[fd00::1]:5000', '[fd00::1]'],
  [['FD00::1'], '[fd00:0:0:0:0:0:0:1]:5000', 'FD00::1'],
  [['fd00::1'], '[fd00::2]:5000', false],
  [['[fd00::1]:5000'], '[fd00::1]:5000', '[fd00::1]:5000'],
  [['[fd00::1]:5000'], '[fd00::1]:5001', false],
  [['[fd00::1]:5000'], '[fd00::1]', false],
  // CIDR v4 edges
  [['10.0.0.0/8'], '10.0.0.0', '10.0.0.0/8'],
  [['10.0.0.0/8'], '10.255.255.255:5000', '10.0.0.0/8'],
  [['10.0.0.0/8'], '9.255.255.255', false],
  [['10.0.0.0/8'], '11.0.0.0', false],
  [['192.168.1.0/24'], '192.168.1.255', '192.168.1.0/24'],
  [['192.168.1.0/24'], '192.168.2.0', false],
  [['10.1.2.3/8'], '10.9.9.9', '10.1.2.3/8'], // host bits ignored, like Go
  [['10.1.2.3/32'], '10.1.2.3', '10.1.2.3/32'],
  [['10.1.2.3/32'], '10.1.2.4', false],
  [['0.0.0.0/0'], '1.2.3.4', '0.0.0.0/0'],
  [['0.0.0.0/0'], 'docker.io', false],
  [['10.0.0.0/8'], '[::ffff:10.1.2.3]:5000', '10.0.0.0/8'], // IPv4-mapped
  // CIDR v6 edges
  [['fd00::/8'], '[fd00::]', 'fd00::/8'],
  [['fd00::/8'], '[fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:5000', 'fd00::/8'],
  [['fd00::/8'], '[fc00::1]', false],
  [['fd00::/8'], '[fe00::]', false],
  [['[fd00::]/8'], '[fd12::1]', '[fd00::]/8'],
  [['fd00::/8'], '10.0.0.1', false],
  [['10.0.0.0/8'], '[fd00::1]', false],
  // * matches everything
  [['*'], 'docker.io', '*'],
  [['*'], '[fd00::1]:5000', '*'],
  [['docker.io', '*'], 'quay.io', '*'],
  [[], 'docker.io', false],
  // whitespace and empty entries are ignored
  [['  corp.example  ', '', '   '], 'a.corp.example', 'corp.example'],
  // loopback is always excluded
  [[], 'localhost', 'loopback'],
  [[], 'localhost:5000', 'loopback'],
  [[], 'LOCALHOST:5000', 'loopback'],
  [[], 'reg.localhost:5000', 'loopback'],
  [[], 'notlocalhost', false],
  [[], '127.0.0.1:5000', 'loopback'],
  [[], '127.255.255.255', 'loopback'],
  [[], '128.0.0.1', false],
  [[], '[::1]:5000', 'loopback'],
  [[], '[::2]:5000', false],
  [[], '[::ffff:127.0.0.1]:5000', 'loopback'],
  [['*'], 'localhost', 'loopback'],
  // most specific suffix wins; IP rules in list order
  [['corp', 'a.corp'], 'x.a.corp', 'a.corp'],
  [['10.0.0.0/8', '10.1.2.3'], '10.1.2.3', '10.0.0.0/8'],
  // unparseable port in the reference matches nothing but *
  [['registry.corp'], 'registry.corp:abc', false],
  [['registry.corp'], 'registry.corp:99999', false],
  [['*'], 'registry.corp:abc', '*'],
]

t.test('match table', async (t) => {
  for (const [entries, host, want] of rows) {
    const { matcher, errors } = compileNoProxy(entries)
    t.strictSame(errors, [], `no errors for ${JSON.stringify(entries)}`)
    const got = matcher.match(host)
    t.strictSame(got, want === false ? { excluded: false } : { excluded: true, entry: want }, `${JSON.stringify(entries)} vs ${host}`)
  }
})

t.test('mirror hosts are always excluded, exactly', async (t) => {
  const { matcher, errors } = compileNoProxy(['corp.example'], {
    alwaysExclude: ['mirror.internal:5000', 'Mirror2.Internal', '[fd00::9]:5000', '10.9.9.9', ' '],
  })
  t.strictSame(errors, [])
  const cases: [string, string | false][] = [
    ['mirror.internal:5000', 'mirror'],
    ['mirror.internal:5001', false],
    ['mirror.internal', false],
    ['mirror2.internal', 'mirror'],
    ['mirror2.internal:443', 'mirror'],
    ['sub.mirror2.internal', false], // exact, no subdomains
    ['[fd00::9]:5000', 'mirror'],
    ['[fd00::9]:80', false],
    ['10.9.9.9:5000', 'mirror'],
    ['a.corp.example', 'corp.example'],
    ['docker.io', false],
    ['localhost', 'loopback'],
  ]
  for (const [host, want] of cases) {
    t.strictSame(matcher.match(host), want === false ? { excluded: false } : { excluded: true, entry: want }, host)
  }
  t.strictSame(matcher.entries, ['corp.example'], 'mirrors are not listed as entries')

  const star = compileNoProxy(['*'], { alwaysExclude: ['mirror.internal'] }).matcher
  t.strictSame(star.match('mirror.internal'), { excluded: true, entry: 'mirror' }, 'mirror reported before *')
})

t.test('invalid entries are reported by name and skipped', async (t) => {
  // [entry, why it is refused]
  const bad: [string, string][] = [
    ['10.0.0.0/99', 'invalid CIDR prefix length'],
    ['fd00::/129', 'invalid CIDR prefix length'],
    ['10.0.0.0/', 'invalid CIDR prefix length'],
    ['10.0.0.0/8:5000', 'invalid CIDR prefix length'],
    ['not-an-ip/8', 'invalid CIDR address'],
    ['a b', 'invalid host name'],
    ['registry.corp:0', 'invalid port'],
    ['registry.corp:65536', 'invalid port'],
    ['registry.corp:', 'invalid port'],
    ['registry.corp:http', 'invalid port'],
    [':5000', 'invalid host name'],
    ['[fd00::1]:70000', 'invalid port'],
    ['[registry.corp]', 'invalid IPv6 address in brackets'],
    ['[fd00::1', 'invalid IPv6 address'],
    ['fd00::zz', 'invalid IPv6 address'],
    ['fe80::1%eth0', 'IPv6 zone IDs are not supported'],
    ['10.0.0.256', 'invalid IPv4 address'],
    ['3', 'invalid IPv4 address'], // numeric last label: a mistyped IP, never a name
    ['*corp.example', 'invalid host name'],
    ['a.*.corp', 'invalid host name'],
    ['**', 'invalid host name'],
    ['.', 'invalid host name'],
    ['*.', 'invalid host name'],
    ['-bad.example', 'invalid host name'],
    ['bad-.example', 'invalid host name'],
    ['a..b', 'invalid host name'],
    ['ünïcode.example', 'invalid host name'],
    ['under_score.example', 'invalid host name'],
  ]
  for (const [entry, why] of bad) {
    const { matcher, errors } = compileNoProxy(['ok.example', `  ${entry} `])
    t.strictSame(errors, [`invalid NO_PROXY entry ${JSON.stringify(entry)}: ${why}`], `one error, naming ${entry}`)
    t.strictSame(matcher.entries, ['ok.example'], `${entry} skipped`)
    t.strictSame(matcher.match('ok.example'), { excluded: true, entry: 'ok.example' })
  }
  t.strictSame(compileNoProxy(['registry.corp:65535', 'registry.corp:1', 'fd00::/128', '0.0.0.0/0']).errors, [])

  const mirror = compileNoProxy([], { alwaysExclude: ['*', '.mirror', '10.0.0.0/8', 'm:x'] })
  t.strictSame(mirror.errors, [
    'invalid mirror host "*": wildcard not allowed here',
    'invalid mirror host ".mirror": invalid host name',
    'invalid mirror host "10.0.0.0/8": CIDR range not allowed here',
    'invalid mirror host "m:x": invalid port',
  ])
})

t.test('throwing form', async (t) => {
  let thrown: unknown
  try {
    compileNoProxyOrThrow(['ok', '10.0.0.0/99'])
  } catch (error) {
    thrown = error
  }
  t.type(thrown, Error)
  t.equal((thrown as Error).message, 'invalid NO_PROXY entry "10.0.0.0/99": invalid CIDR prefix length')
  t.strictSame(compileNoProxyOrThrow(['ok']).match('x.ok'), { excluded: true, entry: 'ok' })
})

t.test('entries keeps valid entries trimmed, in order', async (t) => {
  const { matcher } = compileNoProxy([' A.example ', '', '*', 'bad entry', '10.0.0.0/8'])
  t.strictSame(matcher.entries, ['A.example', '*', '10.0.0.0/8'])
})

t.test('splitNoProxyList', async (t) => {
  t.strictSame(splitNoProxyList(''), [])
  t.strictSame(splitNoProxyList(' , ,'), [])
  t.strictSame(splitNoProxyList('a.example,.b.example'), ['a.example', '.b.example'])
  t.strictSame(splitNoProxyList(' a.example , b:5000,,\n[fd00::1]:5000\t10.0.0.0/8 '), [
    'a.example',
    'b:5000',
    '[fd00::1]:5000',
    '10.0.0.0/8',
  ])
})

t.test('splitHostPort', async (t) => {
  const cases: [string, { host: string; port?: number }][] = [
    ['docker.io', { host: 'docker.io' }],
    ['Registry.Corp', { host: 'registry.corp' }],
    ['registry.corp:5000', { host: 'registry.corp', port: 5000 }],
    ['registry.corp.:5000', { host: 'registry.corp', port: 5000 }],
    ['10.1.2.3:5000', { host: '10.1.2.3', port: 5000 }],
    ['[fd00::1]:5000', { host: 'fd00::1', port: 5000 }],
    ['[FD00::1]', { host: 'fd00::1' }],
    ['fd00::1', { host: 'fd00::1' }],
    ['registry.corp:abc', { host: 'registry.corp:abc' }],
    ['registry.corp:0', { host: 'registry.corp:0' }],
    ['[fd00::1]x', { host: '[fd00::1]x' }],
    ['[fd00::1', { host: '[fd00::1' }],
  ]
  for (const [input, want] of cases) t.strictSame(splitHostPort(input), want, input)
})

t.test('isLoopbackHost', async (t) => {
  for (const h of ['localhost', 'a.localhost:5000', '127.0.0.1', '127.1.2.3:80', '[::1]:5000', '::1']) t.equal(isLoopbackHost(h), true, h)
  for (const h of ['docker.io', 'localhost.example', '10.0.0.1', '[::2]', '0.0.0.0']) t.equal(isLoopbackHost(h), false, h)
})
