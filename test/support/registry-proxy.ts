// A thin HTTPS proxy in front of the test registry, on a loopback address of its choice, for
// what the real registry does not do by itself: answer 429 with Retry-After, redirect a blob to
// another host (as distribution does to S3 or a CDN with `redirect` storage middleware), and
// record what each request carried (did Authorization arrive?).
//
//   const proxy = await startRegistryProxy({ ca, upstream: reg, intercept: (r) => r.path.includes('/blobs/') ? { status: 307, headers: { Location: ... } } : undefined })
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { issueServing, type KeyPairPem } from '../../server/tls/certs.js'

export interface ProxiedRequest {
  method: string
  path: string
  authorization?: string
}

export interface Interception {
  /** Never answer (the connection stays open until the client gives up). */
  hang?: boolean
  status: number
  headers?: Record<string, string>
  body?: string
}

export interface RegistryProxy {
  /** <address>:<port> */
  host: string
  url: string
  requests: ProxiedRequest[]
  stop(): Promise<void>
}

export interface RegistryProxyOptions {
  ca: KeyPairPem
  upstream: { url: string; caPem: string }
  /** Loopback address to listen on (default 127.0.0.1), e.g. 127.0.0.2 for "another host". */
  address?: string
  /** An answer instead of forwarding (undefined: forward). */
  intercept?: (req: ProxiedRequest) => Interception | undefined
  /** Authorization sent upstream instead of the client's (a signed blob URL needs none from the client). */
  upstreamAuthorization?: (req: ProxiedRequest) => string | undefined
}

export async function startRegistryProxy(opts: RegistryProxyOptions): Promise<RegistryProxy> {
  const address = opts.address ?? '127.0.0.1'
  const serving = await issueServing(opts.ca, { dnsNames: ['localhost'], ipAddresses: [address], validDays: 7 })
  const requests: ProxiedRequest[] = []
  const server = https.createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
    const record: ProxiedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', authorization: req.headers.authorization }
    requests.push(record)
    const answer = opts.intercept?.(record)
    if (answer?.hang) return
    if (answer) {
      res.writeHead(answer.status, { 'Content-Type': 'application/json', ...answer.headers })
      res.end(answer.body ?? '')
      return
    }
    const headers = { ...req.headers }
    delete headers.host
    const upstreamAuth = opts.upstreamAuthorization?.(record)
    if (upstreamAuth) headers.authorization = upstreamAuth
    const up = https.request(
      new URL(record.path, opts.upstream.url),
      { method: record.method, headers, ca: opts.upstream.caPem, agent: false },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers)
        upRes.pipe(res)
      },
    )
    up.on('error', (e) => {
      res.writeHead(502)
      res.end(String(e))
    })
    req.pipe(up)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, address, () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  return {
    host: `${address}:${port}`,
    url: `https://${address}:${port}`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
