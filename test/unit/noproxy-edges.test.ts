// noProxy at its edges: every error text, ports that Number() would read but the grammar does
// not, brackets, CIDR forms, trailing dots, numeric labels, mirror hosts (no wildcards) and the
// suffix walk. Expected values are written out.
import t from 'tap'
import { compileNoProxy, compileNoProxyOrThrow, isLoopbackHost, splitHostPort, splitNoProxyList } from '../../server/core/noproxy.js'

t.test('each invalid entry, with its exact problem', async (t) => {
  const table: [string, string][] = [
    ['corp.example:+80', 'invalid port'],
    ['corp.example:0x50', 'invalid port'],
    ['corp.example:1e3', 'invalid port'],
    ['corp.example: 80', 'invalid port'],
    ['corp.example:0', 'invalid port'],
    ['corp.example:65536', 'invalid port'],
    ['corp.example:123456', 'invalid port'],
    ['corp.example:', 'invalid port'],
    ['fe80::1%eth0', 'IPv6 zone IDs are not supported'],
    ['/24', 'invalid CIDR address'],
    ['afd0::]/64', 'invalid CIDR address'],
    ['[fd00::1/64', 'invalid CIDR address'],
    ['corp.example/8', 'invalid CIDR address'],
    ['10.0.0.0/+8', 'invalid CIDR prefix length'],
    ['10.0.0.0/0x8', 'invalid CIDR prefix length'],
    ['10.0.0.0/33', 'invalid CIDR prefix length'],
    ['10.0.0.0/', 'invalid CIDR prefix length'],
    ['fd00::/129', 'invalid CIDR prefix length'],
    ['[corp.example]', 'invalid IPv6 address in brackets'],
    ['[10.0.0.1]:80', 'invalid IPv6 address in brackets'],
    ['[::1]:99999', 'invalid port'],
    ['[fd00::1]:', 'invalid port'],
    ['x[::1]:80', 'invalid IPv6 address'],
    ['[::1]x', 'invalid IPv6 address'],
    ['a:b:c', 'invalid IPv6 address'],
    [':80', 'invalid host name'],
    ['bad_host.example', 'invalid host name'],
    ['-x.example', 'invalid host name'],
    ['a..example', 'invalid host name'],
    ['.', 'invalid host name'],
    ['10.0.0.256', 'invalid IPv4 address'],
    ['corp.123', 'invalid IPv4 address'],
  ]
  for (const [entry, problem] of table) {
    const { matcher, errors } = compileNoProxy([entry])
    t.strictSame([errors, matcher.entries], [[`invalid NO_PROXY entry ${JSON.stringify(entry)}: ${problem}`], []], entry)
  }
})

t.test('valid entries near the invalid ones', async (t) => {
  const table: [string, string, string | false][] = [
    ['corp.a1', 'corp.a1', 'corp.a1'],
    ['corp.1a', 'x.corp.1a', 'corp.1a'],
    ['corp.example.', 'x.corp.example', 'corp.example.'],
    ['corp.example.:5000', 'corp.example:5000', 'corp.example.:5000'],
    ['corp.example:65535', 'corp.example:65535', 'corp.example:65535'],
    ['corp.example:1', 'corp.example:1', 'corp.example:1'],
    ['corp.example:00080', 'corp.example:80', 'corp.example:00080'],
    ['[fd00::1]/64', '[fd00::abcd]:5000', '[fd00::1]/64'],
    ['fd00::/8', 'fd12::1', 'fd00::/8'],
    ['10.0.0.0/8', '10.200.3.4:5000', '10.0.0.0/8'],
    ['10.1.2.3/32', '10.1.2.4', false],
    ['[fd00::2]:5000', '[fd00::2]:5000', '[fd00::2]:5000'],
    ['[fd00::2]:5000', '[fd00::2]:5001', false],
    ['[fd00::2]', '[fd00::2]:5001', '[fd00::2]'],
    ['fd00::3', '[fd00::3]', 'fd00::3'],
    ['10.0.0.9:5000', '10.0.0.9:5000', '10.0.0.9:5000'],
    ['10.0.0.9:5000', '10.0.0.9', false],
  ]
  for (const [entry, host, expected] of table) {
    const { matcher, errors } = compileNoProxy([entry])
    t.strictSame(errors, [], entry)
    t.strictSame(matcher.match(host), expected === false ? { excluded: false } : { excluded: true, entry: expected }, `${entry} vs ${host}`)
  }
})

t.test('mirror hosts take no wildcard and no CIDR, and are matched with their trailing dot removed', async (t) => {
  t.strictSame(compileNoProxy([], { alwaysExclude: ['*'] }).errors, ['invalid mirror host "*": wildcard not allowed here'])
  t.strictSame(compileNoProxy([], { alwaysExclude: ['10.0.0.0/8'] }).errors, [
    'invalid mirror host "10.0.0.0/8": CIDR range not allowed here',
  ])
  t.strictSame(compileNoProxy([], { alwaysExclude: ['.m.corp.example'] }).errors, [
    'invalid mirror host ".m.corp.example": invalid host name',
  ])
  t.strictSame(compileNoProxy([], { alwaysExclude: ['*.m.corp.example'] }).errors, [
    'invalid mirror host "*.m.corp.example": invalid host name',
  ])
  const { matcher, errors } = compileNoProxy([' ', ''], { alwaysExclude: ['m.corp.example.', ' ', '10.9.9.9:5000', '[fd00::9]'] })
  t.strictSame(errors, [])
  t.strictSame(matcher.entries, [])
  t.strictSame(
    ['m.corp.example', 'M.Corp.Example:443', 'x.m.corp.example', '10.9.9.9:5000', '10.9.9.9', '[fd00::9]:1', 'fd00::9', 'corp.example'].map(
      (h) => matcher.match(h),
    ),
    [
      { excluded: true, entry: 'mirror' },
      { excluded: true, entry: 'mirror' },
      { excluded: false },
      { excluded: true, entry: 'mirror' },
      { excluded: false },
      { excluded: true, entry: 'mirror' },
      { excluded: true, entry: 'mirror' },
      { excluded: false },
    ],
  )
})

t.test('the suffix walk continues past empty labels', async (t) => {
  const matcher = compileNoProxyOrThrow(['corp.example'])
  t.strictSame(matcher.match('.corp.example'), { excluded: true, entry: 'corp.example' })
  t.strictSame(matcher.match('a..corp.example'), { excluded: true, entry: 'corp.example' })
  t.strictSame(matcher.match('corp..example'), { excluded: false })
})

t.test('compileNoProxyOrThrow joins every problem', async (t) => {
  let thrown: unknown
  try {
    compileNoProxyOrThrow(['a:b:c', 'ok.example', 'bad_x'], { alwaysExclude: ['*'] })
  } catch (error) {
    thrown = error
  }
  t.type(thrown, Error)
  t.equal(
    (thrown as Error).message,
    'invalid NO_PROXY entry "a:b:c": invalid IPv6 address; invalid NO_PROXY entry "bad_x": invalid host name; invalid mirror host "*": wildcard not allowed here',
  )
  t.strictSame(compileNoProxyOrThrow([' ok.example ']).entries, ['ok.example'])
})

t.test('splitHostPort at its edges', async (t) => {
  const table: [string, { host: string; port?: number }][] = [
    [' Registry.Corp:5000 ', { host: 'registry.corp', port: 5000 }],
    ['REGISTRY.CORP.', { host: 'registry.corp' }],
    [':5000', { host: '', port: 5000 }],
    ['[::1]x80', { host: '[::1]x80' }],
    ['[::1]:80', { host: '::1', port: 80 }],
    ['[::1]', { host: '::1' }],
    ['[fd00::1', { host: '[fd00::1' }],
    ['[::1]:', { host: '[::1]:' }],
    ['h:+80', { host: 'h:+80' }],
    ['h:0x50', { host: 'h:0x50' }],
    ['h:1e3', { host: 'h:1e3' }],
    ['h:65535', { host: 'h', port: 65535 }],
    ['h:65536', { host: 'h:65536' }],
    ['h:0', { host: 'h:0' }],
    ['fd00::1', { host: 'fd00::1' }],
  ]
  for (const [input, expected] of table) t.strictSame(splitHostPort(input), expected, JSON.stringify(input))
})

t.test('splitNoProxyList and isLoopbackHost', async (t) => {
  t.strictSame(splitNoProxyList(' a.example,, b.example\t\nc.example '), ['a.example', 'b.example', 'c.example'])
  t.strictSame(splitNoProxyList(''), [])
  const table: [string, boolean][] = [
    ['localhost', true],
    ['LOCALHOST:5000', true],
    ['a.localhost', true],
    ['notlocalhost', false],
    ['127.9.9.9:5000', true],
    ['[::1]:5000', true],
    ['::ffff:127.0.0.1', true],
    ['128.0.0.1', false],
    ['registry.corp', false],
    ['[::2]', false],
  ]
  for (const [host, expected] of table) t.equal(isLoopbackHost(host), expected, host)
})
