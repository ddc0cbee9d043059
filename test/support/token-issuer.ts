// A small token issuer for distribution's `auth: token` (docs/content/spec/auth/token.md), so the
// tests exercise the Bearer flow registries really use: the registry answers 401 with
// `WWW-Authenticate: Bearer realm,service,scope`; the client asks the realm for a token; the
// registry verifies it as registry/auth/token/token.go (v3.1.2) does: a JWS whose header carries
// `x5c` (the signing certificate, chained to `rootcertbundle`), ES256 among the accepted
// algorithms, claims `iss` = issuer, `aud` = service, `exp`/`nbf` within a minute's leeway, and
// `access: [{type, name, actions}]` granting the request.
//
//   const issuer = await startTokenIssuer({ ca, dir, users: { robot: 'pw' } })
//   const reg = await startRegistry({ ca, auth: { token: issuer.registryConfig }, pushAuthorization: issuer.pushAuthorization })
import { randomUUID, sign } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { createCa, issueServing, type KeyPairPem } from '../../server/tls/certs.js'

export interface Access {
  type: string
  name: string
  actions: string[]
}

export interface TokenRequestRecord {
  method: string
  scopes: string[]
  service?: string
  /** Who asked: a user name, `identitytoken:<user>`, `anonymous`, or `refused`. */
  who: string
  status: number
}

export interface TokenIssuer {
  realm: string
  service: string
  issuer: string
  /** distribution's `auth.token` section for startRegistry. */
  registryConfig: { realm: string; service: string; issuer: string; rootCertBundle: string }
  requests: TokenRequestRecord[]
  /** A token granting `access` directly (the push helpers use one with pull,push). */
  mint(access: Access[], subject?: string, ttlSeconds?: number): string
  /** `Bearer <token>` for pull and push on a repository. */
  pushAuthorization(repository: string): string
  stop(): Promise<void>
}

export interface TokenIssuerOptions {
  /** CA of the TLS certificate it serves (clients trust it through the registry's caFile). */
  ca: KeyPairPem
  dir: string
  /** Loopback address to listen on (default 127.0.0.1). */
  address?: string
  /** Basic credentials accepted: user → password. */
  users?: Record<string, string>
  /** OAuth2 refresh tokens accepted (POST grant_type=refresh_token): token → user. */
  identityTokens?: Record<string, string>
  /** Anonymous requests get pull access (a public registry); default false: no access. */
  anonymousPull?: boolean
  /** expires_in of the tokens it issues (default 300 s). */
  expiresIn?: number
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url')

/** Scope strings (`repository:a/b:pull,push`, resource names may hold colons with a port) into access entries. */
export function parseScopes(scopes: readonly string[]): Access[] {
  const out: Access[] = []
  for (const scope of scopes) {
    for (const s of scope.split(' ')) {
      const first = s.indexOf(':')
      const last = s.lastIndexOf(':')
      if (first <= 0 || last === first) continue
      out.push({
        type: s.slice(0, first),
        name: s.slice(first + 1, last),
        actions: s
          .slice(last + 1)
          .split(',')
          .filter(Boolean),
      })
    }
  }
  return out
}

export async function startTokenIssuer(opts: TokenIssuerOptions): Promise<TokenIssuer> {
  const address = opts.address ?? '127.0.0.1'
  const signer = await createCa('mirrorhook-test-token-signer', 7)
  mkdirSync(opts.dir, { recursive: true })
  const rootCertBundle = path.join(opts.dir, 'token-signer.crt')
  writeFileSync(rootCertBundle, signer.certPem)
  const x5c = signer.certPem.replace(/-----[^-]+-----|\s/g, '')
  const service = 'mirrorhook-test-registry'
  const issuer = 'mirrorhook-test-token-issuer'
  const expiresIn = opts.expiresIn ?? 300
  const requests: TokenRequestRecord[] = []

  const mint = (access: Access[], subject = 'test', ttl = expiresIn) => {
    const now = Math.floor(Date.now() / 1000)
    const header = { typ: 'JWT', alg: 'ES256', x5c: [x5c] }
    const claims = { iss: issuer, sub: subject, aud: service, exp: now + ttl, nbf: now - 1, iat: now, jti: randomUUID(), access }
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`
    // JWS ES256 is the raw r||s pair (RFC 7518 §3.4), not DER.
    const signature = sign('sha256', Buffer.from(input), { key: signer.keyPem, dsaEncoding: 'ieee-p1363' })
    return `${input}.${b64url(signature)}`
  }

  const serving = await issueServing(opts.ca, { dnsNames: ['localhost'], ipAddresses: [address], validDays: 7 })
  const server = https.createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const url = new URL(req.url ?? '/', `https://${address}`)
      let params = url.searchParams
      if (req.method === 'POST') params = new URLSearchParams(Buffer.concat(chunks).toString('utf8'))
      const scopes = params.getAll('scope')
      const record: TokenRequestRecord = {
        method: req.method ?? 'GET',
        scopes,
        service: params.get('service') ?? undefined,
        who: 'anonymous',
        status: 200,
      }
      requests.push(record)
      const reply = (status: number, body: unknown) => {
        record.status = status
        res.writeHead(status, { 'Content-Type': 'application/json' })
        res.end(JSON.stringify(body))
      }
      if (url.pathname !== '/token') return reply(404, { error: 'not found' })
      let user: string | undefined
      const auth = req.headers.authorization
      if (req.method === 'POST') {
        const refresh = params.get('refresh_token')
        if (params.get('grant_type') !== 'refresh_token' || !refresh || !opts.identityTokens?.[refresh]) {
          record.who = 'refused'
          return reply(401, { error: 'invalid_grant' })
        }
        user = opts.identityTokens[refresh]
        record.who = `identitytoken:${user}`
      } else if (auth) {
        const [scheme, value] = auth.split(' ')
        const [name, ...rest] = Buffer.from(value ?? '', 'base64')
          .toString('utf8')
          .split(':')
        if (scheme?.toLowerCase() !== 'basic' || !name || opts.users?.[name] === undefined || opts.users[name] !== rest.join(':')) {
          record.who = 'refused'
          return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] })
        }
        user = name
        record.who = name
      }
      // Users get what they ask for; anonymous requests only pull, and only with anonymousPull.
      const access = parseScopes(scopes)
        .map((a) => (user ? a : { ...a, actions: opts.anonymousPull ? a.actions.filter((x) => x === 'pull') : [] }))
        .filter((a) => a.actions.length > 0)
      const token = mint(access, user ?? 'anonymous')
      reply(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() })
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, address, () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  const realm = `https://${address}:${port}/token`
  return {
    realm,
    service,
    issuer,
    registryConfig: { realm, service, issuer, rootCertBundle },
    requests,
    mint,
    pushAuthorization: (repository) => `Bearer ${mint([{ type: 'repository', name: repository, actions: ['pull', 'push'] }], 'pusher')}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
