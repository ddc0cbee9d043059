// The registry client's auth, 429 and redirect handling against small in-process HTTPS servers on
// loopback (the same flows run against the real registry in test/e2e/prewarm-registry.test.ts).
import type { OutgoingHttpHeaders } from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { RegistryClient } from '../../server/prewarm/registry/client.js'
import { createCa, issueServing } from '../../server/tls/certs.js'

const ca = await createCa('mirrorhook-unit-registry-client', 1)

interface Seen {
  path: string
  authorization?: string
}
type Handler = (req: Seen) => { status: number; headers?: OutgoingHttpHeaders; body?: string } | 'hang'

async function serve(t: Test, address: string, handler: Handler) {
  const serving = await issueServing(ca, { dnsNames: [], ipAddresses: [address], validDays: 1 })
  const seen: Seen[] = []
  const server = https.createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
    const s: Seen = { path: req.url ?? '/', authorization: req.headers.authorization }
    seen.push(s)
    const a = handler(s)
    if (a === 'hang') return
    res.writeHead(a.status, a.headers)
    res.end(a.body ?? '')
  })
  await new Promise<void>((r) => server.listen(0, address, r))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const port = (server.address() as AddressInfo).port
  return { host: `${address}:${port}`, url: `https://${address}:${port}`, seen }
}

const client = (t: Test, host: string, extra: Partial<ConstructorParameters<typeof RegistryClient>[0]> = {}) => {
  const c = new RegistryClient({ host, caPem: ca.certPem, requestsPerSecond: 1000, now: Date.now, sleep: async () => {}, ...extra })
  t.teardown(() => c.close())
  return c
}

t.test('Bearer: one token request for concurrent requests of a scope; a refused token is fetched again', async (t) => {
  let issued = 0
  let refuse = ''
  const auth = await serve(t, '127.0.0.1', () => ({ status: 200, body: JSON.stringify({ token: `tok${++issued}`, expires_in: 300 }) }))
  const reg = await serve(t, '127.0.0.1', (r) =>
    r.authorization?.startsWith('Bearer tok') && r.authorization !== refuse
      ? { status: 200, body: '{}' }
      : { status: 401, headers: { 'WWW-Authenticate': `Bearer realm="${auth.url}/token",service="reg"` } },
  )
  const c = client(t, reg.host, { credentials: { username: 'u', password: 'p' } })
  const results = await Promise.all([1, 2, 3].map(() => c.get('/v2/a/tags/list', { maxBytes: 1000, scope: 'repository:a:pull' })))
  t.strictSame(
    results.map((r) => r.status),
    [200, 200, 200],
  )
  t.strictSame(
    auth.seen.map((s) => [s.path, s.authorization]),
    [['/token?service=reg&scope=repository%3Aa%3Apull&account=u', `Basic ${Buffer.from('u:p').toString('base64')}`]],
  )
  refuse = 'Bearer tok1'
  t.equal((await c.get('/v2/a/tags/list', { maxBytes: 1000, scope: 'repository:a:pull' })).status, 200)
  t.equal(auth.seen.length, 2, 'the refused token was replaced')
  t.equal(reg.seen.at(-1)?.authorization, 'Bearer tok2')
})

t.test('a token realm on another host gets no registry credentials, but its own dockerconfig entry', async (t) => {
  const auth = await serve(t, '127.0.0.2', () => ({ status: 200, body: JSON.stringify({ access_token: 'tok', expires_in: 300 }) }))
  const reg = await serve(t, '127.0.0.1', (r) =>
    r.authorization === 'Bearer tok'
      ? { status: 200 }
      : { status: 401, headers: { 'WWW-Authenticate': `Bearer realm="${auth.url}/token",service="reg",scope="repository:a:pull"` } },
  )
  const withoutOwn = client(t, reg.host, { credentials: { username: 'u', password: 'p' } })
  t.equal((await withoutOwn.get('/v2/a/tags/list', { maxBytes: 10, scope: 'repository:a:pull' })).status, 200)
  t.strictSame(auth.seen, [{ path: '/token?service=reg&scope=repository%3Aa%3Apull', authorization: undefined }])
  const own = client(t, reg.host, {
    credentials: { username: 'u', password: 'p' },
    credentialsForHost: (h) => (h === auth.host ? { username: 'realm-user', password: 'rp' } : undefined),
  })
  t.equal((await own.get('/v2/a/tags/list', { maxBytes: 10, scope: 'repository:a:pull' })).status, 200)
  t.equal(auth.seen[1]?.authorization, `Basic ${Buffer.from('realm-user:rp').toString('base64')}`)
})

t.test('a redirect off the registry origin drops Authorization; a Link elsewhere is refused', async (t) => {
  const storage = await serve(t, '127.0.0.2', () => ({ status: 200, body: 'blob' }))
  const reg = await serve(t, '127.0.0.1', (r): ReturnType<Handler> =>
    !r.authorization
      ? { status: 401, headers: { 'WWW-Authenticate': 'Basic realm="r"' } }
      : r.path.startsWith('/v2/a/blobs/')
        ? { status: 307, headers: { Location: `${storage.url}/signed?x=1` } }
        : { status: 307, headers: { Location: '/v2/a/blobs/sha256:0' } },
  )
  const c = client(t, reg.host, { credentials: { username: 'u', password: 'p' } })
  const res = await c.get('/v2/a/manifests/x', { maxBytes: 1000, scope: 'repository:a:pull' })
  t.strictSame([res.status, res.body.toString(), res.url.host], [200, 'blob', storage.host])
  const basic = `Basic ${Buffer.from('u:p').toString('base64')}`
  t.strictSame(
    reg.seen.map((s) => [s.path, s.authorization]),
    [
      ['/v2/a/manifests/x', undefined],
      ['/v2/a/manifests/x', basic],
      ['/v2/a/blobs/sha256:0', basic],
    ],
    'same-origin redirects keep it',
  )
  t.strictSame(storage.seen, [{ path: '/signed?x=1', authorization: undefined }])
  await t.rejects(c.get(`${storage.url}/v2/x`, { maxBytes: 10 }), {
    message: `${reg.host}: refusing to follow a link to ${storage.url}: only ${reg.url} is queried`,
  })
})

t.test('429: Retry-After waited, too long refused; size cap; timeout; refused connection', async (t) => {
  let limit = 1
  const reg = await serve(t, '127.0.0.1', (r) =>
    r.path === '/hang'
      ? 'hang'
      : r.path === '/big'
        ? { status: 200, headers: { 'Content-Length': '2000' }, body: 'x'.repeat(2000) }
        : limit-- > 0
          ? { status: 429, headers: { 'Retry-After': r.path === '/long' ? '120' : '2' } }
          : { status: 200, body: 'ok' },
  )
  const sleeps: number[] = []
  let clock = 1_000_000
  const c = client(t, reg.host, { now: () => clock, sleep: async (ms) => void (sleeps.push(ms), (clock += ms)), timeoutMs: 300 })
  t.equal((await c.get('/v2/', { maxBytes: 100 })).status, 200)
  t.strictSame(sleeps, [2000])
  limit = 1
  await t.rejects(c.get('/long', { maxBytes: 100 }), {
    message: `${reg.host}: rate limited (HTTP 429), Retry-After 120 s is more than the 60 s waited`,
    status: 429,
  })
  await t.rejects(c.get('/big', { maxBytes: 1000 }), {
    message: `${reg.host}/big: response of 2000 bytes is more than the 1000 bytes allowed`,
  })
  await t.rejects(c.get('/hang', { maxBytes: 1000 }), { message: `${reg.host}/hang: no answer within 300 ms` })
  const closed = client(t, '127.0.0.1:1')
  await t.rejects(closed.get('/v2/', { maxBytes: 10 }), {
    name: 'RegistryError',
    message: '127.0.0.1:1/v2/: connect ECONNREFUSED 127.0.0.1:1',
  })
  t.equal(c.requests, 5, 'every request counted')
})
