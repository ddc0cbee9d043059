// Self-managed TLS without an API server: what the next Secret state is, and how
// the files reach the HTTPS server. The API-server side is in test/e2e/selfmanaged.test.ts.
import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { lstat, mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises'
import https from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createCa, describeCertificate, issueServing } from '../../server/tls/certs.js'
import { CertificateReloader, readKeyPair } from '../../server/tls/reloader.js'
import { writeTlsFiles } from '../../server/tls/files.js'
import { DEFAULT_TIMINGS, planTls, type TlsState } from '../../server/tls/plan.js'
import { secretFromState, SECRET_KEYS, STAGED_AT_ANNOTATION, stateFromSecret } from '../../server/tls/secret.js'

const DAY = 86_400_000
const names = { dnsNames: ['mirrorhook.mirrorhook.svc', 'mirrorhook'], ipAddresses: ['127.0.0.1'] }
const now = new Date('2030-01-01T00:00:00Z')

function signedBy(certPem: string, caPem: string): boolean {
  const cert = new X509Certificate(certPem)
  const ca = new X509Certificate(caPem)
  return cert.checkIssued(ca) && cert.verify(ca.publicKey)
}

function verifiedByTrust(state: TlsState): boolean {
  return state.trust.some((ca) => signedBy(state.serving.certPem, ca))
}

async function stateWith(opts: { caDays: number; servingDays: number; servingIssuedAt?: Date }): Promise<TlsState> {
  const signer = await createCa('test CA', opts.caDays, now)
  const serving = await issueServing(signer, { ...names, validDays: opts.servingDays, now: opts.servingIssuedAt ?? now })
  return { signer, trust: [signer.certPem], serving }
}

t.test('nothing yet: a CA and a serving certificate for the Service names', async (t) => {
  const { state, changes } = await planTls(undefined, names, DEFAULT_TIMINGS, now)
  t.strictSame(changes, ['created'])
  t.equal(signedBy(state.serving.certPem, state.signer.certPem), true)
  t.strictSame(state.trust.length, 1)
  const facts = describeCertificate(state.serving.certPem)
  t.strictSame(facts.dnsNames, names.dnsNames)
  t.strictSame(facts.ipAddresses, ['127.0.0.1'])
  t.equal(Math.round((facts.notAfter.getTime() - now.getTime()) / DAY), 90, 'valid for 90 days')
  t.equal(new X509Certificate(state.signer.certPem).ca, true)
})

t.test('a fresh state is left alone', async (t) => {
  const { state } = await planTls(undefined, names, DEFAULT_TIMINGS, now)
  const again = await planTls(state, names, DEFAULT_TIMINGS, new Date(now.getTime() + DAY))
  t.strictSame(again.changes, [])
  t.equal(again.state.serving.certPem, state.serving.certPem)
})

t.test('a soon-expiring serving certificate is reissued by the same CA', async (t) => {
  const current = await stateWith({ caDays: 3650, servingDays: 10 })
  const { state, changes } = await planTls(current, names, DEFAULT_TIMINGS, now)
  t.strictSame(changes, ['serving-issued'])
  t.equal(state.signer.certPem, current.signer.certPem, 'same CA')
  t.not(state.serving.certPem, current.serving.certPem)
  t.equal(signedBy(state.serving.certPem, current.signer.certPem), true)
  t.equal(describeCertificate(state.serving.certPem).notAfter.getTime() > now.getTime() + 80 * DAY, true)
})

t.test('an expired serving certificate is reissued', async (t) => {
  const current = await stateWith({ caDays: 3650, servingDays: 1, servingIssuedAt: new Date(now.getTime() - 30 * DAY) })
  t.equal(describeCertificate(current.serving.certPem).notAfter < now, true, 'fixture is expired')
  const { state, changes } = await planTls(current, names, DEFAULT_TIMINGS, now)
  t.strictSame(changes, ['serving-issued'])
  t.equal(describeCertificate(state.serving.certPem).notAfter > now, true)
})

t.test('a serving certificate missing a wanted name, or from another CA, or with the wrong key, is reissued', async (t) => {
  const current = await stateWith({ caDays: 3650, servingDays: 90 })
  const renamed = await planTls(
    current,
    { dnsNames: [...names.dnsNames, 'extra.example'], ipAddresses: ['127.0.0.1'] },
    DEFAULT_TIMINGS,
    now,
  )
  t.strictSame(renamed.changes, ['serving-issued'])
  t.strictSame(describeCertificate(renamed.state.serving.certPem).dnsNames, [...names.dnsNames, 'extra.example'])

  const stranger = await createCa('other CA', 3650, now)
  const foreign = { ...current, serving: await issueServing(stranger, { ...names, validDays: 90, now }) }
  t.strictSame((await planTls(foreign, names, DEFAULT_TIMINGS, now)).changes, ['serving-issued'])

  const other = await issueServing(current.signer, { ...names, validDays: 90, now })
  const mismatched = { ...current, serving: { certPem: current.serving.certPem, keyPem: other.keyPem } }
  t.strictSame((await planTls(mismatched, names, DEFAULT_TIMINGS, now)).changes, ['serving-issued'])
})

t.test('the serving certificate never outlives its CA, and one capped by the CA is not reissued over and over', async (t) => {
  const current = await stateWith({ caDays: 400, servingDays: 1 })
  const timings = { ...DEFAULT_TIMINGS, caRenewBeforeDays: 10, servingValidDays: 1000, servingRenewBeforeDays: 500 }
  const { state, changes } = await planTls(current, names, timings, now)
  t.strictSame(changes, ['serving-issued'])
  t.equal(describeCertificate(state.serving.certPem).notAfter <= describeCertificate(state.signer.certPem).notAfter, true)
  t.strictSame((await planTls(state, names, timings, new Date(now.getTime() + DAY))).changes, [])
})

t.test('CA rotation: staged into the trust bundle first, promoted after the delay, old CA trusted until it expires', async (t) => {
  const timings = { ...DEFAULT_TIMINGS, caRenewBeforeDays: 30, caPromotionDelayMs: 60 * 60_000 }
  // Serving as long as the CA: renewing it before the CA rotates would gain nothing.
  const start = await stateWith({ caDays: 20, servingDays: 20 })

  const staged = await planTls(start, names, timings, now)
  t.strictSame(staged.changes, ['ca-staged'])
  t.equal(typeof staged.state.next?.signer.certPem, 'string', 'next CA staged')
  t.equal(staged.state.signer.certPem, start.signer.certPem, 'the old CA still signs')
  t.equal(staged.state.serving.certPem, start.serving.certPem, 'serving certificate unchanged while staged')
  t.strictSame(staged.state.trust.length, 2, 'trust bundle carries old and next CA')
  t.equal(verifiedByTrust(staged.state), true)

  const early = await planTls(staged.state, names, timings, new Date(now.getTime() + 30 * 60_000))
  t.strictSame(early.changes, [], 'not promoted before the delay')

  const promotedAt = new Date(now.getTime() + 61 * 60_000)
  const promoted = await planTls(staged.state, names, timings, promotedAt)
  t.strictSame(promoted.changes, ['ca-promoted', 'serving-issued'])
  t.equal(promoted.state.signer.certPem, staged.state.next?.signer.certPem)
  t.equal(promoted.state.next, undefined)
  t.equal(signedBy(promoted.state.serving.certPem, promoted.state.signer.certPem), true)
  t.strictSame(promoted.state.trust.length, 2, 'old CA still trusted: another replica may serve its certificate a while longer')
  t.equal(signedBy(start.serving.certPem, promoted.state.trust[1] ?? ''), true, 'the previous serving certificate still verifies')

  const later = await planTls(promoted.state, names, timings, new Date(now.getTime() + 21 * DAY))
  t.strictSame(later.changes, ['trust-updated'], 'expired old CA dropped')
  t.strictSame(later.state.trust.length, 1)
  t.equal(verifiedByTrust(later.state), true)
})

t.test('at every step of a rotation the trust bundle verifies the serving certificate', async (t) => {
  const timings = { caValidDays: 10, caRenewBeforeDays: 4, caPromotionDelayMs: DAY / 2, servingValidDays: 3, servingRenewBeforeDays: 1 }
  let state = (await planTls(undefined, names, timings, now)).state
  const seen = new Set<string>()
  for (let hour = 0; hour <= 40 * 24; hour += 6) {
    const at = new Date(now.getTime() + hour * 3_600_000)
    const planned = await planTls(state, names, timings, at)
    // Every certificate a replica might still be serving (this one and the previous) verifies.
    t.equal(verifiedByTrust(planned.state), true, `hour ${hour}: new serving verifies`)
    // Serving certificates are renewed a day before they expire, so at 6 h steps the previous one is still valid.
    t.equal(expiredAt(state.serving.certPem, at), false, `hour ${hour}: previous serving still valid`)
    t.equal(
      planned.state.trust.some((ca) => signedBy(state.serving.certPem, ca)),
      true,
      `hour ${hour}: previous serving verifies`,
    )
    for (const c of planned.changes) seen.add(c)
    state = planned.state
  }
  t.strictSame([...seen].sort(), ['ca-promoted', 'ca-staged', 'serving-issued', 'trust-updated'])
})

function expiredAt(pem: string, at: Date): boolean {
  return describeCertificate(pem).notAfter.getTime() <= at.getTime()
}

t.test('an unusable Secret (garbage, or an expired CA) starts over', async (t) => {
  const garbage = { signer: { certPem: 'nope', keyPem: 'nope' }, trust: [], serving: { certPem: '', keyPem: '' } }
  t.strictSame((await planTls(garbage, names, DEFAULT_TIMINGS, now)).changes, ['created'])
  const old = await stateWith({ caDays: 1, servingDays: 1 })
  t.strictSame((await planTls(old, names, DEFAULT_TIMINGS, new Date(now.getTime() + 2 * DAY))).changes, ['created'])
})

t.test('Secret round trip keeps the staged CA and its time', async (t) => {
  const timings = { ...DEFAULT_TIMINGS, caRenewBeforeDays: 30 }
  const { state } = await planTls(await stateWith({ caDays: 20, servingDays: 20 }), names, timings, now)
  const secret = secretFromState('mirrorhook-tls', 'mirrorhook', state)
  t.equal(secret.type, 'kubernetes.io/tls')
  t.equal(secret.metadata?.annotations?.[STAGED_AT_ANNOTATION], now.toISOString())
  t.strictSame(Object.keys(secret.data ?? {}).sort(), Object.values(SECRET_KEYS).sort())
  const back = stateFromSecret(secret)
  t.equal(back?.next?.stagedAt.toISOString(), now.toISOString())
  t.strictSame((await planTls(back, names, timings, now)).changes, [], 'read back: nothing to do')
  const promoted = (await planTls(back, names, timings, new Date(now.getTime() + DAY))).state
  const after = secretFromState('mirrorhook-tls', 'mirrorhook', promoted, secret)
  t.equal(after.metadata?.annotations?.[STAGED_AT_ANNOTATION], undefined, 'annotation removed after promotion')
  t.equal(after.data?.[SECRET_KEYS.nextSignerCert], undefined)
})

t.test('files: written through one symlink swap, rewritten only on change, picked up by the reloader', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-selfmanaged-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const first = (await planTls(undefined, names, DEFAULT_TIMINGS, new Date())).state
  const content = (s: TlsState) => ({ cert: s.serving.certPem, key: s.serving.keyPem, ca: s.trust.join('') })
  t.equal(await writeTlsFiles(dir, content(first)), true)
  t.equal(await writeTlsFiles(dir, content(first)), false, 'same content: no write')
  t.equal((await lstat(join(dir, 'tls.crt'))).isSymbolicLink(), true)
  t.equal(await readlink(join(dir, 'tls.crt')), join('..data', 'tls.crt'))
  t.equal(await readFile(join(dir, 'tls.key'), 'utf8'), first.serving.keyPem)

  const pair = await readKeyPair(join(dir, 'tls.crt'), join(dir, 'tls.key'))
  const server = https.createServer({ ...pair }, (_req, res) => res.end('ok'))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  const reloads: string[] = []
  const reloader = new CertificateReloader(join(dir, 'tls.crt'), join(dir, 'tls.key'), pair, server, {
    onReload: () => reloads.push('reload'),
    onError: (e) => reloads.push(`error: ${e.message}`),
  })

  const second = (await planTls(undefined, names, DEFAULT_TIMINGS, new Date())).state
  t.equal(await writeTlsFiles(dir, content(second)), true)
  t.equal(await reloader.check(), true)
  t.strictSame(reloads, ['reload'], 'one reload, never a half-written pair')
  const versions = (await readdir(dir)).filter((e) => e.startsWith('..') && e !== '..data')
  t.equal(versions.length, 1, 'old version folder removed')

  const port = (server.address() as { port: number }).port
  const peer = await new Promise<string>((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', ca: second.trust.join(''), agent: false }, (res) => {
      resolve((res.socket as unknown as { getPeerCertificate(): { fingerprint256: string } }).getPeerCertificate().fingerprint256)
      res.resume()
    })
    req.on('error', reject)
  })
  t.equal(peer, new X509Certificate(second.serving.certPem).fingerprint256, 'the server now presents the new certificate')
})
