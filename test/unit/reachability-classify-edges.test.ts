// Reading pull messages at the edges: the exact kind and cause of every rule (the cause is what
// an operator reads in a warning), the DNS, TLS and HTTP-status wordings that decide between
// rules, Go durations to the unit, Pulled and Failed events in every shape, and how a pull error
// is shortened for evidence.
import t from 'tap'
import {
  classifyPullFailure,
  parseFailedPullMessage,
  parseGoDuration,
  parsePulledMessage,
  summarisePullError,
  type PullFailure,
} from '../../server/reachability/classify.js'

// [what, message, exact result]
const exact: [string, string, PullFailure][] = [
  [
    'never pull',
    'Container image "x" is not present with pull policy of Never: ErrImageNeverPull',
    { kind: 'other', cause: 'not a registry failure' },
  ],
  ['kubelet QPS', 'pull QPS exceeded', { kind: 'other', cause: 'kubelet pull QPS limit' }],
  ['no such host', 'dial tcp: lookup nope.example on 10.96.0.10:53: no such host', { kind: 'network', cause: 'DNS: no such host' }],
  [
    'DNS server misbehaving',
    'dial tcp: lookup quay.io on 10.96.0.10:53: server misbehaving',
    { kind: 'network', cause: 'DNS lookup failed' },
  ],
  [
    'DNS lookup timing out (before the i/o timeout rule)',
    'dial tcp: lookup registry-1.docker.io on 10.0.2.3:53: read udp 10.0.2.15:54567->10.0.2.3:53: i/o timeout',
    { kind: 'network', cause: 'DNS lookup failed' },
  ],
  [
    'DNS lookup refused (before the connection refused rule)',
    'dial tcp: lookup ghcr.io on 127.0.0.53:53: read udp 127.0.0.1:40000->127.0.0.53:53: read: connection refused',
    { kind: 'network', cause: 'DNS lookup failed' },
  ],
  ['DNS lookup without a server named', 'dial tcp: lookup ghcr.io: i/o timeout', { kind: 'network', cause: 'DNS lookup failed' }],
  [
    'a lookup that fails otherwise is no DNS timeout',
    'dial tcp: lookup ghcr.io on 10.0.0.1:53: no answer, then: HTTP status: 502 Bad Gateway',
    { kind: 'network', cause: 'HTTP 502' },
  ],
  ['TLS handshake timeout', 'net/http: TLS handshake timeout', { kind: 'network', cause: 'TLS handshake timeout' }],
  [
    'x509, up to the closing quote',
    'Get "https://r.example/v2/": x509: certificate signed by unknown authority" (retrying)',
    { kind: 'network', cause: 'TLS: x509: certificate signed by unknown authority' },
  ],
  [
    'tls, up to the end of the line',
    'Get https://r.example/v2/: tls: failed to verify certificate\nretrying',
    { kind: 'network', cause: 'TLS: tls: failed to verify certificate' },
  ],
  [
    'remote error: tls, cut at 80 characters',
    'read: remote error: tls: handshake failure while talking to a proxy that intercepts every connection on this network segment',
    { kind: 'network', cause: 'TLS: remote error: tls: handshake failure while talking to a proxy that intercepts ev' },
  ],
  ['connection refused', 'dial tcp 10.0.0.1:443: connect: connection refused', { kind: 'network', cause: 'connection refused' }],
  ['connection reset', 'read tcp 1.2.3.4:5->6.7.8.9:443: read: connection reset by peer', { kind: 'network', cause: 'connection reset' }],
  ['no route', 'dial tcp 10.0.0.1:443: connect: no route to host', { kind: 'network', cause: 'no route to host' }],
  ['network unreachable', 'dial tcp [2001:db8::1]:443: connect: network is unreachable', { kind: 'network', cause: 'no route to host' }],
  ['host down', 'dial tcp 10.0.0.1:443: connect: host is down', { kind: 'network', cause: 'no route to host' }],
  [
    'HTTP client timeout',
    'net/http: request canceled (Client.Timeout exceeded while awaiting headers)',
    { kind: 'network', cause: 'HTTP client timeout' },
  ],
  ['i/o timeout', 'dial tcp 10.0.0.1:443: i/o timeout', { kind: 'network', cause: 'i/o timeout' }],
  ['connection timed out', 'dial tcp 10.0.0.1:443: connect: connection timed out', { kind: 'network', cause: 'i/o timeout' }],
  ['context deadline', 'failed to pull: context deadline exceeded', { kind: 'network', cause: 'context deadline exceeded' }],
  ['DeadlineExceeded', 'rpc error: code = DeadlineExceeded desc = pulling', { kind: 'network', cause: 'context deadline exceeded' }],
  ['no progress', 'cancelling image pull because of no progress in 1m0s', { kind: 'network', cause: 'no progress (stalled download)' }],
  ['registry unavailable', 'RegistryUnavailable: back-off', { kind: 'network', cause: 'registry unavailable' }],
  [
    'proxy',
    'proxyconnect tcp: dial tcp 10.0.0.9:3128: connect: cannot assign requested address',
    { kind: 'network', cause: 'proxy connection failed' },
  ],
  ['500 by name', 'received unexpected HTTP status: 500 Internal Server Error', { kind: 'network', cause: 'HTTP 500' }],
  ['504 by name', 'unexpected status: 504 Gateway Timeout', { kind: 'network', cause: 'HTTP 504' }],
  ['status: 502 (the first number)', 'unexpected status: 502', { kind: 'network', cause: 'HTTP 502' }],
  [
    '504 by name, without a status the next rule reads',
    'pulling from host r.example failed with status code [manifests 1]: 504 Gateway Timeout',
    { kind: 'network', cause: 'HTTP 504' },
  ],
  [
    '504 by its older name',
    'pulling from host r.example failed with status code [manifests 1]: 504 Gateway Time-out',
    { kind: 'network', cause: 'HTTP 504' },
  ],
  ['statuscode: 503', 'statuscode: 503 from the mirror', { kind: 'network', cause: 'HTTP 503' }],
  ['HTTP status: 501 (the second number)', 'HTTP status: 501', { kind: 'network', cause: 'HTTP 501' }],
  ['HTTP status: 505 is none of them', 'HTTP status: 505', { kind: 'other', cause: 'unrecognised pull error' }],
  ['status 505 is none of them', 'unexpected status code 505', { kind: 'other', cause: 'unrecognised pull error' }],
  ['connection dropped', 'reading blob: unexpected EOF', { kind: 'network', cause: 'connection dropped' }],
  ['GOAWAY', 'http2: server sent GOAWAY and closed the connection', { kind: 'network', cause: 'connection dropped' }],
  ['429', 'unexpected status: 429 Too Many Requests', { kind: 'rate-limited', cause: 'rate limited (HTTP 429)' }],
  ['allowlist', 'denied: this image is not in the allowlist', { kind: 'forbidden', cause: 'not in the mirror allowlist' }],
  [
    'does not exist',
    'pull access denied, repository does not exist or may require authorization',
    { kind: 'not-found', cause: 'repository does not exist or requires login' },
  ],
  ['403', 'unexpected status from HEAD request: 403 Forbidden', { kind: 'forbidden', cause: 'HTTP 403 Forbidden' }],
  ['status 403', 'unexpected status: 403', { kind: 'forbidden', cause: 'HTTP 403 Forbidden' }],
  ['status 403 without a colon', 'unexpected status 403', { kind: 'forbidden', cause: 'HTTP 403 Forbidden' }],
  ['401', 'unexpected status: 401 Unauthorized', { kind: 'unauthorized', cause: 'unauthorized' }],
  ['no basic auth', 'no basic auth credentials', { kind: 'unauthorized', cause: 'unauthorized' }],
  ['denied', 'denied: requested access to the resource is denied', { kind: 'unauthorized', cause: 'access denied' }],
  ['access … denied', 'requested access to the resource is denied', { kind: 'unauthorized', cause: 'access denied' }],
  ['manifest unknown', 'manifest unknown: manifest unknown', { kind: 'not-found', cause: 'not found' }],
  ['404', 'unexpected status: 404', { kind: 'not-found', cause: 'not found' }],
  ['nothing known', 'something else entirely', { kind: 'other', cause: 'unrecognised pull error' }],
]

t.test('every rule: the exact kind and cause', async (t) => {
  for (const [what, message, expected] of exact) t.strictSame(classifyPullFailure(message), expected, what)
})

t.test('Go durations, unit by unit', async (t) => {
  const cases: [string, number | undefined][] = [
    ['2h', 7_200_000],
    ['3m', 180_000],
    ['4s', 4000],
    ['5ms', 5],
    ['250us', 0.25],
    ['250µs', 0.25],
    ['250μs', 0.25],
    ['500ns', 0.0005],
    ['1h2m3s', 3_723_000],
    ['1.5h', 5_400_000],
    ['1ms2', undefined],
    ['x1s', undefined],
    ['1s ', undefined],
    ['1d', undefined],
    ['.5s', undefined],
  ]
  for (const [text, ms] of cases) t.equal(parseGoDuration(text), ms, text)
})

t.test('Pulled events: every optional part, and what is not a pull', async (t) => {
  t.strictSame(parsePulledMessage('  Successfully pulled image "a/b:1" in 523ms (1.2s including waiting). Image size: 42 bytes.\n'), {
    image: 'a/b:1',
    durationMs: 523,
    sizeBytes: 42,
  })
  t.strictSame(parsePulledMessage('Successfully pulled image "a/b:1" in 2s (3s including waiting). Image size: 7 bytes'), {
    image: 'a/b:1',
    durationMs: 2000,
    sizeBytes: 7,
  })
  const bare = parsePulledMessage('Successfully pulled image "a/b:1" in 2s')
  t.strictSame(bare, { image: 'a/b:1', durationMs: 2000, sizeBytes: undefined })
  t.strictSame(Object.keys(bare ?? {}), ['image', 'durationMs', 'sizeBytes'])
  t.equal(parsePulledMessage('Successfully pulled image "" in 2s'), undefined, 'no image')
  t.equal(parsePulledMessage('Successfully pulled image "a/b:1" in 2x'), undefined, 'no duration')
  t.equal(parsePulledMessage('Successfully pulled image "a/b:1" in ms'), undefined, 'not a Go duration')
  t.equal(parsePulledMessage('Pulling image "a/b:1"'), undefined)
  t.equal(parsePulledMessage('Not Successfully pulled image "a/b:1" in 2s'), undefined, 'only at the start')
})

t.test('Failed events: the image and the whole error, over several lines', async (t) => {
  t.strictSame(parseFailedPullMessage('  Failed to pull image "a/b:1": first line\nsecond line  '), {
    image: 'a/b:1',
    error: 'first line\nsecond line',
  })
  t.equal(parseFailedPullMessage('Failed to pull image "": x'), undefined, 'no image')
  t.equal(parseFailedPullMessage('Back-off pulling image "a/b:1"'), undefined)
  t.equal(parseFailedPullMessage('Error: Failed to pull image "a/b:1": x'), undefined, 'only at the start')
})

t.test('a pull error is shortened to one line, keeping its end', async (t) => {
  t.equal(summarisePullError('  dial tcp\n\t10.0.0.1:443:   i/o timeout \n'), 'dial tcp 10.0.0.1:443: i/o timeout')
  t.equal(summarisePullError('abcdefghij', 10), 'abcdefghij', 'exactly the limit: whole')
  t.equal(summarisePullError('abcdefghijk', 10), '…cdefghijk', 'one over: an ellipsis and the last nine')
  t.equal(summarisePullError('a  b  c  d  e  f', 10), '…b c d e f', 'measured after collapsing spaces: 11 characters')
  t.equal(summarisePullError('a b c d e'), 'a b c d e', '160 by default')
  t.equal(summarisePullError('x'.repeat(150) + ' ' + 'y'.repeat(9)), 'x'.repeat(150) + ' ' + 'y'.repeat(9), '160 characters: whole')
  t.equal(
    summarisePullError('z' + 'x'.repeat(150) + ' ' + 'y'.repeat(9)),
    '…' + 'x'.repeat(149) + ' ' + 'y'.repeat(9),
    '161: shortened to 160',
  )
})
