// Probes against real sockets on loopback: registries that answer, refuse,
// reset, never answer, do not resolve, present an untrusted certificate,
// redirect, or sit behind an HTTP proxy.
import t from 'tap'
import { once } from 'node:events'
import http from 'node:http'
import https from 'node:https'
import net, { type AddressInfo } from 'node:net'
import { createCa, issueServing, type KeyPairPem } from '../../server/tls/certs.js'
import { formatMs, probeRegistry, proxySettings, type LookupFunction, type ProbeResult } from '../../server/reachability/probe.js'

const TIMEOUT_MS = 400

let ca: KeyPairPem
let serving: KeyPairPem
const closers: (() => void)[] = []

t.before(async () => {
  ca = await createCa('probe-test-ca', 1)
  serving = await issueServing(ca, { dnsNames: ['registry.test', 'other.test', 'localhost'], ipAddresses: ['127.0.0.1'], validDays: 1 })
})
t.teardown(() => {
  for (const close of closers) close()
})

// *.test names resolve to loopback here, so certificates can carry real names.
const loopbackLookup: LookupFunction = (hostname, options, callback) => {
  if (!hostname.endsWith('.test')) {
    callback(Object.assign(new Error(`unexpected lookup of ${hostname}`), { code: 'ENOTFOUND' }), options.all ? [] : '')
    return
  }
  if (options.all) callback(null, [{ address: '127.0.0.1', family: 4 }])
  else callback(null, '127.0.0.1', 4)
}

async function listen(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  closers.push(() => server.close())
  if (server instanceof http.Server) closers.push(() => server.closeAllConnections())
  return (server.address() as AddressInfo).port
}

async function registry(handler: http.RequestListener): Promise<number> {
  return listen(https.createServer({ cert: serving.certPem, key: serving.keyPem }, handler))
}

const answer =
  (status: number, headers: Record<string, string> = {}): http.RequestListener =>
  (req, res) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers })
    res.end(req.url === '/v2/' ? '{}' : '{"errors":[{"code":"NOT_FOUND"}]}')
  }

/**
 * The result without its measured time: durationMs dropped (checked apart where it matters) and
 * the time in `detail` (" in 3 ms", " in 1.2 s", from formatMs) written as " in <t>".
 */
function exact(r: ProbeResult): Omit<ProbeResult, 'durationMs'> {
  const { durationMs: _durationMs, ...rest } = r
  return { ...rest, detail: rest.detail.replace(/ in (\d+ ms|\d+(\.\d)? s)(?=$| \(via |: not a registry API$)/, ' in <t>') }
}

function opts(extra: Partial<Parameters<typeof probeRegistry>[1]> = {}) {
  return { timeoutMs: TIMEOUT_MS, ca: ca.certPem, lookup: loopbackLookup, env: {}, ...extra }
}

t.test('a registry answering 401 on /v2/ is reachable', async (t) => {
  const seen: string[] = []
  const port = await registry((req, res) => {
    seen.push(`${req.method} ${req.url} ${req.headers.host}`)
    answer(401, { 'www-authenticate': 'Bearer realm="https://auth.test/token"' })(req, res)
  })
  const r = await probeRegistry(`registry.test:${port}`, opts())
  t.strictSame(exact(r), { ok: true, status: 401, detail: 'HTTP 401 in <t>' })
  t.strictSame(seen, [`GET /v2/ registry.test:${port}`], 'one GET of /v2/ with the registry as Host')
  t.equal(r.detail, `HTTP 401 in ${formatMs(r.durationMs)}`, 'the time recorded is the one reported')
  t.ok(r.durationMs > 0, `time recorded: ${r.durationMs.toFixed(1)} ms`)
})

t.test('200 is reachable; 5xx, 429 and a non-registry answer are not', async (t) => {
  for (const [status, ok, detail] of [
    [200, true, 'HTTP 200 in <t>'],
    [503, false, 'HTTP 503 in <t>'],
    [502, false, 'HTTP 502 in <t>'],
    [429, false, 'HTTP 429 (rate limited) in <t>'],
    [404, false, 'HTTP 404 from /v2/ in <t>: not a registry API'],
  ] as const) {
    const port = await registry(answer(status))
    t.strictSame(exact(await probeRegistry(`registry.test:${port}`, opts())), { ok, status, detail }, `HTTP ${status}`)
  }
})

t.test('a registry that accepts and never answers is unreachable within the probe timeout', async (t) => {
  const sockets: net.Socket[] = []
  const port = await listen(net.createServer((s) => sockets.push(s)))
  closers.push(() => sockets.forEach((s) => s.destroy()))
  const r = await probeRegistry(`registry.test:${port}`, opts())
  // Only the probe's timer aborts a request, so this detail says the timeout ended it.
  t.strictSame(exact(r), { ok: false, detail: 'no answer within 400 ms' })
  t.ok(r.durationMs >= TIMEOUT_MS - 5, `gave up after ${r.durationMs.toFixed(0)} ms, not before the timeout`)
  t.equal(sockets.length, 1, 'the connection was accepted')
})

t.test('a TLS server that completes the handshake and then says nothing also times out', async (t) => {
  const port = await listen(https.createServer({ cert: serving.certPem, key: serving.keyPem }, () => undefined))
  const r = await probeRegistry(`registry.test:${port}`, opts())
  t.strictSame(exact(r), { ok: false, detail: 'no answer within 400 ms' })
  t.ok(r.durationMs >= TIMEOUT_MS - 5, 'not before the timeout')
})

t.test('a refused connection is unreachable at once', async (t) => {
  // A port that was free a moment ago and is closed again.
  const closed = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port
      s.close(() => resolve(p))
    })
  })
  const r = await probeRegistry(`registry.test:${closed}`, opts())
  // Had it waited for the timeout, the detail would be "no answer within 400 ms".
  t.strictSame(exact(r), { ok: false, detail: 'connection refused' }, 'no need to wait for the timeout')
})

t.test('a reset connection is unreachable', async (t) => {
  const port = await listen(net.createServer((s) => s.resetAndDestroy()))
  const r = await probeRegistry(`registry.test:${port}`, opts())
  t.strictSame(exact(r), { ok: false, detail: 'connection reset' }, 'not the timeout')
})

t.test('a name under .invalid is unreachable, without asking any resolver', async (t) => {
  const r = await probeRegistry('registry.mirrorhook.invalid', { timeoutMs: TIMEOUT_MS, env: {} })
  t.strictSame(exact(r), { ok: false, detail: 'DNS: no such host' }, 'not the timeout')
})

t.test('an untrusted or mismatched certificate is a TLS failure', async (t) => {
  const port = await registry(answer(401))
  const other = await createCa('someone-else', 1)
  t.strictSame(
    exact(await probeRegistry(`registry.test:${port}`, opts({ ca: other.certPem }))),
    { ok: false, detail: 'TLS: unable to verify the first certificate' },
    'unknown CA',
  )
  const wrongName = await issueServing(ca, { dnsNames: ['elsewhere.test'], validDays: 1 })
  const p2 = await listen(https.createServer({ cert: wrongName.certPem, key: wrongName.keyPem }, answer(401)))
  t.strictSame(
    exact(await probeRegistry(`registry.test:${p2}`, opts())),
    {
      ok: false,
      detail:
        "TLS: Hostname/IP does not match certificate's altnames: Host: registry.test. is not in the cert's altnames: DNS:elsewhere.test",
    },
    'name not in the certificate',
  )
})

t.test('redirects are followed to a host the configuration names (as registry.k8s.io once sent k8s.gcr.io)', async (t) => {
  const target = await registry(answer(401))
  const port = await registry(answer(307, { location: `https://other.test:${target}/v2/` }))
  t.strictSame(exact(await probeRegistry(`registry.test:${port}`, opts({ redirectHosts: ['other.test'] }))), {
    ok: true,
    status: 401,
    detail: `HTTP 401 in <t> (via other.test:${target})`,
  })
  t.strictSame(
    exact(await probeRegistry(`registry.test:${port}`, opts({ redirectHosts: [`other.test:${target}`] }))),
    { ok: true, status: 401, detail: `HTTP 401 in <t> (via other.test:${target})` },
    'a named host:port',
  )
  const samehost = await registry(answer(302, { location: `https://registry.test:${target}/v2/` }))
  t.strictSame(
    exact(await probeRegistry(`registry.test:${samehost}`, opts())),
    { ok: true, status: 401, detail: `HTTP 401 in <t> (via registry.test:${target})` },
    'the same host on another port',
  )
  const loop = await registry((req, res) =>
    answer(302, { location: `https://registry.test:${(req.socket.address() as AddressInfo).port}/v2/` })(req, res),
  )
  t.strictSame(
    exact(await probeRegistry(`registry.test:${loop}`, opts())),
    // The fourth answer (three redirects followed) is taken as it is.
    { ok: false, status: 302, detail: `HTTP 302 from /v2/ in <t> (via registry.test:${loop}): not a registry API` },
    'redirect loops end',
  )
  const plain = await registry(answer(301, { location: 'http://registry.test/v2/' }))
  t.strictSame(exact(await probeRegistry(`registry.test:${plain}`, opts())), {
    ok: false,
    status: 301,
    detail: 'HTTP 301 redirects to non-HTTPS registry.test',
  })
})

t.test('HTTPS_PROXY is honoured (CONNECT tunnel) and NO_PROXY bypasses it', async (t) => {
  const target = await registry(answer(401))
  const tunnels: string[] = []
  const proxy = http.createServer((_req, res) => res.writeHead(405).end())
  proxy.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    tunnels.push(req.url ?? '')
    const [host, port] = (req.url ?? '').split(':')
    // The proxy resolves names itself; here every *.test name is loopback.
    const upstream = net.connect(Number(port), host?.endsWith('.test') ? '127.0.0.1' : (host ?? ''), () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      upstream.write(head)
      upstream.pipe(client)
      client.pipe(upstream)
    })
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
  })
  const proxyPort = await listen(proxy)
  const env = { HTTPS_PROXY: `http://127.0.0.1:${proxyPort}` }
  t.strictSame(exact(await probeRegistry(`registry.test:${target}`, opts({ env }))), { ok: true, status: 401, detail: 'HTTP 401 in <t>' })
  t.same(tunnels, [`registry.test:${target}`], 'went through the proxy, which resolved the name')
  t.strictSame(exact(await probeRegistry(`registry.test:${target}`, opts({ env: { ...env, NO_PROXY: 'localhost,.test' } }))), {
    ok: true,
    status: 401,
    detail: 'HTTP 401 in <t>',
  })
  t.equal(tunnels.length, 1, 'NO_PROXY: direct')
  const refused = await probeRegistry(`registry.test:${target}`, opts({ env: { https_proxy: 'http://127.0.0.1:1' } }))
  t.strictSame(
    exact(refused),
    { ok: false, detail: 'connection refused' },
    'a dead proxy makes the registry unreachable, as it would for the node',
  )
})

t.test('proxy settings read the environment the way curl and Go do', async (t) => {
  t.equal(proxySettings({ https_proxy: 'http://a:1', HTTPS_PROXY: 'http://b:2' }).proxy, 'http://a:1', 'lowercase wins')
  t.equal(proxySettings({ ALL_PROXY: 'http://c:3' }).proxy, 'http://c:3')
  t.equal(proxySettings({}).proxy, undefined)
  const s = proxySettings({ NO_PROXY: 'corp.example, 10.0.0.0/8 ,bad entry!' })
  t.equal(s.noProxy.match('registry.corp.example').excluded, true)
  t.equal(s.noProxy.match('10.1.2.3:5000').excluded, true)
  t.equal(s.noProxy.match('quay.io').excluded, false, 'invalid entries are dropped, not fatal')
})

// A loopback listener that only counts the connections made to it.
async function counter(): Promise<{ port: number; connections: () => number }> {
  let n = 0
  const port = await listen(
    net.createServer((s) => {
      n++
      s.destroy()
    }),
  )
  return { port, connections: () => n }
}

t.test('a redirect to a host the configuration does not name is not followed, and the result says so', async (t) => {
  // As `302 Location: https://10.0.0.1/v2/` would: an internal address, here a loopback one.
  const internal = await counter()
  const port = await registry(answer(302, { location: `https://127.0.0.1:${internal.port}/v2/` }))
  const r = await probeRegistry(`registry.test:${port}`, opts({ redirectHosts: ['other.test', 'quay.io'] }))
  t.strictSame(exact(r), {
    ok: false,
    status: 302,
    detail: `HTTP 302 redirects to 127.0.0.1:${internal.port}, a host the configuration does not name: not followed`,
  })
  t.equal(internal.connections(), 0, 'no connection was attempted')

  const elsewhere = await counter()
  const named = await registry(answer(307, { location: `https://other.test:${elsewhere.port}/v2/` }))
  const refusedRedirect = {
    ok: false,
    status: 307,
    detail: `HTTP 307 redirects to other.test:${elsewhere.port}, a host the configuration does not name: not followed`,
  }
  t.strictSame(
    exact(await probeRegistry(`registry.test:${named}`, opts({ redirectHosts: ['other.test:1'] }))),
    refusedRedirect,
    'a named host on another port than named',
  )
  t.strictSame(exact(await probeRegistry(`registry.test:${named}`, opts())), refusedRedirect, 'nothing named')
  t.equal(elsewhere.connections(), 0)
})

t.test('the hosts a probe may be redirected to are the mirrors and the registries the configuration lists', async (t) => {
  const { namedHosts } = await import('../../server/reachability/service.js')
  const { compilePolicy } = await import('../../server/core/policy.js')
  const { resolveConfig } = await import('../../server/config/config.js')
  const policy = compilePolicy(
    resolveConfig({
      mirror: { prefix: 'mirror.example:5000/proxy', hosts: { 'ghcr.io': 'ghcr.mirror.example/x' } },
      registries: ['*', 'quay.io'],
    }),
  )
  t.strictSame(namedHosts(policy).sort(), ['ghcr.mirror.example', 'mirror.example:5000', 'quay.io'])
})
